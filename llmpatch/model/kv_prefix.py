"""Prefixes of keys and values (placement `kv`, as in prefix tuning / P-tuning v2).

An input prefix reaches layer l only through what layers 0..l-1 make of it. A kv prefix
holds its own keys and values at every attention layer: 20x the floats of an input prefix
on SmolLM2-135M (30 layers, 3 KV heads of 64), and the freedom a 135M model needed to cut
toxicity without losing fluency (README, Results).

A virtual token is stored flat as [layers, keys|values, kv_heads, head_dim], PEFT's prefix
tuning layout. Keys are used as stored, never rotated again: a kv prefix is trained at the
position where it is applied, and the prompt after it starts at position P.
"""

from __future__ import annotations

import torch

from ..manifest import KVLayout


def model_kv_layout(model) -> KVLayout:
    """The attention cache layout of a causal LM, from its config."""
    config = getattr(model.config, "text_config", None) or model.config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return KVLayout(config.num_hidden_layers, getattr(config, "num_key_value_heads", None) or heads, head_dim)


def placement_of_tensor(model, prefix: torch.Tensor) -> str:
    """"input" or "kv", from a prefix tensor's width (trainers pass bare tensors around)."""
    hidden, layout = model.get_input_embeddings().weight.shape[1], model_kv_layout(model)
    if prefix.shape[-1] == hidden and hidden != layout.width:
        return "input"
    if prefix.shape[-1] == layout.width and hidden != layout.width:
        return "kv"
    raise ValueError(f"a prefix of width {prefix.shape[-1]} is neither an input prefix ({hidden}) nor a kv prefix ({layout.width}) for this model")


def kv_layers(flat: torch.Tensor, layout: KVLayout) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[P, width] -> per layer (keys, values), each [1, kv_heads, P, head_dim]; views of `flat`,
    so gradients reach it."""
    if flat.dim() != 2 or flat.shape[1] != layout.width:
        raise ValueError(f"a kv prefix for this model is [P, {layout.width}], got {list(flat.shape)}")
    x = flat.view(flat.shape[0], layout.layers, 2, layout.kv_heads, layout.head_dim).permute(1, 2, 3, 0, 4)
    return [(x[layer, 0][None], x[layer, 1][None]) for layer in range(layout.layers)]


def flatten_kv(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """The inverse of `kv_layers` for one row: per layer (keys, values) [1, H, P, D] -> [P, width]."""
    x = torch.stack([torch.stack([keys[0], values[0]]) for keys, values in layers])  # [L, 2, H, P, D]
    return x.permute(3, 0, 1, 2, 4).reshape(x.shape[3], -1)


@torch.no_grad()
def kv_of_input_prefix(model, embeddings: torch.Tensor) -> torch.Tensor:
    """The kv prefix that acts exactly as the input prefix `embeddings` [P, hidden]: the keys and
    values the model computes for it at positions 0..P-1. Trainers start a kv prefix here."""
    weight = model.get_input_embeddings().weight
    out = model(inputs_embeds=embeddings.to(weight.dtype)[None], position_ids=torch.arange(embeddings.shape[0])[None], use_cache=True)
    return flatten_kv([(layer.keys, layer.values) for layer in out.past_key_values.layers]).float()
