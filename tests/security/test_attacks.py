"""Issue #6, the attack matrix: one test per way to cheat the installer. Each asserts the exact
refusal (exit code and message) and that nothing changed: the project's patches.toml and
patches.lock, the client cache (blobs and keys), and the registry (rows, blobs, TUF versions).

Mirror attacks go over the wire through `mirror.Mirror`; attacks that need the TUF layer out of
the way use `Forger`, an attacker holding the registry's stolen online keys, so the next layer
(the publisher's Ed25519 signature, the manifest, the fingerprint) is the one being tested."""

from __future__ import annotations

import hashlib
import json
import tomllib

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from llmpatch.signing import key_id, public_key_to_pem, sign_patch
from llmpatch.patchfile import read_patch_bytes

from .conftest import client_state, registry_state

TOX = "toxicity/toxicity-1.0.0.safetensors"


def install(patch, model_dir, *specs, project="."):
    return patch("install", *specs, "--model", model_dir, "--project", project)


def signed(data: bytes, key) -> bytes:
    return sign_patch(read_patch_bytes(data), key).to_json().encode()


@pytest.fixture
def baseline(registry, patch, model_dir, mirror):
    """toxicity 1.0.0 installed through the mirror; returns the state to compare against."""
    registry.publish("toxicity", "1.0.0")
    first = install(patch, model_dir, "toxicity@=1.0.0")
    assert first.code == 0, first.err
    return registry


def before(registry, patch):
    return client_state(patch.project), registry_state(registry)


def unchanged(registry, patch, snapshot):
    assert (client_state(patch.project), registry_state(registry)) == snapshot


def lock(patch) -> dict:
    return tomllib.loads((patch.project / "patches.lock").read_text())


# 1 ---------------------------------------------------------------------------------------------

def test_01_arbitrary_patch_signed_by_no_authorised_key(baseline, patch, model_dir, forger):
    registry = baseline
    registry.publish("toxicity", "1.1.0", seed=1)
    attacker = Ed25519PrivateKey.generate()
    evil = registry.make("toxicity", "1.1.0", seed=66)
    snapshot = before(registry, patch)
    # the registry itself refuses the upload: signed by a key not registered for the name
    files = {"file": ("p", registry.make("toxicity", "1.2.0", seed=66)),
             "signature": ("s", signed(registry.make("toxicity", "1.2.0", seed=66), attacker))}
    refused = registry.http.post(f"{registry.url}/api/v1/patches", files=files, headers=registry.auth)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "untrusted_key"
    # on the wire, with TUF re-signed by the attacker and the signed key id pointing at his key
    forger.substitute("toxicity/toxicity-1.1.0.safetensors", evil, key_id=key_id(attacker.public_key()))
    forger.substitute("toxicity/toxicity-1.1.0.safetensors.sig", signed(evil, attacker), key_id=key_id(attacker.public_key()))
    result = install(patch, model_dir, "toxicity@=1.1.0")
    assert result.code == 4
    assert f"error: key `{key_id(attacker.public_key())[:16]}` is not registered for `toxicity` in registry `default`" in result.err
    unchanged(registry, patch, snapshot)


# 2 ---------------------------------------------------------------------------------------------

def test_02_tampered_tensor_bytes_with_the_original_signature(baseline, patch, model_dir, forger):
    registry = baseline
    published = registry.publish("toxicity", "1.1.0", seed=1)
    original = registry.http.get(registry.url + published["file_url"]).content
    tampered = original[:-4] + np.float32(3.0).tobytes()  # last prefix value changed, still a valid file
    read_patch_bytes(tampered)
    snapshot = before(registry, patch)
    forger.substitute("toxicity/toxicity-1.1.0.safetensors", tampered)
    result = install(patch, model_dir, "toxicity@=1.1.0")
    assert result.code == 4
    assert "error: file content does not match the signature: signed sha256 " + published["sha256"][:16] in result.err
    unchanged(registry, patch, snapshot)


def test_02b_tampered_bytes_without_stolen_keys_fail_at_the_tuf_layer(baseline, patch, model_dir, mirror):
    registry = baseline
    registry.publish("toxicity", "1.1.0", seed=1)
    mirror.body(lambda p: p.endswith(".toxicity-1.1.0.safetensors"), lambda b: b[:-1] + bytes([b[-1] ^ 1]))
    snapshot = before(registry, patch)
    result = install(patch, model_dir, "toxicity@=1.1.0")
    assert result.code == 4
    assert "error: target `toxicity/toxicity-1.1.0.safetensors` failed verification: LengthOrHashMismatchError" in result.err
    unchanged(registry, patch, snapshot)


# 3 ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["version", "fingerprint"])
def test_03_tampered_manifest_with_the_original_signature(baseline, patch, model_dir, forger, fingerprints, field):
    """toxicity 1.1.0 was built for the other model. The attacker edits its manifest (to claim
    version 1.1.1, or our model's fingerprint) and serves it with the genuine signature."""
    from llmpatch.manifest import Manifest
    from llmpatch.patchfile import encode_patch

    registry = baseline
    genuine = registry.make("toxicity", "1.1.0", seed=1, model="other")
    registry.publish("toxicity", "1.1.0", seed=1, model="other")
    registry.publish("toxicity", "1.1.1", seed=2)  # a real 1.1.1 for our model
    original = read_patch_bytes(genuine)
    m = original.manifest.to_dict()
    fp = fingerprints["main"]
    if field == "version":
        m["version"], version, custom = "1.1.1", "1.1.1", {}
    else:
        m["base_model"] = {"architecture": fp.architecture, "weights": fp.weights, "name": "tiny-main"}
        version, custom = "1.1.0", {"base_model": {"architecture": fp.architecture, "weights": fp.weights}}
    tampered = encode_patch(Manifest.from_dict(m), original.prefix)
    target = f"toxicity/toxicity-{version}.safetensors"
    snapshot = before(registry, patch)
    forger.substitute(target, tampered, **custom)
    forger.substitute(target + ".sig", signed(genuine, registry.key))
    result = install(patch, model_dir, f"toxicity@={version}")
    assert result.code == 4
    assert (f"error: file content does not match the signature: signed sha256 {hashlib.sha256(genuine).hexdigest()[:16]}… "
            f"({len(genuine)} bytes), file is {hashlib.sha256(tampered).hexdigest()[:16]}…") in result.err
    unchanged(registry, patch, snapshot)


# 4 ---------------------------------------------------------------------------------------------

def test_04_signature_by_a_valid_key_not_authorised_for_this_name(baseline, patch, model_dir, forger):
    registry = baseline
    other_key = Ed25519PrivateKey.generate()  # a real publisher key, registered for `harmfulness` only
    registry.publish("harmfulness", "1.0.0", key=other_key, seed=3)
    assert install(patch, model_dir, "harmfulness").code == 0  # its key is now in the client's cache
    registry.publish("toxicity", "1.1.0", seed=1)
    snapshot = before(registry, patch)
    data = registry.make("toxicity", "1.2.0", seed=7)
    files = {"file": ("p", data), "signature": ("s", signed(data, other_key))}
    refused = registry.http.post(f"{registry.url}/api/v1/patches", files=files, headers=registry.auth)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "untrusted_key"
    evil = registry.make("toxicity", "1.1.0", seed=66)
    kid = key_id(other_key.public_key())
    forger.substitute("toxicity/toxicity-1.1.0.safetensors", evil, key_id=kid)
    forger.substitute("toxicity/toxicity-1.1.0.safetensors.sig", signed(evil, other_key), key_id=kid)
    result = install(patch, model_dir, "toxicity@=1.1.0")
    assert result.code == 4
    assert f"error: key `{kid[:16]}` is not registered for `toxicity` in registry `default`" in result.err
    unchanged(registry, patch, snapshot)


# 5 ---------------------------------------------------------------------------------------------

def test_05_signature_by_a_revoked_key(baseline, patch, model_dir, tmp_path):
    registry = baseline
    old = key_id(registry.key.public_key())
    new_key = Ed25519PrivateKey.generate()
    registry.post("/api/v1/patches/toxicity/keys", {"public_key_pem": public_key_to_pem(new_key.public_key()).decode()})
    registry.post(f"/api/v1/patches/toxicity/keys/{old}/revoke", {})
    snapshot = before(registry, patch)
    data = registry.make("toxicity", "1.1.0", seed=1)
    refused = registry.http.post(f"{registry.url}/api/v1/patches", headers=registry.auth,
                                 files={"file": ("p", data), "signature": ("s", signed(data, registry.key))})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "revoked_key"
    result = install(patch, model_dir, "toxicity@=1.0.0", project=tmp_path / "fresh")
    assert result.code == 4
    assert f"error: `toxicity@1.0.0` is signed by key `{old[:16]}`, which was revoked for `toxicity`" in result.err
    assert not (tmp_path / "fresh" / "patches.lock").exists()
    unchanged(registry, patch, snapshot)
    verify = patch("verify")
    assert verify.code == 4 and "which was revoked for `toxicity`" in verify.out


@pytest.mark.parametrize("via", ["api", "cli"])
def test_05b_revocation_hidden_by_a_mirror_is_still_enforced(baseline, patch, model_dir, mirror, tmp_path, via):
    """The keys endpoint is unsigned: a mirror can drop `revoked_at` from it. The revocation
    is also in signed targets metadata (`key_revoked`), so the install is refused anyway."""
    import subprocess

    from .procs import PATCH

    registry = baseline
    old = key_id(registry.key.public_key())
    if via == "api":
        registry.post(f"/api/v1/patches/toxicity/keys/{old}/revoke", {})
    else:
        subprocess.run([PATCH, "registry", "key", "revoke", "--name", "toxicity", old,
                        "--data-dir", str(tmp_path / "registry-server")], check=True, capture_output=True)

    def hide_revocations(body: bytes) -> bytes:
        doc = json.loads(body)
        for k in doc["keys"]:
            k["revoked_at"] = None
        return json.dumps(doc).encode()

    mirror.body("/api/v1/patches/toxicity/keys", hide_revocations)
    snapshot = before(registry, patch)
    result = install(patch, model_dir, "toxicity@=1.0.0", project=tmp_path / "fresh")
    assert result.code == 4
    assert f"error: `toxicity@1.0.0` is signed by key `{old[:16]}`, which was revoked for `toxicity`" in result.err
    assert not (tmp_path / "fresh" / "patches.lock").exists()
    unchanged(registry, patch, snapshot)


# 6 ---------------------------------------------------------------------------------------------

def test_06_rollback_mirror_serves_older_metadata_than_seen(baseline, patch, model_dir, mirror):
    registry = baseline
    old = {role: registry.http.get(f"{registry.url}/tuf/metadata/{role}.json").content for role in ("timestamp",)}
    old_snapshot_version = json.loads(old["timestamp"])["signed"]["meta"]["snapshot.json"]["version"]
    old_snapshot = registry.http.get(f"{registry.url}/tuf/metadata/{old_snapshot_version}.snapshot.json").content
    registry.publish("toxicity", "1.1.0", seed=1)
    assert install(patch, model_dir, "toxicity@=1.1.0").code == 0  # the client has seen the newer state
    seen = lock(patch)["registry"]["default"]
    registry.publish("toxicity", "1.2.0", seed=2)
    snapshot = before(registry, patch)
    mirror.serve("/tuf/metadata/timestamp.json", old["timestamp"])  # replay the old, validly signed timestamp
    result = install(patch, model_dir, "toxicity@=1.2.0")
    assert result.code == 4
    assert "error: the metadata of registry `default` failed verification: BadVersionNumberError" in result.err
    unchanged(registry, patch, snapshot)
    assert lock(patch)["registry"]["default"] == seen
    # the same with an old snapshot behind a current timestamp
    mirror.clear()
    mirror.on(lambda p: p.endswith(".snapshot.json"), lambda s, h, b: (200, h, old_snapshot))
    result = install(patch, model_dir, "toxicity@=1.2.0")
    assert result.code == 4
    assert "error: the metadata of registry `default` failed verification: BadVersionNumberError" in result.err
    unchanged(registry, patch, snapshot)


# 7 ---------------------------------------------------------------------------------------------

def test_07_freeze_mirror_keeps_serving_expired_metadata(registry, patch, model_dir, mirror, monkeypatch):
    """The mirror froze three days ago; the registry moved on. The frozen (validly signed)
    metadata has expired by now: the client refuses it instead of installing stale state."""
    from datetime import timedelta

    import llmpatch.registry.tuf_repo as tuf_repo

    real_now = tuf_repo._now
    monkeypatch.setattr(tuf_repo, "_now", lambda: real_now() - timedelta(days=3))
    registry.publish("toxicity", "1.0.0")
    frozen = {}
    for path in ("timestamp.json",):
        frozen[path] = registry.http.get(f"{registry.url}/tuf/metadata/{path}").content
    snap_v = json.loads(frozen["timestamp.json"])["signed"]["meta"]["snapshot.json"]["version"]
    frozen["snapshot"] = registry.http.get(f"{registry.url}/tuf/metadata/{snap_v}.snapshot.json").content
    monkeypatch.setattr(tuf_repo, "_now", real_now)
    registry.publish("toxicity", "1.0.1", seed=1)  # a security fix the frozen mirror hides
    mirror.serve("/tuf/metadata/timestamp.json", frozen["timestamp.json"])
    snapshot = before(registry, patch)
    result = install(patch, model_dir, "toxicity")
    assert result.code == 4
    assert "error: the metadata of registry `default` failed verification: ExpiredMetadataError" in result.err
    unchanged(registry, patch, snapshot)


# 8 ---------------------------------------------------------------------------------------------

def test_08_mix_and_match_metadata_from_different_moments(baseline, patch, model_dir, mirror):
    registry = baseline
    v = json.loads(registry.http.get(f"{registry.url}/tuf/metadata/timestamp.json").content)["signed"]["meta"]["snapshot.json"]["version"]
    old_targets_version = json.loads(registry.http.get(f"{registry.url}/tuf/metadata/{v}.snapshot.json").content)["signed"]["meta"]["targets.json"]["version"]
    old_targets = registry.http.get(f"{registry.url}/tuf/metadata/{old_targets_version}.targets.json").content
    registry.publish("toxicity", "1.1.0", seed=1)
    # current timestamp and snapshot, but the targets of an earlier moment under the new name
    mirror.on(lambda p: p.endswith(".targets.json"), lambda s, h, b: (200, h, old_targets))
    snapshot = before(registry, patch)
    result = install(patch, model_dir, "toxicity@=1.1.0")
    assert result.code == 4
    assert "error: the metadata of registry `default` failed verification: BadVersionNumberError" in result.err
    unchanged(registry, patch, snapshot)


# 9 ---------------------------------------------------------------------------------------------

def _endless(first: bytes):
    yield first
    for _ in range(64 * 1024):  # up to 4 GiB: a client that does not stop reading never returns
        yield b"\0" * 65536


@pytest.mark.parametrize("what", ["target", "timestamp"])
def test_09_endless_data_response_larger_than_declared(baseline, patch, model_dir, mirror, what):
    registry = baseline
    registry.publish("toxicity", "1.1.0", seed=1)
    path = ".toxicity-1.1.0.safetensors" if what == "target" else "/tuf/metadata/timestamp.json"
    mirror.on(path, lambda s, h, body: (s, h, _endless(body)))
    snapshot = before(registry, patch)
    result = install(patch, model_dir, "toxicity@=1.1.0")
    assert result.code == 1
    where = "target `toxicity/toxicity-1.1.0.safetensors`" if what == "target" else "the metadata of registry `default`"
    assert f"error: could not fetch {where}: DownloadLengthMismatchError" in result.err
    sent = [n for p, n in mirror.sent.items() if p.endswith(path)]
    assert sent and max(sent) < 64 * 1024 * 1024  # the client hung up early
    unchanged(registry, patch, snapshot)


# 10, 11 ---------------------------------------------------------------------------------------

def _root_v2(registry, forger, change, sign_with):
    from tuf.api.metadata import Metadata, Root
    from tuf.api.serialization.json import JSONSerializer

    md = Metadata[Root].from_bytes(registry.http.get(f"{registry.url}/tuf/metadata/1.root.json").content)
    md.signed.version = 2
    change(md.signed)
    md.signatures.clear()
    for signer in sign_with:
        md.sign(signer, append=True)
    return md.to_bytes(JSONSerializer(compact=True))


def _signer():
    from securesystemslib.signer import CryptoSigner, SSlibKey

    private = Ed25519PrivateKey.generate()
    return CryptoSigner(private, SSlibKey.from_crypto(private.public_key()))


def test_10_threshold_faking_one_signature_listed_under_two_key_ids(registry, patch, model_dir, mirror, forger):
    """Root v2 (a genuine rotation) asks for 2 of 2 targets keys. An attacker with one of them
    lists its signature twice, under both key ids: refused; both real signatures: accepted."""
    from tuf.api.metadata import Metadata, Signature, Targets
    from tuf.api.serialization.json import JSONSerializer

    registry.publish("toxicity", "1.0.0")
    second = _signer()

    def two_of_two(root):
        root.add_key(second.public_key, "targets")
        root.roles["targets"].threshold = 2

    mirror.serve("/tuf/metadata/2.root.json", _root_v2(registry, forger, two_of_two, [forger.signers["root"]]))
    mode = {"genuine": False}

    def countersign(body: bytes) -> bytes:
        md = Metadata[Targets].from_bytes(body)
        if mode["genuine"]:
            md.sign(second, append=True)
        else:
            (only,) = md.signatures.values()
            md.signatures[second.public_key.keyid] = Signature(second.public_key.keyid, only.signature)
        return md.to_bytes(JSONSerializer(compact=True))

    mirror.body(lambda p: p.endswith(".targets.json"), countersign)
    snapshot = before(registry, patch)
    result = install(patch, model_dir, "toxicity")
    assert result.code == 4
    assert "error: the metadata of registry `default` failed verification: UnsignedMetadataError: targets was signed by 1/2 keys" in result.err
    unchanged(registry, patch, snapshot)
    mode["genuine"] = True
    ok = install(patch, model_dir, "toxicity")
    assert ok.code == 0, ok.err
    assert lock(patch)["registry"]["default"]["root_version"] == 2


@pytest.mark.parametrize("signed_by, accepted", [("old+new", True), ("new", False), ("old", False)])
def test_11_root_rotation_needs_the_old_and_the_new_threshold(registry, patch, model_dir, mirror, forger, signed_by, accepted):
    registry.publish("toxicity", "1.0.0")
    new_root = _signer()
    old_root = forger.signers["root"]

    def rotate(root):
        root.revoke_key(old_root.public_key.keyid, "root")
        root.add_key(new_root.public_key, "root")

    signers = {"old+new": [old_root, new_root], "new": [new_root], "old": [old_root]}[signed_by]
    mirror.serve("/tuf/metadata/2.root.json", _root_v2(registry, forger, rotate, signers))
    snapshot = before(registry, patch)
    result = install(patch, model_dir, "toxicity")
    if accepted:
        assert result.code == 0, result.err
        assert lock(patch)["registry"]["default"]["root_version"] == 2
        return
    assert result.code == 4
    assert "error: the metadata of registry `default` failed verification: UnsignedMetadataError: root was signed by 0/1 keys" in result.err
    unchanged(registry, patch, snapshot)


# 12 --------------------------------------------------------------------------------------------

def test_12_wrong_base_model_correctly_signed_for_another_fingerprint(registry, patch, model_dir, mirror, forger, fingerprints):
    registry.publish("toxicity", "1.3.0", model="other")
    snapshot = before(registry, patch)
    honest = install(patch, model_dir, "toxicity@1.3")
    assert honest.code == 5
    want, have = fingerprints["other"].weights[:19], fingerprints["main"].weights[:19]
    assert f"  Because toxicity 1.3.0 requires base model weights `{want}` and your model's are `{have}`," in honest.err
    unchanged(registry, patch, snapshot)
    # signed metadata and the index lie about the base model: the signed file tells the truth
    registry.publish("harmfulness", "1.0.0", seed=4)  # new targets metadata, which the forger re-signs
    snapshot = before(registry, patch)
    fp = fingerprints["main"]
    claim = {"architecture": fp.architecture, "weights": fp.weights, "name": "tiny-main"}
    forger.changes["toxicity/toxicity-1.3.0.safetensors"] = (registry.make("toxicity", "1.3.0", model="other"), {"base_model": claim})

    def relabel(body: bytes) -> bytes:
        doc = json.loads(body)
        for v in doc["versions"]:
            v["base_model"] = claim
        return json.dumps(doc).encode()

    mirror.body("/api/v1/patches/toxicity", relabel)
    lied = install(patch, model_dir, "toxicity@1.3")
    assert lied.code == 4
    assert "error: `toxicity@1.3.0`: the signed file names another base model than the index said" in lied.err
    unchanged(registry, patch, snapshot)


# 13 --------------------------------------------------------------------------------------------

def test_13_yanked_version_without_a_lock_is_not_chosen_and_named_exactly_says_why(registry, patch, model_dir, tmp_path):
    registry.publish("toxicity", "1.2.0")
    registry.publish("toxicity", "1.2.1", seed=1)
    registry.post("/api/v1/patches/toxicity/versions/1.2.1/yank", {"reason": "leaks the system prompt"})
    snapshot = before(registry, patch)
    exact = install(patch, model_dir, "toxicity@=1.2.1")
    assert exact.code == 5
    assert "toxicity 1.2.1 was yanked (leaks the system prompt)" in exact.err
    assert "hint: pin a version that is not yanked" in exact.err
    unchanged(registry, patch, snapshot)
    chosen = install(patch, model_dir, "toxicity@1.2")
    assert chosen.code == 0, chosen.err
    assert [p["version"] for p in lock(patch)["patch"]] == ["1.2.0"]


# 14 --------------------------------------------------------------------------------------------

HOSTILE_NAMES = ["../../etc/passwd", "/abs/path", "tоxicity", "toxicity\u200b", "a/b", "..", "con\\x"]


def test_14_hostile_names_and_paths_in_manifests_index_documents_and_urls(registry, patch, model_dir, mirror, tmp_path):
    from tests.registry.factories import manifest_dict, raw_patch, raw_signature

    registry.publish("toxicity", "1.0.0")
    registry.publish("refusal", "1.0.0", seed=1)
    snapshot = before(registry, patch)
    # manifests naming a path, an absolute path or a unicode confusable: the validator refuses them
    for name in HOSTILE_NAMES:
        data = raw_patch(manifest_dict(name=name, version="1.0.0"))
        response = registry.http.post(f"{registry.url}/api/v1/patches", headers=registry.auth, files={
            "file": ("../../x.safetensors", data), "signature": ("/etc/x.sig", raw_signature(name, "1.0.0", data, registry.key)),
            "public_key": ("k", public_key_to_pem(registry.key.public_key()))})
        assert response.status_code == 400, (name, response.text)
        assert response.json()["error"]["code"] in ("invalid_patch_file", "invalid_name"), name
    confusable = registry.make("refusa1", "1.0.0")  # ASCII look-alike of an existing name
    response = registry.http.post(f"{registry.url}/api/v1/patches", headers=registry.auth, files={
        "file": ("p", confusable), "signature": ("s", signed(confusable, registry.key)),
        "public_key": ("k", public_key_to_pem(registry.key.public_key()))})
    assert response.status_code == 409 and response.json()["error"]["code"] == "name_taken"
    # traversal in URLs: nothing outside the blob store or the metadata table is served
    for url in ("/blobs/sha256/../../registry.sqlite3", "/blobs/sha256/..%2f..%2fregistry.sqlite3",
                "/tuf/targets/..%2f..%2ftuf-keys%2froot.pem", "/tuf/metadata/..%2ftuf-keys%2froot.pem",
                "/api/v1/patches/..%2f..%2fetc"):
        got = registry.http.get(registry.url + url)
        assert got.status_code in (404, 400, 422), (url, got.status_code)
        assert b"PRIVATE KEY" not in got.content and b"SQLite format" not in got.content
    unchanged(registry, patch, snapshot)

    # an index document (unsigned) naming paths: no such target in signed metadata, nothing written
    def hostile_index(body: bytes) -> bytes:
        doc = json.loads(body)
        doc["name"] = "../../../../tmp/evil"
        for v in doc["versions"]:
            v["version"] = "1.0.0/../../../../../tmp/evil"
            v["file_url"] = "/../../../etc/passwd"
        return json.dumps(doc).encode()

    mirror.body("/api/v1/patches/toxicity", hostile_index)
    result = install(patch, model_dir, "toxicity")
    assert result.code == 3, result.err
    assert result.err.startswith("error: name `../../../../tmp/evil` is not a valid patch name")
    unchanged(registry, patch, snapshot)
    assert not any(p.name == "evil" for p in tmp_path.parent.rglob("evil"))
    # hostile specs on the command line are usage errors
    for spec in ("../../etc", "/abs", "tоxicity"):
        bad = install(patch, model_dir, spec)
        assert bad.code in (1, 2, 5) and "error" in bad.err.lower(), (spec, bad.code, bad.err)
    unchanged(registry, patch, snapshot)


# 15 --------------------------------------------------------------------------------------------

def _malicious_files():
    import pickle
    import struct

    from tests.registry.factories import manifest_dict, raw_patch

    good = raw_patch(manifest_dict(name="toxicity", version="1.1.0"))
    header_len = struct.unpack("<Q", good[:8])[0]
    nan = np.zeros((4, 8), dtype="<f4")
    nan[0, 0] = np.nan
    inf = np.zeros((4, 8), dtype="<f4")
    inf[1, 1] = np.inf
    header = json.loads(good[8:8 + header_len])
    header["prefix"]["data_offsets"] = [0, 10**12]
    far = json.dumps(header).encode()
    far += b" " * (-len(far) % 8)
    return {
        "header-length-overflow": (struct.pack("<Q", 2**64 - 1) + good[8:], "safetensors header claims"),
        "huge-header": (struct.pack("<Q", 100 * 1024 * 1024) + b"{" + b" " * 64, "safetensors header claims"),
        "offsets-out-of-range": (struct.pack("<Q", len(far)) + far + good[8 + header_len:], "tensor data"),
        "dtype-mismatch": (raw_patch(manifest_dict(name="toxicity", version="1.1.0"), dtype="F16",
                                     payload=np.zeros((4, 8), dtype="<f2").tobytes()), "dtype"),
        "shape-mismatch": (raw_patch(manifest_dict(name="toxicity", version="1.1.0"), shape=(4, 9),
                                     payload=np.zeros((4, 9), dtype="<f4").tobytes()), ""),
        "nan": (raw_patch(manifest_dict(name="toxicity", version="1.1.0"), payload=nan.tobytes()), "NaN or infinite"),
        "inf": (raw_patch(manifest_dict(name="toxicity", version="1.1.0"), payload=inf.tobytes()), "NaN or infinite"),
        "pickle-renamed": (pickle.dumps({"prefix": [1.0] * 32}, protocol=4), ""),
    }


@pytest.mark.parametrize("case", list(_malicious_files()))
def test_15_malicious_safetensors_refused_by_validator_registry_and_client(registry, patch, model_dir, forger, case):
    from llmpatch.errors import InvalidPatchFile
    from llmpatch.patchfile import read_patch_bytes as strict
    from tests.registry.factories import raw_signature

    data, text = _malicious_files()[case]
    with pytest.raises(InvalidPatchFile) as info:
        strict(data)
    assert text in str(info.value)
    registry.publish("toxicity", "1.1.0")
    snapshot = before(registry, patch)
    response = registry.http.post(f"{registry.url}/api/v1/patches", headers=registry.auth, files={
        "file": ("p.safetensors", data), "signature": ("s", raw_signature("toxicity", "1.2.0", data, registry.key))})
    assert response.status_code in (400, 413), response.text
    assert response.json()["error"]["code"] in ("invalid_patch_file", "payload_too_large")
    # a compromised server serves it (TUF re-signed, genuine signature document of these bytes)
    forger.substitute("toxicity/toxicity-1.1.0.safetensors", data)
    forger.substitute("toxicity/toxicity-1.1.0.safetensors.sig", raw_signature("toxicity", "1.1.0", data, registry.key))
    result = install(patch, model_dir, "toxicity@=1.1.0")
    assert result.code == 3, result.err
    assert result.err.startswith("error: ") and text in result.err
    unchanged(registry, patch, snapshot)


# 16 --------------------------------------------------------------------------------------------

def test_16_token_abuse_other_owner_and_revoked_token(registry, patch):
    from llmpatch.registry.auth import create_token, create_user

    registry.publish("toxicity", "1.0.0")
    with registry.app.state.db.writer() as session:
        bob = create_user(session, "bob")
        bob_token_row, bob_token = create_token(session, bob, ["publish:*", "yank:*", "admin:*"])
        narrow_row, narrow = create_token(session, bob, ["publish:refusal"])
        dead_row, dead = create_token(session, bob, ["publish:*", "yank:*"])
        dead_id = dead_row.id
    bob_key = Ed25519PrivateKey.generate()
    bob_auth = {"Authorization": f"Bearer {bob_token}"}
    assert registry.http.delete(f"{registry.url}/api/v1/tokens/{dead_id}", headers={"Authorization": f"Bearer {dead}"}).status_code == 200
    snapshot = before(registry, patch)
    data = registry.make("toxicity", "1.1.0", seed=1)
    publish = {"file": ("p", data), "signature": ("s", signed(data, registry.key))}  # even with alice's valid signature
    cases = [
        ("publish another owner's patch", "POST", "/api/v1/patches", dict(files=publish), bob_auth, 403, "forbidden"),
        ("yank another owner's patch", "POST", "/api/v1/patches/toxicity/versions/1.0.0/yank", dict(json={"reason": "x"}), bob_auth, 403, "forbidden"),
        ("add a key to another owner's patch", "POST", "/api/v1/patches/toxicity/keys",
         dict(json={"public_key_pem": public_key_to_pem(bob_key.public_key()).decode()}), bob_auth, 403, "forbidden"),
        ("deprecate another owner's patch", "POST", "/api/v1/patches/toxicity/deprecate", dict(json={"message": "x"}), bob_auth, 403, "forbidden"),
        ("scope for another name", "POST", "/api/v1/patches", dict(files=publish), {"Authorization": f"Bearer {narrow}"}, 403, "forbidden"),
        ("revoked token", "POST", "/api/v1/patches/toxicity/versions/1.0.0/yank", dict(json={"reason": "x"}), {"Authorization": f"Bearer {dead}"}, 401, "unauthorized"),
        ("unknown token", "POST", "/api/v1/patches", dict(files=publish), {"Authorization": "Bearer lpt_" + "0" * 40}, 401, "unauthorized"),
        ("no token", "POST", "/api/v1/patches", dict(files=publish), {}, 401, "unauthorized"),
        ("escalate scopes", "POST", "/api/v1/tokens", dict(json={"description": "x", "scopes": ["publish:*"]}), {"Authorization": f"Bearer {narrow}"}, 403, "forbidden"),
    ]
    for what, method, path, kwargs, headers, status, code in cases:
        response = registry.http.request(method, registry.url + path, headers=headers, **kwargs)
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), (what, response.text)
    unchanged(registry, patch, snapshot)
