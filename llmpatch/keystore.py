"""The local key store: your signing keys and the public keys you trust.

Layout under the config folder: `keys/private/<id>.pem` (PKCS#8, mode 0600, encrypted when
`LLMPATCH_KEY_PASSPHRASE` is set), `keys/trusted/<id>.pem` (public keys) and
`keys/labels.json` (id -> label). Every key you generate is also trusted.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from . import paths
from .errors import KeyStoreError, SignatureError
from .signing import key_id, public_key_from_pem, public_key_to_pem

PASSPHRASE_ENV = "LLMPATCH_KEY_PASSPHRASE"


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    label: str
    has_private: bool

    def to_dict(self) -> dict:
        return {"key_id": self.key_id, "label": self.label, "private": self.has_private}


class KeyStore:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else paths.config_dir() / "keys"

    @property
    def _private(self) -> Path:
        return self.root / "private"

    @property
    def _trusted(self) -> Path:
        return self.root / "trusted"

    def _labels(self) -> dict:
        try:
            return json.loads((self.root / "labels.json").read_text())
        except FileNotFoundError:
            return {}

    def _set_label(self, kid: str, label: str) -> None:
        labels = self._labels()
        labels[kid] = label
        paths.atomic_write_bytes(self.root / "labels.json", json.dumps(labels, indent=1, sort_keys=True).encode())

    def generate(self, label: str = "") -> KeyInfo:
        private_key = Ed25519PrivateKey.generate()
        kid = key_id(private_key.public_key())
        passphrase = os.environ.get(PASSPHRASE_ENV)
        encryption = (
            serialization.BestAvailableEncryption(passphrase.encode()) if passphrase else serialization.NoEncryption()
        )
        pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
        paths.atomic_write_bytes(self._private / f"{kid}.pem", pem, mode=0o600)
        paths.atomic_write_bytes(self._trusted / f"{kid}.pem", public_key_to_pem(private_key.public_key()))
        self._set_label(kid, label or f"generated {time.strftime('%Y-%m-%d')}")
        return KeyInfo(kid, self._labels()[kid], True)

    def import_public(self, pem: bytes, label: str = "") -> KeyInfo:
        public_key = public_key_from_pem(pem)
        kid = key_id(public_key)
        paths.atomic_write_bytes(self._trusted / f"{kid}.pem", public_key_to_pem(public_key))
        if label or kid not in self._labels():
            self._set_label(kid, label or "imported")
        return KeyInfo(kid, self._labels()[kid], (self._private / f"{kid}.pem").exists())

    def list(self) -> list[KeyInfo]:
        labels = self._labels()
        ids = sorted(p.stem for p in self._trusted.glob("*.pem")) if self._trusted.exists() else []
        return [KeyInfo(kid, labels.get(kid, ""), (self._private / f"{kid}.pem").exists()) for kid in ids]

    def resolve(self, prefix: str, *, private: bool = False) -> str:
        """A full key id from a unique prefix of at least 8 hex digits (or the only private key)."""
        candidates = [k.key_id for k in self.list() if k.has_private or not private]
        if not prefix:
            if private and len(candidates) == 1:
                return candidates[0]
            if not candidates:
                raise KeyStoreError("no signing key here", hint="create one with `patch keys generate`")
            raise KeyStoreError("several signing keys here; name one with `--key ID`")
        if len(prefix) < 8:
            raise KeyStoreError(f"key id prefix `{prefix}` is too short; give at least 8 hex digits")
        matches = [k for k in candidates if k.startswith(prefix.lower())]
        if not matches:
            kind = "signing key" if private else "key"
            raise KeyStoreError(f"no {kind} with id `{prefix}`", hint="list keys with `patch keys list`")
        if len(matches) > 1:
            raise KeyStoreError(f"key id prefix `{prefix}` is ambiguous: {len(matches)} keys match")
        return matches[0]

    def public_key(self, kid: str) -> Ed25519PublicKey:
        kid = self.resolve(kid)
        return public_key_from_pem((self._trusted / f"{kid}.pem").read_bytes())

    def private_key(self, kid: str = "") -> Ed25519PrivateKey:
        kid = self.resolve(kid, private=True)
        pem = (self._private / f"{kid}.pem").read_bytes()
        passphrase = os.environ.get(PASSPHRASE_ENV)
        try:
            key = serialization.load_pem_private_key(pem, password=passphrase.encode() if passphrase else None)
        except (TypeError, ValueError) as exc:
            raise KeyStoreError(
                f"cannot open signing key `{kid[:16]}`: {exc}",
                hint=f"set {PASSPHRASE_ENV} to the key's passphrase",
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyStoreError(f"key `{kid[:16]}` is not an Ed25519 key")
        return key

    def export_public(self, kid: str) -> bytes:
        return public_key_to_pem(self.public_key(kid))

    def export_private(self, kid: str) -> bytes:
        kid = self.resolve(kid, private=True)
        return (self._private / f"{kid}.pem").read_bytes()

    def import_private(self, pem: bytes, label: str = "") -> KeyInfo:
        passphrase = os.environ.get(PASSPHRASE_ENV)
        try:
            key = serialization.load_pem_private_key(pem, password=passphrase.encode() if passphrase else None)
        except (TypeError, ValueError) as exc:
            raise KeyStoreError(f"not a usable PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyStoreError("only Ed25519 private keys are accepted")
        kid = key_id(key.public_key())
        paths.atomic_write_bytes(self._private / f"{kid}.pem", pem, mode=0o600)
        return self.import_public(public_key_to_pem(key.public_key()), label)

    def trusted_keys(self) -> dict[str, Ed25519PublicKey]:
        keys = {}
        for info in self.list():
            try:
                keys[info.key_id] = public_key_from_pem((self._trusted / f"{info.key_id}.pem").read_bytes())
            except SignatureError:
                continue  # a damaged file trusts nobody
        return keys
