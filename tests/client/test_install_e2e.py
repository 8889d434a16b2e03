"""`patch install` and friends against the real registry server on 127.0.0.1: specs, locks,
upgrades, yanks, revoked keys, wrong models, tampering on the wire and on disk, offline.

Attack tests assert the exit code and message, then that local state is unchanged."""

from __future__ import annotations

import hashlib
import tomllib

import pytest

from llmpatch.client._cache import Cache
from llmpatch.signing import key_id


def lock_of(patch) -> dict:
    return tomllib.loads((patch.project / "patches.lock").read_text())


def installed(patch) -> list[str]:
    return [f"{p['name']} {p['version']}" for p in lock_of(patch).get("patch", [])]


def state(patch) -> dict:
    """What a refused command must leave as it was."""
    return {name: (patch.project / name).read_bytes() if (patch.project / name).exists() else None
            for name in ("patches.toml", "patches.lock")}


@pytest.fixture
def toxicity(registry):
    for version, seed in (("1.0.0", 0), ("1.2.0", 1), ("1.2.1", 2), ("1.3.0", 3), ("1.4.0-rc.1", 4), ("2.0.0", 5)):
        registry.publish("toxicity", version, seed=seed)
    return registry


@pytest.mark.parametrize("spec, expected", [
    ("toxicity@1.2", "toxicity 1.2.1"),
    ("toxicity@^1.2", "toxicity 1.3.0"),
    ("toxicity@~1.2.0", "toxicity 1.2.1"),
    ("toxicity@>=1.0,<1.3", "toxicity 1.2.1"),
    ("toxicity@=1.2.0", "toxicity 1.2.0"),
    ("toxicity", "toxicity 2.0.0"),
    ("toxicity@^1.4.0-rc.1", "toxicity 1.4.0-rc.1"),
])
def test_install_each_kind_of_spec(toxicity, patch, model_dir, spec, expected):
    result = patch("install", spec, "--model", model_dir, "--project", ".")
    assert result.code == 0, result.err
    assert installed(patch) == [expected]
    assert f"+ {expected}" in result.out


def test_lockfile_records_digests_signer_fingerprint_and_metadata_versions(toxicity, patch, model_dir, fingerprints):
    published = toxicity.publish("toxicity", "1.2.1", seed=2)  # identical re-upload: a no-op returning the record
    assert patch("install", "toxicity@1.2", "--model", model_dir, "--project", ".").code == 0
    lock = lock_of(patch)
    entry = lock["patch"][0]
    assert entry["sha256"] == published["sha256"] and entry["size"] == published["size"]
    assert entry["signature_sha256"] == published["signature_sha256"]
    assert entry["key_id"] == key_id(toxicity.key.public_key())
    assert entry["source"] == "default" and entry["required_by"] == ["you"]
    assert lock["model"]["architecture"] == fingerprints["main"].architecture
    assert lock["model"]["weights"] == fingerprints["main"].weights
    registry_state = lock["registry"]["default"]
    assert registry_state["url"] == toxicity.url
    assert registry_state["root_version"] == 1 and registry_state["targets_version"] >= 6
    assert tomllib.loads((patch.project / "patches.toml").read_text())["patches"] == {"toxicity": "1.2"}
    cached = Cache().get(entry["sha256"])
    assert hashlib.sha256(cached).hexdigest() == entry["sha256"]


def test_json_output(toxicity, patch, model_dir):
    result = patch("install", "toxicity@1.2", "--model", model_dir, "--project", ".", "--json")
    assert result.code == 0
    assert result.json["changes"] == [{"name": "toxicity", "from": None, "to": "1.2.1", "action": "added"}]
    assert result.json["downloaded"] == 2  # file and signature
    listed = patch("list", "--json")
    assert [p["version"] for p in listed.json["patches"]] == ["1.2.1"]


def test_dependencies_install_first_and_why_explains(registry, patch, model_dir):
    registry.publish("base-safety", "1.0.0")
    registry.publish("base-safety", "1.1.0", seed=1)
    registry.publish("toxicity", "1.2.0", seed=2)
    registry.publish("harmfulness", "1.0.0", seed=3, dependencies=["base-safety@^1"])
    result = patch("install", "toxicity@1.2", "harmfulness@^1", "--model", model_dir, "--project", ".")
    assert result.code == 0, result.err
    assert installed(patch) == ["toxicity 1.2.0", "base-safety 1.1.0", "harmfulness 1.0.0"]
    why = patch("why", "base-safety")
    assert why.out.strip() == "base-safety 1.1.0 <- harmfulness 1.0.0 <- you asked for it"
    (patch.project / "patches.toml").write_text((patch.project / "patches.toml").read_text() + 'base-safety = "^1"\n')
    assert patch("lock").code == 0
    still_needed = patch("remove", "base-safety")
    assert still_needed.code == 0
    assert "warning: `base-safety` stays installed: harmfulness 1.0.0 depends on it" in still_needed.err
    assert installed(patch) == ["toxicity 1.2.0", "base-safety 1.1.0", "harmfulness 1.0.0"]
    # removing the dependent drops the dependency nothing else needs, without the network
    registry.http.close()
    removed = patch("remove", "harmfulness")
    assert removed.code == 0, removed.err
    assert installed(patch) == ["toxicity 1.2.0"]


def test_install_keeps_locked_versions_and_upgrade_moves_them(registry, patch, model_dir):
    registry.publish("toxicity", "1.2.0")
    registry.publish("harmfulness", "1.0.0", seed=1)
    assert patch("install", "toxicity@^1", "--model", model_dir, "--project", ".").code == 0
    registry.publish("toxicity", "1.3.0", seed=2)
    assert patch("install", "harmfulness").code == 0
    assert installed(patch) == ["toxicity 1.2.0", "harmfulness 1.0.0"]  # not silently upgraded
    result = patch("upgrade")
    assert result.code == 0, result.err
    assert "~ toxicity 1.2.0 -> 1.3.0" in result.out
    assert installed(patch) == ["toxicity 1.3.0", "harmfulness 1.0.0"]


def test_wrong_model_is_refused_with_a_derivation(registry, patch, model_dirs, fingerprints):
    registry.publish("toxicity", "1.3.0", model="other")
    result = patch("install", "toxicity@1.3", "--model", model_dirs["main"], "--project", ".")
    assert result.code == 5
    want, have = fingerprints["other"].weights[:19], fingerprints["main"].weights[:19]
    assert result.err.splitlines()[:5] == [
        "error: no solution found when resolving patches:",
        f"  Because toxicity 1.3.0 requires base model weights `{want}` and your model's are `{have}`,",
        "  and you require `toxicity@1.3`,",
        "  we can conclude that your requirements are unsatisfiable",
        "",
    ]
    assert state(patch) == {"patches.toml": None, "patches.lock": None}


def test_yanked_version_is_skipped_but_kept_when_locked(toxicity, patch, model_dir, tmp_path):
    assert patch("install", "toxicity@1.2", "--model", model_dir, "--project", ".").code == 0
    toxicity.post("/api/v1/patches/toxicity/versions/1.2.1/yank", {"reason": "leaks the system prompt"})
    kept = patch("sync")
    assert kept.code == 0, kept.err
    assert installed(patch) == ["toxicity 1.2.1"]
    assert "warning: `toxicity@1.2.1` is yanked: leaks the system prompt; kept because the lockfile pins it" in kept.err
    fresh = patch("install", "toxicity@1.2", "--model", model_dir, "--project", tmp_path / "fresh")
    assert fresh.code == 0
    assert "+ toxicity 1.2.0" in fresh.out


def test_deprecated_patch_installs_with_a_warning(toxicity, patch, model_dir):
    toxicity.post("/api/v1/patches/toxicity/deprecate", {"message": "use `civility` instead"})
    result = patch("install", "toxicity@1.2", "--model", model_dir, "--project", ".")
    assert result.code == 0, result.err
    assert "warning: `toxicity` is deprecated: use `civility` instead" in result.err


def test_lock_and_frozen_sync(toxicity, patch, model_dir):
    (patch.project / "patches.toml").write_text(f'[project]\nmodel = "{model_dir}"\n\n[patches]\ntoxicity = "~1.2"\n')
    assert patch("lock").code == 0
    assert installed(patch) == ["toxicity 1.2.1"]
    frozen = patch("sync", "--frozen")
    assert frozen.code == 0, frozen.err
    (patch.project / "patches.toml").write_text(f'[project]\nmodel = "{model_dir}"\n\n[patches]\ntoxicity = "^1"\n')
    before = state(patch)
    stale = patch("sync", "--frozen")
    assert stale.code == 1
    assert "error: `" in stale.err and "patches.lock` does not match `" in stale.err
    assert state(patch) == before


def test_tampered_cache_blob_is_caught_by_verify_and_repaired_by_sync(toxicity, patch, model_dir):
    assert patch("install", "toxicity@1.2", "--model", model_dir, "--project", ".").code == 0
    sha = lock_of(patch)["patch"][0]["sha256"]
    blob = Cache().blob_path(sha)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0x01
    blob.write_bytes(bytes(data))
    result = patch("verify")
    assert result.code == 4
    assert "FAILED toxicity 1.2.1: cached blob" in result.out
    assert "error: 1 installed patch(es) failed verification: `toxicity@1.2.1`" in result.err
    assert not blob.exists()  # a blob that fails its digest is dropped, never used
    run = patch("sync")
    assert run.code == 0, run.err
    assert patch("verify").code == 0


class Tamper:
    """An httpx transport in the middle: changes response bodies whose URL path ends with `match`."""

    def __init__(self, match: str, change):
        import httpx

        self.inner = httpx.HTTPTransport()
        self.match, self.change = match, change

    def handle_request(self, request):
        import httpx

        response = self.inner.handle_request(request)
        if request.url.path.endswith(self.match):
            body = response.read()
            return httpx.Response(response.status_code, headers=response.headers, content=self.change(body))
        return response

    def close(self):
        self.inner.close()


def _installer(model_dir, project_dir, transport=None):
    import httpx

    from llmpatch.client._install import Installer
    from llmpatch.client._project import open_project
    from llmpatch.client._registry import RegistryClient, get_registry

    project = open_project(project_dir, str(model_dir), create=True)
    client = RegistryClient(get_registry(None), httpx.Client(transport=transport) if transport else None)
    return Installer(project, registry=client)


def _flip_last(body: bytes) -> bytes:
    return body[:-1] + bytes([body[-1] ^ 1])


def test_tampered_patch_file_in_transit_is_refused_and_nothing_changes(toxicity, patch, model_dir):
    from llmpatch.client import PatchRequest
    from llmpatch.client._registry import MetadataVerificationError

    assert patch("install", "toxicity@=1.0.0", "--model", model_dir, "--project", ".").code == 0
    before, blobs = state(patch), sorted((Cache().root / "blobs").rglob("*"))
    installer = _installer(model_dir, patch.project, Tamper("toxicity-1.2.1.safetensors", _flip_last))
    with pytest.raises(MetadataVerificationError) as info:
        installer.install([PatchRequest.parse("toxicity@1.2")])
    assert str(info.value).startswith("target `toxicity/toxicity-1.2.1.safetensors` failed verification: LengthOrHashMismatchError")
    assert info.value.exit_code == 4
    assert state(patch) == before
    assert sorted((Cache().root / "blobs").rglob("*")) == blobs  # only verified bytes reach the cache


def test_tampered_metadata_is_refused(toxicity, patch, model_dir):
    from llmpatch.client import PatchRequest
    from llmpatch.client._registry import MetadataVerificationError

    def bump_version(body: bytes) -> bytes:  # change a signed field: the signature no longer matches
        return body.replace(b'"version":', b'"version":1', 1)

    installer = _installer(model_dir, patch.project, Tamper("timestamp.json", bump_version))
    with pytest.raises(MetadataVerificationError) as info:
        installer.install([PatchRequest.parse("toxicity@1.2")])
    assert str(info.value).startswith("the metadata of registry `default` failed verification: ")
    assert state(patch) == {"patches.toml": None, "patches.lock": None}


def test_expired_metadata_is_refused(toxicity, patch, model_dir, monkeypatch):
    import datetime as real

    from llmpatch.client import PatchRequest
    from llmpatch.client._registry import MetadataVerificationError

    class Later(real.datetime):
        @classmethod
        def now(cls, tz=None):
            return real.datetime.now(tz) + real.timedelta(days=2)  # timestamp.json lives 1 day

    import types

    import tuf.ngclient._internal.trusted_metadata_set as trusted

    monkeypatch.setattr(trusted, "datetime", types.SimpleNamespace(datetime=Later, timezone=real.timezone))
    installer = _installer(model_dir, patch.project)
    with pytest.raises(MetadataVerificationError) as info:
        installer.install([PatchRequest.parse("toxicity@1.2")])
    assert "ExpiredMetadataError" in str(info.value)
    assert state(patch) == {"patches.toml": None, "patches.lock": None}


def test_revoked_key_fails_verify_and_new_installs(registry, patch, model_dir, tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from llmpatch.signing import public_key_to_pem

    registry.publish("toxicity", "1.0.0")
    assert patch("install", "toxicity", "--model", model_dir, "--project", ".").code == 0
    old = key_id(registry.key.public_key())
    registry.post(f"/api/v1/patches/toxicity/keys/{old}/revoke", {})
    result = patch("verify")
    assert result.code == 4
    assert "which was revoked for `toxicity`" in result.out
    fresh = patch("install", "toxicity", "--model", model_dir, "--project", tmp_path / "fresh")
    assert fresh.code == 4
    assert f"error: `toxicity@1.0.0` is signed by key `{old[:16]}`, which was revoked for `toxicity`" in fresh.err
    assert not (tmp_path / "fresh" / "patches.lock").exists()
    # the publisher rotates: a new key, a new version, installs again
    new_key = Ed25519PrivateKey.generate()
    registry.post("/api/v1/patches/toxicity/keys", {"public_key_pem": public_key_to_pem(new_key.public_key()).decode()})
    registry.publish("toxicity", "1.0.1", key=new_key, seed=1)
    upgraded = patch("upgrade")
    assert upgraded.code == 0, upgraded.err
    assert installed(patch) == ["toxicity 1.0.1"]
    assert patch("verify").code == 0


def test_offline_installs_from_lock_and_cache_and_says_what_is_missing(toxicity, patch, model_dir):
    from llmpatch.client._registry import load_registries, save_registries

    assert patch("install", "toxicity@1.2", "--model", model_dir, "--project", ".").code == 0
    registries = load_registries()
    registries["default"].url = "http://127.0.0.1:9"  # nothing listens: any network use would fail
    save_registries(registries)
    ok = patch("sync", "--offline")
    assert ok.code == 0, ok.err
    again = patch("install", "toxicity@1.2", "--offline")
    assert again.code == 0, again.err
    missing = patch("install", "harmfulness", "--offline")
    assert missing.code == 1
    assert "error: offline, and the lockfile has no version for `harmfulness`" in missing.err
    Cache().blob_path(lock_of(patch)["patch"][0]["sha256"]).unlink()
    gone = patch("sync", "--offline")
    assert gone.code == 1
    assert "error: offline, and the cache lacks the patch file of `toxicity@1.2.1` (sha256 " in gone.err


def test_token_budget_from_the_project_file(registry, patch, model_dir):
    registry.publish("toxicity", "1.0.0", n=6)
    registry.publish("harmfulness", "1.0.0", n=6, seed=1)
    (patch.project / "patches.toml").write_text(f'[project]\nmodel = "{model_dir}"\ntoken_budget = 10\n')
    result = patch("install", "toxicity", "harmfulness")
    assert result.code == 5
    assert "  and together they need at least 12 and the budget is 10,\n" in result.err
    assert "  we can conclude that no combination of allowed versions fits the token budget\n" in result.err
    assert not (patch.project / "patches.lock").exists()


def test_token_budget_takes_an_older_version_that_fits_and_locks_it(registry, patch, model_dir):
    registry.publish("toxicity", "1.0.0", n=4)
    registry.publish("toxicity", "1.1.0", n=8, seed=1)
    registry.publish("harmfulness", "1.0.0", n=6, seed=2)
    (patch.project / "patches.toml").write_text(f'[project]\nmodel = "{model_dir}"\ntoken_budget = 10\n')
    result = patch("install", "toxicity", "harmfulness")
    assert result.code == 0, result.err
    assert "warning: chose `toxicity@1.0.0` over 1.1.0 to fit the token budget (10 of 10 virtual tokens)" in result.err
    lock = lock_of(patch)
    assert [(p["name"], p["version"], p["n_virtual_tokens"]) for p in lock["patch"]] == [
        ("toxicity", "1.0.0", 4), ("harmfulness", "1.0.0", 6)]
    assert lock["model"]["token_budget"] == 10
    # the lock keeps it: a frozen sync accepts it, an upgrade still has to fit
    assert patch("sync", "--frozen").code == 0
    assert patch("upgrade").code == 0
    assert installed(patch) == ["toxicity 1.0.0", "harmfulness 1.0.0"]


def test_search_and_info(toxicity, patch, model_dir):
    found = patch("search", "tox", "--json")
    assert [r["name"] for r in found.json["results"]] == ["toxicity"]
    info = patch("info", "toxicity@1.2", "--model", model_dir, "--json")
    assert [(v["version"], v["compatible"]) for v in info.json["versions"]] == [("1.2.0", True), ("1.2.1", True)]


def test_rolled_back_metadata_is_refused(toxicity, patch, model_dir):
    """A mirror replays an old (validly signed) timestamp after the client saw a newer one."""
    from llmpatch.client import PatchRequest
    from llmpatch.client._registry import MetadataVerificationError

    seen = {}

    def remember(body: bytes) -> bytes:
        seen.setdefault("old", body)
        return body

    assert _installer(model_dir, patch.project, Tamper("timestamp.json", remember)).install(
        [PatchRequest.parse("toxicity@=1.0.0")]).lock.patches
    toxicity.publish("toxicity", "1.2.2", seed=9)  # the registry moves on: new timestamp version
    assert patch("install", "toxicity@1.2").code == 0
    before = state(patch)
    replay = _installer(model_dir, patch.project, Tamper("timestamp.json", lambda body: seen["old"]))
    with pytest.raises(MetadataVerificationError) as info:
        replay.install([PatchRequest.parse("toxicity@1.3")])
    assert "BadVersionNumberError" in str(info.value)
    assert state(patch) == before


def test_index_that_hides_a_dependency_is_caught_by_the_signed_file(registry, patch, model_dir):
    """The index is unsigned: if it lies about a release, the signed manifest gives it away."""
    import json

    from llmpatch.client import MetadataMismatch, PatchRequest

    registry.publish("base-safety", "1.0.0")
    registry.publish("harmfulness", "1.0.0", seed=1, dependencies=["base-safety@^1"])

    def hide_dependencies(body: bytes) -> bytes:
        doc = json.loads(body)
        for version in doc["versions"]:
            version["dependencies"] = []
        return json.dumps(doc).encode()

    installer = _installer(model_dir, patch.project, Tamper("/api/v1/patches/harmfulness", hide_dependencies))
    with pytest.raises(MetadataMismatch) as info:
        installer.install([PatchRequest.parse("harmfulness")])
    assert str(info.value) == "`harmfulness@1.0.0`: the signed file's dependencies or conflicts differ from the index"
    assert info.value.exit_code == 4
    assert state(patch) == {"patches.toml": None, "patches.lock": None}


def test_version_only_in_the_unsigned_index_does_not_exist(toxicity, patch, model_dir):
    import json

    from llmpatch.client import PatchRequest

    def invent_version(body: bytes) -> bytes:
        doc = json.loads(body)
        doc["versions"].append(dict(doc["versions"][-1], version="9.9.9"))
        return json.dumps(doc).encode()

    installer = _installer(model_dir, patch.project, Tamper("/api/v1/patches/toxicity", invent_version))
    outcome = installer.install([PatchRequest.parse("toxicity")])
    assert [(p.name, p.version) for p in outcome.lock.patches] == [("toxicity", "2.0.0")]


def _count_blob_reads(registry, monkeypatch) -> list[str]:
    """The sha256 of every patch file or signature the server is asked for, on any route."""
    served: list[str] = []
    blobs = registry.app.state.blobs
    original = blobs.path
    monkeypatch.setattr(blobs, "path", lambda sha256: served.append(sha256) or original(sha256))
    return served


def test_lock_downloads_no_blobs_and_sync_installs_the_locked_versions(registry, patch, model_dir, monkeypatch, tmp_path):
    published = {
        ("base-safety", "1.0.0"): registry.publish("base-safety", "1.0.0"),
        ("toxicity", "1.2.0"): registry.publish("toxicity", "1.2.0", seed=1),
        ("toxicity", "1.2.1"): registry.publish("toxicity", "1.2.1", seed=2),
        ("harmfulness", "1.0.0"): registry.publish("harmfulness", "1.0.0", seed=3, dependencies=["base-safety@^1"]),
    }
    served = _count_blob_reads(registry, monkeypatch)
    (patch.project / "patches.toml").write_text(
        f'[project]\nmodel = "{model_dir}"\n\n[patches]\ntoxicity = "~1.2"\nharmfulness = "^1"\n')
    locked = patch("lock", "--json")
    assert locked.code == 0, locked.err
    assert served == [] and locked.json["downloaded"] == 0
    lock = lock_of(patch)
    assert installed(patch) == ["toxicity 1.2.1", "base-safety 1.0.0", "harmfulness 1.0.0"]
    for entry in lock["patch"]:  # everything a lock records, from signed metadata
        record = published[(entry["name"], entry["version"])]
        assert (entry["sha256"], entry["size"], entry["signature_sha256"]) == (
            record["sha256"], record["size"], record["signature_sha256"])
        assert entry["key_id"] == key_id(registry.key.public_key())
        assert not Cache().has(entry["sha256"]) and not Cache().has(entry["signature_sha256"])
    assert lock["registry"]["default"]["targets_version"] >= 4

    synced = patch("sync", "--frozen", "--json")
    assert synced.code == 0, synced.err
    assert synced.json["downloaded"] == 6  # file and signature of each
    assert sorted(served) == sorted(d for e in lock["patch"] for d in (e["sha256"], e["signature_sha256"]))
    assert lock_of(patch) == lock  # frozen: the same versions, the lock untouched
    for entry in lock["patch"]:
        assert hashlib.sha256(Cache().get(entry["sha256"])).hexdigest() == entry["sha256"]
    assert patch("verify").code == 0
    # now cached: a lock verifies the bytes in full, still without a request
    served.clear()
    assert patch("lock").code == 0 and served == []

    # a revoked signer is refused from signed metadata alone, before any download
    registry.post(f"/api/v1/patches/toxicity/keys/{key_id(registry.key.public_key())}/revoke", {})
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "patches.toml").write_text(f'[project]\nmodel = "{model_dir}"\n\n[patches]\ntoxicity = "~1.2"\n')
    refused = patch("lock", "--project", fresh)
    assert refused.code == 4
    assert "error: `toxicity@1.2.1` is signed by key " in refused.err and "which was revoked for `toxicity`" in refused.err
    assert served == [] and not (fresh / "patches.lock").exists()


def test_frozen_sync_refuses_a_lock_the_signed_file_contradicts(registry, patch, model_dir):
    """`patch lock` takes the token count from the unsigned index; a lying index is caught
    when the file is fetched, and a frozen sync refuses the lock instead of trusting it."""
    import json

    registry.publish("toxicity", "1.0.0", n=4)

    def inflate_tokens(body: bytes) -> bytes:
        doc = json.loads(body)
        for version in doc["versions"]:
            version["n_virtual_tokens"] = 2
        return json.dumps(doc).encode()

    installer = _installer(model_dir, patch.project, Tamper("/api/v1/patches/toxicity", inflate_tokens))
    installer.project.set("toxicity", "*")
    assert [p.n_virtual_tokens for p in installer.lock_only().lock.patches] == [2]
    before = state(patch)
    frozen = patch("sync", "--frozen")
    assert frozen.code == 1
    assert "records other n_virtual_tokens for `toxicity@1.0.0` than the registry's signed file" in frozen.err
    assert state(patch) == before
    repaired = patch("sync")
    assert repaired.code == 0, repaired.err
    assert lock_of(patch)["patch"][0]["n_virtual_tokens"] == 4
