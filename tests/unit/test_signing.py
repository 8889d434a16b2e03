"""Signatures fail closed: tampered bytes, other names, unknown or mislabelled keys."""

import dataclasses
import json
import os
import stat

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from llmpatch.errors import KeyStoreError, SignatureError
from llmpatch.keystore import KeyStore
from llmpatch.patchfile import read_patch_bytes
from llmpatch.signing import SignatureDocument, key_id, sign_patch, verify_patch_signature
from patches import make_patch, make_patch_bytes


@pytest.fixture
def key():
    return Ed25519PrivateKey.generate()


def trusted(*keys):
    return {key_id(k.public_key()): k.public_key() for k in keys}


def test_valid_signature_names_the_signer(key):
    patch = make_patch()
    document = sign_patch(patch, key)
    assert verify_patch_signature(patch, document, trusted(key)) == key_id(key.public_key())


def test_document_round_trips_through_json(key):
    document = sign_patch(make_patch(), key)
    assert SignatureDocument.from_json(document.to_json()) == document


def test_unknown_key_is_refused(key):
    patch = make_patch()
    with pytest.raises(SignatureError, match="not trusted here"):
        verify_patch_signature(patch, sign_patch(patch, key), trusted(Ed25519PrivateKey.generate()))


def test_tampered_tensor_bytes_are_refused(key):
    data = bytearray(make_patch_bytes())
    document = sign_patch(read_patch_bytes(bytes(data)), key)
    data[-1] ^= 0x01
    with pytest.raises(SignatureError, match="file content does not match the signature"):
        verify_patch_signature(read_patch_bytes(bytes(data)), document, trusted(key))


def test_other_version_with_copied_signature_is_refused(key):
    document = sign_patch(make_patch(version="1.0.0"), key)
    with pytest.raises(SignatureError, match="does not match the signature"):
        verify_patch_signature(make_patch(version="2.0.0"), document, trusted(key))


def test_edited_signed_fields_break_the_signature(key):
    patch = make_patch()
    document = dataclasses.replace(sign_patch(patch, key), version="9.9.9")
    with pytest.raises(SignatureError, match="is not valid for its signed payload"):
        verify_patch_signature(patch, document, trusted(key))


def test_key_filed_under_another_id_is_refused(key):
    other = Ed25519PrivateKey.generate()
    patch = make_patch()
    document = sign_patch(patch, key)
    with pytest.raises(SignatureError, match="has a different id"):
        verify_patch_signature(patch, document, {document.key_id: other.public_key()})


@pytest.mark.parametrize(
    "text,message",
    [
        ("not json", "not valid JSON"),
        ('{"format": "x", "algorithm": "rsa"}', "unsupported signature format"),
        ('{"format": "llm-patch-signature/1", "algorithm": "ed25519"}', "malformed"),
        ("x" * 20000, "the limit is 16384"),
    ],
)
def test_malformed_documents(text, message):
    with pytest.raises(SignatureError, match=message):
        SignatureDocument.from_json(text)


def test_bad_base64_signature(key):
    doc = json.loads(sign_patch(make_patch(), key).to_json())
    doc["signature"] = "***"
    with pytest.raises(SignatureError, match="malformed"):
        SignatureDocument.from_json(json.dumps(doc))


def test_keystore_generate_export_import(tmp_path):
    store = KeyStore()
    info = store.generate("release")
    assert info.has_private and len(info.key_id) == 64
    private_file = store.root / "private" / f"{info.key_id}.pem"
    assert stat.S_IMODE(os.stat(private_file).st_mode) == 0o600
    other = KeyStore(tmp_path / "other")
    imported = other.import_public(store.export_public(info.key_id[:8]), "friend")
    assert imported.key_id == info.key_id and not imported.has_private
    patch = make_patch()
    document = sign_patch(patch, store.private_key())
    assert verify_patch_signature(patch, document, other.trusted_keys()) == info.key_id


def test_keystore_private_export_round_trip(tmp_path):
    store = KeyStore()
    info = store.generate()
    other = KeyStore(tmp_path / "other")
    assert other.import_private(store.export_private(info.key_id)).has_private
    assert other.private_key().public_key().public_bytes_raw() == store.private_key().public_key().public_bytes_raw()


def test_keystore_encrypts_with_passphrase(monkeypatch):
    monkeypatch.setenv("LLMPATCH_KEY_PASSPHRASE", "s3cret")
    store = KeyStore()
    info = store.generate()
    assert b"ENCRYPTED" in (store.root / "private" / f"{info.key_id}.pem").read_bytes()
    monkeypatch.setenv("LLMPATCH_KEY_PASSPHRASE", "wrong")
    with pytest.raises(KeyStoreError, match="cannot open signing key"):
        store.private_key()


def test_keystore_resolution_errors():
    store = KeyStore()
    with pytest.raises(KeyStoreError, match="no signing key here"):
        store.private_key()
    store.generate()
    store.generate()
    with pytest.raises(KeyStoreError, match="several signing keys"):
        store.private_key()
    with pytest.raises(KeyStoreError, match="too short"):
        store.resolve("abc")
    with pytest.raises(KeyStoreError, match="no key with id `00000000`"):
        store.resolve("00000000")
