"""Writes other than publish (yank, un-yank, deprecate, keys) and the helpers every write
shares: rebuilding the per-patch index document and appending to the audit log."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import semver
from sqlalchemy import select
from sqlalchemy.orm import Session

from llmpatch.errors import SignatureError
from llmpatch.signing import key_id as compute_key_id
from llmpatch.signing import public_key_from_pem

from . import schemas
from .auth import Principal
from .errors import ApiError, bad_request, conflict, forbidden, not_found
from .index_cache import notify_changed
from .models import AuditEvent, Patch, PublisherKey, User, Version, utcnow
from .names import check_patch_name


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes; we only store UTC
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def blob_url(sha256: str) -> str:
    return f"/blobs/sha256/{sha256}"


def audit(session: Session, actor: str, action: str, patch: str | None, version: str | None = None, **detail) -> None:
    session.add(AuditEvent(actor=actor, action=action, patch_name=patch, version=version,
                           detail=json.dumps(detail, sort_keys=True)))


def version_out(row: Version, uploader: str) -> schemas.VersionOut:
    manifest = json.loads(row.manifest_json)
    return schemas.VersionOut(
        version=row.version, sha256=row.sha256, size=row.size, file_url=blob_url(row.sha256),
        signature_sha256=row.signature_sha256, signature_size=row.signature_size,
        signature_url=blob_url(row.signature_sha256), key_id=row.key_id,
        base_model=manifest["base_model"], n_virtual_tokens=manifest["n_virtual_tokens"],
        hidden_size=manifest["hidden_size"], dtype=manifest.get("dtype", "F32"),
        domains=manifest.get("domains", []), dependencies=manifest.get("dependencies", []),
        conflicts=manifest.get("conflicts", []), yanked=row.yanked, yank_reason=row.yank_reason,
        uploaded_at=iso(row.uploaded_at), uploaded_by=uploader, manifest=manifest,
    )


def rebuild_index(session: Session, patch: Patch) -> None:
    """Recompute the stored index document and bump the revision (the ETag)."""
    session.flush()
    rows = session.execute(
        select(Version, User.name).join(User, Version.uploaded_by == User.id).where(Version.patch_id == patch.id)
    ).all()
    rows.sort(key=lambda r: semver.Version.parse(r[0].version))
    owner = session.get(User, patch.owner_id).name
    index = schemas.IndexOut(name=patch.canonical_name, owner=owner, deprecated=patch.deprecated,
                             versions=[version_out(v, uploader) for v, uploader in rows])
    patch.index_json = index.model_dump_json().encode()
    patch.revision = (patch.revision or 0) + 1
    patch.updated_at = utcnow()
    notify_changed(session, patch.canonical_name)


def get_patch(session: Session, name: str, *, for_update: bool = False) -> Patch:
    try:
        canonical = check_patch_name(name)
    except ApiError:
        raise not_found(f"no patch named `{name[:80]}`") from None
    query = select(Patch).where(Patch.canonical_name == canonical)
    if for_update:
        query = query.with_for_update()
    patch = session.execute(query).scalar_one_or_none()
    if patch is None:
        raise not_found(f"no patch named `{canonical}`")
    return patch


def require_owner(principal: Principal, patch: Patch, action: str) -> None:
    principal.require(action, patch.canonical_name)
    if patch.owner_id != principal.user_id:
        raise forbidden(f"user `{principal.user}` does not own `{patch.canonical_name}`")


def get_version(session: Session, patch: Patch, version: str) -> Version:
    row = session.execute(
        select(Version).where(Version.patch_id == patch.id, Version.version == version)
    ).scalar_one_or_none()
    if row is None:
        raise not_found(f"no version `{version[:80]}` of `{patch.canonical_name}`")
    return row


def set_yanked(session: Session, tuf, principal: Principal, name: str, version: str, reason: str | None) -> schemas.VersionOut:
    patch = get_patch(session, name, for_update=True)
    require_owner(principal, patch, "yank")
    row = get_version(session, patch, version)
    row.yanked = reason is not None
    row.yank_reason = reason
    audit(session, principal.user, "yank" if reason is not None else "unyank", patch.canonical_name, row.version,
          **({"reason": reason} if reason is not None else {}))
    rebuild_index(session, patch)
    tuf.targets_changed(session)
    uploader = session.get(User, row.uploaded_by).name
    return version_out(row, uploader)


def set_deprecated(session: Session, principal: Principal, name: str, message: str | None) -> schemas.DeprecateOut:
    patch = get_patch(session, name, for_update=True)
    require_owner(principal, patch, "yank")
    patch.deprecated = message
    audit(session, principal.user, "deprecate" if message is not None else "undeprecate", patch.canonical_name,
          **({"message": message} if message is not None else {}))
    rebuild_index(session, patch)
    return schemas.DeprecateOut(name=patch.canonical_name, deprecated=message)


def parse_public_key(pem: str | bytes) -> tuple[str, str]:
    """Return (key id, normalised PEM) or raise 400 `invalid_key`."""
    from llmpatch.signing import public_key_to_pem

    try:
        key = public_key_from_pem(pem.encode() if isinstance(pem, str) else pem)
    except SignatureError as exc:
        raise bad_request("invalid_key", str(exc)) from None
    return compute_key_id(key), public_key_to_pem(key).decode()


def key_out(row: PublisherKey) -> schemas.KeyOut:
    return schemas.KeyOut(key_id=row.key_id, public_key_pem=row.public_key_pem, added_at=iso(row.added_at),
                          revoked_at=iso(row.revoked_at))


def add_key(session: Session, principal: Principal | None, name: str, pem: str, *, actor: str | None = None) -> schemas.KeyOut:
    """Register a publisher key for a patch name. `principal` None means a local CLI admin."""
    patch = get_patch(session, name, for_update=True)
    if principal is not None:
        require_owner(principal, patch, "admin")
    kid, normalised = parse_public_key(pem)
    existing = session.execute(
        select(PublisherKey).where(PublisherKey.patch_id == patch.id, PublisherKey.key_id == kid)
    ).scalar_one_or_none()
    if existing is not None:
        raise conflict("key_exists", f"key `{kid[:16]}` is already registered for `{patch.canonical_name}`")
    row = PublisherKey(patch_id=patch.id, key_id=kid, public_key_pem=normalised,
                       added_by=principal.user_id if principal else patch.owner_id)
    session.add(row)
    audit(session, actor or principal.user, "key_add", patch.canonical_name, key_id=kid)
    session.flush()
    return key_out(row)


def revoke_key(session: Session, principal: Principal | None, name: str, kid: str, *, actor: str | None = None,
               tuf=None) -> schemas.KeyOut:
    """Revoke a publisher key; with `tuf`, re-sign targets so the revocation is in signed metadata."""
    patch = get_patch(session, name, for_update=True)
    if principal is not None:
        require_owner(principal, patch, "admin")
    row = session.execute(
        select(PublisherKey).where(PublisherKey.patch_id == patch.id, PublisherKey.key_id == kid)
    ).scalar_one_or_none()
    if row is None:
        raise not_found(f"no key `{kid[:64]}` registered for `{patch.canonical_name}`")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        audit(session, actor or principal.user, "key_revoke", patch.canonical_name, key_id=kid)
        session.flush()
        if tuf is not None:
            tuf.targets_changed(session)
    session.flush()
    return key_out(row)
