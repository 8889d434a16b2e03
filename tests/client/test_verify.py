"""The checks on downloaded bytes, one test per attack, each naming what failed."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from llmpatch.client._verify import DigestMismatch, Expected, MetadataMismatch, RevokedKey, verify_patch
from llmpatch.errors import IncompatibleModel, InvalidPatchFile, SignatureError
from llmpatch.fingerprint import Fingerprint
from llmpatch.manifest import BaseModelRef, Relation
from llmpatch.patchfile import read_patch_bytes
from llmpatch.signing import key_id, sign_patch
from patches import FAKE_FP, make_patch_bytes

MODEL = Fingerprint(FAKE_FP, FAKE_FP)
KEY = Ed25519PrivateKey.generate()
KID = key_id(KEY.public_key())


def signed(data: bytes, key=KEY) -> bytes:
    return sign_patch(read_patch_bytes(data), key).to_json().encode()


def expect(data: bytes, **over) -> Expected:
    fields = dict(name="toxicity", version="1.0.0", sha256=hashlib.sha256(data).hexdigest(), size=len(data), key_id=KID,
                  architecture=FAKE_FP, weights=FAKE_FP, n_virtual_tokens=4)
    fields.update(over)
    return Expected(**fields)


def test_good_patch_passes():
    data = make_patch_bytes()
    verified = verify_patch(expect(data), data, signed(data), {KID: KEY.public_key()}, MODEL)
    assert verified.key_id == KID and verified.patch.manifest.name == "toxicity"


def test_changed_bytes_fail_the_digest_before_anything_is_parsed():
    data = make_patch_bytes()
    with pytest.raises(DigestMismatch, match=r"^patch file of `toxicity@1.0.0` has sha256 [0-9a-f]{16}…, expected"):
        verify_patch(expect(data), data[:-1] + b"\x01", signed(data), {KID: KEY.public_key()}, MODEL)
    with pytest.raises(DigestMismatch, match=f"^patch file of `toxicity@1.0.0` is {len(data) + 1} bytes, expected {len(data)}$"):
        verify_patch(expect(data), data + b"\0", signed(data), {KID: KEY.public_key()}, MODEL)


def test_signed_by_another_key_than_the_registry_authorised():
    data = make_patch_bytes()
    other = Ed25519PrivateKey.generate()
    other_id = key_id(other.public_key())
    with pytest.raises(SignatureError) as info:
        verify_patch(expect(data), data, signed(data, other), {other_id: other.public_key(), KID: KEY.public_key()}, MODEL)
    assert str(info.value) == f"`toxicity@1.0.0` is signed by key `{other_id[:16]}`, but the registry authorised `{KID[:16]}` for it"


def test_revoked_key():
    data = make_patch_bytes()
    with pytest.raises(RevokedKey, match="which was revoked for `toxicity`"):
        verify_patch(expect(data), data, signed(data), {KID: KEY.public_key()}, MODEL, revoked=frozenset({KID}))


def test_signature_over_other_bytes():
    data, other = make_patch_bytes(seed=0), make_patch_bytes(seed=1)
    with pytest.raises(SignatureError, match="file content does not match the signature"):
        verify_patch(expect(data), data, signed(other), {KID: KEY.public_key()}, MODEL)


def test_file_served_under_another_name():
    data = make_patch_bytes(name="harmfulness")
    with pytest.raises(MetadataMismatch, match="^the file served as `toxicity@1.0.0` contains `harmfulness@1.0.0`$"):
        verify_patch(expect(data), data, signed(data), {KID: KEY.public_key()}, MODEL)


def test_index_that_hid_a_dependency():
    data = make_patch_bytes(dependencies=(Relation("base-safety", "^1"),))
    with pytest.raises(MetadataMismatch, match="dependencies or conflicts differ from the index"):
        verify_patch(expect(data), data, signed(data), {KID: KEY.public_key()}, MODEL)


def test_wrong_model():
    other = "sha256:" + "cd" * 32
    data = make_patch_bytes(base=BaseModelRef(other, FAKE_FP, "x"))
    with pytest.raises(IncompatibleModel, match="was built for base model architecture `sha256:cdcdcdcdcdcd` and your model's is `sha256:abababababab`"):
        verify_patch(expect(data, architecture=other), data, signed(data), {KID: KEY.public_key()}, MODEL)


def test_not_a_patch_file():
    data = b"\x80\x04" + b"pickle" * 10
    with pytest.raises(InvalidPatchFile, match="pickle"):
        verify_patch(expect(data), data, b"{}", {KID: KEY.public_key()}, MODEL)
