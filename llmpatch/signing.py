"""Ed25519 signatures over a patch file, as a detached JSON document (`FILE.sig`).

What is signed is a small canonical JSON payload binding the file's sha256 and size to the
patch's name and version, under a domain-separation prefix, so a signature cannot be
replayed onto other bytes, another name, or another kind of message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import InvalidManifest, SignatureError
from .manifest import canonical_json, canonical_name, strict_json_loads
from .patchfile import PatchFile

SIGNATURE_FORMAT = "llm-patch-signature/1"
SIGNATURE_SUFFIX = ".sig"
_DOMAIN = b"llm-patch-signature/1\n"
MAX_SIGNATURE_DOCUMENT_BYTES = 16 * 1024


def key_id(public_key: Ed25519PublicKey) -> str:
    """A key's id: the hex sha256 of its raw 32 public bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_key_from_pem(pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError("only Ed25519 public keys are accepted")
    return key


def public_key_to_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class SignatureDocument:
    key_id: str
    name: str
    version: str
    sha256: str
    size: int
    signature: bytes

    def signed_payload(self) -> bytes:
        return _payload(self.name, self.version, self.sha256, self.size)

    def to_json(self) -> str:
        return canonical_json(
            {
                "format": SIGNATURE_FORMAT,
                "algorithm": "ed25519",
                "key_id": self.key_id,
                "signed": {"name": self.name, "version": self.version, "sha256": self.sha256, "size": self.size},
                "signature": base64.b64encode(self.signature).decode(),
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> "SignatureDocument":
        if len(text) > MAX_SIGNATURE_DOCUMENT_BYTES:
            raise SignatureError(f"signature document is {len(text)} bytes; the limit is {MAX_SIGNATURE_DOCUMENT_BYTES}")
        try:
            doc = strict_json_loads(text, "signature document")
        except InvalidManifest as exc:
            raise SignatureError(str(exc)) from None
        try:
            if doc["format"] != SIGNATURE_FORMAT or doc["algorithm"] != "ed25519":
                raise SignatureError(f"unsupported signature format {doc['format']!r} / algorithm {doc['algorithm']!r}")
            signed = doc["signed"]
            signature = base64.b64decode(doc["signature"], validate=True)
            result = cls(
                key_id=str(doc["key_id"]),
                name=str(signed["name"]),
                version=str(signed["version"]),
                sha256=str(signed["sha256"]),
                size=int(signed["size"]),
                signature=signature,
            )
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            if isinstance(exc, SignatureError):
                raise
            raise SignatureError(f"signature document is malformed: {exc!r}") from None
        return result


def _payload(name: str, version: str, sha256: str, size: int) -> bytes:
    body = {"name": canonical_name(name), "version": version, "sha256": sha256, "size": size}
    return _DOMAIN + canonical_json(body).encode()


def sign_patch(patch: PatchFile, private_key: Ed25519PrivateKey) -> SignatureDocument:
    m = patch.manifest
    payload = _payload(m.name, m.version, patch.sha256, patch.size)
    return SignatureDocument(
        key_id=key_id(private_key.public_key()),
        name=m.name,
        version=m.version,
        sha256=patch.sha256,
        size=patch.size,
        signature=private_key.sign(payload),
    )


def verify_patch_signature(
    patch: PatchFile, document: SignatureDocument, trusted_keys: Mapping[str, Ed25519PublicKey]
) -> str:
    """Check `document` signs exactly these bytes, name and version, by one of `trusted_keys`
    (key id -> key). Returns the signer's key id; raises `SignatureError` otherwise."""
    m = patch.manifest
    short = document.key_id[:16]
    key = trusted_keys.get(document.key_id)
    if key is None:
        raise SignatureError(
            f"signed by key `{short}`, which is not trusted here",
            hint="import the publisher's public key with `patch keys import FILE` if you trust it",
        )
    if key_id(key) != document.key_id:  # a key filed under another key's id
        raise SignatureError(f"trusted key filed as `{short}` has a different id; the key store is corrupt")
    try:
        key.verify(document.signature, document.signed_payload())
    except InvalidSignature:
        raise SignatureError(f"signature by key `{short}` is not valid for its signed payload") from None
    if document.sha256 != patch.sha256 or document.size != patch.size:
        raise SignatureError(
            f"file content does not match the signature: signed sha256 {document.sha256[:16]}… "
            f"({document.size} bytes), file is {patch.sha256[:16]}… ({patch.size} bytes)",
            hint="the file was changed after it was signed; do not use it",
        )
    if canonical_name(document.name) != m.canonical_name or document.version != m.version:
        raise SignatureError(
            f"signature is for {document.name}@{document.version}, the file says {m.name}@{m.version}"
        )
    return document.key_id
