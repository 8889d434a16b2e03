"""Security fixtures: the client fixtures (tiny models, live registry, in-process `patch`),
a malicious mirror in front of the registry with the client pointed at it, a forger holding
the registry's online TUF keys (a compromised server), and before/after state snapshots."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.client.conftest import fingerprints, model_dir, model_dirs, patch, registry  # noqa: F401  (fixtures)

from .mirror import Mirror


@pytest.fixture
def mirror(registry):
    """The client's `default` registry now goes through a mirror the attacker controls."""
    from llmpatch.client._registry import add_registry

    with Mirror(registry.url) as m:
        root = registry.http.get(f"{registry.url}/tuf/metadata/1.root.json").content
        add_registry("default", m.url, root)
        yield m


class Forger:
    """An attacker who stole the registry's online keys (targets, snapshot, timestamp) and
    re-signs targets metadata on the mirror so that substituted bytes pass the TUF layer."""

    def __init__(self, mirror: Mirror, key_dir: Path):
        from cryptography.hazmat.primitives import serialization
        from securesystemslib.signer import CryptoSigner, SSlibKey

        self.mirror = mirror
        self.signers = {}
        for role in ("root", "targets", "snapshot", "timestamp"):
            private = serialization.load_pem_private_key((key_dir / f"{role}.pem").read_bytes(), password=None)
            self.signers[role] = CryptoSigner(private, SSlibKey.from_crypto(private.public_key()))
        self.changes: dict[str, tuple[bytes, dict]] = {}
        mirror.body(lambda p: p.startswith("/tuf/metadata/") and p.endswith(".targets.json"), self._targets)

    def _targets(self, body: bytes) -> bytes:
        from tuf.api.metadata import Metadata, TargetFile, Targets
        from tuf.api.serialization.json import JSONSerializer

        md = Metadata[Targets].from_bytes(body)
        for path, (data, custom) in self.changes.items():
            old = md.signed.targets[path]
            merged = {**old.unrecognized_fields["custom"], **custom}
            md.signed.targets[path] = TargetFile(len(data), {"sha256": hashlib.sha256(data).hexdigest()}, path,
                                                 {"custom": merged})
        md.signatures.clear()
        md.sign(self.signers["targets"])
        return md.to_bytes(JSONSerializer(compact=True))

    def substitute(self, target: str, data: bytes, **custom) -> None:
        """Serve `data` as `target` (e.g. `toxicity/toxicity-1.0.0.safetensors`), validly signed in TUF."""
        self.changes[target] = (data, custom)
        folder, _, base = target.rpartition("/")
        url = f"/tuf/targets/{folder}/{hashlib.sha256(data).hexdigest()}.{base}"
        self.mirror.serve(url, data)


@pytest.fixture
def forger(mirror, tmp_path):
    return Forger(mirror, tmp_path / "registry-server" / "tuf-keys")


def client_state(project: Path) -> dict:
    """patches.toml, patches.lock and every cached blob and key, by content."""
    from llmpatch.client._cache import Cache

    out = {name: (project / name).read_bytes() if (project / name).exists() else None
           for name in ("patches.toml", "patches.lock")}
    root = Cache().root
    out["cache"] = sorted((str(p.relative_to(root)), hashlib.sha256(p.read_bytes()).hexdigest())
                          for p in root.rglob("*") if p.is_file()) if root.exists() else []
    return out


def registry_state(publisher) -> dict:
    """Rows per table, patch revisions, yank flags, newest TUF version per role, blob files."""
    from sqlalchemy import func, select

    from llmpatch.registry import models
    from llmpatch.registry.models import Base

    app = publisher.app
    out = {}
    with app.state.db.reader() as session:
        for table in Base.metadata.sorted_tables:
            out[table.name] = session.execute(select(func.count()).select_from(table)).scalar()
        out["yanked"] = session.execute(select(models.Version.id, models.Version.yanked)).all()
        out["tuf"] = session.execute(select(models.TufMetadata.role, func.max(models.TufMetadata.version))
                                     .group_by(models.TufMetadata.role)).all()
        out["revoked"] = session.execute(select(models.PublisherKey.id, models.PublisherKey.revoked_at)).all()
        out["tokens"] = session.execute(select(models.Token.id, models.Token.revoked_at)).all()
    blob_root = Path(app.state.settings.blob_dir)
    out["blobs"] = sorted(p.name for p in blob_root.rglob("*") if p.is_file())
    return out
