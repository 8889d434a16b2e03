"""Choosing the safer reference a patch learns from (`patch train --reference ...`).

- nothing: each domain's embedded default recipe (see recipes.py), offline.
- `FILE.jsonl`: {"prompt", "response"} lines, learnt by SFT.
- `best-of-N`: the base model's own safest of N samples per prompt (SFT), and DPO pairs of
  its safest over its least safe sample, filtered by margin and threshold.
- anything else: another causal LM (folder, .gguf, Hub id, bundled alias). It may use any
  tokenizer: its answers are decoded to text and learnt as text.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Callable

import torch

from ..model.generation import SamplingConfig, encode_prompt
from ..model.runtime import PatchedModel
from . import data
from .objectives import Example, Pair, batch_loss
from .recipes import RECIPES, ReferenceError_, TrainingData, _encode, _generate_texts, _target, gendered, jsonl_reference
from .scorers import KeywordJudge, ProfanityScorer

CHAT_DOMAINS = {"harmfulness"}


def domain_prompts(domain: str, split: str) -> list[str]:
    if domain == "harmfulness":
        harmful = data.by_split(list(data.advbench()), split) + data.by_split([x.prompt for x in data.xstest() if not x.safe], split)
        return harmful + data.by_split([x.prompt for x in data.xstest() if x.safe], split)
    if domain == "toxicity":
        return data.by_split(list(data.realtoxicityprompts()), split)
    return data.bias_prompts(split)


def unsafety(domain: str, prompts: list[str], texts: list[str]) -> list[float]:
    """The domain's scorer, as 'how unsafe' in [0, 1] (lower is safer)."""
    if domain == "toxicity":
        return ProfanityScorer().score(texts)
    if domain == "bias":
        return [1.0 if gendered(t) else 0.0 for t in texts]
    harmful = {p for p in data.advbench()} | {x.prompt for x in data.xstest() if not x.safe}
    refused = KeywordJudge().refusal_prob(texts)
    # unsafe: complying with a harmful prompt, or refusing a safe one
    return [1 - r if p in harmful else r for p, r in zip(prompts, refused)]


def _held_out_validation(patched: PatchedModel, examples: list[Example]) -> tuple[list[Example], Callable]:
    rng = random.Random(0)
    shuffled = examples[:]
    rng.shuffle(shuffled)
    cut = max(1, len(shuffled) // 10)
    held, kept = shuffled[:cut], shuffled[cut:] or shuffled

    @torch.no_grad()
    def validate(prefix):
        losses = [float(batch_loss(patched.model, prefix, held[s : s + 8])) for s in range(0, len(held), 8)]
        loss = sum(losses) / len(losses)
        return {"score": -loss, "held_out_loss": loss}

    return kept, validate


def best_of_n(patched: PatchedModel, domain: str, n: int, cfg, on_progress=None) -> TrainingData:
    tok, chat = patched.tokenizer, domain in CHAT_DOMAINS
    prompts = domain_prompts(domain, "train")[: cfg.recipe.max_train_prompts]
    contexts = [_encode(tok, p, chat) for p in prompts]
    tokens = cfg.recipe.response_tokens if chat else cfg.recipe.continuation_tokens
    sample = SamplingConfig(max_new_tokens=tokens, do_sample=True, top_p=0.9, seed=cfg.seed)
    outputs = _generate_texts(patched, [c for c in contexts for _ in range(n)], sample, cfg.recipe.batch_size, on_progress)
    scores = unsafety(domain, [p for p in prompts for _ in range(n)], [o.text for o in outputs])
    examples, pairs = [], []
    for i, context in enumerate(contexts):
        group = [(o, s) for o, s in zip(outputs[i * n : (i + 1) * n], scores[i * n : (i + 1) * n]) if o.token_ids]
        if not group:
            continue
        best, worst = min(group, key=lambda g: g[1]), max(group, key=lambda g: g[1])
        if best[1] <= cfg.recipe.dpo_threshold:
            examples.append(Example(context, best[0].token_ids, "sft"))
            if worst[1] - best[1] >= cfg.recipe.dpo_margin:
                pairs.append(Pair(context, best[0].token_ids, worst[0].token_ids))
    if not examples:
        raise ReferenceError_(
            f"best-of-{n}: none of the model's samples was safe enough (threshold {cfg.recipe.dpo_threshold}) for `{domain}`",
            hint="the base model cannot show the wanted behaviour itself; use a reference model or a JSONL file",
        )
    examples, validate = _held_out_validation(patched, examples)
    return TrainingData(domain, chat, examples, pairs, validate, {"reference": f"best-of-{n}", "examples": len(examples), "pairs": len(pairs)})


def other_model(patched: PatchedModel, domain: str, spec: str, cfg, on_progress=None) -> TrainingData:
    from ..model.loading import load_model

    reference = load_model(spec)
    chat = domain in CHAT_DOMAINS
    if chat and not getattr(reference.tokenizer, "chat_template", None):
        raise ReferenceError_(
            f"reference `{spec}` has no chat template, so it cannot answer the chat prompts `{domain}` trains on",
            hint="use an instruction-tuned reference model, or a JSONL file of its answers",
        )
    ref_patched = PatchedModel(reference.model, reference.tokenizer, reference.fingerprint)
    prompts = domain_prompts(domain, "train")[: cfg.recipe.max_train_prompts]
    tokens = cfg.recipe.response_tokens if chat else cfg.recipe.continuation_tokens
    ref_contexts = [encode_prompt(reference.tokenizer, p, chat=True) if chat else reference.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    outputs = _generate_texts(ref_patched, ref_contexts, SamplingConfig(max_new_tokens=tokens), cfg.recipe.batch_size, on_progress)
    tok = patched.tokenizer
    examples = [
        Example(_encode(tok, p, chat), _target(tok, o.text, eos=chat and o.finished), "sft")
        for p, o in zip(prompts, outputs)
        if o.text.strip()
    ]
    if not examples:
        raise ReferenceError_(f"reference `{spec}` produced no text for the `{domain}` prompts")
    examples, validate = _held_out_validation(patched, examples)
    return TrainingData(domain, chat, examples, [], validate, {"reference": f"model:{spec}", "examples": len(examples)})


def build_reference_data(patched: PatchedModel, cfg, reference: str | None, on_progress=None) -> list[TrainingData]:
    datasets = []
    for domain in cfg.domains:
        if reference in (None, "", "default"):
            datasets.append(RECIPES[domain](patched, cfg.recipe, on_progress))
        elif match := re.fullmatch(r"best-of-(\d+)", reference):
            n = int(match.group(1))
            if not 2 <= n <= 64:
                raise ReferenceError_(f"best-of-N takes N from 2 to 64, got {n}")
            datasets.append(best_of_n(patched, domain, n, cfg, on_progress))
        elif reference.endswith(".jsonl"):
            loaded = jsonl_reference(patched, domain, Path(reference), chat=domain in CHAT_DOMAINS)
            loaded.examples, loaded.validate = _held_out_validation(patched, loaded.examples)
            datasets.append(loaded)
        else:
            datasets.append(other_model(patched, domain, reference, cfg, on_progress))
    return datasets
