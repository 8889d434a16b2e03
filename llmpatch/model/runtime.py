"""Running a frozen causal LM with patches: soft prefixes in front of the input embeddings
(placement `input`), or keys and values at every attention layer (placement `kv`).

A *patch set* is an ordered list of patches; their prefixes are concatenated in that order.
Each batch row may carry its own patch set. One row's sequence is laid out as

    [pad x (P_max - P_i)] [prefix_i: P_i] [pad x (L_max - L_i)] [prompt_i: L_i]

with the attention mask hiding the pads and position ids counting only real slots, so a row
computes what it would alone: prefix at positions 0..P_i-1, prompt from P_i on.

The prefix part never changes, so its keys/values are computed once per patch set and kept
(`PrefixCache`); a request then only prefills its prompt, and a patched generation costs
about what an unpatched one does. An input prefix's keys/values come from running it through
the model after the prefixes before it; a kv prefix's are stored in the patch.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from itertools import groupby
from typing import Sequence

import numpy as np
import torch

from ..errors import IncompatibleModel
from ..fingerprint import Fingerprint, short
from ..manifest import KVLayout
from ..patchfile import PatchFile
from .kv_prefix import kv_layers, model_kv_layout

@dataclass(frozen=True)
class RawPrefix:
    """A prefix that is not a patch file (yet), e.g. one being trained; it composes like a
    patch. `key` identifies it in the prefix cache, so give a new key whenever it changes."""

    prefix: "np.ndarray"  # float32 [n_virtual_tokens, hidden], or [n, kv width] for placement "kv"
    key: str
    placement: str = "input"

    @property
    def sha256(self) -> str:
        return self.key


PatchSet = Sequence["PatchFile | RawPrefix"]


def placement_of(item: "PatchFile | RawPrefix") -> str:
    return item.manifest.placement if isinstance(item, PatchFile) else item.placement


def check_shape(patch: PatchFile, hidden_size: int, kv_layout: KVLayout | None) -> None:
    """Refuse a patch whose tensor cannot run on this model at all (no `--force` overrides it)."""
    m = patch.manifest
    if m.hidden_size != hidden_size:
        raise IncompatibleModel(
            f"patch `{m.name}@{m.version}` has hidden size {m.hidden_size}, the model has {hidden_size}",
            hint="this patch was made for a different model family; find a version built for your model",
        )
    if m.placement == "kv" and kv_layout is not None and m.kv_layout != kv_layout:
        raise IncompatibleModel(
            f"patch `{m.name}@{m.version}` holds keys and values for {m.kv_layout}, the model's attention is {kv_layout}",
            hint="this patch was made for a different model family; find a version built for your model",
        )


def check_compatible(
    patch: PatchFile, fingerprint: Fingerprint, hidden_size: int, *, force: bool = False, kv_layout: KVLayout | None = None
) -> None:
    """Refuse a patch built for another base model; `force` overrides a fingerprint mismatch
    but never a shape mismatch, which cannot run at all."""
    m = patch.manifest
    check_shape(patch, hidden_size, kv_layout)
    if force:
        return
    base = m.base_model
    if base.architecture != fingerprint.architecture:
        raise IncompatibleModel(
            f"patch `{m.name}@{m.version}` was built for architecture {short(base.architecture)} "
            f"({base.name or 'unnamed model'}), but this model is {short(fingerprint.architecture)}",
            hint="use the base model the patch names, or pass `--force` to apply it anyway",
        )
    if base.weights != fingerprint.weights:
        raise IncompatibleModel(
            f"patch `{m.name}@{m.version}` was built for weights {short(base.weights)} "
            f"({base.name or 'unnamed model'}), but this model's weights are {short(fingerprint.weights)} "
            f"(same architecture, different weights: a fine-tune or another quantisation)",
            hint="use the exact base model the patch names, or pass `--force` to apply it anyway",
        )


def set_key(patch_set: PatchSet) -> tuple[str, ...]:
    return tuple(p.sha256 for p in patch_set)


class PrefixCache:
    """Per patch set: the prefix's per-layer (keys, values), each [1, kv_heads, P, head_dim]."""

    def __init__(self, model, max_entries: int = 16):
        self.model = model
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, ...], list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()

    def get(self, patch_set: PatchSet) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        if not patch_set:
            return None
        key = set_key(patch_set)
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        layers = prefix_layers(patch_set, self.model)
        self._entries[key] = layers
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return layers

    def forget(self, patch_set: PatchSet) -> None:
        self._entries.pop(set_key(patch_set), None)


@torch.no_grad()
def prefix_layers(patch_set: PatchSet, model) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The patch set's per-layer (keys, values), each [1, kv_heads, P, head_dim], in set order.
    A run of input prefixes goes through the model in one pass, attending to every prefix
    before it; a kv prefix is appended as stored."""
    from transformers import DynamicCache

    cache, offset = DynamicCache(config=model.config), 0
    dtype = model.get_input_embeddings().weight.dtype
    for placement, run in groupby(patch_set, key=placement_of):
        run = list(run)
        if placement == "kv":
            layout = model_kv_layout(model)
            for item in run:
                for index, (keys, values) in enumerate(kv_layers(torch.from_numpy(item.prefix.copy()).to(dtype), layout)):
                    cache.update(keys, values, index)
                offset += item.prefix.shape[0]
        else:
            prefix = prefix_embeddings(run, model)  # [P, H]
            model(inputs_embeds=prefix[None], position_ids=torch.arange(offset, offset + prefix.shape[0])[None],
                  past_key_values=cache, use_cache=True)
            offset += prefix.shape[0]
    return [(layer.keys, layer.values) for layer in cache.layers]


def prefix_embeddings(patch_set: PatchSet, model) -> torch.Tensor:
    """The patch set's prefixes concatenated in order: [sum of n_virtual_tokens, hidden]."""
    embeddings = model.get_input_embeddings().weight
    parts = [torch.from_numpy(p.prefix.copy()) for p in patch_set]
    return torch.cat(parts).to(dtype=embeddings.dtype, device=embeddings.device)


@dataclass
class Prefill:
    """What a batch's first forward pass needs, and what decoding continues from."""

    input_ids: torch.Tensor  # [B, L_max], left-padded prompts
    attention_mask: torch.Tensor  # [B, P_max + L_max]
    position_ids: torch.Tensor  # [B, L_max]
    past_key_values: object | None  # DynamicCache holding the prefixes, or None
    next_positions: torch.Tensor  # [B], position of each row's next token


def build_prefill(
    model, prompts: Sequence[Sequence[int]], patch_sets: Sequence[PatchSet], prefix_cache: PrefixCache, pad_token_id: int
) -> Prefill:
    from transformers import DynamicCache

    if len(prompts) != len(patch_sets):
        raise ValueError(f"{len(prompts)} prompts but {len(patch_sets)} patch sets")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    batch = len(prompts)
    kv_per_row = [prefix_cache.get(s) for s in patch_sets]
    prefix_lens = [0 if kv is None else kv[0][0].shape[-2] for kv in kv_per_row]
    p_max, l_max = max(prefix_lens), max(len(p) for p in prompts)

    input_ids = torch.full((batch, l_max), pad_token_id, dtype=torch.long)
    mask = torch.zeros((batch, p_max + l_max), dtype=torch.long)
    positions = torch.ones((batch, l_max), dtype=torch.long)
    for row, (prompt, p_len) in enumerate(zip(prompts, prefix_lens)):
        n = len(prompt)
        input_ids[row, l_max - n :] = torch.tensor(prompt, dtype=torch.long)
        mask[row, p_max - p_len : p_max] = 1
        mask[row, p_max + l_max - n :] = 1
        positions[row, l_max - n :] = torch.arange(p_len, p_len + n)

    cache = None
    if p_max:
        cache = DynamicCache(config=model.config)
        for layer_idx in range(len(next(kv for kv in kv_per_row if kv is not None))):
            ref_k, ref_v = next(kv for kv in kv_per_row if kv is not None)[layer_idx]
            keys = ref_k.new_zeros((batch, ref_k.shape[1], p_max, ref_k.shape[3]))
            values = ref_v.new_zeros((batch, ref_v.shape[1], p_max, ref_v.shape[3]))
            for row, (kv, p_len) in enumerate(zip(kv_per_row, prefix_lens)):
                if kv is not None:  # right-align each row's prefix against its prompt
                    keys[row, :, p_max - p_len :] = kv[layer_idx][0][0]
                    values[row, :, p_max - p_len :] = kv[layer_idx][1][0]
            cache.update(keys, values, layer_idx)
    next_positions = torch.tensor([p + len(q) for p, q in zip(prefix_lens, prompts)], dtype=torch.long)
    return Prefill(input_ids, mask, positions, cache, next_positions)


class PatchedModel:
    """A frozen model plus a prefix cache; the same object serves any number of patch sets."""

    def __init__(self, model, tokenizer, fingerprint: Fingerprint | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.fingerprint = fingerprint
        self.prefix_cache = PrefixCache(model)

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().weight.shape[1]

    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        if tok is not None and tok.pad_token_id is not None:
            return tok.pad_token_id
        if tok is not None and tok.eos_token_id is not None:
            return tok.eos_token_id
        return 0

    def check(self, patch_set: Sequence[PatchFile], *, force: bool = False) -> None:
        for patch in patch_set:
            if self.fingerprint is None:
                check_shape(patch, self.hidden_size, model_kv_layout(self.model))
            else:
                check_compatible(patch, self.fingerprint, self.hidden_size, force=force, kv_layout=model_kv_layout(self.model))

    @torch.no_grad()
    def logits(self, prompts: Sequence[Sequence[int]], patch_sets: Sequence[PatchSet]) -> list[torch.Tensor]:
        """Next-token logits at every prompt position, per row: [L_i, vocab] (for tests and scoring)."""
        pre = build_prefill(self.model, prompts, patch_sets, self.prefix_cache, self.pad_token_id)
        out = self.model(
            input_ids=pre.input_ids,
            attention_mask=pre.attention_mask,
            position_ids=pre.position_ids,
            past_key_values=pre.past_key_values,
            use_cache=pre.past_key_values is not None,
        )
        l_max = pre.input_ids.shape[1]
        return [out.logits[row, l_max - len(p) :] for row, p in enumerate(prompts)]
