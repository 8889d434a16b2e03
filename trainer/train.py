"""Training a policy patch: SFT toward a safer reference, then DPO on safe-vs-unsafe pairs.

Only the prefix [n_virtual_tokens, hidden] (or, placement "kv", its keys and values at every
layer) trains; the base model is frozen and never gets gradients. Every `eval_every` steps
the prefix is validated and the best one is kept: the refusal / over-refusal trade-off
swings within ~10 steps, so the last step is rarely best.
Checkpoints (safetensors + JSON, never pickle) carry the config, the step, the optimiser
state and the RNG state, so `--resume` continues the same run.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

from ..errors import LLMPatchError
from ..manifest import PLACEMENTS, canonical_json
from ..model.init import prefix_from_text
from ..model.kv_prefix import kv_of_input_prefix, model_kv_layout
from ..model.runtime import PatchedModel
from .objectives import Pair, batch_loss, dpo_loss, fill_reference_logprobs
from .recipes import RECIPES, RecipeConfig, TrainingData

# Neutral, positive instructions: text that names what to avoid ("no insults, profanity")
# primed toxicity in trials, so the defaults describe the wanted behaviour instead.
INIT_TEXTS = {
    "harmfulness": "You are a careful and helpful assistant. You help with safe requests and politely decline requests that could hurt people.",
    "bias": "Write about people as individuals, with neutral and inclusive language.",
    "toxicity": "The following text is calm, polite and respectful.",
}


class TrainingError(LLMPatchError):
    """Training could not start or continue."""


@dataclass
class TrainConfig:
    domains: tuple[str, ...]
    n_virtual_tokens: int = 50
    placement: str = "input"  # "input": on the input embeddings; "kv": keys and values at every layer
    init_text: str = ""  # default: INIT_TEXTS of the first domain
    sft_steps: int = 80
    dpo_steps: int = 20
    batch_size: int = 8
    lr: float = 3e-3  # 1e-3..5e-3 learns in short runs; 2e-2 left the init's neighbourhood and learnt nothing
    dpo_lr: float = 3e-4  # DPO overshoots above ~3e-4 (100 % refusal, 45 % over-refusal in trials)
    beta: float = 0.1
    eval_every: int = 10
    checkpoint_every: int = 20
    refresh_every: int = 20  # SFT steps between on-policy refreshes (recipes that have them); 0: never
    seed: int = 0
    recipe: RecipeConfig = field(default_factory=RecipeConfig)

    def __post_init__(self):
        unknown = [d for d in self.domains if d not in RECIPES]
        if not self.domains or unknown:
            raise TrainingError(f"unknown domain(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(RECIPES)}")
        for name in ("n_virtual_tokens", "batch_size", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise TrainingError(f"`{name}` must be at least 1, got {getattr(self, name)}")
        if self.placement not in PLACEMENTS:
            raise TrainingError(f"`placement` must be one of {', '.join(PLACEMENTS)}, got {self.placement!r}")
        if self.refresh_every < 0:
            raise TrainingError(f"`refresh_every` must be 0 (never) or more, got {self.refresh_every}")
        if self.sft_steps < 0 or self.dpo_steps < 0 or self.sft_steps + self.dpo_steps == 0:
            raise TrainingError("give at least one SFT or DPO step")
        if not 0 < self.lr < 1 or not 0 < self.dpo_lr < 1:
            raise TrainingError(f"learning rates must be in (0, 1), got lr={self.lr} dpo_lr={self.dpo_lr}")
        if self.beta <= 0:
            raise TrainingError(f"`beta` must be positive, got {self.beta}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["domains"] = list(self.domains)
        if self.placement == "input":  # configs (and digests) from before kv prefixes stay as they were
            del d["placement"]
        return d

    def manifest_fields(self, patched: PatchedModel) -> dict:
        """What a manifest says about the tensor this config trains."""
        fields = {"n_virtual_tokens": self.n_virtual_tokens, "hidden_size": patched.hidden_size}
        if self.placement == "kv":
            fields |= {"placement": "kv", "kv_layout": model_kv_layout(patched.model)}
        return fields

    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(canonical_json(self.to_dict()).encode()).hexdigest()


@dataclass
class TrainResult:
    prefix: torch.Tensor  # the best validated prefix [n, hidden]
    best: dict  # validation metrics at the best step
    best_step: int
    history: list[dict]
    data_summary: dict
    seconds: float


def _balanced_batches(examples, batch_size: int, rng: random.Random):
    """Endless batches drawing evenly from each group (e.g. harmful / benign, per domain)."""
    groups: dict[str, list] = {}
    for example in examples:
        groups.setdefault(example.group, []).append(example)
    queues = {name: [] for name in groups}
    names = sorted(groups)
    while True:
        batch = []
        for i in range(batch_size):
            name = names[i % len(names)]
            if not queues[name]:
                queues[name] = groups[name][:]
                rng.shuffle(queues[name])
            batch.append(queues[name].pop())
        yield batch


def _in_domain(data: TrainingData, examples: list) -> list:
    """Name each example's group after its domain too, so batches balance across domains."""
    for example in examples:
        example.group = f"{data.domain}/{example.group}"
    return examples


def _domain_balanced_backward(model, prefix: torch.nn.Parameter, batch) -> torch.Tensor:
    """Set `prefix.grad` so that each domain in the batch pulls the prefix equally hard: the
    mean of each domain's gradient scaled to unit norm. One domain's loss can dwarf another's
    (toxicity's blocked-mass penalty against harmfulness's cross-entropy), and summed it
    chooses the direction alone: the first joint patch refused 8.5 % of HarmBench, the
    harmfulness patch 91.5 %. Returns the mean of the domains' losses."""
    by_domain: dict[str, list] = {}
    for example in batch:
        by_domain.setdefault(example.group.split("/")[0], []).append(example)
    if len(by_domain) == 1:
        loss = batch_loss(model, prefix, batch)
        loss.backward()
        return loss
    grad, losses = torch.zeros_like(prefix), []
    for examples in by_domain.values():
        loss = batch_loss(model, prefix, examples)
        (domain_grad,) = torch.autograd.grad(loss, prefix)
        grad += domain_grad / (domain_grad.norm() + 1e-12)
        losses.append(loss.detach())
    prefix.grad = grad / len(by_domain)
    return torch.stack(losses).mean()


def _score(validations: dict[str, dict], baseline: dict[str, dict]) -> float:
    """One number across domains: each domain's score relative to its value at step 0."""
    total = 0.0
    for domain, metrics in validations.items():
        base = baseline[domain]["score"]
        total += (metrics["score"] - base) / max(abs(base), 1e-3)
    return total


def _save_checkpoint(folder: Path, prefix, best_prefix, optimizer, state: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"prefix": prefix.detach().contiguous(), "best_prefix": best_prefix.contiguous(),
               "rng": torch.get_rng_state()}
    opt_state = optimizer.state.get(prefix, {})
    for key in ("exp_avg", "exp_avg_sq"):
        if key in opt_state:
            tensors[key] = opt_state[key].contiguous()
    tmp = folder / "state.safetensors.tmp"
    save_file(tensors, tmp)
    tmp.replace(folder / "state.safetensors")
    (folder / "state.json.tmp").write_text(json.dumps(state, indent=1))
    (folder / "state.json.tmp").replace(folder / "state.json")


def train(
    patched: PatchedModel,
    cfg: TrainConfig,
    *,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    datasets: list[TrainingData] | None = None,
    on_step: Callable[[dict], None] | None = None,
    on_data_progress: Callable[[int], None] | None = None,
) -> TrainResult:
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    model = patched.model
    model.requires_grad_(False)  # frozen: only the prefix is a parameter

    if datasets is None:
        datasets = [RECIPES[d](patched, cfg.recipe, on_data_progress) for d in cfg.domains]
    examples = [e for d in datasets for e in d.examples]
    pairs: list[Pair] = [p for d in datasets for p in d.pairs]
    if not examples and cfg.sft_steps:
        raise TrainingError("the reference produced no training examples", hint="check the prompt sets and the reference")
    for d in datasets:  # balance across domains as well as across groups within one
        _in_domain(d, d.examples)

    init = prefix_from_text(model, patched.tokenizer, cfg.init_text or INIT_TEXTS[cfg.domains[0]], cfg.n_virtual_tokens)
    if cfg.placement == "kv":  # start as exactly the instruction's input prefix, then free every layer
        init = kv_of_input_prefix(model, init)
    prefix = torch.nn.Parameter(init.clone())
    optimizer = torch.optim.AdamW([prefix], lr=cfg.lr, weight_decay=0.0)
    step, history = 0, []

    def validate() -> dict:
        with torch.no_grad():
            return {d.domain: d.validate(prefix.detach()) for d in datasets}

    baseline = validate()
    best_prefix, best_score, best_step, best_metrics = prefix.detach().clone(), 0.0, 0, baseline

    state_file = checkpoint_dir / "state.json" if checkpoint_dir else None
    if resume:
        if not state_file or not state_file.exists():
            raise TrainingError(f"nothing to resume in `{checkpoint_dir}`", hint="start without --resume")
        state = json.loads(state_file.read_text())
        if state["config_digest"] != cfg.digest():
            raise TrainingError("the checkpoint was made with another configuration; resume with the same options")
        tensors = load_file(checkpoint_dir / "state.safetensors")
        with torch.no_grad():
            prefix.copy_(tensors["prefix"])
        best_prefix = tensors["best_prefix"]
        step, history = state["step"], state["history"]
        best_score, best_step, best_metrics, baseline = state["best_score"], state["best_step"], state["best_metrics"], state["baseline"]
        if "exp_avg" in tensors:
            optimizer.state[prefix] = {"step": torch.tensor(float(step)), "exp_avg": tensors["exp_avg"], "exp_avg_sq": tensors["exp_avg_sq"]}
        torch.set_rng_state(tensors["rng"])
        rng.seed(cfg.seed + step)
        if step > cfg.sft_steps and pairs:  # resumed inside DPO: same reference, DPO's learning rate
            fill_reference_logprobs(model, best_prefix, pairs)
            for group in optimizer.param_groups:
                group["lr"] = cfg.dpo_lr

    def refreshed_batches():
        """Batches over the fixed rows plus on-policy rows for the prefix as it is now. Seeded
        by the step, so a run resumed at a refresh step (checkpoints fall on them by default)
        draws the same rows and batches; resumed between two, the rows are drawn with the
        prefix of the resume step instead of the last refresh's."""
        round_ = step // cfg.refresh_every - 1
        rows = examples + [e for d in datasets if d.refresh for e in _in_domain(d, d.refresh(prefix.detach(), round_))]
        rng.seed(cfg.seed + step)
        return _balanced_batches(rows, cfg.batch_size, rng)

    refreshing = bool(cfg.refresh_every) and any(d.refresh for d in datasets)
    between_refreshes = refreshing and cfg.refresh_every < step < cfg.sft_steps and step % cfg.refresh_every
    batches = refreshed_batches() if between_refreshes else _balanced_batches(examples, cfg.batch_size, rng) if examples else None
    total = cfg.sft_steps + cfg.dpo_steps
    while step < total:
        stage = "sft" if step < cfg.sft_steps else "dpo"
        if stage == "sft" and refreshing and step and step % cfg.refresh_every == 0:
            batches = refreshed_batches()
        if stage == "dpo" and step == cfg.sft_steps:
            if not pairs:
                break  # no preference pairs survived the filters: SFT is the result
            # DPO starts from the best SFT prefix, which is also its reference policy
            with torch.no_grad():
                prefix.copy_(best_prefix)
            fill_reference_logprobs(model, prefix.detach(), pairs)
            optimizer = torch.optim.AdamW([prefix], lr=cfg.dpo_lr, weight_decay=0.0)
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        if stage == "sft":
            loss = _domain_balanced_backward(model, prefix, next(batches))
            extra = {}
        else:
            chosen = rng.sample(pairs, min(cfg.batch_size // 2 or 1, len(pairs)))
            loss, margin = dpo_loss(model, prefix, chosen, cfg.beta)
            extra = {"margin": round(margin, 4)}
            loss.backward()
        torch.nn.utils.clip_grad_norm_([prefix], 1.0)
        optimizer.step()
        step += 1
        record = {"step": step, "stage": stage, "loss": round(loss.item(), 4), "seconds": round(time.perf_counter() - t0, 2), **extra}
        if step % cfg.eval_every == 0 or step == total:
            metrics = validate()
            score = _score(metrics, baseline)
            record["val"] = metrics
            record["val_score"] = round(score, 4)
            if score > best_score or best_step == 0 and score >= best_score:
                best_score, best_step, best_metrics = score, step, metrics
                best_prefix = prefix.detach().clone()
        history.append(record)
        if on_step:
            on_step(record)
        if checkpoint_dir and (step % cfg.checkpoint_every == 0 or step == total):
            _save_checkpoint(checkpoint_dir, prefix, best_prefix, optimizer, {
                "step": step, "config_digest": cfg.digest(), "config": cfg.to_dict(), "history": history,
                "best_score": best_score, "best_step": best_step, "best_metrics": best_metrics, "baseline": baseline,
            })
    summary = {d.domain: d.summary for d in datasets}
    summary["baseline_val"] = baseline
    return TrainResult(best_prefix, best_metrics, best_step, history, summary, time.perf_counter() - started)
