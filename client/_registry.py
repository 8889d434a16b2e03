"""Talking to a registry: its JSON API for browsing and writes, its TUF metadata for trust.

Resolution reads the index documents (unsigned, fast); every fact that matters is then taken
from, or checked against, TUF-verified targets metadata: a version missing from signed
metadata does not exist, `yanked` and the authorised signer key id come from there, and the
file and signature bytes are checked against signed length and sha256 before anyone reads
them. Key revocations come from the keys endpoint and can only make us refuse more.

Registry error codes map to exceptions in `raise_for_error`, on the code, never the text.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from .. import paths
from ..errors import InvalidPatchFile, LLMPatchError, SignatureError, VerificationError
from ..manifest import Relation, canonical_name
from ._lockfile import RegistryState
from ._project import _dump_toml
from ._sources import Release

if TYPE_CHECKING:
    import httpx


class RegistryError(LLMPatchError):
    """The registry refused a request (the `code` says why)."""

    def __init__(self, message: str, *, code: str = "", status: int = 0, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.code, self.status = code, status


class RegistryNotFound(RegistryError):
    """No such patch, version, key or registry."""


class RegistryAuthError(RegistryError):
    """Missing or insufficient token."""


class RegistryConflict(RegistryError):
    """The version or name exists already."""


class RegistryUnavailable(LLMPatchError):
    """The registry could not be reached (transport, not a refusal)."""


class RegistryInvalidFile(InvalidPatchFile):
    """The registry's strict validator refused the uploaded file."""


class RegistrySignatureRefused(SignatureError):
    """The registry refused the upload's signature or signing key."""


class MetadataVerificationError(VerificationError):
    """The registry's signed TUF metadata failed a check (signature, expiry, version, hash)."""


class UnknownRegistry(LLMPatchError):
    """No registry of that name is configured."""


_CODES = {
    "not_found": RegistryNotFound,
    "unauthorized": RegistryAuthError,
    "forbidden": RegistryAuthError,
    "version_exists": RegistryConflict,
    "name_taken": RegistryConflict,
    "key_exists": RegistryConflict,
    "invalid_patch_file": RegistryInvalidFile,
    "invalid_signature": RegistrySignatureRefused,
    "untrusted_key": RegistrySignatureRefused,
    "revoked_key": RegistrySignatureRefused,
}
_HINTS = {
    "unauthorized": "pass a token with `--token` or set `LLMPATCH_TOKEN`",
    "forbidden": "the token needs a scope for this patch, and its user must own the patch",
    "untrusted_key": "register the key for this name first (`patch registry key add`)",
    "version_exists": "bump the version: published versions are immutable",
}


def raise_for_error(response: httpx.Response) -> None:
    """Map an error response to a typed exception, on its stable `code`."""
    if response.is_success:
        return
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "", response.text[:200] or response.reason_phrase
    cls = _CODES.get(code, RegistryError)
    if cls in (RegistryInvalidFile, RegistrySignatureRefused):
        raise cls(f"the registry refused the upload ({code}): {message}", hint=_HINTS.get(code))
    raise cls(f"the registry answered {response.status_code} {code or ''}: {message}".replace("  ", " "),
              code=code, status=response.status_code, hint=_HINTS.get(code))


# ------------------------------------------------------------------ configured registries

@dataclass
class RegistryConfig:
    name: str
    url: str
    root_sha256: str

    @property
    def folder(self) -> Path:
        return paths.config_dir() / "registries" / self.name

    @property
    def root_path(self) -> Path:
        return self.folder / "root.json"

    @property
    def metadata_dir(self) -> Path:
        return paths.data_dir() / "registries" / self.name / "metadata"


def _config_file() -> Path:
    return paths.config_dir() / "registries.toml"


def load_registries() -> dict[str, RegistryConfig]:
    try:
        data = tomllib.loads(_config_file().read_text())
    except FileNotFoundError:
        return {}
    return {name: RegistryConfig(name, r["url"], r["root_sha256"]) for name, r in data.get("registry", {}).items()}


def save_registries(registries: dict[str, RegistryConfig]) -> None:
    data = {"registry": {n: {"url": r.url, "root_sha256": r.root_sha256} for n, r in sorted(registries.items())}}
    paths.atomic_write_bytes(_config_file(), _dump_toml(data))


def get_registry(name: str | None) -> RegistryConfig:
    registries = load_registries()
    if not registries:
        raise UnknownRegistry("no registry is configured", hint="add one with `patch registry add NAME URL --root root.json`")
    if name is None:
        name = "default" if "default" in registries else sorted(registries)[0]
    if name not in registries:
        known = ", ".join(f"`{n}`" for n in sorted(registries))
        raise UnknownRegistry(f"no registry named `{name}`", hint=f"configured: {known}")
    return registries[name]


def check_root(data: bytes) -> int:
    """Parse and self-verify a TUF root; return its version."""
    from tuf.api.metadata import Metadata, Root

    try:
        root = Metadata[Root].from_bytes(data)
        root.signed.verify_delegate(Root.type, root.signed_bytes, root.signatures)
    except Exception as exc:  # DeserializationError, UnsignedMetadataError, ValueError ...
        raise MetadataVerificationError(f"not a valid self-signed TUF root: {exc}") from None
    return root.signed.version


def add_registry(name: str, url: str, root: bytes, expected_sha256: str | None = None) -> RegistryConfig:
    """Pin a registry's root of trust: the initial TUF root, checked against a digest if given."""
    actual = hashlib.sha256(root).hexdigest()
    if expected_sha256 and actual != expected_sha256.lower().removeprefix("sha256:"):
        raise MetadataVerificationError(
            f"the root metadata has sha256 {actual[:16]}…, not the pinned {expected_sha256[:16]}…",
            hint="get the registry's root digest from its operator over a channel you trust",
        )
    check_root(root)
    config = RegistryConfig(name, url.rstrip("/"), actual)
    paths.atomic_write_bytes(config.root_path, root)
    registries = load_registries()
    registries[name] = config
    save_registries(registries)
    return config


def remove_registry(name: str) -> None:
    import shutil

    registries = load_registries()
    config = registries.pop(name, None)
    if config is None:
        raise UnknownRegistry(f"no registry named `{name}`")
    save_registries(registries)
    shutil.rmtree(config.folder, ignore_errors=True)
    shutil.rmtree(config.metadata_dir.parent, ignore_errors=True)


# ------------------------------------------------------------------ the client

def _httpx_fetcher(http: httpx.Client, progress_for: dict):
    from tuf.api.exceptions import DownloadHTTPError
    from tuf.ngclient import FetcherInterface

    class HttpxFetcher(FetcherInterface):
        """TUF downloads over our httpx client (one connection pool, testable transports).
        Target downloads show a byte progress bar on stderr (hidden when it is not a terminal)."""

        def _fetch(self, url: str) -> Iterator[bytes]:
            with http.stream("GET", url) as response:
                if response.status_code != 200:
                    raise DownloadHTTPError(f"GET {url} answered {response.status_code}", response.status_code)
                target = progress_for.get("target")
                if target is None or "/tuf/targets/" not in url:
                    yield from response.iter_bytes(64 * 1024)
                    return
                from ..cli.output import progress

                with progress(total=target.length, desc=target.path.rsplit("/", 1)[-1], unit="B") as bar:
                    for chunk in response.iter_bytes(64 * 1024):
                        bar.update(len(chunk))
                        yield chunk

    return HttpxFetcher()


@contextmanager
def _tuf_errors(what: str):
    from tuf.api import exceptions as tuf_errors

    try:
        yield
    except tuf_errors.DownloadError as exc:
        cause = exc.__cause__ or exc
        raise RegistryUnavailable(f"could not fetch {what}: {type(cause).__name__}: {cause}",
                                  hint="check the registry is up, or use `--offline` to install from the cache") from None
    except tuf_errors.RepositoryError as exc:
        raise MetadataVerificationError(f"{what} failed verification: {type(exc).__name__}: {exc}",
                                        hint="the registry's signed metadata is invalid, expired or rolled back; nothing was installed") from None


class RegistryClient:
    def __init__(self, config: RegistryConfig, http: httpx.Client | None = None, token: str | None = None):
        from ._http import new_client

        self.config = config
        self.http = http or new_client(timeout=30.0)
        self.token = token or os.environ.get("LLMPATCH_TOKEN")
        self._updater = None
        self._index: dict[str, dict] = {}
        self._progress: dict = {}  # the target being downloaded, for the fetcher's progress bar

    @property
    def name(self) -> str:
        return self.config.name

    def _url(self, path: str) -> str:
        return self.config.url + path

    def _get(self, path: str, **params) -> httpx.Response:
        from ._http import import_httpx

        httpx = import_httpx()
        try:
            response = self.http.get(self._url(path), params=params or None)
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(f"could not reach registry `{self.name}` at `{self.config.url}`: {exc}",
                                      hint="check the URL and that the registry is running, or use `--offline`") from None
        raise_for_error(response)
        return response

    def _post(self, path: str, **kwargs) -> httpx.Response:
        from ._http import import_httpx

        httpx = import_httpx()
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = self.http.post(self._url(path), headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(f"could not reach registry `{self.name}`: {exc}") from None
        raise_for_error(response)
        return response

    # -- TUF

    def updater(self):
        """A refreshed TUF updater: root, timestamp, snapshot, targets all verified."""
        if self._updater is None:
            from tuf.ngclient import Updater

            try:
                root = self.config.root_path.read_bytes()
            except FileNotFoundError:
                raise UnknownRegistry(f"registry `{self.name}` has no pinned root at `{self.config.root_path}`",
                                      hint=f"add it again with `patch registry add {self.name} URL --root FILE`") from None
            if hashlib.sha256(root).hexdigest() != self.config.root_sha256:
                raise MetadataVerificationError(f"the pinned root of `{self.name}` at `{self.config.root_path}` was changed")
            self.config.metadata_dir.mkdir(parents=True, exist_ok=True)
            with _tuf_errors(f"the metadata of registry `{self.name}`"):
                local_root = self.config.metadata_dir / "root.json"
                updater = Updater(
                    str(self.config.metadata_dir), self._url("/tuf/metadata/"), None, self._url("/tuf/targets/"),
                    fetcher=_httpx_fetcher(self.http, self._progress),
                    bootstrap=None if local_root.exists() else root,
                )
                updater.refresh()
            self._updater = updater
        return self._updater

    def state(self) -> RegistryState:
        """The metadata versions the refreshed updater trusts (it persists only verified files)."""
        from tuf.api.metadata import Metadata

        self.updater()
        versions = {}
        for role in ("root", "timestamp", "snapshot", "targets"):
            data = (self.config.metadata_dir / f"{role}.json").read_bytes()
            versions[role] = Metadata.from_bytes(data).signed.version
        return RegistryState(url=self.config.url, root_version=versions["root"], timestamp_version=versions["timestamp"],
                             snapshot_version=versions["snapshot"], targets_version=versions["targets"])

    def targetinfo(self, path: str):
        with _tuf_errors(f"target `{path}`"):
            return self.updater().get_targetinfo(path)

    def download(self, targetinfo) -> bytes:
        """Fetch a target; length and sha256 are checked against signed metadata before return."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="llmpatch-") as tmp:
            dest = Path(tmp) / "target"
            self._progress["target"] = targetinfo
            try:
                with _tuf_errors(f"target `{targetinfo.path}`"):
                    self.updater().download_target(targetinfo, str(dest))
            finally:
                self._progress.pop("target", None)
            data = dest.read_bytes()
        return data

    # -- index

    def index(self, name: str) -> dict | None:
        key = canonical_name(name)
        if key not in self._index:
            try:
                self._index[key] = self._get(f"/api/v1/patches/{key}").json()
            except RegistryNotFound:
                self._index[key] = None
        return self._index[key]

    def releases(self, name: str) -> list[Release]:
        """Versions both in the index and in signed metadata; signed facts win."""
        doc = self.index(name)
        if not doc:
            return []
        key = canonical_name(doc["name"])
        out = []
        for v in doc.get("versions", []):
            path = f"{key}/{key}-{v['version']}.safetensors"
            info = self.targetinfo(path)
            if info is None:
                continue  # not in signed metadata: does not exist for us
            custom = info.custom or {}
            base = custom.get("base_model") or v.get("base_model") or {}
            out.append(Release(
                name=doc["name"], version=v["version"],
                architecture=base.get("architecture", ""), weights=base.get("weights", ""),
                base_name=(v.get("base_model") or {}).get("name", ""),
                n_virtual_tokens=int(v["n_virtual_tokens"]), hidden_size=int(v["hidden_size"]),
                sha256=info.hashes.get("sha256", ""), size=info.length,
                dependencies=tuple(Relation(d["name"], d.get("spec", "*")) for d in v.get("dependencies", [])),
                conflicts=tuple(Relation(d["name"], d.get("spec", "*")) for d in v.get("conflicts", [])),
                yanked=bool(custom.get("yanked", False)), yanked_reason=custom.get("yank_reason") or "",
                target=path, signature_target=path + ".sig", registry=self.name,
            ))
        return out

    def names(self) -> list[str]:
        return [r["name"] for r in self.search("")]

    def signer(self, release: Release) -> str:
        info = self.targetinfo(release.target)
        return (info.custom or {}).get("key_id", "") if info else ""

    def keys(self, name: str) -> tuple[dict[str, bytes], frozenset[str]]:
        """Public keys registered for `name` (id -> PEM) and the ids revoked for it."""
        data = self._get(f"/api/v1/patches/{canonical_name(name)}/keys").json()
        keys = {k["key_id"]: k["public_key_pem"].encode() for k in data.get("keys", [])}
        revoked = frozenset(k["key_id"] for k in data.get("keys", []) if k.get("revoked_at"))
        return keys, revoked

    def search(self, query: str, base_model: str | None = None) -> list[dict]:
        params = {"q": query}
        if base_model:
            params["base_model"] = base_model
        return self._get("/api/v1/patches", **params).json().get("results", [])

    # -- writes

    def publish(self, data: bytes, signature: bytes, public_key: bytes | None = None) -> dict:
        files = {"file": ("patch.safetensors", data, "application/octet-stream"),
                 "signature": ("patch.safetensors.sig", signature, "application/json")}
        if public_key:
            files["public_key"] = ("key.pem", public_key, "application/x-pem-file")
        return self._post("/api/v1/patches", files=files).json()

    def yank(self, name: str, version: str, reason: str) -> dict:
        return self._post(f"/api/v1/patches/{canonical_name(name)}/versions/{version}/yank", json={"reason": reason}).json()
