"""Tables. Rows never leave the registry as such: `schemas.py` shapes every response.

Decisions:
- Nothing is ever deleted from `versions`: the unique constraint on (patch, version_key)
  is what keeps name@version immutable forever, including after a yank.
- `version_key` is the version without `+build` metadata, since semver gives `1.0.0+a` and
  `1.0.0+b` the same precedence and a client could not tell which one it resolved.
- `patches.index_json` is the per-patch index document, rebuilt inside every write
  transaction, so the read path is one primary-key-like lookup and never writes.
- `audit_events` is append-only: the code only ever inserts into it.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    BigInteger, Boolean, DateTime, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Token(Base):
    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the secret
    description: Mapped[str] = mapped_column(String(256), default="")
    scopes: Mapped[str] = mapped_column(Text)  # space-separated `action:name`
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Patch(Base):
    __tablename__ = "patches"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))  # as first published
    canonical_name: Mapped[str] = mapped_column(String(64), unique=True)
    # Confusable-folded name (0->o, 1->l, ...): unique, so `refusa1` cannot shadow `refusal`.
    skeleton: Mapped[str] = mapped_column(String(64), unique=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    description: Mapped[str] = mapped_column(Text, default="")
    deprecated: Mapped[str | None] = mapped_column(Text, nullable=True)
    revision: Mapped[int] = mapped_column(Integer, default=0)  # bumps on every change; the ETag
    index_json: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PublisherKey(Base):
    __tablename__ = "publisher_keys"
    __table_args__ = (UniqueConstraint("patch_id", "key_id", name="uq_publisher_keys_patch_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patch_id: Mapped[int] = mapped_column(ForeignKey("patches.id"), index=True)
    key_id: Mapped[str] = mapped_column(String(64))
    public_key_pem: Mapped[str] = mapped_column(Text)
    added_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Version(Base):
    __tablename__ = "versions"
    __table_args__ = (UniqueConstraint("patch_id", "version_key", name="uq_versions_patch_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patch_id: Mapped[int] = mapped_column(ForeignKey("patches.id"), index=True)
    version: Mapped[str] = mapped_column(String(128))
    version_key: Mapped[str] = mapped_column(String(128))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    signature_sha256: Mapped[str] = mapped_column(String(64))
    signature_size: Mapped[int] = mapped_column(Integer)
    key_id: Mapped[str] = mapped_column(String(64))
    manifest_json: Mapped[str] = mapped_column(Text)
    base_architecture: Mapped[str] = mapped_column(String(71), index=True)
    base_weights: Mapped[str] = mapped_column(String(71), index=True)
    uploaded_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    uploaded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    yanked: Mapped[bool] = mapped_column(Boolean, default=False)
    yank_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class VersionDomain(Base):
    """One row per (version, domain), so search by domain is an indexed lookup."""

    __tablename__ = "version_domains"
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"), primary_key=True)
    domain: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class AuditEvent(Base):
    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    patch_name: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    version: Mapped[str | None] = mapped_column(String(128), nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="{}")  # JSON


class TufMetadata(Base):
    """Every signed version of every role, kept so clients can fetch `N.root.json` etc."""

    __tablename__ = "tuf_metadata"
    role: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    expires: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RepoState(Base):
    """A single row (id=1) that write transactions lock (`SELECT ... FOR UPDATE`) before
    re-signing TUF metadata, so metadata versions never fork under concurrent writers."""

    __tablename__ = "repo_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    targets_version: Mapped[int] = mapped_column(Integer, default=0)
    snapshot_version: Mapped[int] = mapped_column(Integer, default=0)
    timestamp_version: Mapped[int] = mapped_column(Integer, default=0)
    root_version: Mapped[int] = mapped_column(Integer, default=0)
