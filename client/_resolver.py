"""Choosing a set of patch versions: resolvelib does the search, this module says what fits.

A release fits when its version is in every requested range, it was built for the model's
fingerprint and hidden size, it is not yanked (unless the lockfile already pins it: then a
warning with the reason), and no chosen patch conflicts with it. Conflicts are modelled as
requirements that an *absent* patch also satisfies, so a conflict never pulls a patch in.
The total virtual-token budget is checked on the result.

When nothing fits, `ResolutionImpossible` carries the facts and renders them as a derivation:
"Because toxicity 1.3.0 requires base model fingerprint … and your model is …, we can
conclude that your requirements are unsatisfiable".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import resolvelib

from ..errors import LLMPatchError
from ..fingerprint import Fingerprint, short
from ..manifest import canonical_name
from ._sources import Release, ReleaseSource
from ._specs import InvalidSpec, PatchRequest, VersionRange

MAX_ROUNDS = 2000


class ResolutionImpossible(LLMPatchError):
    """No set of versions satisfies the request; `facts` are the derivation's premises."""

    exit_code = 5

    def __init__(self, facts: Sequence[str], conclusion: str = "your requirements are unsatisfiable", *, hint: str | None = None):
        self.facts = list(facts)
        self.conclusion = conclusion
        super().__init__(derivation(self.facts, conclusion), hint=hint)


def derivation(facts: Sequence[str], conclusion: str) -> str:
    body = "Because " + ",\n  and ".join(facts) + f",\n  we can conclude that {conclusion}"
    return "no solution found when resolving patches:\n  " + body


@dataclass(frozen=True)
class Requirement:
    """`require`: a version in `range` must be chosen. `conflict`: none may be, absent is fine."""

    name: str
    range: VersionRange
    kind: str = "require"
    parent: Release | None = None
    include_prerelease: bool = False

    @property
    def key(self) -> str:
        return canonical_name(self.name)

    def allows(self, release: Release) -> bool:
        if self.kind == "conflict":
            return not self.range.contains(release.semver, include_prerelease=True)
        return self.range.contains(release.semver, include_prerelease=self.include_prerelease)

    def statement(self) -> str:
        shown = f"`{self.name}`" if self.range.is_any else f"`{self.name}@{self.range}`"
        if self.kind == "conflict":
            return f"{self.parent} conflicts with {shown}"
        if self.parent is None:
            return f"you require {shown}"
        return f"{self.parent} depends on {shown}"


@dataclass(frozen=True)
class Absent:
    """The candidate "not installed", offered only when nothing requires the name."""

    key: str


@dataclass
class Target:
    """The model a set is resolved for, and the limits that apply to it."""

    fingerprint: Fingerprint
    hidden_size: int | None = None  # None: not checked (unknown without loading the config)
    token_budget: int | None = None


@dataclass
class Resolution:
    releases: list[Release]  # composition order: dependencies first, then request order
    warnings: list[str] = field(default_factory=list)
    required_by: dict[str, list[str]] = field(default_factory=dict)  # key -> ["you", "a 1.0.0"]

    @property
    def total_tokens(self) -> int:
        return sum(r.n_virtual_tokens for r in self.releases)


class Provider(resolvelib.AbstractProvider):
    def __init__(self, source: ReleaseSource, target: Target, *, locked: dict[str, str] | None = None, upgrade: Iterable[str] = ()):
        self.source = source
        self.target = target
        self.locked = dict(locked or {})  # key -> version kept when still allowed
        self.upgrade = {canonical_name(n) for n in upgrade}  # keys whose lock is ignored
        self._releases: dict[str, list[Release]] = {}
        self.warnings: list[str] = []

    def releases(self, key: str) -> list[Release]:
        if key not in self._releases:
            found = self.source.releases(key)
            self._releases[key] = sorted(found, key=lambda r: r.semver, reverse=True)
        return self._releases[key]

    def is_locked(self, release: Release) -> bool:
        return release.key not in self.upgrade and self.locked.get(release.key) == release.version

    def unusable_reason(self, release: Release) -> str | None:
        """Why this release cannot go on this model, or None; each reason is a derivation fact."""
        fp = self.target.fingerprint
        if release.architecture != fp.architecture:
            return f"requires base model fingerprint `{short(release.architecture)}` and your model is `{short(fp.architecture)}`"
        if release.weights != fp.weights:
            return f"requires base model weights `{short(release.weights)}` and your model's are `{short(fp.weights)}`"
        if self.target.hidden_size is not None and release.hidden_size != self.target.hidden_size:
            return f"has hidden size {release.hidden_size} and your model has {self.target.hidden_size}"
        if release.yanked and not self.is_locked(release):
            return "was yanked" + (f" ({release.yanked_reason})" if release.yanked_reason else "")
        return None

    # resolvelib interface -----------------------------------------------------------------

    def identify(self, requirement_or_candidate) -> str:
        return requirement_or_candidate.key

    def get_preference(self, identifier, resolutions, candidates, information, backtrack_causes):
        infos = list(information[identifier])
        requested = any(i.parent is None for i in infos)
        only_conflicts = all(i.requirement.kind == "conflict" for i in infos)
        causes = {c.requirement.key for c in backtrack_causes}
        # conflict-only names last (they resolve to absent), backtrack causes and user requests first
        return (only_conflicts, identifier not in causes, not requested, identifier)

    def find_matches(self, identifier, requirements, incompatibilities):
        reqs = list(requirements[identifier])
        bad = {c for c in incompatibilities[identifier]}
        matches = [
            r for r in self.releases(identifier)
            if r not in bad and self.unusable_reason(r) is None and all(q.allows(r) for q in reqs)
        ]
        matches.sort(key=lambda r: not self.is_locked(r))  # stable: locked first, then newest
        if all(q.kind == "conflict" for q in reqs) and Absent(identifier) not in bad:
            return [Absent(identifier), *matches]
        return matches

    def is_satisfied_by(self, requirement, candidate) -> bool:
        if isinstance(candidate, Absent):
            return requirement.kind == "conflict"
        return self.unusable_reason(candidate) is None and requirement.allows(candidate)

    def get_dependencies(self, candidate):
        if isinstance(candidate, Absent):
            return []
        out = []
        for kind, relations in (("require", candidate.dependencies), ("conflict", candidate.conflicts)):
            for rel in relations:
                try:
                    spec = VersionRange.parse(rel.spec)
                except InvalidSpec as exc:
                    raise ResolutionImpossible([f"{candidate} has an unreadable {kind} range on `{rel.name}`: {exc}"]) from None
                out.append(Requirement(rel.name, spec, kind, parent=candidate))
        return out


def resolve(
    requests: Sequence[PatchRequest],
    source: ReleaseSource,
    target: Target,
    *,
    locked: dict[str, str] | None = None,
    upgrade: Iterable[str] = (),
    include_prerelease: bool = False,
) -> Resolution:
    """Pick one release per needed name; raise `ResolutionImpossible` with a derivation."""
    provider = Provider(source, target, locked=locked, upgrade=upgrade)
    roots = [
        Requirement(r.name, r.range, "require", None, include_prerelease or r.range.mentions_prerelease())
        for r in requests
    ]
    resolver = resolvelib.Resolver(provider, resolvelib.BaseReporter())
    try:
        result = resolver.resolve(roots, max_rounds=MAX_ROUNDS)
    except resolvelib.ResolutionImpossible as exc:
        raise explain(provider, exc.causes) from None
    except resolvelib.ResolutionTooDeep:
        raise ResolutionImpossible(
            [f"the search tried {MAX_ROUNDS} rounds without settling"], "the request is too tangled to resolve",
            hint="pin versions with `NAME@=X.Y.Z` to narrow the search",
        ) from None

    chosen = {k: c for k, c in result.mapping.items() if not isinstance(c, Absent)}
    required_by: dict[str, list[str]] = {}
    for key, crit in result.criteria.items():
        for info in crit.information:
            if info.requirement.kind == "require" and key in chosen:
                who = "you" if info.parent is None else str(info.parent)
                required_by.setdefault(key, []).append(who)

    order: list[Release] = []

    def visit(key: str, trail: tuple[str, ...]) -> None:
        release = chosen.get(key)
        if release is None or release in order or key in trail:
            return
        for rel in release.dependencies:
            visit(canonical_name(rel.name), trail + (key,))
        order.append(release)

    for root in roots:
        visit(root.key, ())
    for key in sorted(chosen):  # anything reached only through cycles
        visit(key, ())

    warnings = [
        f"`{r.name}@{r.version}` is yanked" + (f": {r.yanked_reason}" if r.yanked_reason else "") + "; kept because the lockfile pins it"
        for r in order if r.yanked
    ]
    resolution = Resolution(order, warnings, required_by)
    check_budget(resolution, target)
    return resolution


def check_budget(resolution: Resolution, target: Target) -> None:
    budget = target.token_budget
    if budget is None or resolution.total_tokens <= budget:
        return
    facts = [f"{r} needs {r.n_virtual_tokens} virtual tokens" for r in resolution.releases]
    facts.append(f"together they need {resolution.total_tokens} and the budget is {budget}")
    raise ResolutionImpossible(facts, hint="raise `token_budget` in `patches.toml`, or install fewer patches")


def _versions(items: Sequence[Release]) -> str:
    shown = [r.version for r in items]
    if len(shown) == 1:
        return shown[0]
    return ", ".join(shown[:-1]) + " and " + shown[-1]


def explain(provider: Provider, causes) -> ResolutionImpossible:
    """Turn resolvelib's structured causes into derivation facts."""
    facts: list[str] = []
    by_key: dict[str, list[Requirement]] = {}
    for info in causes:
        by_key.setdefault(info.requirement.key, []).append(info.requirement)
    for key, reqs in by_key.items():
        reqs = list(dict.fromkeys(reqs))
        # the facts about versions first, then who asked: dependents, then you
        statements = [q.statement() for q in reqs if q.parent is not None]
        statements += [q.statement() for q in reqs if q.parent is None]
        display = reqs[0].name
        releases = sorted(provider.releases(key), key=lambda r: r.semver)
        requires = [q for q in reqs if q.kind == "require"]
        in_range = [r for r in releases if all(q.allows(r) for q in requires)]
        if not releases:
            facts.append(f"there is no patch named `{display}`")
        elif not in_range:
            if len(requires) > 1 and all(any(q.allows(r) for r in releases) for q in requires):
                ranges = [f"`{q.range}`" for q in requires]
                joined = " and ".join(ranges) if len(ranges) == 2 else ", ".join(ranges)
                facts.append(f"no version of {display} is in both {joined}" if len(ranges) == 2 else f"no version of {display} is in all of {joined}")
            else:
                verb = "exist" if len(releases) > 1 else "exists"
                facts.append(f"only {display} {_versions(releases)} {verb}")
        else:
            # group the refusals, so facts read "toxicity 1.3.0 and 1.3.1 require ..."
            reasons: dict[str, list[Release]] = {}
            for r in in_range:
                reason = provider.unusable_reason(r)
                if reason is not None:
                    reasons.setdefault(reason, []).append(r)
            for reason, group in reasons.items():
                if len(group) > 1:
                    reason = reason.replace("requires ", "require ", 1).replace("has ", "have ", 1)
                facts.append(f"{display} {_versions(group)} {reason}")
            refused = {r for group in reasons.values() for r in group}
            left = [r for r in in_range if r not in refused]
            rest = [r for r in left if not any(q.kind == "conflict" and not q.allows(r) for q in reqs)]
            if rest:
                facts.append(f"{display} {_versions(rest)} cannot be combined with the other patches chosen")
        facts += statements
    return ResolutionImpossible(facts, hint=_hint(facts))


def _hint(facts: Sequence[str]) -> str | None:
    text = " ".join(facts)
    if "base model" in text or "hidden size" in text:
        return "install a version built for your model, or check `--model` names the model you mean (`patch info NAME` lists each version's base model)"
    if "yanked" in text:
        return "pin a version that is not yanked, e.g. with `NAME@=X.Y.Z`"
    if " is in both " in text or " is in all of " in text:
        return "loosen a range in `patches.toml`, or pick a version of the dependent that accepts yours (`patch info NAME`)"
    if "no patch named" in text:
        return "check the spelling with `patch search`"
    return None
