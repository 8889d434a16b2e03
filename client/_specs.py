"""Version ranges and install requests: the grammar of `toxicity@1.2`, `^1.2`, `>=1.0,<2`.

Semantics follow npm and cargo (grammar and examples in docs/specs.md). python-semver has
versions but no ranges, so a range here is a union of comparator sets built on
`semver.Version`:

- `1.2` means `>=1.2.0,<1.3.0-0` (newest 1.2.x); `1` means 1.x.y; `1.2.3` means exactly 1.2.3
- `^1.2.3` keeps the left-most non-zero part: `^0.2.3` is `>=0.2.3,<0.3.0-0`
- `~1.2.3` allows patch updates; `~1` allows minor updates
- `=1.2.3`, `>1`, `>=1.0`, `<2`, `<=1.2`, comma-joined for AND, `||` for OR; `*` or `x` for any

Pre-releases (`1.3.0-rc.1`) match only when asked: a range admits a pre-release only if one
of its comparators names a pre-release of the same MAJOR.MINOR.PATCH (npm's rule), or when
the caller passes `include_prerelease`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import semver

from ..errors import LLMPatchError
from ..manifest import canonical_name, check_name

MAX_SPEC_CHARS = 128


class InvalidSpec(LLMPatchError):
    """A version range or install request does not follow the grammar in docs/specs.md."""

    exit_code = 2


_PARTIAL = re.compile(
    r"(?P<major>0|[1-9]\d*|[xX*])"
    r"(?:\.(?P<minor>0|[1-9]\d*|[xX*]))?"
    r"(?:\.(?P<patch>0|[1-9]\d*|[xX*]))?"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?\Z"
)
_OPERATOR = re.compile(r"(\^|~|>=|<=|>|<|=)?\s*(.*)\Z")
_WILD = ("x", "X", "*")


@dataclass(frozen=True)
class Comparator:
    op: str  # one of >=, >, <, <=, =
    version: semver.Version

    def matches(self, v: semver.Version) -> bool:
        c = v.compare(self.version)
        return {">=": c >= 0, ">": c > 0, "<": c < 0, "<=": c <= 0, "=": c == 0}[self.op]

    def __str__(self) -> str:
        return f"{self.op}{self.version}"


def _lowest_pre(major: int, minor: int, patch: int) -> semver.Version:
    """The smallest version of MAJOR.MINOR.PATCH, below all its pre-releases (npm's `-0`)."""
    return semver.Version(major, minor, patch, prerelease="0")


def _parse_partial(text: str, spec: str) -> tuple[list[int | None], str | None]:
    match = _PARTIAL.match(text)
    if not match:
        raise InvalidSpec(
            f"`{spec}` is not a version range: cannot read `{text}`",
            hint="write e.g. `1.2`, `^1.2`, `~1.2.3`, `>=1.0,<2` or `=1.2.3` (see docs/specs.md)",
        )
    parts: list[int | None] = []
    for key in ("major", "minor", "patch"):
        value = match.group(key)
        parts.append(None if value is None or value in _WILD else int(value))
    # `1.x.3` is meaningless: once a part is wild the rest is too
    for i in range(1, 3):
        if parts[i - 1] is None and parts[i] is not None:
            raise InvalidSpec(f"`{spec}`: `{text}` has a number after a wildcard")
    if match.group("pre") and None in parts:
        raise InvalidSpec(f"`{spec}`: a pre-release needs a full MAJOR.MINOR.PATCH, got `{text}`")
    return parts, match.group("pre")


def _comparators(op: str, text: str, spec: str) -> list[Comparator]:
    (major, minor, patch), pre = _parse_partial(text, spec)
    if major is None:  # `*`, `x`: any version, whatever the operator (`>=*`)
        return [] if op in ("", "=", ">=", "<=", "^", "~") else [Comparator("<", _lowest_pre(0, 0, 0))]
    full = minor is not None and patch is not None
    exact = semver.Version(major, minor or 0, patch or 0, prerelease=pre)

    def bump(level: str) -> semver.Version:
        if level == "major":
            return _lowest_pre(major + 1, 0, 0)
        if level == "minor":
            return _lowest_pre(major, (minor or 0) + 1, 0)
        return _lowest_pre(major, minor or 0, (patch or 0) + 1)

    partial_top = "major" if minor is None else "minor"  # what a partial version leaves open

    if op in ("", "="):
        if full:
            return [Comparator("=", exact)]
        return [Comparator(">=", exact if pre else _lowest_pre(major, minor or 0, 0)), Comparator("<", bump(partial_top))]
    if op == "^":
        lower = Comparator(">=", exact)
        if major > 0 or minor is None:
            return [lower, Comparator("<", bump("major"))]
        if minor > 0 or patch is None:
            return [lower, Comparator("<", bump("minor"))]
        return [lower, Comparator("<", bump("patch"))]
    if op == "~":
        return [Comparator(">=", exact), Comparator("<", bump(partial_top))]
    if op == ">=":
        return [Comparator(">=", exact)]
    if op == "<":
        return [Comparator("<", exact if full else _lowest_pre(major, minor or 0, 0))]
    if op == ">":
        return [Comparator(">", exact) if full else Comparator(">=", bump(partial_top))]
    # <=
    return [Comparator("<=", exact) if full else Comparator("<", bump(partial_top))]


@dataclass(frozen=True)
class VersionRange:
    """A parsed range: OR of AND-ed comparator sets. `str()` gives the text it came from."""

    text: str
    alternatives: tuple[tuple[Comparator, ...], ...]

    @classmethod
    def parse(cls, text: str) -> "VersionRange":
        spec = text.strip()
        if not spec:
            spec = "*"
        if len(spec) > MAX_SPEC_CHARS or not spec.isascii():
            raise InvalidSpec(f"version range `{spec[:40]}` is too long or not ASCII (limit {MAX_SPEC_CHARS} characters)")
        alternatives = []
        for alternative in spec.split("||"):
            comparators: list[Comparator] = []
            pieces = [p.strip() for p in alternative.split(",")]
            if not alternative.strip() or any(not p for p in pieces):
                raise InvalidSpec(f"`{spec}` has an empty part", hint="join comparators with `,` as in `>=1.0,<2`")
            for piece in pieces:
                op, rest = _OPERATOR.match(piece).groups()
                rest = rest.lstrip("v") if rest[:1] == "v" and rest[1:2].isdigit() else rest
                comparators += _comparators(op or "", rest.strip(), spec)
            alternatives.append(tuple(comparators))
        return cls(spec, tuple(alternatives))

    def _prerelease_allowed(self, v: semver.Version, comparators: tuple[Comparator, ...]) -> bool:
        return any(
            c.version.prerelease and c.version.prerelease != "0"
            and (c.version.major, c.version.minor, c.version.patch) == (v.major, v.minor, v.patch)
            for c in comparators
        )

    def contains(self, version: semver.Version | str, *, include_prerelease: bool = False) -> bool:
        v = semver.Version.parse(version) if isinstance(version, str) else version
        for comparators in self.alternatives:
            if not all(c.matches(v) for c in comparators):
                continue
            if v.prerelease and not include_prerelease and not self._prerelease_allowed(v, comparators):
                continue
            return True
        return False

    def mentions_prerelease(self) -> bool:
        return any(c.version.prerelease not in (None, "0") for alt in self.alternatives for c in alt)

    @property
    def is_any(self) -> bool:
        return self.alternatives == ((),)

    def __str__(self) -> str:
        return self.text


ANY = VersionRange.parse("*")


@dataclass(frozen=True)
class PatchRequest:
    """What a user asked for: `toxicity`, `toxicity@^1.2`. `name` is as typed, `key` canonical."""

    name: str
    range: VersionRange

    @property
    def key(self) -> str:
        return canonical_name(self.name)

    @classmethod
    def parse(cls, text: str) -> "PatchRequest":
        text = text.strip()
        if text.startswith("hf://"):
            raise InvalidSpec(f"`{text}` is a Hugging Face reference, not a registry request")
        name, sep, spec = text.partition("@")
        if sep and not spec.strip():
            raise InvalidSpec(f"`{text}` has `@` but no version range", hint=f"write `{name}` for the newest, or `{name}@1.2`")
        try:
            check_name(name, "patch name")
        except LLMPatchError as exc:
            raise InvalidSpec(str(exc), hint=exc.hint) from None
        return cls(name, VersionRange.parse(spec) if sep else ANY)

    def __str__(self) -> str:
        return self.name if self.range.is_any else f"{self.name}@{self.range}"
