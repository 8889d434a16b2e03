"""The registry as a TUF repository, built with python-tuf's Metadata API.

Every write (publish, yank, un-yank) re-signs targets, snapshot and timestamp inside the same
database transaction as the change, so a reader sees either the old repository state or the
new one. All signed versions are kept in `tuf_metadata`; any worker can serve them.

Keys: one Ed25519 key per top-level role, generated on first start under `data_dir/tuf-keys/`
(PKCS#8 PEM, mode 0600), threshold 1. That keeps a single-machine registry zero-setup; in
production keep the root key offline (sign root elsewhere, store only the public part here)
and give the online roles (targets, snapshot, timestamp) to the publishing workers only.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner, SSlibKey
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

from .errors import ApiError
from .models import Patch, PublisherKey, RepoState, TufMetadata, Version

log = logging.getLogger(__name__)

ROLES = ("root", "targets", "snapshot", "timestamp")
EXPIRY = {
    "root": timedelta(days=365),
    "targets": timedelta(days=90),
    "snapshot": timedelta(days=30),
    "timestamp": timedelta(days=1),
}
_SERIALIZER = JSONSerializer(compact=True)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def patch_target_path(canonical: str, version: str) -> str:
    return f"{canonical}/{canonical}-{version}.safetensors"


def _load_or_create_key(path: Path) -> Ed25519PrivateKey:
    if path.exists():
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    try:
        os.link(tmp, path)  # fails if another process created it first: then use theirs
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


class TufRepository:
    def __init__(self, key_dir: Path, signing: bool = True):
        self.signers: dict[str, CryptoSigner] = {}
        if signing:
            for role in ROLES:
                private = _load_or_create_key(Path(key_dir) / f"{role}.pem")
                public = SSlibKey.from_crypto(private.public_key())
                self.signers[role] = CryptoSigner(private, public)

    # -- reading -------------------------------------------------------------------------

    @staticmethod
    def load(session: Session, role: str, version: int | None = None) -> bytes | None:
        query = select(TufMetadata.data).where(TufMetadata.role == role)
        if version is None:
            query = query.order_by(TufMetadata.version.desc()).limit(1)
        else:
            query = query.where(TufMetadata.version == version)
        return session.execute(query).scalar_one_or_none()

    # -- writing -------------------------------------------------------------------------

    def _require_signing(self) -> None:
        if not self.signers:
            raise ApiError(503, "signing_unavailable", "this registry server has no repository signing keys")

    def _store(self, session: Session, metadata: Metadata) -> bytes:
        role = metadata.signed.type
        metadata.signatures.clear()
        metadata.sign(self.signers[role])
        data = metadata.to_bytes(_SERIALIZER)
        session.add(TufMetadata(role=role, version=metadata.signed.version, data=data, expires=metadata.signed.expires))
        return data

    def _lock_state(self, session: Session) -> RepoState | None:
        # FOR UPDATE serialises writers on PostgreSQL; SQLite writers already hold the
        # database lock (BEGIN IMMEDIATE).
        return session.execute(select(RepoState).where(RepoState.id == 1).with_for_update()).scalar_one_or_none()

    def initialize(self, db) -> None:
        """Create root v1 and empty targets/snapshot/timestamp if the database has none.
        Safe when several workers start at once: the loser of the insert race re-reads."""
        if not self.signers:
            return
        try:
            with db.writer() as session:
                if self._lock_state(session) is not None:
                    self._check_keys(session)
                    return
                state = RepoState(id=1, root_version=1, targets_version=0, snapshot_version=0, timestamp_version=0)
                session.add(state)
                root = Root(expires=_now() + EXPIRY["root"], consistent_snapshot=True)
                for role in ROLES:
                    root.add_key(self.signers[role].public_key, role)
                self._store(session, Metadata(root))
                self._publish_targets(session, state)
        except IntegrityError:
            log.info("another worker initialised the TUF repository first")

    def _check_keys(self, session: Session) -> None:
        root = Metadata[Root].from_bytes(self.load(session, "root"))
        for role in ("targets", "snapshot", "timestamp"):
            if self.signers[role].public_key.keyid not in root.signed.roles[role].keyids:
                log.warning("local `%s` key is not in root.json; this server cannot sign, writes will fail", role)
                self.signers = {}
                return

    def targets_changed(self, session: Session) -> None:
        """Re-sign targets (from the database), snapshot and timestamp. Call inside the
        write transaction that made the change."""
        self._require_signing()
        state = self._lock_state(session)
        if state is None:
            raise ApiError(503, "signing_unavailable", "the TUF repository is not initialised")
        self._publish_targets(session, state)

    def _publish_targets(self, session: Session, state: RepoState) -> None:
        now = _now()
        targets = Targets(version=state.targets_version + 1, expires=now + EXPIRY["targets"])
        rows = session.execute(
            select(Version, Patch.canonical_name).join(Patch, Version.patch_id == Patch.id).order_by(Version.id)
        ).all()
        # revocations are signed too: the keys endpoint is not, and a mirror could hide them there
        revoked = set(session.execute(
            select(PublisherKey.patch_id, PublisherKey.key_id).where(PublisherKey.revoked_at.is_not(None))
        ).all())
        for version, canonical in rows:
            custom = {
                "name": canonical, "version": version.version, "yanked": version.yanked,
                "yank_reason": version.yank_reason, "key_id": version.key_id,
                "key_revoked": (version.patch_id, version.key_id) in revoked,
                "base_model": {"architecture": version.base_architecture, "weights": version.base_weights},
            }
            path = patch_target_path(canonical, version.version)
            targets.targets[path] = TargetFile(
                version.size, {"sha256": version.sha256}, path, {"custom": {**custom, "kind": "patch"}}
            )
            targets.targets[path + ".sig"] = TargetFile(
                version.signature_size, {"sha256": version.signature_sha256}, path + ".sig",
                {"custom": {**custom, "kind": "signature"}},
            )
        self._store(session, Metadata(targets))
        state.targets_version = targets.version
        self._publish_snapshot(session, state)

    def _publish_snapshot(self, session: Session, state: RepoState) -> None:
        snapshot = Snapshot(version=state.snapshot_version + 1, expires=_now() + EXPIRY["snapshot"],
                            meta={"targets.json": MetaFile(version=state.targets_version)})
        self._store(session, Metadata(snapshot))
        state.snapshot_version = snapshot.version
        self._publish_timestamp(session, state)

    def _publish_timestamp(self, session: Session, state: RepoState) -> None:
        timestamp = Timestamp(version=state.timestamp_version + 1, expires=_now() + EXPIRY["timestamp"],
                              snapshot_meta=MetaFile(version=state.snapshot_version))
        self._store(session, Metadata(timestamp))
        state.timestamp_version = timestamp.version

    def refresh(self, db) -> bool:
        """Re-sign whatever is past half its lifetime (targets cascades to snapshot, snapshot
        to timestamp). Returns whether anything was signed. Run periodically by the server."""
        if not self.signers:
            return False
        now = _now()
        with db.writer() as session:
            state = self._lock_state(session)
            if state is None:
                return False
            due = {}
            for role in ("targets", "snapshot", "timestamp"):
                version = getattr(state, f"{role}_version")
                expires = session.execute(
                    select(TufMetadata.expires).where(TufMetadata.role == role, TufMetadata.version == version)
                ).scalar_one()
                if expires.tzinfo is None:
                    expires = expires.replace(tzinfo=timezone.utc)
                due[role] = expires - now < EXPIRY[role] / 2
            if due["targets"]:
                self._publish_targets(session, state)
            elif due["snapshot"]:
                self._publish_snapshot(session, state)
            elif due["timestamp"]:
                self._publish_timestamp(session, state)
            else:
                return False
        return True
