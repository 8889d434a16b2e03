"""Patch files, keys and signatures for tests: small numpy prefixes, no torch."""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from llmpatch.manifest import BaseModelRef, Manifest
from llmpatch.patchfile import encode_patch, read_patch_bytes
from llmpatch.signing import public_key_to_pem, sign_patch

ARCH = "sha256:" + "a" * 64
WEIGHTS = "sha256:" + "b" * 64
OTHER_ARCH = "sha256:" + "c" * 64


def new_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def pem(key: Ed25519PrivateKey) -> bytes:
    return public_key_to_pem(key.public_key())


def manifest(name="refusal", version="1.0.0", arch=ARCH, **extra) -> Manifest:
    fields = dict(name=name, version=version, base_model=BaseModelRef(architecture=arch, weights=WEIGHTS, name="tiny-test-model"),
                  n_virtual_tokens=4, hidden_size=8)
    fields.update(extra)
    return Manifest(**fields)


def patch_bytes(name="refusal", version="1.0.0", seed=0, **extra) -> bytes:
    prefix = np.random.default_rng(seed).standard_normal((4, 8)).astype(np.float32)
    return encode_patch(manifest(name, version, **extra), prefix)


def sign(data: bytes, key: Ed25519PrivateKey) -> bytes:
    return sign_patch(read_patch_bytes(data), key).to_json().encode()


def upload(data: bytes, key: Ed25519PrivateKey, public_key: bytes | None = None) -> dict:
    """The multipart `files=` argument for httpx."""
    files = {"file": ("p.safetensors", data, "application/octet-stream"),
             "signature": ("p.safetensors.sig", sign(data, key), "application/json")}
    if public_key is not None:
        files["public_key"] = ("key.pem", public_key, "application/x-pem-file")
    return files


def raw_patch(manifest_dict: dict, shape=(4, 8), dtype="F32", payload: bytes | None = None) -> bytes:
    """Safetensors bytes with any manifest, unvalidated: for hostile-input tests."""
    import json
    import struct

    from llmpatch.manifest import canonical_json

    payload = payload if payload is not None else np.zeros(shape, dtype="<f4").tobytes()
    header = {"__metadata__": {"format": "llm-patch", "format_version": "1", "manifest": canonical_json(manifest_dict)},
              "prefix": {"dtype": dtype, "shape": list(shape), "data_offsets": [0, len(payload)]}}
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)
    return struct.pack("<Q", len(header_bytes)) + header_bytes + payload


def manifest_dict(**changes) -> dict:
    data = manifest().to_dict()
    data.update(changes)
    return data


def raw_signature(name: str, version: str, data: bytes, key: Ed25519PrivateKey) -> bytes:
    """A signature document for bytes the core would refuse to parse."""
    import base64
    import hashlib

    from llmpatch.manifest import canonical_json
    from llmpatch.signing import _DOMAIN, key_id

    sha = hashlib.sha256(data).hexdigest()
    payload = _DOMAIN + canonical_json({"name": name.lower(), "version": version, "sha256": sha, "size": len(data)}).encode()
    return canonical_json({"format": "llm-patch-signature/1", "algorithm": "ed25519", "key_id": key_id(key.public_key()),
                           "signed": {"name": name, "version": version, "sha256": sha, "size": len(data)},
                           "signature": base64.b64encode(key.sign(payload)).decode()}).encode()
