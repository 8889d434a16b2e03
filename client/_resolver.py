"""Choosing a set of patch versions: resolvelib does the search, this module says what fits.

A release fits when its version is in every requested range, it was built for the model's
fingerprint and hidden size, it is not yanked (unless the lockfile already pins it: then a
warning with the reason), and no chosen patch conflicts with it. Conflicts are modelled as
requirements that an *absent* patch also satisfies, so a conflict never pulls a patch in.

The total virtual-token budget is part of resolution: when the newest set is over it,
`_fit_budget` searches older versions, in a fixed preference order and within a fixed bound,
for the most-preferred set that fits (the rule is in its docstring and in docs/specs.md).

When nothing fits, `ResolutionImpossible` carries the facts and renders them as a derivation:
"Because toxicity 1.3.0 requires base model fingerprint … and your model is …, we can
conclude that your requirements are unsatisfiable".
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import resolvelib

from ..errors import LLMPatchError
from ..fingerprint import Fingerprint, short
from ..manifest import canonical_name
from ._sources import Release, ReleaseSource
from ._specs import InvalidSpec, PatchRequest, VersionRange

MAX_ROUNDS = 2000
# Bounds of the token-budget search (`_fit_budget`): resolver runs, and pin combinations
# looked at (most are ruled out by their size alone, without a run).
BUDGET_MAX_RUNS = 200
BUDGET_MAX_COMBINATIONS = 10_000


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
        self.pins: dict[str, Release] = {}  # key -> the only version allowed (budget search); never pulls a patch in
        self._releases: dict[str, list[Release]] = {}
        self.warnings: list[str] = []

    def releases(self, key: str) -> list[Release]:
        if key not in self._releases:
            found = self.source.releases(key)
            self._releases[key] = sorted(found, key=lambda r: r.semver, reverse=True)
        return self._releases[key]

    def preferred(self, key: str, requirements: Iterable[Requirement] = ()) -> list[Release]:
        """The usable releases every requirement allows, most preferred first: the locked
        version, then newest first. Both the resolver and the budget search go by this order."""
        reqs = list(requirements)
        matches = [r for r in self.releases(key) if self.unusable_reason(r) is None and all(q.allows(r) for q in reqs)]
        matches.sort(key=lambda r: not self.is_locked(r))  # stable: locked first, then newest
        return matches

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
        matches = [r for r in self.preferred(identifier, reqs) if r not in bad]
        pin = self.pins.get(identifier)
        if pin is not None:
            matches = [r for r in matches if r == pin]
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
    """Pick one release per needed name; raise `ResolutionImpossible` with a derivation.

    The most-preferred set (locked versions, then newest) is taken when it fits the token
    budget; otherwise `_fit_budget` looks for the most-preferred set that does."""
    provider = Provider(source, target, locked=locked, upgrade=upgrade)
    roots = [
        Requirement(r.name, r.range, "require", None, include_prerelease or r.range.mentions_prerelease())
        for r in requests
    ]
    try:
        resolution = _run(provider, roots)
    except resolvelib.ResolutionImpossible as exc:
        raise explain(provider, exc.causes) from None
    except resolvelib.ResolutionTooDeep:
        raise ResolutionImpossible(
            [f"the search tried {MAX_ROUNDS} rounds without settling"], "the request is too tangled to resolve",
            hint="pin versions with `NAME@=X.Y.Z` to narrow the search",
        ) from None
    budget = target.token_budget
    if budget is None or resolution.total_tokens <= budget:
        return resolution
    return _fit_budget(provider, roots, resolution, budget)


def _run(provider: Provider, roots: list[Requirement]) -> Resolution:
    """One resolvelib run with the provider as it is (pins included); resolvelib's errors pass through."""
    result = resolvelib.Resolver(provider, resolvelib.BaseReporter()).resolve(roots, max_rounds=MAX_ROUNDS)
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
    return Resolution(order, warnings, required_by)


def _fit_budget(provider: Provider, roots: list[Requirement], newest: Resolution, budget: int) -> Resolution:
    """The most-preferred set within `budget`, when the most-preferred set overall (`newest`) is not.

    Each patch's candidates are ranked in the provider's order (rank 0: the locked version or
    the newest; rank r: r steps further down that list). A *combination* pins some patches to
    a rank; unpinned patches (rank 0) are left to the resolver, which also brings in
    dependencies and enforces ranges and conflicts. Sets are preferred, in order, by
      1. fewer patches moved off rank 0 (keep as many patches at their newest as possible),
      2. fewer steps back in total,
      3. earlier patches newer: `[patches]` order first, then dependencies as they are met,
         so later patches step back first.
    Combinations are visited best-first in that order (a heap; each one's successors step one
    patch back once more). A resolved set ranks no better than the combination that produced
    it, so the first fitting set found is kept until the next combination cannot beat it.
    A combination whose requested patches alone exceed the budget (pinned sizes, else the
    smallest allowed) is skipped without a run. Bounded by `BUDGET_MAX_RUNS` resolver runs
    and `BUDGET_MAX_COMBINATIONS` combinations: past either, the best set found is returned,
    or an error says the search gave up.
    """
    root_keys = list(dict.fromkeys(q.key for q in roots))
    keys: list[str] = []  # every patch the search may move, in preference order (index = position in a combination)
    choices: dict[str, list[Release]] = {}  # key -> candidates, rank = index

    def learn(key: str, chosen: Release | None) -> bool:
        """Give `key` a place in combinations; True if it is new."""
        if key in choices:
            return False
        if key in root_keys:
            options = provider.preferred(key, [q for q in roots if q.key == key])
        else:  # a dependency: any usable version (its dependents' ranges are the resolver's job), no pre-releases unless chosen
            options = [r for r in provider.preferred(key) if not r.semver.prerelease or r == chosen]
        if chosen is not None and chosen not in options:
            options.insert(0, chosen)
        keys.append(key)
        choices[key] = options
        return True

    for key in root_keys:
        learn(key, next((r for r in newest.releases if r.key == key), None))
    for release in newest.releases:
        learn(release.key, release)

    def ranks_of(resolution: Resolution) -> tuple[int, ...]:
        at = {r.key: r for r in resolution.releases}
        # a patch the set does not include counts as not moved; one outside its list as moved furthest
        return _trim(tuple(
            0 if k not in at else choices[k].index(at[k]) if at[k] in choices[k] else len(choices[k]) for k in keys
        ))

    def smallest(key: str) -> Release:  # the most preferred among the smallest
        return min(choices[key], key=lambda r: r.n_virtual_tokens)

    def size_facts(of: list[str]) -> list[str]:  # the minimal sizes the search considered
        return [
            f"{r} needs {r.n_virtual_tokens} virtual tokens" if len(choices[k]) == 1
            else f"the smallest allowed version of {r.name}, {r.version}, needs {r.n_virtual_tokens} virtual tokens"
            for k, r in ((k, smallest(k)) for k in of)
        ]

    # every requested patch is in every set, so their smallest sizes bound any set from below
    # (a dependency may be absent from some sets: it counts 0)
    least = {k: smallest(k).n_virtual_tokens for k in root_keys}
    floor = sum(least.values())
    hint = "raise `token_budget` in `patches.toml`, or install fewer patches"
    if floor > budget:
        raise ResolutionImpossible(
            size_facts(root_keys) + [f"together they need at least {floor} and the budget is {budget}"],
            "no combination of allowed versions fits the token budget", hint=hint,
        )

    best: tuple[tuple, Resolution] | None = None
    heap = [(_priority(()), ())]
    seen = {()}
    popped: list[tuple[int, ...]] = []
    runs = 0
    gave_up = False

    def push(combination: tuple[int, ...]) -> None:
        combination = _trim(combination)
        if combination not in seen:
            seen.add(combination)
            heapq.heappush(heap, (_priority(combination), combination))

    def step_back(combination: tuple[int, ...], i: int) -> None:
        padded = combination + (0,) * (len(keys) - len(combination))
        if padded[i] + 1 < len(choices[keys[i]]):
            push(padded[:i] + (padded[i] + 1,) + padded[i + 1:])

    while heap:
        priority, combination = heapq.heappop(heap)
        if best is not None and priority >= best[0]:
            break  # no combination left can give a more-preferred set
        if len(popped) >= BUDGET_MAX_COMBINATIONS or runs >= BUDGET_MAX_RUNS:
            gave_up = True
            break
        popped.append(combination)
        for i in range(len(keys)):
            step_back(combination, i)
        if not combination:
            continue  # the newest set itself: known not to fit
        pins = {keys[i]: choices[keys[i]][r] for i, r in enumerate(combination) if r}
        if sum(pins[k].n_virtual_tokens if k in pins else least[k] for k in root_keys) > budget:
            continue  # too big whatever the resolver adds
        runs += 1
        provider.pins = pins
        try:
            found = _run(provider, roots)
        except (resolvelib.ResolutionError, ResolutionImpossible):
            continue  # these pins do not combine (ranges, conflicts, model)
        finally:
            provider.pins = {}
        for release in found.releases:
            if learn(release.key, release):  # a dependency only older versions bring: it may step back too
                for earlier in popped:
                    step_back(earlier, len(keys) - 1)
        if found.total_tokens <= budget:
            rank = _priority(ranks_of(found))
            if best is None or rank < best[0]:
                best = (rank, found)

    if best is not None:
        resolution = best[1]
        before = {r.key: r for r in newest.releases}
        for r in resolution.releases:
            old = before.get(r.key)
            if old is not None and old.version != r.version:
                resolution.warnings.append(
                    f"chose `{r.name}@{r.version}` over {old.version} to fit the token budget "
                    f"({resolution.total_tokens} of {budget} virtual tokens)"
                )
        return resolution
    if gave_up:
        raise ResolutionImpossible(
            [f"the newest allowed set needs {newest.total_tokens} virtual tokens and the budget is {budget}",
             f"none of the {runs} combinations of older versions tried fits"],
            f"no set within the token budget was found before the search stopped (at most {BUDGET_MAX_RUNS} tries)",
            hint="pin versions with `NAME@=X.Y.Z` to narrow the search, raise `token_budget` in `patches.toml`, or install fewer patches",
        )
    raise ResolutionImpossible(
        size_facts(keys) + [f"every combination of allowed versions that satisfies the ranges and conflicts needs more than the budget of {budget}"],
        "no combination of allowed versions fits the token budget", hint=hint,
    )


def _trim(combination: tuple[int, ...]) -> tuple[int, ...]:
    """Trailing zeros dropped: one spelling per combination, whatever the number of known keys."""
    end = len(combination)
    while end and combination[end - 1] == 0:
        end -= 1
    return combination[:end]


def _priority(combination: tuple[int, ...]) -> tuple:
    """Smaller is preferred: patches moved, then steps back, then earlier patches newer."""
    return (sum(1 for r in combination if r), sum(combination), combination)


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
