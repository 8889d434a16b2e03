"""The command surface: `patch registry add/list/remove`, `patch run`, usage errors, and that
every client command is registered with `patch`."""

from __future__ import annotations

import hashlib

import pytest

from llmpatch.cli import COMMANDS


@pytest.fixture
def registry_group():
    """`patch registry` is the registry's group; the client attaches add/list/remove to it."""
    from llmpatch.client.cli import add_registry_commands
    from llmpatch.registry.cli import registry

    add_registry_commands(registry)
    return registry


def test_client_commands_are_registered():
    from llmpatch.client import cli

    for name in ("install", "remove", "upgrade", "lock", "sync", "list", "verify", "why", "search", "info",
                 "publish", "yank", "run", "push"):
        module, attribute = COMMANDS[name].split(":")
        assert module == "llmpatch.client.cli" and getattr(cli, attribute).name == name


def test_registry_add_pins_the_root_and_refuses_a_wrong_digest(registry, registry_group, patch, tmp_path):
    root = registry.http.get(f"{registry.url}/tuf/metadata/1.root.json").content
    digest = hashlib.sha256(root).hexdigest()
    wrong = patch("registry", "add", "mirror", registry.url, "--root-sha256", "0" * 64)
    assert wrong.code == 4
    assert wrong.err.startswith(f"error: the root metadata has sha256 {digest[:16]}…, not the pinned {'0' * 16}…")
    ok = patch("registry", "add", "mirror", registry.url, "--root-sha256", digest, "--json")
    assert ok.code == 0, ok.err
    assert ok.json == {"name": "mirror", "url": registry.url, "root_sha256": digest}
    listed = patch("registry", "list", "--json")
    assert sorted(r["name"] for r in listed.json["registries"]) == ["default", "mirror"]
    not_root = tmp_path / "root.json"
    not_root.write_text('{"signed": {}, "signatures": []}')
    bad = patch("registry", "add", "evil", registry.url, "--root", not_root)
    assert bad.code == 4 and "error: not a valid self-signed TUF root" in bad.err
    assert patch("registry", "remove", "mirror").code == 0
    assert [r["name"] for r in patch("registry", "list", "--json").json["registries"]] == ["default"]


def test_install_from_a_named_registry_that_does_not_exist(patch, model_dir):
    result = patch("install", "toxicity", "--model", model_dir, "--project", ".", "--registry", "nope")
    assert result.code == 1
    assert result.err.startswith("error: no registry is configured")


def test_bad_spec_is_a_usage_error(patch, model_dir):
    result = patch("install", "toxicity@", "--model", model_dir, "--project", ".")
    assert result.code == 2
    assert "error: `toxicity@` has `@` but no version range" in result.err


def test_commands_outside_a_project_without_model(patch):
    result = patch("list")
    assert result.code == 1
    assert "error: no `patches.toml` here or above, and no `--model` given" in result.err


def test_run_uses_the_installed_set(registry, patch, model_dir):
    registry.publish("toxicity", "1.0.0")
    assert patch("install", "toxicity", "--model", model_dir, "--project", ".").code == 0
    result = patch("run", "w3 w4 w5", "--no-chat", "--max-new-tokens", "4", "--compare", "--json")
    assert result.code == 0, result.err
    assert result.json["patches"] == ["toxicity@1.0.0"]
    assert isinstance(result.json["patched"], str) and isinstance(result.json["unpatched"], str)


def test_a_kv_patch_installs_and_runs_composed_with_an_input_patch(registry, patch, model_dir):
    registry.publish("toxicity", "2.0.0", kv=True, seed=3)
    registry.publish("harmfulness", "1.0.0")
    assert patch("install", "toxicity@2", "harmfulness", "--model", model_dir, "--project", ".").code == 0
    listed = patch("list", "--json")
    assert sorted((p["name"], p["version"]) for p in listed.json["patches"]) == [("harmfulness", "1.0.0"), ("toxicity", "2.0.0")]
    result = patch("run", "w3 w4 w5", "--no-chat", "--max-new-tokens", "4", "--compare", "--json")
    assert result.code == 0, result.err
    assert sorted(result.json["patches"]) == ["harmfulness@1.0.0", "toxicity@2.0.0"]


def test_run_refuses_a_tampered_install(registry, patch, model_dir):
    import tomllib

    from llmpatch.client._cache import Cache

    registry.publish("toxicity", "1.0.0")
    assert patch("install", "toxicity", "--model", model_dir, "--project", ".").code == 0
    sha = tomllib.loads((patch.project / "patches.lock").read_text())["patch"][0]["sha256"]
    blob = Cache().blob_path(sha)
    blob.write_bytes(blob.read_bytes()[:-4] + b"\0\0\0\0")
    result = patch("run", "w3", "--no-chat")
    assert result.code == 4
    assert "error: `toxicity@1.0.0` failed verification: cached blob" in result.err


def test_publish_and_yank_through_the_cli(registry, patch, tmp_path):
    from llmpatch.patchfile import read_patch_bytes
    from llmpatch.signing import public_key_to_pem, sign_patch

    data = registry.make("newpatch", "0.1.0")
    file = tmp_path / "newpatch.safetensors"
    file.write_bytes(data)
    file.with_name(file.name + ".sig").write_text(sign_patch(read_patch_bytes(data), registry.key).to_json())
    key = tmp_path / "key.pem"
    key.write_bytes(public_key_to_pem(registry.key.public_key()))
    no_token = patch("publish", file, "--public-key", key)
    assert no_token.code == 1 and "unauthorized" in no_token.err
    published = patch("publish", file, "--public-key", key, "--token", registry.token, "--json")
    assert published.code == 0, published.err
    assert published.json["created"] is True and published.json["version"] == "0.1.0"
    yanked = patch("yank", "newpatch@0.1.0", "--reason", "bad eval", "--token", registry.token)
    assert yanked.code == 0, yanked.err
    info = patch("info", "newpatch", "--json")
    assert [(v["version"], v["yanked"], v["yank_reason"]) for v in info.json["versions"]] == [("0.1.0", True, "bad eval")]
