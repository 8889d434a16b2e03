"""The llm-patch client: resolve, verify, lock and install patches from registries (issue #5).

`patch install toxicity@1.2 --model smollm2` goes: project files → resolver over a release
source → TUF-verified download → signature, digest and fingerprint checks → content-addressed
cache → lockfile written last. The modules are private; this is the surface.

Names load on first use (PEP 562), so `patch list` does not pay for httpx, tuf and
cryptography; type checkers see the plain imports below.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._cache import Cache, CacheCorrupted
    from ._hub import HubError, HubRef
    from ._install import Installer, LockOutOfDate, OfflineMissing, Outcome
    from ._lockfile import Lock, LockedPatch, RegistryState
    from ._project import Project, ProjectError, open_project
    from ._registry import (
        MetadataVerificationError,
        RegistryClient,
        RegistryConfig,
        RegistryError,
        RegistryUnavailable,
        UnknownRegistry,
        add_registry,
        get_registry,
    )
    from ._resolver import Resolution, ResolutionImpossible, Target, resolve
    from ._sources import ChainSource, MemorySource, Release, ReleaseSource, release_from_dict
    from ._specs import InvalidSpec, PatchRequest, VersionRange
    from ._verify import DigestMismatch, MetadataMismatch, RevokedKey, verify_patch

_EXPORTS = {
    "Cache": "._cache",
    "CacheCorrupted": "._cache",
    "ChainSource": "._sources",
    "DigestMismatch": "._verify",
    "HubError": "._hub",
    "HubRef": "._hub",
    "Installer": "._install",
    "InvalidSpec": "._specs",
    "Lock": "._lockfile",
    "LockOutOfDate": "._install",
    "LockedPatch": "._lockfile",
    "MemorySource": "._sources",
    "MetadataMismatch": "._verify",
    "MetadataVerificationError": "._registry",
    "OfflineMissing": "._install",
    "Outcome": "._install",
    "PatchRequest": "._specs",
    "Project": "._project",
    "ProjectError": "._project",
    "RegistryClient": "._registry",
    "RegistryConfig": "._registry",
    "RegistryError": "._registry",
    "RegistryState": "._lockfile",
    "RegistryUnavailable": "._registry",
    "Release": "._sources",
    "ReleaseSource": "._sources",
    "Resolution": "._resolver",
    "ResolutionImpossible": "._resolver",
    "RevokedKey": "._verify",
    "Target": "._resolver",
    "UnknownRegistry": "._registry",
    "VersionRange": "._specs",
    "add_registry": "._registry",
    "get_registry": "._registry",
    "open_project": "._project",
    "release_from_dict": "._sources",
    "resolve": "._resolver",
    "verify_patch": "._verify",
}



def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(__all__) | {n for n in globals() if n.startswith("_")})


__all__ = [
    "Cache",
    "CacheCorrupted",
    "ChainSource",
    "DigestMismatch",
    "HubError",
    "HubRef",
    "Installer",
    "InvalidSpec",
    "Lock",
    "LockOutOfDate",
    "LockedPatch",
    "MemorySource",
    "MetadataMismatch",
    "MetadataVerificationError",
    "OfflineMissing",
    "Outcome",
    "PatchRequest",
    "Project",
    "ProjectError",
    "RegistryClient",
    "RegistryConfig",
    "RegistryError",
    "RegistryState",
    "RegistryUnavailable",
    "Release",
    "ReleaseSource",
    "Resolution",
    "ResolutionImpossible",
    "RevokedKey",
    "Target",
    "UnknownRegistry",
    "VersionRange",
    "add_registry",
    "get_registry",
    "open_project",
    "release_from_dict",
    "resolve",
    "verify_patch",
]
