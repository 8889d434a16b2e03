"""PEFT interop: an input patch is a PEFT prompt-tuning adapter with a manifest, so it converts
both ways; a kv patch exports as a PEFT prefix-tuning adapter. Exported folders load with `PeftModel.from_pretrained`; imported ones become patches
bound to the model they were trained on. Only safetensors adapters are read (never
`adapter_model.bin`, which is a pickle).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from ..errors import InvalidPatchFile
from ..manifest import KVLayout
from ..patchfile import PatchFile

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_TENSOR = "prompt_embeddings"
MAX_ADAPTER_CONFIG_BYTES = 64 * 1024


def export_peft(patch: PatchFile, folder: str | Path, *, base_model_name_or_path: str | None = None) -> Path:
    """Write `adapter_config.json` + `adapter_model.safetensors`: PEFT prompt tuning for an
    input patch, PEFT prefix tuning (no projection) for a kv patch, whose flat layout
    [layers, keys|values, kv_heads, head_dim] per virtual token is PEFT's own."""
    from peft import PrefixTuningConfig, PromptTuningConfig

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    m = patch.manifest
    common = dict(task_type="CAUSAL_LM", num_virtual_tokens=m.n_virtual_tokens, num_transformer_submodules=1,
                  base_model_name_or_path=base_model_name_or_path or m.base_model.name or None, inference_mode=True)
    if m.placement == "kv":
        layout = m.kv_layout  # PEFT reads grouped-query models' prefixes as kv_heads x head_dim
        config = PrefixTuningConfig(**common, num_layers=layout.layers, num_attention_heads=layout.kv_heads,
                                    token_dim=layout.kv_heads * layout.head_dim, prefix_projection=False)
    else:
        config = PromptTuningConfig(**common, token_dim=m.hidden_size)
    config.save_pretrained(str(folder))
    save_file({PEFT_TENSOR: np.ascontiguousarray(patch.prefix)}, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    return folder


def import_peft(folder: str | Path) -> tuple[np.ndarray, dict]:
    """Read a PEFT prompt- or prefix-tuning adapter folder: (prefix float32 [n, width], adapter config)."""
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
    if config.get("peft_type") not in ("PROMPT_TUNING", "PREFIX_TUNING"):
        raise InvalidPatchFile(f"adapter is {config.get('peft_type')!r}; only PROMPT_TUNING and PREFIX_TUNING adapters are soft prefixes")
    if config.get("prefix_projection"):
        raise InvalidPatchFile("this prefix-tuning adapter stores a projection network, not its prefix",
                               hint="save it with prefix_projection=False, or compute the projected prefix and save that")
    if config.get("task_type") not in (None, "CAUSAL_LM"):
        raise InvalidPatchFile(f"adapter task_type is {config.get('task_type')!r}; only CAUSAL_LM is supported")
    if config.get("num_transformer_submodules", 1) != 1:
        raise InvalidPatchFile("adapters with several transformer submodules (encoder-decoder) are not supported")
    tensors = load_file(str(weights_path))
    if set(tensors) != {PEFT_TENSOR}:
        raise InvalidPatchFile(f"{ADAPTER_WEIGHTS} must hold exactly `{PEFT_TENSOR}`, found: {', '.join(sorted(tensors))}")
    prefix = tensors[PEFT_TENSOR].astype(np.float32)
    expected = [config.get("num_virtual_tokens"), config.get("token_dim")]
    if config["peft_type"] == "PREFIX_TUNING":  # keys and values for every layer
        expected[1] = (config.get("num_layers") or 0) * 2 * (config.get("token_dim") or 0)
    if prefix.ndim != 2 or list(prefix.shape) != expected:
        raise InvalidPatchFile(f"`{PEFT_TENSOR}` has shape {list(prefix.shape)}, the config says {expected}")
    return prefix, config


def kv_layout_of(config: dict) -> KVLayout | None:
    """The kv layout of an imported prefix-tuning adapter; None for prompt tuning."""
    if config.get("peft_type") != "PREFIX_TUNING":
        return None
    heads = config.get("num_attention_heads") or 0
    if not heads or config["token_dim"] % heads:
        raise InvalidPatchFile(f"prefix-tuning adapter: token_dim {config['token_dim']} is not a multiple of num_attention_heads {heads}")
    return KVLayout(config["num_layers"], heads, config["token_dim"] // heads)
