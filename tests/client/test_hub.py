"""`patch push --hub` and `patch install hf://…` against a fake Hub at the HTTP boundary, and
PEFT loading the adapter folder we upload."""

from __future__ import annotations

import tomllib

import pytest

from .fake_hub import FakeHub
from llmpatch.keystore import KeyStore
from llmpatch.patchfile import read_patch_bytes
from llmpatch.signing import sign_patch


@pytest.fixture
def hub(monkeypatch):
    with FakeHub() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.setenv("HF_TOKEN", "hf_fake")
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        yield fake


@pytest.fixture
def signed_file(tmp_path, fingerprints):
    """A patch for the tiny `main` model, signed by a key in the local key store."""
    import numpy as np

    from llmpatch.manifest import BaseModelRef, Manifest
    from llmpatch.patchfile import encode_patch

    store = KeyStore()
    info = store.generate("test publisher")
    fp = fingerprints["main"]
    manifest = Manifest(name="toxicity", version="1.5.0", base_model=BaseModelRef(fp.architecture, fp.weights, "tiny"),
                        n_virtual_tokens=4, hidden_size=32)
    data = encode_patch(manifest, np.random.default_rng(0).standard_normal((4, 32)).astype(np.float32))
    path = tmp_path / "toxicity-1.5.0.safetensors"
    path.write_bytes(data)
    path.with_name(path.name + ".sig").write_text(sign_patch(read_patch_bytes(data), store.private_key(info.key_id)).to_json())
    return path


def test_push_then_install_from_the_hub(hub, patch, signed_file, model_dir):
    pushed = patch("push", signed_file, "--hub", "acme/toxicity", "--json")
    assert pushed.code == 0, pushed.err
    commit = pushed.json["commit"]
    files = sorted(hub.repos["acme/toxicity"][-1][1])
    assert files == ["README.md", "adapter_config.json", "adapter_model.safetensors",
                     "llm-patch/patch.safetensors", "llm-patch/patch.safetensors.sig"]
    result = patch("install", "hf://acme/toxicity", "--model", model_dir, "--project", ".")
    assert result.code == 0, result.err
    lock = tomllib.loads((patch.project / "patches.lock").read_text())
    assert [(p["name"], p["version"], p["source"]) for p in lock["patch"]] == [("toxicity", "1.5.0", f"hf://acme/toxicity@{commit}")]
    project = tomllib.loads((patch.project / "patches.toml").read_text())
    assert project["patches"] == {"toxicity": {"hf": "acme/toxicity", "revision": commit}}
    assert patch("verify").code == 0
    assert patch("sync", "--offline").code == 0


def test_hub_patch_signed_by_an_untrusted_key_is_refused(hub, patch, signed_file, model_dir):
    assert patch("push", signed_file, "--hub", "acme/toxicity").code == 0
    store = KeyStore()
    for info in store.list():  # forget the publisher: its signature no longer counts
        (store.root / "trusted" / f"{info.key_id}.pem").unlink()
    result = patch("install", "hf://acme/toxicity@main", "--model", model_dir, "--project", ".")
    assert result.code == 4
    assert "which is not trusted here" in result.err
    assert not (patch.project / "patches.lock").exists()


def test_hub_patch_for_another_model_is_refused(hub, patch, signed_file, model_dirs):
    assert patch("push", signed_file, "--hub", "acme/toxicity").code == 0
    result = patch("install", "hf://acme/toxicity", "--model", model_dirs["other"], "--project", ".")
    assert result.code == 4
    assert "error: `toxicity@1.5.0` was built for base model weights `" in result.err


def test_unknown_hub_repo(hub, patch, model_dir):
    result = patch("install", "hf://acme/nothing", "--model", model_dir, "--project", ".")
    assert result.code == 1
    assert "error: no repo or revision `acme/nothing@main` on the Hub" in result.err


def test_peft_loads_the_pushed_adapter(hub, patch, signed_file, tmp_path):
    """The folder we upload is what PEFT expects: load it from the fake Hub's files onto a tiny Llama."""
    import torch
    from peft import PeftModel
    from tiny_models import tiny_model

    assert patch("push", signed_file, "--hub", "acme/toxicity").code == 0
    folder = tmp_path / "adapter"
    folder.mkdir()
    for name, content in hub.repos["acme/toxicity"][-1][1].items():
        if "/" not in name:
            (folder / name).write_bytes(content)
    peft_model = PeftModel.from_pretrained(tiny_model("llama"), folder)
    loaded = peft_model.prompt_encoder["default"].embedding.weight.detach()
    expected = torch.from_numpy(read_patch_bytes(signed_file.read_bytes()).prefix.copy())
    assert torch.equal(loaded, expected)
