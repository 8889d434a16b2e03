"""Training step time and peak memory: our prefix trainer against PEFT prompt tuning in a
hand-written loop, on SmolLM2-135M-Instruct, the same batches, in one run.

    python benchmarks/trainer_step.py [--quick] [--rounds 5] [--steps 3] [--batch 8] [--json out.json]

Both variants train a 50 x 576 soft prompt with AdamW on the same SFT batches (chat-templated
XSTest prompts with human-written answers from ../shared/data/xstest, 8 rows of ~70
tokens), cross-entropy on the answer tokens only (answers cut at 48 tokens):

  ours       llmpatch.trainer.objectives.batch_loss: prefix embeddings concatenated in front,
             logits (the 49k-word LM head) computed only at answer positions
  peft-pt50  peft.get_peft_model(PromptTuningConfig(num_virtual_tokens=50)); the model's own
             loss from `labels` (-100 on prompt and padding), the way its docs train it

Rounds alternate the variants (rotated each round); each round runs --steps optimiser steps
per variant and records every step's wall time. Peak memory is the process's resident
high-water mark (VmHWM) during a variant's steps, reset before them through
/proc/self/clear_refs, minus the resident size just before: the extra memory a step needs
on top of the loaded model. Target: ours no slower than the peer (ratio <= 1.0).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

N_VIRTUAL = 50


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def sft_rows(tokenizer, count: int) -> list[tuple[list[int], list[int]]]:
    """(chat context, answer ids) pairs from XSTest prompts and human-labelled answers."""
    from llmpatch.model.generation import encode_prompt
    from llmpatch.trainer import data

    rows, seen = [], set()
    for row in data.xstest_completions():
        if row.prompt in seen:
            continue
        seen.add(row.prompt)
        answer = data.first_sentences(row.completion)
        target = tokenizer(answer, add_special_tokens=False)["input_ids"][:48] + [tokenizer.eos_token_id]
        rows.append((encode_prompt(tokenizer, row.prompt, chat=True), target))
        if len(rows) == count:
            return rows
    raise RuntimeError(f"only {len(rows)} XSTest rows found")


class Ours:
    name = "ours"

    def __init__(self, model, init: torch.Tensor):
        from llmpatch.trainer.objectives import Example, batch_loss

        self.model, self.batch_loss, self.Example = model, batch_loss, Example
        self.prefix = torch.nn.Parameter(init.clone())
        self.optimizer = torch.optim.AdamW([self.prefix], lr=3e-3, weight_decay=0.0)
        self.trainable = self.prefix.numel()

    def step(self, batch) -> float:
        loss = self.batch_loss(self.model, self.prefix, [self.Example(c, t) for c, t in batch])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()


class PeftPromptTuning:
    name = "peft-pt50"

    def __init__(self, model, init: torch.Tensor, pad_id: int):
        from peft import PromptTuningConfig, TaskType, get_peft_model

        self.peft = get_peft_model(model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=N_VIRTUAL))
        with torch.no_grad():  # same starting point as ours
            self.peft.prompt_encoder["default"].embedding.weight.copy_(init)
        self.pad_id = pad_id
        params = [p for p in self.peft.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=3e-3, weight_decay=0.0)
        self.trainable = sum(p.numel() for p in params)

    def step(self, batch) -> float:
        width = max(len(c) + len(t) for c, t in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (context, target) in enumerate(batch):
            n = len(context) + len(target)
            ids[i, :n] = torch.tensor(context + target)
            labels[i, len(context) : n] = torch.tensor(target)
            mask[i, :n] = 1
        loss = self.peft(input_ids=ids, attention_mask=mask, labels=labels).loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 1 step")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="optimiser steps per variant per round")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps = 2, 1
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from llmpatch.model.init import prefix_from_text
    from llmpatch.model.loading import load_model

    loaded = load_model("smollm2")
    model, tok = loaded.model, loaded.tokenizer
    model.requires_grad_(False)
    init = prefix_from_text(model, tok, "You are a careful and helpful assistant.", N_VIRTUAL)
    rows = sft_rows(tok, args.batch * args.steps)
    batches = [rows[i : i + args.batch] for i in range(0, len(rows), args.batch)]
    variants = [Ours(model, init), PeftPromptTuning(model, init, tok.pad_token_id or tok.eos_token_id)]

    load_start = os.getloadavg()
    times = {v.name: [] for v in variants}
    peaks = {v.name: [] for v in variants}
    for round_index in range(args.rounds + 1):  # round 0 warms up and is not recorded
        order = variants[round_index % 2 :] + variants[: round_index % 2]
        for variant in order:
            base = rss_kib("VmRSS")
            reset_peak()
            for batch in batches:
                start = time.perf_counter()
                variant.step(batch)
                if round_index:
                    times[variant.name].append(time.perf_counter() - start)
            if round_index:
                peaks[variant.name].append((rss_kib("VmHWM") - base) / 1024)
        print(f"round {round_index}/{args.rounds} done", file=sys.stderr, flush=True)

    summary = {
        name: {"step_s_median": statistics.median(t), "step_s_min": min(t), "step_s_max": max(t),
               "peak_extra_mib_median": statistics.median(peaks[name]), "trainable": v.trainable}
        for v in variants for name, t in [(v.name, times[v.name])]
    }
    ratio_time = summary["ours"]["step_s_median"] / summary["peft-pt50"]["step_s_median"]
    ratio_mem = summary["ours"]["peak_extra_mib_median"] / summary["peft-pt50"]["peak_extra_mib_median"]
    tokens = sum(len(c) + len(t) for c, t in rows) / len(rows)
    print(f"\nSmolLM2-135M-Instruct, batch {args.batch} (~{tokens:.0f} tokens/row + {N_VIRTUAL} virtual), "
          f"{args.threads} threads, {args.rounds} rounds x {len(batches)} steps; load average {load_start[0]:.2f} -> {os.getloadavg()[0]:.2f}")
    print(f"{'variant':<11} {'step s (median)':>16} {'min..max':>14} {'peak extra MiB':>15} {'trainable':>10}")
    for name, s in summary.items():
        print(f"{name:<11} {s['step_s_median']:>16.3f} {s['step_s_min']:>6.3f}..{s['step_s_max']:<6.3f} "
              f"{s['peak_extra_mib_median']:>15.0f} {s['trainable']:>10,}")
    print(f"\nours / peft-pt50: step time {ratio_time:.2f}x, peak extra memory {ratio_mem:.2f}x (target: step time <= 1.00x)")
    if args.json:
        args.json.write_text(json.dumps({
            "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count()},
            "args": {k: str(v) for k, v in vars(args).items()}, "load_average": [load_start[0], os.getloadavg()[0]],
            "summary": summary, "ratio_step_time": ratio_time, "ratio_peak_memory": ratio_mem,
            "samples": {"step_seconds": times, "peak_extra_mib": peaks},
        }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
