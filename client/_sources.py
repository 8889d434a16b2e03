"""Where candidate releases come from, kept apart from how they are chosen (`_resolver`).

A source answers one question: which releases of patch NAME exist, with the facts the
resolver needs (base model, size, relations, yanked). The registry source reads them from
verified TUF targets metadata; the lockfile source from `patches.lock`; `MemorySource` is
the in-memory stand-in tests and the offline path use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Protocol

import semver

from ..manifest import Manifest, Relation, canonical_name


@dataclass(frozen=True)
class Release:
    """One published version of a patch, as an index describes it (nothing downloaded yet)."""

    name: str
    version: str
    architecture: str  # base-model fingerprints the patch was built for
    weights: str
    n_virtual_tokens: int
    hidden_size: int
    sha256: str = ""
    size: int = 0
    dependencies: tuple[Relation, ...] = ()
    conflicts: tuple[Relation, ...] = ()
    yanked: bool = False
    yanked_reason: str = ""
    base_name: str = ""  # human hint for the base model
    target: str = ""  # TUF target path of the patch file
    signature_target: str = ""  # TUF target path of its signature document
    registry: str = ""

    @property
    def key(self) -> str:
        return canonical_name(self.name)

    @property
    def semver(self) -> semver.Version:
        return semver.Version.parse(self.version)

    def __str__(self) -> str:
        return f"{self.name} {self.version}"

    @classmethod
    def from_manifest(cls, manifest: Manifest, **extra) -> "Release":
        return cls(
            name=manifest.name,
            version=manifest.version,
            architecture=manifest.base_model.architecture,
            weights=manifest.base_model.weights,
            base_name=manifest.base_model.name,
            n_virtual_tokens=manifest.n_virtual_tokens,
            hidden_size=manifest.hidden_size,
            dependencies=tuple(manifest.dependencies),
            conflicts=tuple(manifest.conflicts),
            **extra,
        )


class ReleaseSource(Protocol):
    def releases(self, name: str) -> list[Release]:
        """Every release of `name` (any spelling), in any order; an empty list if unknown."""

    def names(self) -> list[str]:
        """Every patch name this source knows (for `patch search`)."""


@dataclass
class MemorySource:
    """Releases held in memory: tests, and an index assembled from a lockfile or the cache."""

    items: list[Release] = field(default_factory=list)

    def add(self, release: Release) -> None:
        self.items.append(release)

    def releases(self, name: str) -> list[Release]:
        key = canonical_name(name)
        return [r for r in self.items if r.key == key]

    def names(self) -> list[str]:
        return sorted({r.name for r in self.items})


@dataclass
class ChainSource:
    """The first source that knows a name answers for it (lockfile before registry, say)."""

    sources: list

    def releases(self, name: str) -> list[Release]:
        for source in self.sources:
            found = source.releases(name)
            if found:
                return found
        return []

    def names(self) -> list[str]:
        return sorted({n for s in self.sources for n in s.names()})


def release_from_dict(data: dict, **extra) -> Release:
    """A release from the plain dict layout used in resolver case files and the lockfile."""
    return Release(
        name=data["name"],
        version=data["version"],
        architecture=data["architecture"],
        weights=data.get("weights", data["architecture"]),
        n_virtual_tokens=int(data.get("n_virtual_tokens", 1)),
        hidden_size=int(data.get("hidden_size", 1)),
        sha256=data.get("sha256", ""),
        size=int(data.get("size", 0)),
        dependencies=tuple(_relations(data.get("dependencies", ()))),
        conflicts=tuple(_relations(data.get("conflicts", ()))),
        yanked=bool(data.get("yanked", False)),
        yanked_reason=data.get("yanked_reason", ""),
        base_name=data.get("base_name", ""),
        target=data.get("target", ""),
        signature_target=data.get("signature_target", ""),
        **extra,
    )


def _relations(items: Iterable) -> Iterable[Relation]:
    for item in items:
        if isinstance(item, str):
            name, _, spec = item.partition("@")
            yield Relation(name, spec or "*")
        else:
            yield Relation(item["name"], item.get("spec", "*"))
