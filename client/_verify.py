"""Checks on downloaded bytes, no I/O: digest and size, the strict file validator, the
publisher signature by the key the registry authorised, and the base-model fingerprint.

Every check raises a `VerificationError` naming what failed; callers install nothing unless
`verify_patch` returns. The resolver chose from index facts; here the signed bytes must agree
with them, or the install is refused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Mapping

from ..errors import IncompatibleModel, SignatureError, VerificationError
from ..fingerprint import Fingerprint, short
from ..manifest import canonical_name
from ..patchfile import PatchFile, read_patch_bytes
from ..signing import SignatureDocument, verify_patch_signature


class DigestMismatch(VerificationError):
    """Bytes differ from what signed metadata or the lockfile says they are."""


class RevokedKey(SignatureError):
    """The publisher key was revoked for this patch name."""


class MetadataMismatch(VerificationError):
    """The signed file disagrees with what the index claimed when it was chosen."""


@dataclass(frozen=True)
class Expected:
    """What a release must be, from signed metadata or the lockfile."""

    name: str
    version: str
    sha256: str
    size: int
    key_id: str  # the key the registry authorised for this upload ("" = any trusted key)
    architecture: str = ""
    weights: str = ""
    n_virtual_tokens: int | None = None
    dependencies: tuple = ()
    conflicts: tuple = ()


@dataclass(frozen=True)
class Verified:
    patch: PatchFile
    signature: SignatureDocument
    signature_sha256: str
    key_id: str


def check_digest(data: bytes, sha256: str, size: int, what: str) -> None:
    if len(data) != size:
        raise DigestMismatch(f"{what} is {len(data)} bytes, expected {size}")
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise DigestMismatch(f"{what} has sha256 {actual[:16]}…, expected {sha256[:16]}…", hint="the bytes were changed in transit or on disk; nothing was installed")


def check_fingerprint(patch: PatchFile, fingerprint: Fingerprint) -> None:
    m = patch.manifest
    if m.base_model.architecture != fingerprint.architecture or m.base_model.weights != fingerprint.weights:
        which = "architecture" if m.base_model.architecture != fingerprint.architecture else "weights"
        wanted = getattr(m.base_model, which)
        raise IncompatibleModel(
            f"`{m.name}@{m.version}` was built for base model {which} `{short(wanted)}` and your model's is `{short(getattr(fingerprint, which))}`",
            hint="install a version built for your model (`patch info NAME` lists each version's base model)",
        )


def _relation_texts(relations) -> list[str]:
    return sorted(f"{canonical_name(r.name)}@{r.spec}" for r in relations)


def verify_patch(
    expected: Expected,
    data: bytes,
    signature_bytes: bytes,
    keys: Mapping[str, object],
    fingerprint: Fingerprint | None,
    *,
    revoked: frozenset[str] = frozenset(),
) -> Verified:
    """All checks on one patch; returns what passed or raises the first failure."""
    label = f"`{expected.name}@{expected.version}`"
    check_digest(data, expected.sha256, expected.size, f"patch file of {label}")
    patch = read_patch_bytes(data)
    m = patch.manifest
    if m.canonical_name != canonical_name(expected.name) or m.semver.compare(expected.version) != 0:
        raise MetadataMismatch(f"the file served as {label} contains `{m.name}@{m.version}`")
    document = SignatureDocument.from_json(signature_bytes)
    if expected.key_id and document.key_id != expected.key_id:
        raise SignatureError(
            f"{label} is signed by key `{document.key_id[:16]}`, but the registry authorised `{expected.key_id[:16]}` for it",
        )
    if document.key_id in revoked:
        raise RevokedKey(f"{label} is signed by key `{document.key_id[:16]}`, which was revoked for `{expected.name}`",
                         hint="ask the publisher for a version signed by a current key")
    signer = verify_patch_signature(patch, document, keys)
    if expected.architecture and (m.base_model.architecture, m.base_model.weights) != (expected.architecture, expected.weights):
        raise MetadataMismatch(f"{label}: the signed file names another base model than the index said")
    if expected.n_virtual_tokens is not None and m.n_virtual_tokens != expected.n_virtual_tokens:
        raise MetadataMismatch(f"{label}: the signed file has {m.n_virtual_tokens} virtual tokens, the index said {expected.n_virtual_tokens}")
    if expected.n_virtual_tokens is not None and (
        _relation_texts(m.dependencies) != _relation_texts(expected.dependencies)
        or _relation_texts(m.conflicts) != _relation_texts(expected.conflicts)
    ):
        raise MetadataMismatch(f"{label}: the signed file's dependencies or conflicts differ from the index")
    if fingerprint is not None:
        check_fingerprint(patch, fingerprint)
    return Verified(patch, document, hashlib.sha256(signature_bytes).hexdigest(), signer)
