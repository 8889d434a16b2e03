"""Resolver scenarios as data: `cases/*.json` each hold an index, a request and either the
resolved set (composition order) or the exact derivation the user sees."""

import json
from pathlib import Path

import pytest

from llmpatch.client import MemorySource, PatchRequest, ResolutionImpossible, Target, release_from_dict, resolve
from llmpatch.fingerprint import Fingerprint

CASES = sorted(Path(__file__).parent.joinpath("cases").glob("*.json"))


def fp(letter: str) -> str:
    """Case files name fingerprints by a letter; `A` is `sha256:aaaa…`."""
    return "sha256:" + letter.lower() * 64


def load(path: Path) -> dict:
    case = json.loads(path.read_text())
    source = MemorySource()
    for item in case["index"]:
        item = dict(item, architecture=fp(item["architecture"]), weights=fp(item.get("weights", item["architecture"])))
        source.add(release_from_dict(item))
    model = case["model"]
    target = Target(Fingerprint(fp(model["architecture"]), fp(model["weights"])), case.get("hidden_size"), case.get("budget"))
    return case, source, target


def run(case, source, target):
    return resolve(
        [PatchRequest.parse(r) for r in case["request"]], source, target,
        locked=case.get("locked"), upgrade=case.get("upgrade", ()),
    )


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case(path):
    case, source, target = load(path)
    if "resolved" in case:
        resolution = run(case, source, target)
        assert [str(r) for r in resolution.releases] == case["resolved"]
        assert resolution.warnings == case.get("warnings", [])
    else:
        with pytest.raises(ResolutionImpossible) as info:
            run(case, source, target)
        assert str(info.value) == "\n".join(case["error"])
        assert info.value.exit_code == 5
        if "hint" in case:
            assert info.value.hint == case["hint"]


def test_every_case_states_an_outcome():
    for path in CASES:
        case = json.loads(path.read_text())
        assert ("resolved" in case) != ("error" in case), path.name


def _heavy_dependency_source(patches: int, versions: int) -> MemorySource:
    """`patches` small patches with `versions` versions each, every one needing a 100-token
    `heavy`: no set fits a budget under 100, but the size floor cannot tell, so only the
    search's bound ends it."""
    source = MemorySource()
    source.add(release_from_dict({"name": "heavy", "version": "1.0.0", "architecture": fp("A"), "n_virtual_tokens": 100}))
    for i in range(patches):
        for v in range(versions):
            source.add(release_from_dict({"name": f"p{i}", "version": f"1.{v}.0", "architecture": fp("A"),
                                          "n_virtual_tokens": 1, "dependencies": ["heavy"]}))
    return source


@pytest.mark.parametrize("max_runs", [20, None])
def test_budget_search_gives_up_after_its_bound(monkeypatch, max_runs):
    import time

    from llmpatch.client import _resolver

    if max_runs is not None:
        monkeypatch.setattr(_resolver, "BUDGET_MAX_RUNS", max_runs)
    bound = _resolver.BUDGET_MAX_RUNS
    target = Target(Fingerprint(fp("A"), fp("A")), None, 50)
    started = time.monotonic()
    with pytest.raises(ResolutionImpossible) as info:
        resolve([PatchRequest.parse(f"p{i}") for i in range(4)], _heavy_dependency_source(4, 30), target)
    assert time.monotonic() - started < 30
    assert str(info.value) == "\n".join([
        "no solution found when resolving patches:",
        "  Because the newest allowed set needs 104 virtual tokens and the budget is 50,",
        f"  and none of the {bound} combinations of older versions tried fits,",
        f"  we can conclude that no set within the token budget was found before the search stopped (at most {bound} tries)",
    ])
    assert info.value.hint.startswith("pin versions with `NAME@=X.Y.Z` to narrow the search")


def test_budget_search_stops_at_the_combination_bound(monkeypatch):
    """Combinations ruled out by size alone cost no resolver run, but still count."""
    from llmpatch.client import _resolver

    monkeypatch.setattr(_resolver, "BUDGET_MAX_COMBINATIONS", 5)
    target = Target(Fingerprint(fp("A"), fp("A")), None, 50)
    with pytest.raises(ResolutionImpossible) as info:
        resolve([PatchRequest.parse(f"p{i}") for i in range(4)], _heavy_dependency_source(4, 30), target)
    assert "  and none of the 4 combinations of older versions tried fits," in str(info.value)
