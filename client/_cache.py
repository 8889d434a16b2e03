"""The content-addressed cache: verified blobs by sha256, and publisher public keys by key id.

Only bytes that passed verification are put here (the installer calls `put` after checks),
and every read re-hashes, so a blob changed on disk is refused and dropped instead of used.
Keys are self-certifying: a key id is the sha256 of the raw public key.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from .. import paths
from ..errors import VerificationError
from ..signing import key_id, public_key_from_pem

_HEX = re.compile(r"[0-9a-f]{64}\Z")


class CacheCorrupted(VerificationError):
    """A cached blob no longer matches its digest (disk damage or tampering)."""


class Cache:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else paths.cache_dir() / "client"

    def blob_path(self, sha256: str) -> Path:
        if not _HEX.match(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / "blobs" / "sha256" / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.blob_path(sha256).is_file()

    def get(self, sha256: str) -> bytes | None:
        """The blob's bytes, or None if absent; `CacheCorrupted` (and the blob removed) if changed."""
        path = self.blob_path(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            path.unlink(missing_ok=True)
            raise CacheCorrupted(
                f"cached blob `{path}` should have sha256 {sha256[:16]}… but has {actual[:16]}…; removed it",
                hint="run the command again online to fetch a fresh copy",
            )
        return data

    def put(self, data: bytes, sha256: str) -> Path:
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:  # a programming error upstream: never cache under a wrong name
            raise CacheCorrupted(f"refusing to cache bytes with sha256 {actual[:16]}… as {sha256[:16]}…")
        path = self.blob_path(sha256)
        if not path.is_file():
            paths.atomic_write_bytes(path, data)
        return path

    def put_key(self, pem: bytes) -> str:
        kid = key_id(public_key_from_pem(pem))
        paths.atomic_write_bytes(self.root / "keys" / f"{kid}.pem", pem)
        return kid

    def get_key(self, kid: str):
        """The public key with this id, or None; a file whose key has another id is ignored."""
        path = self.root / "keys" / f"{kid}.pem"
        try:
            key = public_key_from_pem(path.read_bytes())
        except FileNotFoundError:
            return None
        return key if key_id(key) == kid else None
