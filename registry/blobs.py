"""Content-addressed blob storage behind a small interface.

`LocalBlobStore` (a directory, `sha256/ab/abcdef…`) is the default. Production on several
machines uses an S3-compatible bucket with the same three operations (see docs/registry.md);
keys are digests, so objects are immutable and safe to cache or replicate.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Protocol

HEX64 = re.compile(r"[0-9a-f]{64}\Z")


class BlobStore(Protocol):
    def put(self, data: bytes) -> str:
        """Store bytes, return their sha256 hex. Idempotent; atomic (readers see all or nothing)."""

    def path(self, sha256: str) -> Path | None:
        """A local file holding the blob, or None if absent."""

    def exists(self, sha256: str) -> bool: ...


class LocalBlobStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "sha256").mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)

    def _final(self, sha256: str) -> Path:
        if not HEX64.match(sha256):
            raise ValueError("not a sha256 hex digest")
        return self.root / "sha256" / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        final = self._final(digest)
        if final.exists():
            return digest
        final.parent.mkdir(parents=True, exist_ok=True)
        # Temp file in the same filesystem, fsync, then rename: a crash leaves at most a stray
        # temp file under tmp/, never a partial blob under its digest.
        tmp = self.root / "tmp" / f"{digest}.{os.getpid()}.{os.urandom(4).hex()}"
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        return digest

    def path(self, sha256: str) -> Path | None:
        try:
            final = self._final(sha256)
        except ValueError:
            return None
        return final if final.is_file() else None

    def exists(self, sha256: str) -> bool:
        return self.path(sha256) is not None
