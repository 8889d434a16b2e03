"""Fingerprints of a model already in memory, by the same rules as `fingerprint_folder`.

Used to show that a model dequantised from GGUF in memory and the safetensors folder it was
cached as are the same weights, and by the trainer to record what it trained on.
"""

from __future__ import annotations

import torch

from ..fingerprint import Fingerprint, TensorRecord, WeightsHasher, architecture_digest, skipped_tensor, vocabulary_digest

_SAFETENSORS_DTYPE = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}


def fingerprint_in_memory(model, tokenizer) -> Fingerprint:
    config = model.config.to_dict()
    state = model.state_dict()
    records = {
        name: TensorRecord(name, _SAFETENSORS_DTYPE.get(t.dtype, str(t.dtype)), tuple(t.shape)) for name, t in state.items()
    }
    architecture = architecture_digest(config, records.values(), vocabulary_digest(tokenizer.get_vocab()))
    hasher = WeightsHasher()
    for name in sorted(state):
        if skipped_tensor(name, config):
            continue
        canonical = state[name].detach().to(torch.float32).contiguous().numpy()
        hasher.add(records[name], [memoryview(canonical.reshape(-1)).cast("B")])
    return Fingerprint(architecture, hasher.hexdigest())
