"""Hostile and broken input: each request gets a clear 4xx JSON error and changes nothing
(rows, revisions, TUF metadata versions and blob files are compared before and after)."""

from __future__ import annotations

import base64
import json

import pytest

from .factories import manifest_dict, new_key, patch_bytes, pem, raw_patch, raw_signature, sign

KEY = new_key()
OTHER = new_key()


def files(data: bytes, signature: bytes | None = None, public_key: bytes | None = pem(KEY)) -> dict:
    parts = {"file": ("p.safetensors", data), "signature": ("p.sig", signature if signature is not None else sign(data, KEY))}
    if public_key is not None:
        parts["public_key"] = ("k.pem", public_key)
    return parts


def raw(name="newpatch", version="1.0.0", **changes) -> dict:
    data = raw_patch(manifest_dict(name=name, version=version, **changes))
    return files(data, raw_signature(name, version, data, KEY))


def tampered_signature() -> dict:
    data = patch_bytes("newpatch")
    doc = json.loads(sign(data, KEY))
    sig = bytearray(base64.b64decode(doc["signature"]))
    sig[0] ^= 1
    doc["signature"] = base64.b64encode(bytes(sig)).decode()
    return files(data, json.dumps(doc).encode())


def _truncated():
    data = patch_bytes("newpatch")
    return files(data[:-5], sign(data, KEY))


def _huge_patch():
    # 4 x 40000 F32 = 640,000 bytes: under the 1 MiB body cap, over the 512 KiB patch cap.
    import numpy as np

    from llmpatch.patchfile import encode_patch

    from .factories import manifest

    data = encode_patch(manifest("newpatch", hidden_size=40000), np.zeros((4, 40000), dtype=np.float32))
    return files(data)


# (id, multipart files thunk, status, code, message or None to skip the exact-text check)
PUBLISH_CASES = [
    ("missing-signature-part", lambda: {"file": ("p", patch_bytes("newpatch"))}, 400, "malformed_request",
     "multipart part `signature` is missing"),
    ("unknown-part", lambda: {**files(patch_bytes("newpatch")), "extra": ("x", b"1")}, 400, "malformed_request",
     "unknown multipart parts: extra"),
    ("path-traversal-name", lambda: raw("../../etc/passwd"), 400, "invalid_name", None),
    ("cyrillic-confusable-name", lambda: raw("r\u0435fusal"), 400, "invalid_name", None),
    ("fullwidth-name", lambda: raw("\uff52efusal"), 400, "invalid_name", None),
    ("reserved-admin", lambda: files(patch_bytes("admin")), 400, "reserved_name", "patch name `admin` is reserved"),
    ("reserved-api", lambda: files(patch_bytes("API")), 400, "reserved_name", "patch name `API` is reserved"),
    ("reserved-blobs", lambda: files(patch_bytes("blobs")), 400, "reserved_name", "patch name `blobs` is reserved"),
    ("reserved-lookalike", lambda: files(patch_bytes("adm1n")), 400, "reserved_name", "patch name `adm1n` is reserved"),
    ("confusable-of-existing", lambda: files(patch_bytes("refusa1")), 409, "name_taken",
     "`refusa1` is too similar to the existing patch `refusal`"),
    ("non-semver-version", lambda: raw(version="1.0"), 400, "invalid_version",
     "version `1.0` is not a semantic version"),
    ("v-prefixed-version", lambda: raw(version="v1.0.0"), 400, "invalid_version", None),
    ("truncated-file", _truncated, 400, "invalid_patch_file", "tensor data is truncated: header says 128 bytes, file has 123"),
    ("not-safetensors", lambda: files(b"hello world, not a patch at all", raw_signature("x", "1.0.0", b"hello", KEY)), 400,
     "invalid_patch_file", None),
    ("pickle", lambda: files(b"\x80\x04\x95" + b"\x00" * 64, raw_signature("x", "1.0.0", b"p", KEY)), 400, "invalid_patch_file",
     "file is a pickle or a torch zip archive, not safetensors; llm-patch never loads pickle"),
    ("manifest-disagrees-with-tensor", lambda: raw(n_virtual_tokens=5), 400, "invalid_patch_file",
     "manifest says 5 x 8 but the tensor is 4 x 8"),
    ("garbage-signature", lambda: files(patch_bytes("newpatch"), b"{not json"), 400, "invalid_signature", None),
    ("tampered-signature", tampered_signature, 400, "invalid_signature", None),
    ("signature-for-other-file", lambda: files(patch_bytes("newpatch"), sign(patch_bytes("newpatch", seed=9), KEY)), 400,
     "invalid_signature", None),
    ("signature-for-other-version", lambda: files(patch_bytes("newpatch"), sign(patch_bytes("newpatch", "2.0.0"), KEY)), 400,
     "invalid_signature", None),
    ("new-name-without-key", lambda: files(patch_bytes("newpatch"), public_key=None), 400, "malformed_request",
     "`newpatch` is a new name: include your public key as the `public_key` part to claim it"),
    ("signed-by-other-key-than-claimed", lambda: files(patch_bytes("newpatch"), sign(patch_bytes("newpatch"), OTHER)), 403,
     "untrusted_key", None),
    ("bad-public-key", lambda: files(patch_bytes("newpatch"), public_key=b"-----BEGIN PUBLIC KEY-----\nxx\n"), 400,
     "invalid_key", None),
    ("unknown-key-existing-name", lambda: files(patch_bytes("refusal", "2.0.0"), sign(patch_bytes("refusal", "2.0.0"), OTHER),
                                                 public_key=None), 403, "untrusted_key", None),
    ("patch-over-size-cap", _huge_patch, 413, "payload_too_large", "patch file is 640640 bytes; the limit is 524288"),
]


@pytest.fixture(scope="module")
def seeded(module_registry):
    """A registry with `refusal@1.0.0` published by alice; returns alice's headers."""
    alice = module_registry.user("alice")
    data = patch_bytes("refusal")
    r = module_registry.client.post("/api/v1/patches", files=files(data), headers=alice)
    assert r.status_code == 201, r.text
    return alice


@pytest.fixture
def registry(module_registry, seeded):
    return module_registry


@pytest.mark.parametrize("case", PUBLISH_CASES, ids=[c[0] for c in PUBLISH_CASES])
def test_bad_publish_is_refused_and_changes_nothing(registry, seeded, case):
    _, make, status, code, message = case
    before = registry.state()
    response = registry.client.post("/api/v1/patches", files=make(), headers=seeded)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    if message is not None:
        assert error["message"] == message
    assert error["message"] and not error["message"].endswith(".")
    assert registry.state() == before


RAW_CASES = [
    ("json-body", {"json": {"file": "x"}}, 400, "malformed_request",
     "publish needs a `multipart/form-data` body with `file` and `signature` parts"),
    ("broken-multipart", {"content": b"--zzz\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc\r\n",
                          "headers": {"Content-Type": "multipart/form-data; boundary=other"}}, 400, "malformed_request", None),
    ("multipart-without-boundary", {"content": b"abc", "headers": {"Content-Type": "multipart/form-data"}}, 400,
     "malformed_request", None),
    ("declared-oversized-body", {"content": b"x" * (1024 * 1024 + 1), "headers": {"Content-Type": "multipart/form-data; boundary=b"}},
     413, "payload_too_large", "request body exceeds the limit of 1048576 bytes"),
]


@pytest.mark.parametrize("case", RAW_CASES, ids=[c[0] for c in RAW_CASES])
def test_malformed_bodies(registry, seeded, case):
    _, kwargs, status, code, message = case
    before = registry.state()
    kwargs = dict(kwargs)
    kwargs["headers"] = {**kwargs.get("headers", {}), **seeded}
    response = registry.client.post("/api/v1/patches", **kwargs)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    if message:
        assert response.json()["error"]["message"] == message
    assert registry.state() == before


def test_streamed_oversized_body_is_cut_off(registry, seeded):
    """No Content-Length (chunked): the cap applies while the body streams in."""
    before = registry.state()
    boundary = b"bnd"

    def body():
        yield b"--bnd\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p\"\r\n\r\n"
        for _ in range(40):
            yield b"\0" * 65536  # 2.5 MiB in total, cap is 1 MiB
        yield b"\r\n--bnd--\r\n"

    response = registry.client.post("/api/v1/patches", content=body(),
                                    headers={**seeded, "Content-Type": f"multipart/form-data; boundary={boundary.decode()}"})
    assert response.status_code == 413
    assert response.json()["error"] == {"code": "payload_too_large", "message": "request body exceeds the limit of 1048576 bytes"}
    assert registry.state() == before


@pytest.mark.parametrize("headers,message", [
    ({}, "a valid API token is required (`Authorization: Bearer lpt_…`)"),
    ({"Authorization": "Basic YWxpY2U6eA=="}, "the `Authorization` header must be `Bearer lpt_…`"),
    ({"Authorization": "Bearer lpt_not-a-real-token"}, "the API token is unknown or revoked"),
], ids=["missing", "basic-auth", "unknown-token"])
def test_wrong_tokens_get_401(registry, seeded, headers, message):
    before = registry.state()
    response = registry.client.post("/api/v1/patches", files=files(patch_bytes("refusal", "2.0.0")), headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": {"code": "unauthorized", "message": message}}
    r = registry.client.post("/api/v1/patches/refusal/versions/1.0.0/yank", json={"reason": "x"}, headers=headers)
    assert r.status_code == 401
    assert registry.state() == before


@pytest.mark.parametrize("path,body,status,code", [
    ("/api/v1/patches/refusal/versions/1.0.0/yank", {}, 422, "validation_error"),
    ("/api/v1/patches/refusal/versions/1.0.0/yank", {"reason": ""}, 422, "validation_error"),
    ("/api/v1/patches/refusal/versions/1.0.0/yank", {"reason": "x", "extra": 1}, 422, "validation_error"),
    ("/api/v1/patches/refusal/versions/1.0.0/yank", b"{not json", 400, "malformed_request"),
    ("/api/v1/patches/refusal/keys", {"public_key_pem": "not a key"}, 400, "invalid_key"),
    ("/api/v1/patches/..%2F..%2Fetc/keys", {"public_key_pem": "x"}, 404, "not_found"),
    ("/api/v1/patches/admin/deprecate", {"message": "x"}, 404, "not_found"),
    ("/api/v1/tokens", {"scopes": ["root:*"]}, 400, "invalid_scope"),
], ids=["yank-no-reason", "yank-empty-reason", "yank-extra-field", "invalid-json", "bad-key-pem", "traversal-path",
        "reserved-name-path", "bad-scope"])
def test_bad_json_requests(registry, seeded, path, body, status, code):
    before = registry.state()
    if isinstance(body, bytes):
        response = registry.client.post(path, content=body, headers={**seeded, "Content-Type": "application/json"})
    else:
        response = registry.client.post(path, json=body, headers=seeded)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert registry.state() == before


def test_blob_and_metadata_paths_refuse_traversal(registry, seeded):
    for path in ["/blobs/sha256/../../registry.sqlite3", "/blobs/sha256/" + "g" * 64, "/blobs/sha256/" + "0" * 64,
                 "/tuf/metadata/..%2Ftuf-keys%2Froot.pem", "/tuf/metadata/0.root.json",
                 "/tuf/targets/refusal/../../tuf-keys/root.pem"]:
        response = registry.client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
