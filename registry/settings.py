"""Registry settings: one frozen dataclass, built from CLI options or the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from llmpatch.paths import data_dir as _llmpatch_data_dir

DEFAULT_PORT = 8470
MiB = 1024 * 1024


def default_data_dir() -> Path:
    env = os.environ.get("LLMPATCH_REGISTRY_DATA_DIR")
    return Path(env).expanduser() if env else _llmpatch_data_dir() / "registry"


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    # SQLAlchemy URL; empty means SQLite at `data_dir/registry.sqlite3`.
    db_url: str = field(default_factory=lambda: os.environ.get("LLMPATCH_REGISTRY_DB", ""))
    # Whole request body cap, enforced while streaming (413 beyond it).
    max_body_bytes: int = 64 * MiB
    # Patch file cap inside that body; real patches are KiB to a few MiB.
    max_patch_bytes: int = 60 * MiB
    # Sign TUF metadata on start and on writes; False for read-only replicas without keys.
    signing: bool = True
    # Upgrade the schema on start. Default: only for SQLite (production runs `registry migrate`).
    auto_migrate: bool | None = None
    # How often (seconds) the server checks whether timestamp/snapshot need re-signing.
    tuf_refresh_interval: float = 3600.0
    pool_size: int = 10
    # PostgreSQL only: cache index documents per worker, invalidated by LISTEN/NOTIFY.
    index_cache: bool = True

    @property
    def blob_dir(self) -> Path:
        return Path(self.data_dir) / "blobs"

    @property
    def tuf_key_dir(self) -> Path:
        return Path(self.data_dir) / "tuf-keys"

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{Path(self.data_dir) / 'registry.sqlite3'}"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def should_migrate(self) -> bool:
        return self.is_sqlite if self.auto_migrate is None else self.auto_migrate
