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
