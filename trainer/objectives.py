"""Losses for training a soft prefix on a frozen causal LM.

Every loss scores *target* tokens that follow a *context*, with the trainable prefix in
front: the sequence is [prefix (P)] [context] [target], right-padded, and logits are
computed only at the positions that predict target tokens (the 49k-word head is the most
expensive part of a small model; skipping it elsewhere halves the step).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..model.kv_prefix import kv_layers, model_kv_layout, placement_of_tensor

BLOCKED_WEIGHT = 10.0  # the penalty's share against the soft cross-entropy (~2.5 nats)


@dataclass
class Example:
    """One training row. `kind` picks the loss applied to its target tokens:

    - "sft": cross-entropy on the target tokens (learn the reference's text).
    - "distill": cross-entropy against soft targets, the reference's next-token
      distribution at each target position, kept as its top-k (`soft_ids`, `soft_probs`);
      with `blocked` token ids, also -log(1 - mass on blocked tokens) at every position.
      The soft targets alone spread the signal over all positions, most of which had no
      blocked mass to remove; the penalty acts where the model wanted a blocked word.
      With `base_logprobs` (the frozen model's own [T, V] log-probs) and a `fluency_weight`,
      also the reverse KL(patched || base) at every position, which charges a prefix for
      spreading its mass thinly where the forward cross-entropy above does not (MiniLLM's
      argument). Measured on toxicity it did not keep the patched model's own samples
      fluent, so the recipes leave it off (see recipes.TOXICITY_FLUENCY_WEIGHT).
    """

    context: list[int]
    target: list[int]
    kind: str = "sft"
    soft_ids: torch.Tensor | None = None  # [T, K] long
    soft_probs: torch.Tensor | None = None  # [T, K] float, rows sum to 1
    blocked: torch.Tensor | None = None  # token ids the reference never emits
    banned: tuple[tuple[int, int], ...] = ()  # (target position, token id): banned there only, by context
    blocked_weight: float = BLOCKED_WEIGHT
    base_logprobs: torch.Tensor | None = None  # [T, V] float16, the frozen model's, for the fluency term
    fluency_weight: float = 0.0
    group: str = ""  # e.g. "harmful" / "benign", for balanced batches


@dataclass
class Pair:
    """A DPO preference: after `context`, `chosen` is safer than `rejected`."""

    context: list[int]
    chosen: list[int]
    rejected: list[int]
    group: str = ""
    ref_chosen: float | None = None  # reference policy log-probs, filled before DPO
    ref_rejected: float | None = None


def _final_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:  # Gemma-2/3 soft-cap their logits inside the LM head's forward
        logits = torch.tanh(logits / cap) * cap
    return logits


def _kv_cache(model, prefix: torch.Tensor, batch: int):
    """A fresh cache holding a kv prefix for `batch` rows; built per forward, since a forward
    appends to it, and from views of `prefix`, so gradients reach it."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    for index, (keys, values) in enumerate(kv_layers(prefix, model_kv_layout(model))):
        cache.update(keys.expand(batch, -1, -1, -1), values.expand(batch, -1, -1, -1), index)
    return cache


def target_logprobs(model, prefix: torch.Tensor | None, rows: list[tuple[list[int], list[int]]]) -> list[torch.Tensor]:
    """Log-softmax over the vocabulary at each target position, per row: [T_i, V].

    `prefix` [P, H] (input) or [P, kv width] (kv) may be None (the frozen base model alone).
    """
    embed = model.get_input_embeddings()
    device = embed.weight.device
    p = 0 if prefix is None else prefix.shape[0]
    lengths = [len(c) + len(t) for c, t in rows]
    width = max(lengths)
    ids = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    mask = torch.zeros((len(rows), p + width), dtype=torch.long, device=device)
    for i, (context, target) in enumerate(rows):
        ids[i, : lengths[i]] = torch.tensor(context + target)
        mask[i, : p + lengths[i]] = 1
    x = embed(ids)  # [B, W, H]
    if prefix is not None and placement_of_tensor(model, prefix) == "kv":
        hidden = model.base_model(inputs_embeds=x, attention_mask=mask, past_key_values=_kv_cache(model, prefix.to(x.dtype), len(rows)),
                                  use_cache=True).last_hidden_state  # [B, W, H]: the prefix is in the cache
        p_hidden = 0
    else:
        if prefix is not None:
            x = torch.cat([prefix.to(x.dtype)[None].expand(len(rows), -1, -1), x], dim=1)  # [B, P+W, H]
        hidden = model.base_model(inputs_embeds=x, attention_mask=mask).last_hidden_state
        p_hidden = p
    # position j (in the sequence without prefix) predicts token j+1
    select_rows, select_cols = [], []
    for i, (context, target) in enumerate(rows):
        start = p_hidden + len(context) - 1
        select_rows += [i] * len(target)
        select_cols += list(range(start, start + len(target)))
    picked = hidden[torch.tensor(select_rows), torch.tensor(select_cols)]  # [sum T, H]
    logprobs = F.log_softmax(_final_logits(model, picked).float(), dim=-1)
    return list(torch.split(logprobs, [len(t) for _, t in rows]))


def example_loss(logprobs: torch.Tensor, example: Example) -> torch.Tensor:
    """Mean loss over one example's target positions."""
    target = torch.tensor(example.target, device=logprobs.device)
    if example.kind == "sft":
        return F.nll_loss(logprobs, target)
    if example.kind == "distill":
        picked = logprobs.gather(1, example.soft_ids.to(logprobs.device))  # [T, K]
        loss = -(example.soft_probs.to(logprobs.device) * picked).sum(dim=1).mean()
        if example.blocked is not None:
            mass = _blocked_mass(logprobs, example.blocked, example.banned).clamp(max=1 - 1e-6)  # [T]
            loss = loss + example.blocked_weight * -torch.log1p(-mass).mean()
        if example.base_logprobs is not None and example.fluency_weight:
            loss = loss + example.fluency_weight * reverse_kl(logprobs, example.base_logprobs.to(logprobs.device)).mean()
        return loss
    raise ValueError(f"unknown example kind {example.kind!r}")


def batch_loss(model, prefix: torch.Tensor, batch: list[Example]) -> torch.Tensor:
    logprobs = target_logprobs(model, prefix, [(e.context, e.target) for e in batch])
    return torch.stack([example_loss(lp, e) for lp, e in zip(logprobs, batch)]).mean()


def sequence_logprob(model, prefix, pairs: list[tuple[list[int], list[int]]]) -> torch.Tensor:
    """Summed log-probability of each target given its context: [B]."""
    logprobs = target_logprobs(model, prefix, pairs)
    return torch.stack([lp.gather(1, torch.tensor(t)[:, None]).sum() for lp, (_, t) in zip(logprobs, pairs)])


def dpo_loss(model, prefix: torch.Tensor, pairs: list[Pair], beta: float) -> tuple[torch.Tensor, float]:
    """DPO (Rafailov et al.) against reference log-probs stored on the pairs. Returns the
    loss and the mean implicit reward margin (for the progress bar)."""
    rows = [(p.context, p.chosen) for p in pairs] + [(p.context, p.rejected) for p in pairs]
    logps = sequence_logprob(model, prefix, rows)
    chosen, rejected = logps[: len(pairs)], logps[len(pairs) :]
    ref_chosen = torch.tensor([p.ref_chosen for p in pairs])
    ref_rejected = torch.tensor([p.ref_rejected for p in pairs])
    margin = beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
    return -F.logsigmoid(margin).mean(), margin.mean().item()


@torch.no_grad()
def fill_reference_logprobs(model, prefix: torch.Tensor, pairs: list[Pair], batch_size: int = 8) -> None:
    """Score pairs under the reference policy: the prefix as SFT left it. (Using the bare
    model as reference made refusals start ~69 nats apart and DPO undo the SFT; see
    notes/ml-findings.md.)"""
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        rows = [(p.context, p.chosen) for p in chunk] + [(p.context, p.rejected) for p in chunk]
        logps = sequence_logprob(model, prefix, rows).tolist()
        for i, pair in enumerate(chunk):
            pair.ref_chosen, pair.ref_rejected = logps[i], logps[len(chunk) + i]


def reverse_kl(logprobs: torch.Tensor, base_logprobs: torch.Tensor) -> torch.Tensor:
    """KL(patched || base) at each position [T]; both arguments are log-probs [T, V]."""
    return (logprobs.exp() * (logprobs - base_logprobs.float())).sum(dim=1)


def _blocked_mass(logprobs: torch.Tensor, blocked: torch.Tensor, banned=()) -> torch.Tensor:
    """Probability on blocked tokens at each position [T]: `blocked` anywhere, plus the
    (position, token id) pairs of `banned` (the second piece of "f|uck" after the first)."""
    mass = logprobs[:, blocked].exp().sum(dim=1)
    if banned:
        positions, ids = (torch.tensor(column) for column in zip(*banned))
        mass = mass.index_add(0, positions, logprobs[positions, ids].exp())
    return mass


@torch.no_grad()
def soft_targets(
    model, rows: list[tuple[list[int], list[int]]], blocked: torch.Tensor, top_k: int = 64, banned_rows=None,
    keep_base: bool = False,
) -> list[tuple[torch.Tensor, ...]]:
    """The constrained reference's next-token distribution at each target position: the base
    model's, with `blocked` token ids (and each row's `banned` (position, id) pairs) removed
    and the rest renormalised, kept as top-k. With `keep_base`, each row also carries the
    base model's full log-probs [T, V] as float16 (for the fluency term)."""
    out = []
    for i, base in enumerate(target_logprobs(model, None, rows)):
        logprobs = base.clone()
        logprobs[:, blocked] = float("-inf")
        if banned_rows and banned_rows[i]:
            positions, ids = (torch.tensor(column) for column in zip(*banned_rows[i]))
            logprobs[positions, ids] = float("-inf")
        probs = logprobs.softmax(dim=-1)
        top = probs.topk(top_k, dim=-1)
        row = (top.indices, top.values / top.values.sum(dim=-1, keepdim=True))
        out.append(row + (base.half(),) if keep_base else row)
    return out


@torch.no_grad()
def blocked_mass(model, prefix, rows: list[tuple[list[int], list[int]]], blocked: torch.Tensor, banned_rows=None) -> float:
    """Mean probability the model puts on blocked tokens over the target positions."""
    return blocked_mass_stats(model, prefix, rows, blocked, banned_rows)["mass"]


@torch.no_grad()
def blocked_mass_stats(model, prefix, rows: list[tuple[list[int], list[int]]], blocked: torch.Tensor,
                       banned_rows=None, base: list[torch.Tensor] | None = None, batch_size: int = 16) -> dict:
    """Over the rows' target positions: the mean blocked `mass`; the mean `nll` of the target
    tokens; and, given the base model's log-probs, the mean `drift`, reverse KL(patched ||
    base) in nats, how far the patched model's next-token distributions stray from the base
    model's. A prefix that buys a low mass by flattening every distribution raises both;
    neither sees the patched model's own continuations, which is what the evaluation's
    perplexity reads (a prefix with less drift than another had twice its perplexity)."""
    banned_rows = banned_rows or [()] * len(rows)
    masses, nlls, drifts = [], [], []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        for i, logprobs in enumerate(target_logprobs(model, prefix, chunk), start):
            masses.append(_blocked_mass(logprobs, blocked, banned_rows[i]))
            nlls.append(-logprobs.gather(1, torch.tensor(rows[i][1], device=logprobs.device)[:, None]).squeeze(1))
            if base is not None:
                drifts.append(reverse_kl(logprobs, base[i].to(logprobs.device)))
    stats = {"mass": float(torch.cat(masses).mean()), "nll": float(torch.cat(nlls).mean())}
    return stats | ({"drift": float(torch.cat(drifts).mean())} if base is not None else {})


@torch.no_grad()
def base_logprobs(model, rows: list[tuple[list[int], list[int]]], batch_size: int = 8) -> list[torch.Tensor]:
    """The frozen model's log-probs [T, V] (float16) at each row's target positions."""
    out = []
    for start in range(0, len(rows), batch_size):
        out += [lp.half() for lp in target_logprobs(model, None, rows[start : start + batch_size])]
    return out


@dataclass
class History:
    """What the progress bar and the manifest's provenance show about a run."""

    steps: list[dict] = field(default_factory=list)

    def add(self, **values) -> None:
        self.steps.append(values)
