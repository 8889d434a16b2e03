"""`patches.lock`: the exact installed set, enough to reinstall it bit for bit and offline.

Per patch: version, sha256 and size of file and signature, signer key id, registry, base
fingerprint, relations and who required it; per registry: the TUF metadata versions seen.
Patches are listed in composition order. The file is written last in every command, by temp
file + `os.replace`, so a failed install leaves the previous lock in place.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import paths
from ..manifest import Relation, canonical_name
from ._project import ProjectError, _dump_toml
from ._sources import Release

LOCK_VERSION = 1


@dataclass
class LockedPatch:
    name: str
    version: str
    sha256: str
    size: int
    signature_sha256: str
    key_id: str
    source: str  # registry name, or `hf://ORG/NAME@COMMIT`
    architecture: str
    weights: str
    n_virtual_tokens: int
    hidden_size: int
    dependencies: list[str] = field(default_factory=list)  # `name@range`
    conflicts: list[str] = field(default_factory=list)
    required_by: list[str] = field(default_factory=list)  # "you" or "harmfulness 1.0.0"
    yanked: bool = False
    yanked_reason: str = ""

    @property
    def key(self) -> str:
        return canonical_name(self.name)

    def to_release(self) -> Release:
        def rel(items):
            return tuple(Relation(n, s or "*") for n, _, s in (i.partition("@") for i in items))

        return Release(
            name=self.name, version=self.version, architecture=self.architecture, weights=self.weights,
            n_virtual_tokens=self.n_virtual_tokens, hidden_size=self.hidden_size, sha256=self.sha256,
            size=self.size, dependencies=rel(self.dependencies), conflicts=rel(self.conflicts),
            yanked=self.yanked, yanked_reason=self.yanked_reason, registry=self.source,
        )


@dataclass
class RegistryState:
    url: str
    root_version: int = 0
    timestamp_version: int = 0
    snapshot_version: int = 0
    targets_version: int = 0


@dataclass
class Lock:
    model: str
    architecture: str
    weights: str
    requests: dict[str, str | dict] = field(default_factory=dict)  # the `[patches]` it satisfies
    token_budget: int | None = None
    registries: dict[str, RegistryState] = field(default_factory=dict)
    patches: list[LockedPatch] = field(default_factory=list)

    def find(self, name: str) -> LockedPatch | None:
        key = canonical_name(name)
        return next((p for p in self.patches if p.key == key), None)

    def versions(self) -> dict[str, str]:
        return {p.key: p.version for p in self.patches}

    def to_toml(self) -> bytes:
        data = {
            "version": LOCK_VERSION,
            "model": {"spec": self.model, "architecture": self.architecture, "weights": self.weights},
            "requests": dict(self.requests),
            "registry": {name: asdict(state) for name, state in self.registries.items()},
            "patch": [asdict(p) for p in self.patches],
        }
        if self.token_budget is not None:
            data["model"]["token_budget"] = self.token_budget
        header = b"# Written by `patch lock` / `patch install`; do not edit. Exact versions and digests.\n"
        return header + _dump_toml(data)

    def save(self, path: Path) -> None:
        paths.atomic_write_bytes(Path(path), self.to_toml())

    @classmethod
    def load(cls, path: Path) -> "Lock | None":
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            return None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ProjectError(f"`{path}` is not valid TOML: {exc}", hint="regenerate it with `patch lock`") from None
        if data.get("version") != LOCK_VERSION:
            raise ProjectError(f"`{path}` has lock version {data.get('version')!r}; this llm-patch reads {LOCK_VERSION}",
                               hint="regenerate it with `patch lock`")
        try:
            model = data["model"]
            return cls(
                model=model["spec"], architecture=model["architecture"], weights=model["weights"],
                requests=dict(data.get("requests", {})), token_budget=model.get("token_budget"),
                registries={n: RegistryState(**s) for n, s in data.get("registry", {}).items()},
                patches=[LockedPatch(**p) for p in data.get("patch", [])],
            )
        except (KeyError, TypeError) as exc:
            raise ProjectError(f"`{path}` is missing or has unexpected fields ({exc})", hint="regenerate it with `patch lock`") from None
