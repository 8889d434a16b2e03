"""The committed example patches are valid patch files, and the evaluation and training JSON
beside each one describe that file, not an earlier one with the same name."""

import json
from pathlib import Path

import pytest

from llmpatch.patchfile import read_patch
from llmpatch.trainer.examples import EXAMPLES

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_each_example_file_is_what_its_results_describe(name):
    patch = read_patch(EXAMPLES_DIR / f"{name}.safetensors")
    spec = EXAMPLES[name]
    assert patch.manifest.version == spec["version"] and patch.manifest.placement == spec.get("placement", "input")
    report = json.loads((EXAMPLES_DIR / f"{name}.eval.json").read_text())
    for domain in spec["domains"]:
        info = report["domains"][domain]["variants"]["patch"]["info"]
        assert info["sha256"] == [patch.sha256], f"{name}.eval.json evaluated another file than {name}.safetensors"
        assert info["patches"] == [f"{name}@{spec['version']}"]
    train_report = json.loads((EXAMPLES_DIR / f"{name}.train.json").read_text())
    assert train_report["best_step"] == patch.manifest.provenance["best_step"]
