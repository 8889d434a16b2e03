"""PEFT interop: a patch is a PEFT prompt-tuning adapter with a manifest, so it converts both
ways. Exported folders load with `PeftModel.from_pretrained`; imported ones become patches
bound to the model they were trained on. Only safetensors adapters are read (never
`adapter_model.bin`, which is a pickle).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from ..errors import InvalidPatchFile
from ..patchfile import PatchFile

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_TENSOR = "prompt_embeddings"
MAX_ADAPTER_CONFIG_BYTES = 64 * 1024


def export_peft(patch: PatchFile, folder: str | Path, *, base_model_name_or_path: str | None = None) -> Path:
    """Write `adapter_config.json` + `adapter_model.safetensors` for PEFT prompt tuning."""
    from peft import PromptTuningConfig

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    m = patch.manifest
    config = PromptTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=m.n_virtual_tokens,
        token_dim=m.hidden_size,
        num_transformer_submodules=1,
        base_model_name_or_path=base_model_name_or_path or m.base_model.name or None,
        inference_mode=True,
    )
    config.save_pretrained(str(folder))
    save_file({PEFT_TENSOR: np.ascontiguousarray(patch.prefix)}, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    return folder


def import_peft(folder: str | Path) -> tuple[np.ndarray, dict]:
    """Read a PEFT prompt-tuning adapter folder: (prefix float32 [n, hidden], adapter config)."""
    folder = Path(folder)
    config_path, weights_path = folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS
    if not config_path.exists():
        raise InvalidPatchFile(f"`{folder}` has no {ADAPTER_CONFIG}; is it a PEFT adapter folder?")
    if not weights_path.exists():
        if (folder / "adapter_model.bin").exists():
            raise InvalidPatchFile(
                f"`{folder}` holds a pickled adapter_model.bin; llm-patch never loads pickle",
                hint="re-save the adapter with `save_pretrained(..., safe_serialization=True)`",
            )
        raise InvalidPatchFile(f"`{folder}` has no {ADAPTER_WEIGHTS}")
    if config_path.stat().st_size > MAX_ADAPTER_CONFIG_BYTES:
        raise InvalidPatchFile(f"{ADAPTER_CONFIG} is larger than {MAX_ADAPTER_CONFIG_BYTES} bytes")
    config = json.loads(config_path.read_text())
    if config.get("peft_type") != "PROMPT_TUNING":
        raise InvalidPatchFile(f"adapter is {config.get('peft_type')!r}; only PROMPT_TUNING adapters are soft prefixes")
    if config.get("task_type") not in (None, "CAUSAL_LM"):
        raise InvalidPatchFile(f"adapter task_type is {config.get('task_type')!r}; only CAUSAL_LM is supported")
    if config.get("num_transformer_submodules", 1) != 1:
        raise InvalidPatchFile("adapters with several transformer submodules (encoder-decoder) are not supported")
    tensors = load_file(str(weights_path))
    if set(tensors) != {PEFT_TENSOR}:
        raise InvalidPatchFile(f"{ADAPTER_WEIGHTS} must hold exactly `{PEFT_TENSOR}`, found: {', '.join(sorted(tensors))}")
    prefix = tensors[PEFT_TENSOR].astype(np.float32)
    expected = [config.get("num_virtual_tokens"), config.get("token_dim")]
    if prefix.ndim != 2 or list(prefix.shape) != expected:
        raise InvalidPatchFile(f"`{PEFT_TENSOR}` has shape {list(prefix.shape)}, the config says {expected}")
    return prefix, config
