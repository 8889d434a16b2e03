"""Training data per domain: what the patch learns from, and how a run is validated.

Each recipe turns a domain's train prompts and a reference into
- SFT-stage examples (`Example`: sft / distill),
- DPO pairs (`Pair`: safe chosen over unsafe rejected, filtered by a scorer margin and an
  absolute safety threshold),
- a cheap validation score (higher is better) for choosing the checkpoint.

Embedded defaults run offline on this machine:
- harmfulness: refusals written by safety-tuned models and labelled by people (XSTest
  completions) for harmful prompts; the base model's own answers for safe prompts (so the
  patch does not learn to refuse everything).
- bias: the base model constrained never to emit gendered words; the patch distils that
  reference's whole next-token distribution at every position.
- toxicity: the base model constrained never to emit profane tokens, distilled at every
  position of the model's own (unconstrained) samples, with the profane mass pushed down.
Other references: a JSONL file of prompt/response pairs, another causal LM (any tokenizer:
its text is learnt), or best-of-N samples of the base model under the domain's scorer.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..errors import LLMPatchError
from ..model.generation import SamplingConfig, encode_prompt, generate
from ..model.kv_prefix import placement_of_tensor
from ..model.runtime import PatchedModel, RawPrefix
from . import data
from .blocklists import Blocklist, domain_blocklist
from .objectives import BLOCKED_WEIGHT, Example, Pair, base_logprobs, batch_loss, blocked_mass, blocked_mass_stats, soft_targets
from .scorers import KeywordJudge, ProfanityScorer


class ReferenceError_(LLMPatchError):
    """The reference cannot serve this domain or this base model."""


@dataclass
class RecipeConfig:
    max_train_prompts: int = 400  # per domain; more prompts cost generation time up front
    response_tokens: int = 48  # chat answers (harmfulness)
    continuation_tokens: int = 24  # raw continuations (toxicity, bias)
    samples_per_prompt: int = 4  # best-of-N pairs and toxicity's own samples
    dpo_margin: float = 0.3  # minimum scorer gap between rejected and chosen
    dpo_threshold: float = 0.2  # chosen must score at most this unsafe
    val_prompts: int = 24
    batch_size: int = 16  # generation batch while building data
    seed: int = 0


@dataclass
class TrainingData:
    domain: str
    chat: bool  # prompts wrapped in the chat template
    examples: list[Example]
    pairs: list[Pair]
    validate: Callable[[torch.Tensor], dict]  # prefix -> {"score": higher is better, ...}
    summary: dict = field(default_factory=dict)
    # (prefix, round) -> on-policy rows: examples along the patched model's own continuations,
    # which replace the previous round's (TrainConfig.refresh_every); None for fixed data
    refresh: Callable[[torch.Tensor, int], list[Example]] | None = None


def _generate_texts(patched: PatchedModel, contexts: list[list[int]], cfg: SamplingConfig, batch: int, progress=None):
    outputs = []
    for start in range(0, len(contexts), batch):
        chunk = contexts[start : start + batch]
        outputs += generate(patched, chunk, [[]] * len(chunk), cfg)
        if progress:
            progress(len(chunk))
    return outputs


def _encode(tokenizer, prompt: str, chat: bool) -> list[int]:
    return encode_prompt(tokenizer, prompt, chat=chat) if chat else tokenizer(prompt, add_special_tokens=False)["input_ids"]


def _target(tokenizer, text: str, eos: bool) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids + [tokenizer.eos_token_id] if eos and tokenizer.eos_token_id is not None else ids


# ------------------------------------------------------------------ harmfulness

def refusal_pool() -> dict[str, list[str]]:
    """Human-labelled full refusals by safety-tuned models, per prompt, cut to two sentences."""
    pool: dict[str, list[str]] = {}
    for row in data.xstest_completions():
        if row.refusal and row.model != "mistralinstruct":  # its "refusals" are mostly partial
            text = data.first_sentences(row.completion)
            if len(text) > 20:
                pool.setdefault(row.prompt, []).append(text)
    return pool


def harmfulness(patched: PatchedModel, cfg: RecipeConfig, progress=None) -> TrainingData:
    tok, rng = patched.tokenizer, random.Random(cfg.seed)
    unsafe_xstest = [x.prompt for x in data.xstest() if not x.safe]
    # HarmBench's behaviours are phrased unlike AdvBench's ("Write a persuasive article...",
    # "Give detailed instructions..."): a patch trained without them refused only 75 % of them.
    harmful = [p for source in (data.advbench(), data.harmbench(), unsafe_xstest) for p in data.by_split(list(source), "train")]
    benign = data.by_split([x.prompt for x in data.xstest() if x.safe], "train")
    rng.shuffle(harmful)
    harmful = harmful[: cfg.max_train_prompts]
    pool = refusal_pool()
    generic = [text for texts in pool.values() for text in texts if "I cannot" in text or "I can't" in text]
    if not generic:
        raise ReferenceError_("no human-labelled refusals found in the XSTest completions")

    gen_cfg = SamplingConfig(max_new_tokens=cfg.response_tokens)
    contexts_harmful = [_encode(tok, p, True) for p in harmful]
    contexts_benign = [_encode(tok, p, True) for p in benign]
    answers_harmful = _generate_texts(patched, contexts_harmful, gen_cfg, cfg.batch_size, progress)
    answers_benign = _generate_texts(patched, contexts_benign, gen_cfg, cfg.batch_size, progress)

    judge = KeywordJudge()
    examples, pairs = [], []
    for prompt, context, answer in zip(harmful, contexts_harmful, answers_harmful):
        refusal = rng.choice(pool.get(prompt) or generic)
        chosen = _target(tok, refusal, eos=True)
        examples.append(Example(context, chosen, "sft", group="harmful"))
        # DPO: the base model's own answer is the rejected side when it complied
        if answer.token_ids and judge.refusal_prob([answer.text])[0] < 0.5:
            pairs.append(Pair(context, chosen, answer.token_ids, group="harmful"))
    for context, answer in zip(contexts_benign, answers_benign):
        if not answer.token_ids or judge.refusal_prob([answer.text])[0] >= 0.5:
            continue  # the base model refused a safe prompt itself; don't teach that
        examples.append(Example(context, answer.token_ids, "sft", group="benign"))
        pairs.append(Pair(context, answer.token_ids, _target(tok, rng.choice(generic), eos=True), group="benign"))

    val_harmful = [p for pair in zip(data.by_split(list(data.advbench()), "val"), data.by_split(list(data.harmbench()), "val"))
                   for p in pair][: cfg.val_prompts]
    val_safe = data.by_split([x.prompt for x in data.xstest() if x.safe], "val")[: cfg.val_prompts]
    val_contexts = [_encode(tok, p, True) for p in val_harmful + val_safe]

    @torch.no_grad()
    def validate(prefix: torch.Tensor) -> dict:
        outputs = _generate_with_prefix(patched, prefix, val_contexts, SamplingConfig(max_new_tokens=20), cfg.batch_size)
        refused = judge.refusal_prob([o.text for o in outputs])
        refusal = sum(refused[: len(val_harmful)]) / max(1, len(val_harmful))
        over_refusal = sum(refused[len(val_harmful) :]) / max(1, len(val_safe))
        return {"score": refusal - 2 * over_refusal, "refusal": refusal, "over_refusal": over_refusal}

    summary = {"harmful_prompts": len(harmful), "benign_prompts": len(benign), "pairs": len(pairs),
               "reference": "xstest-human-refusals+self-answers"}
    return TrainingData("harmfulness", True, examples, pairs, validate, summary)


# ------------------------------------------------------------------ bias

def bias(patched: PatchedModel, cfg: RecipeConfig, progress=None) -> TrainingData:
    tok = patched.tokenizer
    blocklist = domain_blocklist("bias", tok)
    blocked = blocklist.ids()
    prompts = data.bias_prompts("train")[: cfg.max_train_prompts]
    contexts = [_encode(tok, p, False) for p in prompts]
    sample = SamplingConfig(max_new_tokens=cfg.continuation_tokens, do_sample=True, top_p=0.9, seed=cfg.seed)
    constrained = SamplingConfig(**{**sample.__dict__, "suppress_tokens": tuple(blocked.tolist())})
    # reference continuations: the base model that cannot say gendered words
    repeated = [c for c in contexts for _ in range(2)]
    reference = _generate_texts(patched, repeated, constrained, cfg.batch_size, progress)
    rows = [(c, o.token_ids) for c, o in zip(repeated, reference) if o.token_ids]
    examples = _distill_rows(patched.model, rows, blocklist)
    # DPO: among the base model's own samples, one without gendered words over one with
    free = _generate_texts(patched, [c for c in contexts for _ in range(cfg.samples_per_prompt)], sample, cfg.batch_size, progress)
    pairs = []
    for i, context in enumerate(contexts):
        group = free[i * cfg.samples_per_prompt : (i + 1) * cfg.samples_per_prompt]
        clean = [o for o in group if o.token_ids and not gendered(o.text)]
        marked = [o for o in group if o.token_ids and gendered(o.text)]
        if clean and marked:
            pairs.append(Pair(context, clean[0].token_ids, marked[0].token_ids, group="bias"))

    val_contexts = [_encode(tok, p, False) for p in data.bias_prompts("val")[: cfg.val_prompts]]
    val_ref = _generate_texts(patched, val_contexts, constrained, cfg.batch_size)
    val_rows = [(c, o.token_ids) for c, o in zip(val_contexts, val_ref) if o.token_ids]

    def validate(prefix: torch.Tensor) -> dict:
        mass = blocked_mass(patched.model, prefix, val_rows, blocked)
        return {"score": -mass, "gendered_mass": mass}

    summary = {"prompts": len(prompts), "distill_examples": len(examples), "pairs": len(pairs),
               "blocked_tokens": int(blocked.numel()), "reference": "base-constrained(no gendered words)"}
    return TrainingData("bias", False, examples, pairs, validate, summary)


_GENDERED = re.compile(r"\b(" + "|".join(data.GENDERED_WORDS["female"] + data.GENDERED_WORDS["male"]) + r")\b", re.I)


def gendered(text: str) -> bool:
    return bool(_GENDERED.search(text))


# ------------------------------------------------------------------ toxicity

def _profane_token_flags(tokenizer, token_ids: list[int], words: frozenset[str]) -> list[bool]:
    """Which tokens belong to a profane word of the decoded text."""
    flags, text = [], ""
    spans = []
    for token in token_ids:
        piece = tokenizer.decode([token])
        spans.append((len(text), len(text) + len(piece)))
        text += piece
    bad_chars = set()
    for match in re.finditer(r"[A-Za-z']+", text):
        word = match.group().lower().strip("'")
        if word in words or any(word.startswith(w) and len(w) >= 4 for w in _CORE_PROFANITY):
            bad_chars.update(range(match.start(), match.end()))
    for begin, end in spans:
        flags.append(any(i in bad_chars for i in range(begin, end)))
    return flags


_CORE_PROFANITY = ("fuck", "shit", "bitch", "cunt", "dick", "pussy", "whore", "slut", "bastard", "asshole", "nigg", "fagg",
                   "retard", "damn", "crap", "piss", "cock", "idiot", "stupid", "moron", "dumb")


def _distill_rows(model, rows: list[tuple[list[int], list[int]]], blocklist: Blocklist, group: str = "",
                  blocked_weight: float = BLOCKED_WEIGHT, fluency_weight: float = 0.0) -> list[Example]:
    """Distillation examples toward the blocklist-constrained reference along `rows`; with a
    `fluency_weight`, each also keeps the base model's log-probs for the reverse-KL term."""
    examples, blocked = [], blocklist.ids()
    for start in range(0, len(rows), 8):
        chunk = rows[start : start + 8]
        banned = [blocklist.banned_positions(context, target) for context, target in chunk]
        targets = soft_targets(model, chunk, blocked, banned_rows=banned, keep_base=fluency_weight > 0)
        for (context, target), (ids, probs, *base), row_banned in zip(chunk, targets, banned):
            examples.append(Example(context, target, "distill", soft_ids=ids, soft_probs=probs, blocked=blocked, banned=row_banned,
                                    group=group, blocked_weight=blocked_weight, base_logprobs=base[0] if base else None,
                                    fluency_weight=fluency_weight))
    return examples


# Toxicity's blocked words are few per sample, and the mean over ~24 positions dilutes the
# penalty where one was likely: it is weighed 40. Alone that flattened the model (expected
# maximum toxicity -34 %, perplexity 3.5x); on-policy rows and checkpoints chosen by the
# fluency of the patched model's own text are what keep it readable.
TOXICITY_BLOCKED_WEIGHT = 40.0
# Fluency is judged on the patched model's own continuations, as the evaluation does: their
# mean NLL under the base model, against the base model's own samples. 1.12 is +12 % nats,
# about +40 % perplexity at SmolLM2's ~17 (the target allows +50 %).
TOXICITY_NLL_TOLERANCE = 1.12
TOXICITY_FLUENCY_SLOPE = 4.0
TOXICITY_REFRESH_PROMPTS = 32  # train prompts sampled with the current prefix per refresh
# The reverse-KL fluency term (objectives.Example.fluency_weight) is off: in a trial at weight
# 1 (penalty 40, lr 1e-2) the prefix drifted less on the base's own samples (0.24 nats against
# 0.28 for the committed patch) and cut toxicity more (-32 %), yet its own samples read worse
# to the base model (perplexity +127 %): what goes wrong happens on the patched model's own
# continuations, which off-policy rows never show. `drift` is reported in validation.
TOXICITY_FLUENCY_WEIGHT = 0.0


def toxicity(patched: PatchedModel, cfg: RecipeConfig, progress=None) -> TrainingData:
    """Dense, per-position training on the model's own samples (sequence-level SFT on
    cleaner samples moved nothing in trials): at every position of every sample, distil the
    reference that cannot emit profane tokens (the base distribution with them removed and
    renormalised) and push the mass on profane tokens down. The samples are unconstrained on
    purpose: they contain the very positions where the model reaches for a profane word."""
    tok = patched.tokenizer
    scorer = ProfanityScorer()
    words = data.profanity_words() | frozenset(_CORE_PROFANITY)
    blocklist = domain_blocklist("toxicity", tok)
    prompts = data.by_split(list(data.realtoxicityprompts()), "train")[: cfg.max_train_prompts]
    contexts = [_encode(tok, p, False) for p in prompts]
    n = cfg.samples_per_prompt
    sample = SamplingConfig(max_new_tokens=cfg.continuation_tokens, do_sample=True, top_p=0.9, seed=cfg.seed)
    outputs = _generate_texts(patched, [c for c in contexts for _ in range(n)], sample, cfg.batch_size, progress)
    scores = scorer.score([o.text for o in outputs])
    toxic_rows, clean_rows, pairs = [], [], []
    for i, context in enumerate(contexts):
        group = [(o, s) for o, s in zip(outputs[i * n : (i + 1) * n], scores[i * n : (i + 1) * n]) if o.token_ids]
        for output, score in group:
            profane = blocklist.emitted(context, output.token_ids) or any(_profane_token_flags(tok, output.token_ids, words))
            (toxic_rows if profane or score >= 0.5 else clean_rows).append((context, output.token_ids))
        if group:
            best, worst = min(group, key=lambda g: g[1]), max(group, key=lambda g: g[1])
            if worst[1] - best[1] >= cfg.dpo_margin and best[1] <= cfg.dpo_threshold:
                pairs.append(Pair(context, best[0].token_ids, worst[0].token_ids, group="toxicity"))
    clean_rows = clean_rows[: 2 * len(toxic_rows) + 8]  # keep the mix balanced
    examples = (_distill_rows(patched.model, toxic_rows, blocklist, "toxic", TOXICITY_BLOCKED_WEIGHT, TOXICITY_FLUENCY_WEIGHT)
                + _distill_rows(patched.model, clean_rows, blocklist, "clean", TOXICITY_BLOCKED_WEIGHT, TOXICITY_FLUENCY_WEIGHT))

    val_prompts = data.by_split(list(data.realtoxicityprompts()), "val")[: cfg.val_prompts]
    val_contexts = [_encode(tok, p, False) for p in val_prompts]
    val_out = _generate_texts(patched, [c for c in val_contexts for _ in range(n)], sample, cfg.batch_size)
    val_rows = [(val_contexts[i // n], o.token_ids) for i, o in enumerate(val_out) if o.token_ids]
    val_banned = [blocklist.banned_positions(context, target) for context, target in val_rows]
    val_base = base_logprobs(patched.model, val_rows)
    base = blocked_mass_stats(patched.model, None, val_rows, blocklist.ids(), val_banned)
    own_contexts = val_contexts * 2  # two continuations per prompt, sampled as the evaluation does

    def validate(prefix: torch.Tensor) -> dict:
        stats = blocked_mass_stats(patched.model, prefix, val_rows, blocklist.ids(), val_banned, base=val_base)
        # Less profane mass, but not bought by losing fluency. Judged on base samples alone,
        # a prefix that read them well (NLL +10 %) wrote text the base model found 1.7-2.3x
        # as perplexing: its failures start at its own odd tokens, so read its own samples.
        own = [(c, o.token_ids) for c, o in zip(own_contexts, _generate_with_prefix(patched, prefix, own_contexts, sample, cfg.batch_size))
               if o.token_ids]
        own_nll = blocked_mass_stats(patched.model, None, own, blocklist.ids())["nll"] if own else float("inf")
        fluency_cost = TOXICITY_FLUENCY_SLOPE * max(0.0, own_nll / base["nll"] - TOXICITY_NLL_TOLERANCE)
        return {"score": -stats["mass"] / max(base["mass"], 1e-9) - fluency_cost, "profane_mass": stats["mass"],
                "own_nll": own_nll, "drift": stats["drift"], "nll": stats["nll"], "base_nll": base["nll"],
                "base_profane_mass": base["mass"]}

    def refresh(prefix: torch.Tensor, k: int) -> list[Example]:
        """Distillation rows along the patched model's own continuations of the k-th slice of
        train prompts: where the prefix has led the model somewhere odd, the constrained base
        model shows the way back (on-policy distillation, as in GKD)."""
        chosen = [contexts[(k * TOXICITY_REFRESH_PROMPTS + i) % len(contexts)] for i in range(TOXICITY_REFRESH_PROMPTS)]
        repeated = [c for c in chosen for _ in range(n)]
        draw = SamplingConfig(**{**sample.__dict__, "seed": cfg.seed + 1 + k})
        rows = [(c, o.token_ids) for c, o in zip(repeated, _generate_with_prefix(patched, prefix, repeated, draw, cfg.batch_size))
                if o.token_ids]
        return _distill_rows(patched.model, rows, blocklist, "own", TOXICITY_BLOCKED_WEIGHT, TOXICITY_FLUENCY_WEIGHT)

    summary = {"prompts": len(prompts), "toxic_examples": len(toxic_rows), "clean_examples": len(clean_rows), "pairs": len(pairs),
               "blocked_tokens": len(blocklist.anywhere), "blocked_word_pieces": sum(map(len, blocklist.after.values())),
               "reference": f"base-constrained(no profane tokens) along its own samples; best-of-{n} pairs under {scorer.name}"}
    return TrainingData("toxicity", False, examples, pairs, validate, summary, refresh)


# ------------------------------------------------------------------ other references

def jsonl_reference(patched: PatchedModel, domain: str, path: Path, chat: bool) -> TrainingData:
    """SFT on a file of {"prompt": ..., "response": ...} lines."""
    tok, examples = patched.tokenizer, []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ReferenceError_(f"cannot read reference file `{path}`: {exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            prompt, response = row["prompt"], row["response"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ReferenceError_(f"`{path}` line {number} is not a JSON object with `prompt` and `response`") from None
        if not isinstance(prompt, str) or not isinstance(response, str) or not prompt.strip() or not response.strip():
            raise ReferenceError_(f"`{path}` line {number}: `prompt` and `response` must be non-empty strings")
        examples.append(Example(_encode(tok, prompt, chat), _target(tok, response, eos=chat), "sft"))
    if not examples:
        raise ReferenceError_(f"reference file `{path}` holds no examples")
    return TrainingData(domain, chat, examples, [], lambda prefix: {"score": 0.0}, {"reference": f"jsonl:{Path(path).name}", "examples": len(examples)})


def _generate_with_prefix(patched: PatchedModel, prefix: torch.Tensor | None, contexts, cfg: SamplingConfig, batch: int):
    """Generate with an in-training prefix; its cache entry is dropped afterwards, since the
    prefix changes with every step."""
    global _validation_round
    _validation_round += 1
    stand_in = None
    if prefix is not None:
        placement = placement_of_tensor(patched.model, prefix)
        stand_in = RawPrefix(prefix.detach().float().numpy(), f"training-prefix-{_validation_round}", placement)
    outputs = []
    for start in range(0, len(contexts), batch):
        chunk = contexts[start : start + batch]
        outputs += generate(patched, chunk, [[stand_in] if stand_in else []] * len(chunk), cfg)
    if stand_in:
        patched.prefix_cache.forget([stand_in])
    return outputs


_validation_round = 0


RECIPES = {"harmfulness": harmfulness, "bias": bias, "toxicity": toxicity}
