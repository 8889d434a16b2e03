"""Publishing one patch version, atomically.

Order: validate everything that needs no database (file, manifest, name, signature document,
key PEM), then in one write transaction check ownership, key and version, store the blobs
(temp file + rename; a blob nobody references is harmless), insert the rows, rebuild the
index and re-sign the TUF metadata. Until that transaction commits, readers see nothing.
"""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from llmpatch.errors import InvalidManifest, InvalidPatchFile, SignatureError
from llmpatch.manifest import check_name, check_version, strict_json_loads
from llmpatch.patchfile import PatchFile, read_patch_bytes
from llmpatch.signing import SignatureDocument, public_key_from_pem, verify_patch_signature

from . import schemas
from .auth import Principal
from .catalog import audit, blob_url, parse_public_key, rebuild_index
from .errors import ApiError, bad_request, conflict, forbidden
from .models import Patch, PublisherKey, Version, VersionDomain
from .names import check_patch_name, skeleton


def _classify_manifest_error(data: bytes, exc: InvalidPatchFile) -> ApiError:
    """Give a bad name or version its own code; everything else is `invalid_patch_file`.
    Re-reads the manifest leniently (the strict reader already refused the file)."""
    refused = bad_request("invalid_patch_file", str(exc))
    try:
        header_len = int.from_bytes(data[:8], "little")
        header = strict_json_loads(data[8 : 8 + header_len], "header")
        manifest = strict_json_loads(header["__metadata__"]["manifest"], "manifest")
    except Exception:
        return refused
    if not isinstance(manifest, dict):
        return refused
    for field, check, code in (("name", check_name, "invalid_name"), ("version", check_version, "invalid_version")):
        if field in manifest:
            try:
                check(manifest[field])
            except InvalidManifest as inner:
                return bad_request(code, str(inner))
    return refused


def validate_upload(data: bytes, signature: bytes, public_key_pem: bytes | None, max_patch_bytes: int):
    """Checks that need no database. Returns (patch, canonical name, signature doc, key)."""
    if len(data) > max_patch_bytes:
        raise ApiError(413, "payload_too_large", f"patch file is {len(data)} bytes; the limit is {max_patch_bytes}")
    try:
        patch = read_patch_bytes(data)
    except InvalidPatchFile as exc:
        raise _classify_manifest_error(data, exc) from None
    canonical = check_patch_name(patch.manifest.name)
    try:
        document = SignatureDocument.from_json(signature)
    except SignatureError as exc:
        raise bad_request("invalid_signature", str(exc)) from None
    key = None
    if public_key_pem:
        kid, pem = parse_public_key(public_key_pem)
        key = (kid, pem)
    return patch, canonical, document, key


class _Raced(Exception):
    """Another transaction committed the same new name between our reads; start over."""


def _version_key(version: str) -> str:
    return version.split("+", 1)[0]


def publish(db, blobs, tuf, principal: Principal, data: bytes, signature: bytes,
            public_key_pem: bytes | None, max_patch_bytes: int) -> schemas.PublishOut:
    patch, canonical, document, new_key = validate_upload(data, signature, public_key_pem, max_patch_bytes)
    principal.require("publish", canonical)
    for attempt in range(2):
        try:
            return _publish_once(db, blobs, tuf, principal, patch, canonical, document, new_key, data, signature)
        except (IntegrityError, _Raced):
            # Two uploads raced and the database's unique constraints decided the winner:
            # (patches.canonical_name), (patches.skeleton) or (versions.patch_id, version_key).
            # We rely on the constraint instead of a read-then-insert check, which cannot be
            # made safe without serialising every publish. Retrying once re-runs all checks
            # against the committed winner: identical bytes become a no-op, anything else a 409.
            if attempt == 1:
                raise conflict("version_exists", f"`{canonical}@{patch.manifest.version}` was published concurrently") from None
    raise AssertionError("unreachable")


def _publish_once(db, blobs, tuf, principal, patch: PatchFile, canonical, document, new_key, data, signature):
    m = patch.manifest
    with db.writer() as session:
        # Lock the patch row: publishes of one name queue here, so each rebuilds the index
        # from the versions its predecessors committed (READ COMMITTED sees them after the wait).
        row = session.execute(select(Patch).where(Patch.canonical_name == canonical).with_for_update()).scalar_one_or_none()
        if row is not None:
            if row.owner_id != principal.user_id:
                raise forbidden(f"user `{principal.user}` does not own `{canonical}`")
            existing = session.execute(
                select(Version).where(Version.patch_id == row.id, Version.version_key == _version_key(m.version))
            ).scalar_one_or_none()
            if existing is not None:
                if existing.sha256 == patch.sha256 and existing.version == m.version:
                    return _out(canonical, existing, created=False)
                raise conflict("version_exists", f"`{canonical}@{existing.version}` already exists with different content; versions are immutable")
            keys = session.execute(select(PublisherKey).where(PublisherKey.patch_id == row.id)).scalars().all()
            trusted = {k.key_id: k for k in keys}
            key = trusted.get(document.key_id)
            if key is None:
                raise forbidden(f"signed by key `{document.key_id[:16]}`, which is not registered for `{canonical}`", "untrusted_key")
            if key.revoked_at is not None:
                raise forbidden(f"signed by key `{document.key_id[:16]}`, which was revoked for `{canonical}`", "revoked_key")
            pem = key.public_key_pem
        else:
            if new_key is None:
                raise bad_request("malformed_request", f"`{canonical}` is a new name: include your public key as the `public_key` part to claim it")
            if new_key[0] != document.key_id:
                raise forbidden(f"signed by key `{document.key_id[:16]}`, but the `public_key` part is key `{new_key[0][:16]}`", "untrusted_key")
            similar = session.execute(select(Patch.canonical_name).where(Patch.skeleton == skeleton(canonical))).scalar_one_or_none()
            if similar == canonical:  # claimed by a concurrent upload since our first read
                raise _Raced()
            if similar is not None:
                raise conflict("name_taken", f"`{canonical}` is too similar to the existing patch `{similar}`")
            pem = new_key[1]
        try:
            verify_patch_signature(patch, document, {document.key_id: public_key_from_pem(pem.encode())})
        except SignatureError as exc:
            raise bad_request("invalid_signature", str(exc)) from None

        # Blobs first: if anything below fails they are unreferenced, which readers never see.
        blobs.put(data)
        signature_sha256 = blobs.put(signature)
        if row is None:
            row = Patch(name=m.name, canonical_name=canonical, skeleton=skeleton(canonical), owner_id=principal.user_id,
                        description=m.description, revision=0, index_json=b"")
            session.add(row)
            session.flush()
            session.add(PublisherKey(patch_id=row.id, key_id=new_key[0], public_key_pem=new_key[1], added_by=principal.user_id))
            audit(session, principal.user, "claim", canonical, key_id=new_key[0])
        version = Version(
            patch_id=row.id, version=m.version, version_key=_version_key(m.version), sha256=patch.sha256, size=patch.size,
            signature_sha256=signature_sha256, signature_size=len(signature), key_id=document.key_id,
            manifest_json=json.dumps(m.to_dict(), sort_keys=True), base_architecture=m.base_model.architecture,
            base_weights=m.base_model.weights, uploaded_by=principal.user_id,
        )
        session.add(version)
        session.flush()  # the unique constraint fires here (or at commit)
        for domain in sorted(set(m.domains)):
            session.add(VersionDomain(version_id=version.id, domain=domain.lower()))
        row.description = m.description
        audit(session, principal.user, "publish", canonical, m.version, sha256=patch.sha256, key_id=document.key_id)
        rebuild_index(session, row)
        tuf.targets_changed(session)
        return _out(canonical, version, created=True)


def _out(canonical: str, version: Version, created: bool) -> schemas.PublishOut:
    return schemas.PublishOut(
        name=canonical, version=version.version, sha256=version.sha256, size=version.size,
        signature_sha256=version.signature_sha256, key_id=version.key_id, created=created,
        file_url=blob_url(version.sha256), signature_url=blob_url(version.signature_sha256),
    )
