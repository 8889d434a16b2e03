"""Install, upgrade, remove, lock, sync and verify: the orchestration, in the order that keeps
state safe. Fetch → verify every patch (metadata chain, signature by the authorised key,
sha256 and size, base-model fingerprint) → only then put bytes in the cache → write
`patches.toml` → write `patches.lock` last. Any failure raises before the first write, so the
previous state stays as it was.

`patch lock` alone downloads no patch file or signature document: every digest, size and
signer a lock records is in the registry's TUF-verified targets metadata, so `lock_entry`
checks that chain, the signer's registration and revocation, and the base model named there,
and fully verifies only what the cache already holds. The bytes are checked when `sync` or
`install` fetch them; `sync --frozen` also refuses a lock whose facts the signed file contradicts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import IncompatibleModel, LLMPatchError, VerificationError
from ..fingerprint import Fingerprint, short
from ..manifest import canonical_name
from ..signing import public_key_from_pem
from ._cache import Cache
from ._lockfile import Lock, LockedPatch
from ._project import Project
from ._resolver import Resolution, Target, resolve
from ._sources import ChainSource, MemorySource, Release
from ._specs import PatchRequest, VersionRange
from ._verify import Expected, MetadataMismatch, RevokedKey, Verified, verify_patch


class OfflineMissing(LLMPatchError):
    """`--offline` was asked for something the lockfile and cache cannot provide."""


class LockOutOfDate(LLMPatchError):
    """`--frozen`: the lockfile does not match `patches.toml`."""


@dataclass
class ModelInfo:
    spec: str
    folder: Path
    fingerprint: Fingerprint
    hidden_size: int | None


def inspect_model(spec: str) -> ModelInfo:
    """Fingerprint a model (no torch needed for a safetensors folder)."""
    from ..model.loading import fingerprint_model

    location, fingerprint = fingerprint_model(spec)
    try:
        config = json.loads((location.folder / "config.json").read_text())
        hidden = config.get("hidden_size") or config.get("n_embd")
    except (OSError, ValueError):
        hidden = None
    return ModelInfo(spec, location.folder, fingerprint, hidden)


@dataclass
class Change:
    name: str
    old: str | None
    new: str | None

    @property
    def action(self) -> str:
        if self.old is None:
            return "added"
        if self.new is None:
            return "removed"
        return "unchanged" if self.old == self.new else "changed"

    def to_dict(self) -> dict:
        return {"name": self.name, "from": self.old, "to": self.new, "action": self.action}


@dataclass
class Outcome:
    lock: Lock
    changes: list[Change]
    warnings: list[str] = field(default_factory=list)
    downloaded: int = 0  # files fetched from a registry (cache misses)

    def to_dict(self) -> dict:
        return {
            "model": {"spec": self.lock.model, "architecture": self.lock.architecture, "weights": self.lock.weights},
            "patches": [{"name": p.name, "version": p.version, "sha256": p.sha256, "key_id": p.key_id,
                         "source": p.source, "n_virtual_tokens": p.n_virtual_tokens} for p in self.lock.patches],
            "changes": [c.to_dict() for c in self.changes if c.action != "unchanged"],
            "warnings": self.warnings,
            "downloaded": self.downloaded,
        }


# what a frozen sync requires the lock and the verified files to agree on
_LOCKED_FACTS = ("sha256", "size", "signature_sha256", "key_id", "architecture", "weights",
                 "n_virtual_tokens", "hidden_size", "dependencies", "conflicts")


def _diff(old: Lock | None, new: Lock) -> list[Change]:
    before = {p.key: p for p in (old.patches if old else [])}
    after = {p.key: p for p in new.patches}
    changes = [Change(p.name, before[p.key].version if p.key in before else None, p.version) for p in new.patches]
    changes += [Change(p.name, p.version, None) for k, p in before.items() if k not in after]
    return changes


class Installer:
    """One command's view: a project, its lock, the cache, and (unless offline) a registry."""

    def __init__(self, project: Project, *, cache: Cache | None = None, offline: bool = False,
                 registry=None, model: ModelInfo | None = None, progress: Callable | None = None):
        self.project = project
        self.cache = cache or Cache()
        self.offline = offline
        self._registry = registry  # a RegistryClient, made on first use
        self._model = model
        self.progress = progress  # progress(iterable, total=, desc=) -> iterable
        self.old_lock = Lock.load(project.lock_path)
        # Hub patches are pinned to a commit and verified when pulled; they join resolution as `=version`
        self.hub_entries: dict[str, LockedPatch] = {
            p.key: p for p in (self.old_lock.patches if self.old_lock else []) if p.source.startswith("hf://")
        }

    def stage_hub(self, entry: LockedPatch, spec: dict) -> None:
        self.hub_entries[entry.key] = entry
        self.project.set(entry.name, spec)

    # -- collaborators

    @property
    def model(self) -> ModelInfo:
        if self._model is None:
            self._model = inspect_model(self.project.model)
        return self._model

    @property
    def registry(self):
        if self.offline:
            raise OfflineMissing("this needs the registry, but `--offline` was given")
        if self._registry is None:
            from ._registry import RegistryClient, get_registry

            self._registry = RegistryClient(get_registry(self.project.registry))
        return self._registry

    def target(self) -> Target:
        return Target(self.model.fingerprint, self.model.hidden_size, self.project.token_budget)

    def lock_source(self) -> MemorySource:
        return MemorySource([p.to_release() for p in (self.old_lock.patches if self.old_lock else [])])

    # -- resolution

    def resolve(self, *, upgrade: tuple[str, ...] | bool = (), from_lock: bool = False) -> Resolution:
        requests = self.project.requests()
        hub_names = {canonical_name(n) for n in self.project.hub_refs()}
        hub = {k: e for k, e in self.hub_entries.items() if k in hub_names}
        requests += [PatchRequest(e.name, VersionRange.parse("=" + e.version)) for e in hub.values()]
        locked = self.old_lock.versions() if self.old_lock else {}
        if upgrade is True:
            locked = {}
        if from_lock or self.offline or all(r.key in hub for r in requests):
            self._check_offline([r for r in requests if r.key not in hub])
            source = self.lock_source()
        else:
            source = self.registry
        source = ChainSource([MemorySource([e.to_release() for e in hub.values()]), source])
        return resolve(requests, source, self.target(), locked=locked, upgrade=() if upgrade is True else upgrade)

    def _check_offline(self, requests: list[PatchRequest]) -> None:
        if not self.offline:
            return
        lock = self.old_lock
        missing = []
        for request in requests:
            entry = lock.find(request.name) if lock else None
            if entry is None or not request.range.contains(entry.version, include_prerelease=True):
                missing.append(f"`{request}`")
        if missing:
            raise OfflineMissing(
                f"offline, and the lockfile has no version for {', '.join(missing)}",
                hint="run once without `--offline` to fetch and lock them",
            )

    # -- fetching and verifying

    def _expected(self, release: Release, key_id: str, locked: LockedPatch | None) -> Expected:
        return Expected(
            name=release.name, version=release.version, sha256=release.sha256, size=release.size, key_id=key_id,
            architecture=release.architecture, weights=release.weights, n_virtual_tokens=release.n_virtual_tokens,
            dependencies=release.dependencies, conflicts=release.conflicts,
        )

    def _key(self, key_id: str, name: str, fetched: dict, online: bool) -> tuple[dict, frozenset[str], bytes | None]:
        """The publisher key with this id (cache first, then the registry), revocations, and the
        PEM to cache once the patch it signed has passed every check (None: nothing to cache)."""
        revoked: frozenset[str] = frozenset()
        new_pem = None
        key = self.cache.get_key(key_id)
        if online:
            pems, revoked = self._registered(key_id, name, fetched)
            if key is None:
                from ..signing import key_id as id_of

                candidate = public_key_from_pem(pems[key_id])
                if id_of(candidate) == key_id:
                    key, new_pem = candidate, pems[key_id]
        if key is None:
            where = f"registry `{self.registry.name}`" if online else "the cache"
            raise VerificationError(f"no public key `{key_id[:16]}` for `{name}` in {where}",
                                    hint="run once online so the publisher key is fetched")
        return {key_id: key}, revoked, new_pem

    def _registered(self, key_id: str, name: str, fetched: dict) -> tuple[dict[str, bytes], frozenset[str]]:
        """The keys registered for `name` (id -> PEM) and those revoked, after checking `key_id` is one."""
        pems, revoked = fetched.get(name) or self.registry.keys(name)
        fetched[name] = (pems, revoked)
        if key_id not in pems:  # a key cached for another name must not sign this one
            raise VerificationError(f"key `{key_id[:16]}` is not registered for `{name}` in registry `{self.registry.name}`",
                                    hint="the registry's signed metadata names a signer the registry does not list for this patch")
        return pems, revoked

    def _signed(self, release: Release):
        """The TUF-verified target infos of the release's file and signature, and the publisher
        key id the registry authorised for it; refuses an unlisted release or a revoked key."""
        client = self.registry
        info = client.targetinfo(release.target)
        sig_info = client.targetinfo(release.signature_target)
        if info is None or sig_info is None:
            raise VerificationError(f"`{release.name}@{release.version}` is not in registry `{client.name}`'s signed metadata")
        key_id = (info.custom or {}).get("key_id", "")
        if not key_id:
            raise VerificationError(f"signed metadata names no publisher key for `{release.name}@{release.version}`")
        if (info.custom or {}).get("key_revoked"):
            raise RevokedKey(f"`{release.name}@{release.version}` is signed by key `{key_id[:16]}`, which was revoked for `{release.name}`",
                             hint="ask the publisher for a version signed by a current key")
        return info, sig_info, key_id

    def _entry(self, release: Release, signature_sha256: str, key_id: str) -> LockedPatch:
        return LockedPatch(
            name=release.name, version=release.version, sha256=release.sha256, size=release.size,
            signature_sha256=signature_sha256, key_id=key_id, source=release.registry,
            architecture=release.architecture, weights=release.weights,
            n_virtual_tokens=release.n_virtual_tokens, hidden_size=release.hidden_size,
            dependencies=[f"{r.name}@{r.spec}" for r in release.dependencies],
            conflicts=[f"{r.name}@{r.spec}" for r in release.conflicts],
            yanked=release.yanked, yanked_reason=release.yanked_reason,
        )

    def lock_entry(self, release: Release) -> tuple[LockedPatch, int]:
        """The lock entry for a registry release from its signed metadata alone: no patch file or
        signature document is downloaded. Checked: the TUF chain (root, timestamp, snapshot,
        targets), the release is listed there with a publisher key that is not revoked, that key
        is registered for the name (keys endpoint) and not revoked there, the signed name and
        version, and the signed base model equals this model's fingerprint. What the cache
        already holds is verified in full instead; releases from the lockfile or the Hub, and
        registries whose metadata names no base model, take the full path (which may download).
        """
        if self.offline or not release.target:
            _, entry, downloads = self.fetch_verified(release)
            return entry, downloads
        info, sig_info, key_id = self._signed(release)
        custom = info.custom or {}
        base = custom.get("base_model") or {}
        if (self.cache.has(info.hashes["sha256"]) and self.cache.has(sig_info.hashes["sha256"])) or not base:
            _, entry, downloads = self.fetch_verified(release)
            return entry, downloads
        label = f"`{release.name}@{release.version}`"
        if canonical_name(custom.get("name", release.name)) != release.key or custom.get("version", release.version) != release.version:
            raise MetadataMismatch(f"the signed metadata of {label} names `{custom.get('name')}@{custom.get('version')}`")
        fp = self.model.fingerprint
        for which in ("architecture", "weights"):
            signed = base.get(which, "")
            if signed != getattr(fp, which):
                raise IncompatibleModel(
                    f"{label} was built for base model {which} `{short(signed)}` and your model's is `{short(getattr(fp, which))}`",
                    hint="install a version built for your model (`patch info NAME` lists each version's base model)",
                )
        if (release.architecture, release.weights) != (base.get("architecture"), base.get("weights")):
            raise MetadataMismatch(f"{label}: the signed metadata names another base model than the index said")
        if (release.sha256, release.size) != (info.hashes["sha256"], info.length):
            raise MetadataMismatch(f"{label}: the signed metadata gives another digest than resolution used")
        _, revoked = self._registered(key_id, release.name, self._keys_seen)
        if key_id in revoked:
            raise RevokedKey(f"{label} is signed by key `{key_id[:16]}`, which was revoked for `{release.name}`",
                             hint="ask the publisher for a version signed by a current key")
        return self._entry(release, sig_info.hashes["sha256"], key_id), 0

    def fetch_verified(self, release: Release) -> tuple[Verified, LockedPatch, int]:
        """The release's bytes, fully verified; nothing is cached unless every check passed."""
        locked = self.hub_entries.get(release.key) or (self.old_lock.find(release.name) if self.old_lock else None)
        if locked is not None and (locked.version, locked.sha256) != (release.version, release.sha256 or locked.sha256):
            locked = None
        downloads = 0
        if self.offline or not release.target:
            # from the lockfile (offline, remove, hub): verify what the cache holds, no network
            if locked is None:
                raise OfflineMissing(f"`{release.name}@{release.version}` is not in the lockfile")
            key_id, sig_sha, sig_size = locked.key_id, locked.signature_sha256, None
            data = self.cache.get(locked.sha256)
            signature = self.cache.get(sig_sha)
            missing = [what for what, blob in (("patch file", data), ("signature", signature)) if blob is None]
            if missing:
                raise OfflineMissing(
                    f"offline, and the cache lacks the {' and '.join(missing)} of `{locked.name}@{locked.version}` (sha256 {locked.sha256[:16]}…)",
                    hint="run `patch sync` once online to fill the cache",
                )
        else:
            client = self.registry
            info, sig_info, key_id = self._signed(release)
            sig_sha, sig_size = sig_info.hashes["sha256"], sig_info.length
            data = self.cache.get(release.sha256)
            if data is None:
                data = client.download(info)
                downloads += 1
            signature = self.cache.get(sig_sha)
            if signature is None:
                signature = client.download(sig_info)
                downloads += 1
        keys, revoked, new_pem = self._key(key_id, release.name, self._keys_seen, online=bool(release.target) and not self.offline)
        expected = self._expected(release, key_id, locked)
        if sig_size is not None and len(signature) != sig_size:
            raise VerificationError(f"signature of `{release.name}@{release.version}` has the wrong size")
        verified = verify_patch(expected, data, signature, keys, self.model.fingerprint, revoked=revoked)
        # verified: now, and only now, the bytes may enter the cache
        self.cache.put(data, release.sha256)
        self.cache.put(signature, verified.signature_sha256)
        if new_pem is not None:
            self.cache.put_key(new_pem)
        return verified, self._entry(release, verified.signature_sha256, verified.key_id), downloads

    # -- commands

    def apply(self, resolution: Resolution, *, write: bool = True, fetch: bool = True) -> Outcome:
        """Fetch and verify everything in `resolution`, then write project file and lock.
        `fetch=False` (`patch lock`): verify signed metadata only, download no patch files."""
        self._keys_seen: dict = {}
        entries, downloads = [], 0
        items = resolution.releases
        if self.progress is not None:
            items = self.progress(items, total=len(items), desc="Verifying patches" if fetch else "Verifying signed metadata")
        for release in items:
            if fetch:
                _, entry, n = self.fetch_verified(release)
            else:
                entry, n = self.lock_entry(release)
            entry.required_by = resolution.required_by.get(release.key, [])
            entries.append(entry)
            downloads += n
        warnings = list(resolution.warnings)
        if not self.offline and self._registry is not None:
            for entry in entries:
                doc = self._registry.index(entry.name) if entry.source == self._registry.name else None
                if doc and doc.get("deprecated"):
                    warnings.append(f"`{entry.name}` is deprecated: {doc['deprecated']}")
        registries = dict(self.old_lock.registries) if self.old_lock else {}
        if not self.offline and any(not e.source.startswith("hf://") for e in entries):
            registries[self.registry.name] = self.registry.state()
        lock = Lock(
            model=self.project.model, architecture=self.model.fingerprint.architecture,
            weights=self.model.fingerprint.weights, requests=dict(self.project.patches),
            token_budget=self.project.token_budget, registries=registries, patches=entries,
        )
        if write:
            self.project.save()
            lock.save(self.project.lock_path)  # last: the commit point
        return Outcome(lock, _diff(self.old_lock, lock), warnings, downloads)

    def install(self, requests: list[PatchRequest]) -> Outcome:
        for request in requests:
            self.project.set(request.name, "*" if request.range.is_any else str(request.range))
        upgrade = tuple(r.key for r in requests)  # what you name is re-resolved; the rest stays
        return self.apply(self.resolve(upgrade=upgrade))

    def upgrade(self, names: list[str]) -> Outcome:
        return self.apply(self.resolve(upgrade=tuple(canonical_name(n) for n in names) if names else True))

    def remove(self, names: list[str]) -> Outcome:
        removed = [self.project.remove(name) for name in names]
        outcome = self.apply(self.resolve(from_lock=True))
        for name in removed:
            kept = outcome.lock.find(name)
            if kept is not None:
                outcome.warnings.append(f"`{kept.name}` stays installed: {', '.join(kept.required_by)} depends on it")
        return outcome

    def lock_only(self) -> Outcome:
        """Resolve and write `patches.lock` from verified signed metadata; `sync` fetches the files."""
        return self.apply(self.resolve(), fetch=False)

    def sync(self, *, frozen: bool = False) -> Outcome:
        """Make the cache hold exactly the locked set, verified; `frozen` refuses a stale lock."""
        lock = self.old_lock
        stale = lock is None or lock.requests != self.project.patches or lock.token_budget != self.project.token_budget
        if frozen and stale:
            raise LockOutOfDate(
                f"`{self.project.lock_path}` does not match `{self.project.path}`" if lock else f"no `{self.project.lock_path}`",
                hint="run `patch lock` and commit the lockfile, or drop `--frozen`",
            )
        if lock is not None and (lock.architecture, lock.weights) != (self.model.fingerprint.architecture, self.model.fingerprint.weights):
            raise IncompatibleModel(f"`{self.project.lock_path}` was made for another model than `{self.project.model}` is now",
                                    hint="run `patch lock` to resolve for this model")
        if stale:
            return self.apply(self.resolve())
        if self.offline:
            resolution = Resolution([p.to_release() for p in lock.patches], [],
                                    {p.key: p.required_by for p in lock.patches})
            resolution.warnings = [f"`{p.name}@{p.version}` is yanked" + (f": {p.yanked_reason}" if p.yanked_reason else "")
                                   + "; kept because the lockfile pins it" for p in lock.patches if p.yanked]
        else:
            # re-resolve against signed metadata: locked versions win, yanks show up as warnings
            resolution = self.resolve()
            if frozen and [(r.key, r.version) for r in resolution.releases] != [(p.key, p.version) for p in lock.patches]:
                raise LockOutOfDate(f"the registry no longer offers the locked set of `{self.project.lock_path}`",
                                    hint="run `patch lock` to resolve again")
        outcome = self.apply(resolution, write=not frozen)
        if frozen:
            # `patch lock` records some facts (tokens, hidden size, relations) from the index,
            # unsigned; the files are now verified, so the lock must agree with them
            for old, new in zip(lock.patches, outcome.lock.patches):
                differ = [f for f in _LOCKED_FACTS if getattr(old, f) != getattr(new, f)]
                if differ:
                    raise LockOutOfDate(
                        f"`{self.project.lock_path}` records other {', '.join(differ)} for `{old.name}@{old.version}` "
                        "than the registry's signed file",
                        hint="run `patch lock` to resolve again",
                    )
        return outcome

    def verify_installed(self) -> list[dict]:
        """Re-check every locked patch from the cache: digest, signature, fingerprint."""
        lock = self.old_lock
        if lock is None:
            raise OfflineMissing(f"nothing is installed: no `{self.project.lock_path}`")
        results = []
        for entry in lock.patches:
            try:
                data, signature = self.cache.get(entry.sha256), self.cache.get(entry.signature_sha256)
                if data is None or signature is None:
                    raise OfflineMissing(f"`{entry.name}@{entry.version}` is missing from the cache", hint="run `patch sync`")
                key = self.cache.get_key(entry.key_id)
                if key is None:
                    raise VerificationError(f"no public key `{entry.key_id[:16]}` in the cache")
                revoked = frozenset()
                if not self.offline and not entry.source.startswith("hf://"):
                    _, revoked = self.registry.keys(entry.name)
                expected = Expected(entry.name, entry.version, entry.sha256, entry.size, entry.key_id)
                verify_patch(expected, data, signature, {entry.key_id: key}, self.model.fingerprint, revoked=revoked)
                results.append({"name": entry.name, "version": entry.version, "ok": True, "error": None})
            except LLMPatchError as exc:
                results.append({"name": entry.name, "version": entry.version, "ok": False, "error": str(exc),
                                "kind": type(exc).__name__})
        return results

    def patch_set(self) -> list:
        """The installed patches, in composition order, re-verified from the cache."""
        results = self.verify_installed()
        failed = [r for r in results if not r["ok"]]
        if failed:
            first = failed[0]
            raise VerificationError(f"`{first['name']}@{first['version']}` failed verification: {first['error']}",
                                    hint="run `patch verify` for details, `patch sync` to repair")
        from ..patchfile import read_patch_bytes

        return [read_patch_bytes(self.cache.get(p.sha256)) for p in self.old_lock.patches]
