"""Fingerprints: stable across storage dtype and process, sensitive to one weight, cached."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from llmpatch import fingerprint as fp
from llmpatch.errors import ModelLoadError
from llmpatch.model.memory_fingerprint import fingerprint_in_memory
from tiny_models import save_tiny_model, tiny_model, tiny_tokenizer


@pytest.fixture
def folder(tmp_path):
    return save_tiny_model(tmp_path / "m", "llama")


def test_same_folder_same_fingerprint_without_cache(folder):
    assert fp.fingerprint_folder(folder, use_cache=False) == fp.fingerprint_folder(folder, use_cache=False)


def test_in_memory_equals_on_disk(folder):
    assert fingerprint_in_memory(tiny_model("llama"), tiny_tokenizer()) == fp.fingerprint_folder(folder)


def test_one_changed_weight_changes_weights_only(folder):
    before = fp.fingerprint_folder(folder)
    tensors = load_file(folder / "model.safetensors")
    tensors["model.layers.1.mlp.up_proj.weight"][3, 5] += 1e-3
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    after = fp.fingerprint_folder(folder)
    assert after.weights != before.weights
    assert after.architecture == before.architecture


def test_storage_dtype_does_not_matter_for_the_same_values(tmp_path):
    # BF16 values are exactly representable in F32: same weights, same fingerprints.
    bf16 = save_tiny_model(tmp_path / "bf16", "llama", dtype=torch.bfloat16)
    tensors = {k: v.float() for k, v in load_file(bf16 / "model.safetensors").items()}
    f32 = tmp_path / "f32"
    f32.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (f32 / name).write_bytes((bf16 / name).read_bytes())
    save_file(tensors, f32 / "model.safetensors")
    assert fp.fingerprint_folder(bf16) == fp.fingerprint_folder(f32)


def test_different_seed_different_weights_same_architecture(tmp_path):
    a = fp.fingerprint_folder(save_tiny_model(tmp_path / "a", "llama", seed=0))
    b = fp.fingerprint_folder(save_tiny_model(tmp_path / "b", "llama", seed=1))
    assert a.architecture == b.architecture and a.weights != b.weights


def test_architectures_differ(tmp_path):
    digests = {fp.fingerprint_folder(save_tiny_model(tmp_path / a, a)).architecture for a in ("llama", "gemma3", "gpt2")}
    assert len(digests) == 3


def test_structural_config_change_changes_architecture(folder):
    before = fp.fingerprint_folder(folder)
    config = json.loads((folder / "config.json").read_text())
    config["rms_norm_eps"] = 1e-3
    (folder / "config.json").write_text(json.dumps(config))
    assert fp.fingerprint_folder(folder).architecture != before.architecture


def test_non_structural_config_change_keeps_architecture(folder):
    before = fp.fingerprint_folder(folder)
    config = json.loads((folder / "config.json").read_text())
    config["transformers_version"] = "0.0.1"
    config["_name_or_path"] = "elsewhere"
    (folder / "config.json").write_text(json.dumps(config))
    assert fp.fingerprint_folder(folder) == before


def test_vocabulary_change_changes_architecture(folder):
    before = fp.fingerprint_folder(folder)
    data = json.loads((folder / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    vocab["swapped"] = vocab.pop("w7")
    (folder / "tokenizer.json").write_text(json.dumps(data))
    assert fp.fingerprint_folder(folder).architecture != before.architecture


def test_tied_lm_head_is_ignored_whether_stored_or_not(folder):
    before = fp.fingerprint_folder(folder)
    tensors = load_file(folder / "model.safetensors")
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
    save_file(tensors, folder / "model.safetensors")
    assert fp.fingerprint_folder(folder) == before


def test_second_call_is_served_from_the_cache(folder, monkeypatch):
    first = fp.fingerprint_folder(folder)

    def no_reading(*args, **kwargs):
        raise AssertionError("weights were read again")

    monkeypatch.setattr(fp, "_file_chunks", no_reading)
    assert fp.fingerprint_folder(folder) == first
    with pytest.raises(AssertionError, match="read again"):
        fp.fingerprint_folder(folder, use_cache=False)


def test_cache_is_invalidated_when_the_file_changes(folder):
    first = fp.fingerprint_folder(folder)
    tensors = load_file(folder / "model.safetensors")
    tensors["model.norm.weight"][0] = 2.0
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    assert fp.fingerprint_folder(folder).weights != first.weights


def test_pickled_weights_are_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ModelLoadError, match="only pickled weights .* never loads pickle"):
        fp.fingerprint_folder(tmp_path)


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="has no config.json"):
        fp.fingerprint_folder(tmp_path)
