"""Patches on the Hugging Face Hub: `patch push --hub ORG/NAME` and `hf://ORG/NAME@REVISION`.

A pushed repo is a PEFT prompt-tuning adapter (`adapter_config.json` +
`adapter_model.safetensors` with `prompt_embeddings`), so `PeftModel.from_pretrained` loads
it, plus our patch file and detached signature under `llm-patch/`. Installing from the Hub
reads only the latter and applies the same checks as a registry install, except that the
trusted keys are those in the local key store (the Hub signs nothing for us).

`HF_ENDPOINT` is read at call time, so a mirror or a test server can stand in for the Hub.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import LLMPatchError, SignatureError
from ..patchfile import read_patch_bytes
from ..signing import SIGNATURE_SUFFIX, SignatureDocument, public_key_to_pem
from ._lockfile import LockedPatch
from ._verify import Expected, verify_patch

PATCH_PATH = "llm-patch/patch.safetensors"
SIGNATURE_PATH = PATCH_PATH + SIGNATURE_SUFFIX
_REF = re.compile(r"hf://(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[\w./-]+))?\Z")
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024


class HubError(LLMPatchError):
    """The Hub (or the repo) could not give us a patch."""


@dataclass(frozen=True)
class HubRef:
    repo_id: str
    revision: str

    @classmethod
    def parse(cls, text: str) -> "HubRef":
        match = _REF.match(text.strip())
        if not match:
            raise HubError(f"`{text}` is not a Hub reference", hint="write `hf://ORG/NAME` or `hf://ORG/NAME@REVISION`")
        return cls(match["repo"], match["rev"] or "main")

    def pinned(self, commit: str) -> str:
        return f"hf://{self.repo_id}@{commit}"


def _endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def _api():
    from huggingface_hub import HfApi

    return HfApi(endpoint=_endpoint())


def model_card(name: str, version: str, base_name: str, repo_id: str) -> str:
    return (
        "---\nlibrary_name: peft\ntags: [llm-patch, prompt-tuning, safety]\n"
        + (f"base_model: {base_name}\n" if base_name and "/" in base_name else "")
        + f"---\n\n# {name} {version}\n\nAn llm-patch soft-prefix safety patch, as a PEFT prompt-tuning adapter.\n\n"
        f"Verified install (signature and base-model fingerprint):\n\n    patch install hf://{repo_id}\n"
    )


def push_to_hub(file: Path, repo_id: str, *, revision: str | None = None, private: bool = False) -> dict:
    """Upload adapter folder + patch + signature in one commit; returns the commit id."""
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import HfHubHTTPError

    from ..model.peft_interop import export_peft

    data = Path(file).read_bytes()
    patch = read_patch_bytes(data)
    sig_path = Path(str(file) + SIGNATURE_SUFFIX)
    if not sig_path.exists():
        raise SignatureError(f"no signature at `{sig_path}`", hint=f"sign it first: `patch sign {file}`")
    signature = sig_path.read_bytes()
    doc = SignatureDocument.from_json(signature)
    if (doc.sha256, doc.size) != (patch.sha256, patch.size):
        raise SignatureError(f"`{sig_path}` signs other bytes than `{file}`", hint=f"sign it again: `patch sign {file}`")
    m = patch.manifest
    with tempfile.TemporaryDirectory(prefix="llmpatch-push-") as tmp:
        folder = export_peft(patch, Path(tmp))
        operations = [CommitOperationAdd(p.name, p.read_bytes()) for p in sorted(folder.iterdir()) if p.is_file()]
    operations += [
        CommitOperationAdd(PATCH_PATH, data),
        CommitOperationAdd(SIGNATURE_PATH, signature),
        CommitOperationAdd("README.md", model_card(m.name, m.version, m.base_model.name, repo_id).encode()),
    ]
    api = _api()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.create_commit(repo_id, operations, commit_message=f"llm-patch {m.name} {m.version}", revision=revision)
    except HfHubHTTPError as exc:
        raise HubError(f"the Hub refused the upload to `{repo_id}`: {exc}", hint="check `HF_TOKEN` can write to the repo") from None
    return {"name": m.name, "version": m.version, "repo_id": repo_id, "commit": info.oid, "sha256": patch.sha256}


def download(ref: HubRef, cache_dir: Path) -> tuple[bytes, bytes, str]:
    """The patch file and signature at one commit: (data, signature, commit)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        first = Path(hf_hub_download(ref.repo_id, PATCH_PATH, revision=ref.revision, cache_dir=cache_dir, endpoint=_endpoint()))
        commit = first.parent.parent.name  # …/snapshots/<commit>/llm-patch/patch.safetensors
        second = Path(hf_hub_download(ref.repo_id, SIGNATURE_PATH, revision=commit, cache_dir=cache_dir, endpoint=_endpoint()))
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise HubError(f"no repo or revision `{ref.repo_id}@{ref.revision}` on the Hub ({type(exc).__name__})") from None
    except EntryNotFoundError:
        raise HubError(f"`{ref.repo_id}@{ref.revision}` has no `{PATCH_PATH}` or signature; it was not pushed with `patch push`") from None
    except HfHubHTTPError as exc:
        raise HubError(f"the Hub refused `{ref.repo_id}@{ref.revision}`: {exc}") from None
    except OSError as exc:  # connection errors surface as OSError subclasses
        raise HubError(f"could not reach the Hub for `{ref.repo_id}`: {exc}", hint="use `--offline` once it is locked") from None
    for path in (first, second):
        if path.stat().st_size > MAX_DOWNLOAD_BYTES:
            raise HubError(f"`{path.name}` from `{ref.repo_id}` is larger than {MAX_DOWNLOAD_BYTES} bytes")
    return first.read_bytes(), second.read_bytes(), commit


def install_from_hub(installer, text: str) -> LockedPatch:
    """Pull, verify against the local key store and the model, cache, and stage for the lock."""
    from ..keystore import KeyStore

    ref = HubRef.parse(text)
    data, signature, commit = download(ref, installer.cache.root / "hub")
    patch = read_patch_bytes(data)
    m = patch.manifest
    keys = KeyStore().trusted_keys()
    expected = Expected(m.name, m.version, hashlib.sha256(data).hexdigest(), len(data), key_id="")
    verified = verify_patch(expected, data, signature, keys, installer.model.fingerprint)
    installer.cache.put(data, patch.sha256)
    installer.cache.put(signature, verified.signature_sha256)
    installer.cache.put_key(public_key_to_pem(keys[verified.key_id]))
    entry = LockedPatch(
        name=m.name, version=m.version, sha256=patch.sha256, size=patch.size, signature_sha256=verified.signature_sha256,
        key_id=verified.key_id, source=ref.pinned(commit), architecture=m.base_model.architecture,
        weights=m.base_model.weights, n_virtual_tokens=m.n_virtual_tokens, hidden_size=m.hidden_size,
        dependencies=[f"{r.name}@{r.spec}" for r in m.dependencies], conflicts=[f"{r.name}@{r.spec}" for r in m.conflicts],
    )
    installer.stage_hub(entry, {"hf": ref.repo_id, "revision": commit})
    return entry
