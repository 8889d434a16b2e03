"""Decoding with patches: greedy or sampled, batched, each row with its own patch set.

A plain loop instead of `model.generate`: generate() expects the cached part of the sequence
to exist as input ids, which soft prefixes do not have. Sampling uses transformers' logits
processors, so temperature, top-k, top-p and repetition penalty mean what they mean there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .kv_buffers import reserve
from .runtime import PatchedModel, PatchSet, build_prefill


@dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 64
    do_sample: bool = False  # greedy unless asked
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    repetition_penalty: float = 1.0
    seed: int | None = None
    suppress_tokens: tuple[int, ...] = ()  # never emitted (a blocklist-constrained decoder)

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass
class Generation:
    prompt_ids: list[int]
    token_ids: list[int]
    text: str
    finished: bool  # stopped on an end-of-sequence token rather than the length limit


def stop_token_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int))
    return ids


def _processors(cfg: SamplingConfig):
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        SuppressTokensLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    processors = LogitsProcessorList()
    if cfg.suppress_tokens:
        processors.append(SuppressTokensLogitsProcessor(list(cfg.suppress_tokens)))
    if cfg.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(cfg.repetition_penalty))
    if cfg.do_sample:
        if cfg.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(cfg.temperature))
        if cfg.top_k:
            processors.append(TopKLogitsWarper(cfg.top_k))
        if cfg.top_p < 1.0:
            processors.append(TopPLogitsWarper(cfg.top_p))
    return processors


@torch.no_grad()
def generate(
    patched: PatchedModel,
    prompts: Sequence[Sequence[int]],
    patch_sets: Sequence[PatchSet],
    cfg: SamplingConfig = SamplingConfig(),
    on_step: Callable[[int], None] | None = None,
) -> list[Generation]:
    model, tokenizer = patched.model, patched.tokenizer
    pre = build_prefill(model, prompts, patch_sets, patched.prefix_cache, patched.pad_token_id)
    stops = stop_token_ids(model, tokenizer)
    processors = _processors(cfg)
    generator = torch.Generator().manual_seed(cfg.seed) if cfg.seed is not None else None
    batch = len(prompts)

    out = model(
        input_ids=pre.input_ids,
        attention_mask=pre.attention_mask,
        position_ids=pre.position_ids,
        past_key_values=pre.past_key_values,
        use_cache=True,
        logits_to_keep=1,
    )
    cache, mask, positions = out.past_key_values, pre.attention_mask, pre.next_positions
    reserve(cache, cfg.max_new_tokens)  # appends write in place instead of copying the cache
    history = pre.input_ids  # for the repetition penalty
    generated = torch.empty((batch, 0), dtype=torch.long)
    done = torch.zeros(batch, dtype=torch.bool)
    for step in range(cfg.max_new_tokens):
        scores = processors(history, out.logits[:, -1, :].float())
        if cfg.do_sample:
            next_tokens = torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator).squeeze(1)
        else:
            next_tokens = scores.argmax(dim=-1)
        next_tokens = torch.where(done, torch.full_like(next_tokens, patched.pad_token_id), next_tokens)
        generated = torch.cat([generated, next_tokens[:, None]], dim=1)
        history = torch.cat([history, next_tokens[:, None]], dim=1)
        done |= torch.tensor([t in stops for t in next_tokens.tolist()])
        if on_step:
            on_step(step)
        if done.all() or step == cfg.max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones((batch, 1), dtype=mask.dtype)], dim=1)
        out = model(
            input_ids=next_tokens[:, None],
            attention_mask=mask,
            position_ids=positions[:, None],
            past_key_values=cache,
            use_cache=True,
        )
        cache = out.past_key_values
        positions = positions + 1

    results = []
    for row, prompt in enumerate(prompts):
        ids = generated[row].tolist()
        finished = False
        for i, token in enumerate(ids):
            if token in stops:
                ids, finished = ids[:i], True
                break
        text = tokenizer.decode(ids, skip_special_tokens=True) if tokenizer is not None else ""
        results.append(Generation(list(prompt), ids, text, finished))
    return results


def encode_prompt(tokenizer, text: str, *, chat: bool = True, system: str | None = None) -> list[int]:
    """Token ids for a user prompt; wrapped in the model's chat template when it has one."""
    if chat and getattr(tokenizer, "chat_template", None):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return list(ids)
    return tokenizer(text, add_special_tokens=True)["input_ids"]
