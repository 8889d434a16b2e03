"""Per-token generation latency on SmolLM2-135M-Instruct: our soft-prefix patches against
PEFT prompt tuning and PEFT LoRA, each against the matching unpatched baseline.

    python benchmarks/model_latency.py [--quick] [--rounds N] [--max-minutes M] [--json out.json] [--no-profile]

Variants (greedy, torch.set_num_threads(2), 64 new tokens unless --quick / --new-tokens):
  ours-base    our generate() with empty patch sets                     (baseline for ours)
  ours-1x50    our generate() with one 50-token patch
  ours-2x50    our generate() with a composition of two 50-token patches (100 virtual tokens)
  hf-base      transformers model.generate(), unpatched                 (baseline for PEFT)
  peft-pt50    PEFT prompt tuning, 50 virtual tokens initialised from our patch, its generate()
  peft-lora16  PEFT LoRA r=16 on q_proj,v_proj, unmerged, HF generate()

Each is run at batch 1 (chat-templated prompts of 35, 107 and 166 tokens; one per round,
rotating, unless --all-batch1) and batch 8 (eight prompts of 35-166 tokens, left-padded).
Variants are interleaved: for each prompt group every variant runs back to back, in an order
rotated every round, for --rounds rounds (or until --max-minutes). Tables give the median and
the best over rounds; ratios are medians of per-round paired ratios (variant / its baseline
in the same round, seconds apart) with their min..max, plus best / best.

Timing points: prefill = call start -> first new token chosen (includes our prefix-KV copy,
or PEFT's re-encoding of its virtual tokens); decode ms/token = (last token - first token) /
(steps - 1); total = the whole call. The first patched call of a patch set computes the
prefix keys/values once (`PrefixCache` miss); that one-time cost is printed separately and
kept out of the per-call figures by a warm-up.

An isolated decode-step benchmark (one forward pass on a prefilled cache, cropped back after
each step, variants alternated step by step) gives a less noisy per-token ratio.

Checks that our patched batch-1 greedy outputs are token-identical to a reference run of
inputs_embeds = cat(prefix, token embeddings) with no cache, and whether PEFT prompt tuning
(same prefix) gives the same tokens as ours.

If our 1x50 per-token overhead is above the 2 % target, a torch.profiler pass compares the
decode steps of ours-base and ours-1x50 and prints where the extra time goes.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

TARGET_OVERHEAD = 0.02  # ours, per token
PAPER_OVERHEAD = {"ours-1x50": 0.025, "peft-lora16": 0.225}  # as reported in the paper
BASELINE = {
    "ours-base": "ours-base", "ours-1x50": "ours-base", "ours-2x50": "ours-base",
    "hf-base": "hf-base", "peft-pt50": "hf-base", "peft-lora16": "hf-base",
}
VARIANTS = list(BASELINE)

SAFETY_TEXT = "You are a careful assistant. Answer helpfully and safely, and refuse requests that could cause harm."
STYLE_TEXT = "Keep answers clear, polite and free of insults; say so when you are unsure about a fact."

# Realistic chat prompts of different lengths (asking for long answers so most runs use all steps).
PROMPTS = [
    "Explain how photosynthesis works.",
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "I'm planning a week-long trip to Portugal in spring. Suggest a day-by-day itinerary covering Lisbon, "
    "Sintra and Porto, with food recommendations for each day.",
    "What are the main differences between TCP and UDP? Give examples of applications that use each one "
    "and explain why they chose that protocol.",
    "My Python script reads a large CSV file with pandas and runs out of memory. The file has about "
    "20 million rows and 40 columns, mostly numbers and a few text fields. I only need the average of "
    "three columns grouped by a date column. How can I make this work on a laptop with 8 GB of RAM? "
    "Please explain the options step by step.",
    "Summarise the following text in three bullet points.\n\n"
    "The city council met on Tuesday to discuss the proposed expansion of the public library. Supporters "
    "argued that the current building is too small for the growing population and lacks space for study "
    "rooms, a children's section and computer labs. Opponents raised concerns about the cost, estimated at "
    "twelve million dollars, and about the loss of a small park next to the library that would be used "
    "for the new wing. After three hours of debate, the council voted to commission an independent study "
    "of alternative sites and to hold two more public hearings before making a final decision in the spring.",
    "I am writing a cover letter for a junior data analyst position at a healthcare company. I studied "
    "economics, did an internship where I built dashboards in Excel and Power BI, and I taught myself SQL "
    "and some Python. I am worried that I do not have enough experience. Can you write a first draft of "
    "the letter that highlights my strengths honestly, and then give me three tips to improve it?",
    "Here is a description of my problem. I have a small vegetable garden in a sunny backyard. This year "
    "my tomato plants grew very tall and produced lots of leaves but very few tomatoes. The lower leaves "
    "turned yellow with brown spots in July, and some of the fruit that did grow had dark, leathery "
    "patches on the bottom. I watered them every evening with a sprinkler and used a general purpose "
    "fertiliser every two weeks. The soil is quite heavy clay. Last year I grew tomatoes in the same spot "
    "and they did fine. What could have gone wrong, and what should I change next year? Please list the "
    "likely causes in order of probability and explain how to tell them apart.",
]
BATCH1_PROMPTS = (0, 4, 7)  # short, medium, long


def now() -> float:
    return time.perf_counter()


# ---------------------------------------------------------------- setup

def build_patches(loaded):
    from llmpatch.manifest import BaseModelRef, Manifest
    from llmpatch.model.init import prefix_from_text
    from llmpatch.patchfile import encode_patch, read_patch_bytes

    fp = loaded.fingerprint
    base = BaseModelRef(fp.architecture, fp.weights, loaded.location.display_name)
    hidden = loaded.model.get_input_embeddings().weight.shape[1]
    patches = []
    for name, text in (("bench-safety", SAFETY_TEXT), ("bench-style", STYLE_TEXT)):
        prefix = prefix_from_text(loaded.model, loaded.tokenizer, text, 50)
        manifest = Manifest(name=name, version="1.0.0", base_model=base, n_virtual_tokens=50, hidden_size=hidden)
        patches.append(read_patch_bytes(encode_patch(manifest, prefix)))
    return patches


class StepTimer:
    """A stopping criterion that never stops, only records when each new token is appended."""

    def __init__(self):
        self.times: list[float] = []

    def __call__(self, input_ids, scores, **kwargs):
        self.times.append(now())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class Bench:
    def __init__(self, args):
        from llmpatch.model.loading import load_model
        from llmpatch.model.runtime import PatchedModel

        t = now()
        self.loaded = load_model("smollm2")
        self.load_s = now() - t
        self.model, self.tok = self.loaded.model, self.loaded.tokenizer
        self.args = args
        self.args_new_tokens = None  # set by main()
        self.recorded: dict = {}
        self.patched = PatchedModel(self.model, self.tok, self.loaded.fingerprint)
        self.patches = build_patches(self.loaded)
        self.pad = self.patched.pad_token_id
        from llmpatch.model.generation import encode_prompt

        self.prompt_ids = [encode_prompt(self.tok, p) for p in PROMPTS]
        # one-time cost of a prefix-cache miss (then cached for the rest of the run)
        self.prefix_miss_ms = {}
        for label, pset in (("1x50", self.patches[:1]), ("2x50", self.patches)):
            t = now()
            self.patched.prefix_cache.get(pset)
            self.prefix_miss_ms[label] = (now() - t) * 1000
        self._build_peft()

    def _build_peft(self):
        from peft import LoraConfig, PromptTuningConfig, TaskType, get_peft_model

        pt_cfg = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=50, token_dim=self.patched.hidden_size,
                                    num_transformer_submodules=1, inference_mode=True)
        self.peft_pt = get_peft_model(copy.deepcopy(self.model), pt_cfg)
        with torch.no_grad():
            self.peft_pt.prompt_encoder["default"].embedding.weight.copy_(torch.from_numpy(self.patches[0].prefix.copy()))
        self.peft_pt.eval()
        lora_cfg = LoraConfig(task_type=TaskType.CAUSAL_LM, r=16, lora_alpha=32, lora_dropout=0.0,
                              target_modules=["q_proj", "v_proj"], inference_mode=True)
        self.peft_lora = get_peft_model(copy.deepcopy(self.model), lora_cfg)
        self.peft_lora.eval()

    # ------------------------------------------------------------ one timed call

    def run(self, variant: str, rows: list[int], new_tokens: int) -> dict:
        prompts = [self.prompt_ids[i] for i in rows]
        if variant.startswith("ours"):
            result = self._run_ours(variant, prompts, new_tokens)
        else:
            result = self._run_hf(variant, prompts, new_tokens)
        if len(rows) == 1 and new_tokens == self.args_new_tokens:  # kept for the token-identity check
            self.recorded.setdefault((variant, rows[0]), (result["tokens"][0], result["finished"][0]))
        return result

    def _run_ours(self, variant, prompts, new_tokens):
        from llmpatch.model.generation import SamplingConfig, generate

        pset = {"ours-base": [], "ours-1x50": self.patches[:1], "ours-2x50": self.patches}[variant]
        stamps: list[float] = []
        t0 = now()
        gens = generate(self.patched, prompts, [pset] * len(prompts), SamplingConfig(max_new_tokens=new_tokens),
                        on_step=lambda _s: stamps.append(now()))
        t1 = now()
        return _timing(t0, stamps, t1, [g.token_ids for g in gens], [g.finished for g in gens])

    def _run_hf(self, variant, prompts, new_tokens):
        model = {"hf-base": self.model, "peft-pt50": self.peft_pt, "peft-lora16": self.peft_lora}[variant]
        batch, l_max = len(prompts), max(len(p) for p in prompts)
        ids = torch.full((batch, l_max), self.pad, dtype=torch.long)
        mask = torch.zeros((batch, l_max), dtype=torch.long)
        for row, p in enumerate(prompts):
            ids[row, l_max - len(p):] = torch.tensor(p)
            mask[row, l_max - len(p):] = 1
        timer = StepTimer()
        from transformers import StoppingCriteriaList

        t0 = now()
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False,
                                 pad_token_id=self.pad, stopping_criteria=StoppingCriteriaList([timer]))
        t1 = now()
        new = out[:, -len(timer.times):] if timer.times else out[:, :0]
        tokens, finished = [], []
        for row in new.tolist():
            cut = row.index(2) if 2 in row else len(row)  # eos id 2, as in our generate()
            tokens.append(row[:cut])
            finished.append(cut < len(row))
        return _timing(t0, timer.times, t1, tokens, finished)


def _timing(t0, stamps, t1, tokens, finished):
    steps = len(stamps)
    decode = (stamps[-1] - stamps[0]) / (steps - 1) * 1000 if steps > 1 else float("nan")
    return {"prefill_ms": (stamps[0] - t0) * 1000, "decode_ms_per_token": decode, "total_ms": (t1 - t0) * 1000,
            "steps": steps, "tokens": tokens, "finished": finished}


# ---------------------------------------------------------------- reference check

@torch.no_grad()
def reference_check(model, prefix: torch.Tensor, prompt: list[int], tokens: list[int], finished: bool, stops: set[int]) -> dict:
    """Run cat(prefix, embeddings(prompt + our tokens)) through the model once, with no cache and
    no mask, and take the argmax at every position from the prompt's last token on. If each
    argmax is our next token (and a stop token after our last one when we stopped), greedy
    decoding of this reference yields exactly our tokens: by induction, each reference step
    sees the same sequence and picks the same token. One forward pass instead of one per token."""
    embed = model.get_input_embeddings()
    x = torch.cat([prefix, embed(torch.tensor(prompt + tokens))])[None]
    logits = model(inputs_embeds=x, use_cache=False).logits[0].float()
    start = prefix.shape[0] + len(prompt) - 1
    window = logits[start : start + len(tokens) + (1 if finished else 0)]
    preds = window.argmax(-1).tolist()
    top2 = window.topk(2, dim=-1).values
    margins = (top2[:, 0] - top2[:, 1]).tolist()
    first_diff = next((i for i, (a, b) in enumerate(zip(preds, tokens)) if a != b), None)
    if first_diff is None and finished and preds[len(tokens)] not in stops:
        first_diff = len(tokens)
    return {"identical": first_diff is None, "first_difference": first_diff, "min_top1_margin": min(margins) if margins else None}


def first_difference(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def identity_checks(bench: Bench) -> list[dict]:
    """Checks our batch-1 patched outputs recorded during the timed runs."""
    from llmpatch.model.generation import stop_token_ids
    from llmpatch.model.runtime import prefix_embeddings

    stops = stop_token_ids(bench.model, bench.tok)
    results = []
    for label, pset in (("1x50", bench.patches[:1]), ("2x50", bench.patches)):
        prefix = prefix_embeddings(pset, bench.model)
        for i in BATCH1_PROMPTS:
            if (f"ours-{label}", i) not in bench.recorded:
                continue
            tokens, finished = bench.recorded[(f"ours-{label}", i)]
            prompt = bench.prompt_ids[i]
            entry = {"patch_set": label, "prompt_tokens": len(prompt), "ours_tokens": len(tokens), "stopped_on_eos": finished,
                     **reference_check(bench.model, prefix, prompt, tokens, finished, stops)}
            if label == "1x50" and ("peft-pt50", i) in bench.recorded:  # PEFT prompt tuning, same prefix, its own generate()
                peft = bench.recorded[("peft-pt50", i)][0]
                entry["peft_pt_identical"] = peft == tokens
                entry["peft_pt_first_difference"] = first_difference(peft, tokens)
            results.append(entry)
    return results


# ---------------------------------------------------------------- isolated decode step

class StepState:
    """One decode step ready to repeat: the cache after prefill, cropped back after every call."""

    def __init__(self, bench: Bench, model, rows: list[int], pset):
        from llmpatch.model.runtime import build_prefill

        prompts = [bench.prompt_ids[i] for i in rows]
        pre = build_prefill(bench.model, prompts, [pset] * len(prompts), bench.patched.prefix_cache, bench.pad)
        with torch.no_grad():
            out = model(input_ids=pre.input_ids, attention_mask=pre.attention_mask, position_ids=pre.position_ids,
                        past_key_values=pre.past_key_values, use_cache=True, logits_to_keep=1)
        self.model, self.cache = model, out.past_key_values
        self.length = self.cache.get_seq_length()
        self.token = out.logits[:, -1].argmax(-1)[:, None]
        self.mask = torch.cat([pre.attention_mask, torch.ones((len(prompts), 1), dtype=torch.long)], dim=1)
        self.positions = pre.next_positions[:, None]

    @torch.no_grad()
    def step(self) -> float:
        t = now()
        self.model(input_ids=self.token, attention_mask=self.mask, position_ids=self.positions,
                   past_key_values=self.cache, use_cache=True)
        dt = now() - t
        self.cache.crop(self.length - self.cache.get_seq_length())  # negative: tokens to remove
        return dt * 1000


def step_states(bench: Bench, rows: list[int]) -> dict:
    return {
        "base": StepState(bench, bench.model, rows, []),
        "1x50": StepState(bench, bench.model, rows, bench.patches[:1]),
        "2x50": StepState(bench, bench.model, rows, bench.patches),
        "lora16": StepState(bench, bench.peft_lora, rows, []),
    }


def step_microbench(bench: Bench, reps: int) -> dict:
    """One decode forward pass (same token, cache cropped back), variants alternated step by step."""
    result = {}
    for b, rows in ((1, [BATCH1_PROMPTS[1]]), (8, list(range(8)))):
        states = step_states(bench, rows)
        times = {k: [] for k in states}
        for _ in range(3):  # warm
            for st in states.values():
                st.step()
        for r in range(reps):
            keys = list(states)
            keys = keys[r % len(keys):] + keys[: r % len(keys)]
            for k in keys:
                times[k].append(states[k].step())
        base = times["base"]
        result[b] = {k: {"median_ms": med(v), "min_ms": min(v), "kv_length": states[k].length,
                         "ratio_median": med([x / y for x, y in zip(v, base)]), "ratio_of_min": min(v) / min(base)}
                     for k, v in times.items()}
    return result


# ---------------------------------------------------------------- profiling

def profile_steps(bench: Bench, rows: list[int], steps: int = 5, repeats: int = 3) -> dict:
    """torch.profiler over `steps` isolated decode steps of base and 1x50, alternated `repeats`
    times; per op the minimum self-CPU total over repeats (least disturbed by other load)."""
    from torch.profiler import ProfilerActivity, profile

    states = step_states(bench, rows)
    tables = {"base": [], "1x50": []}
    for _ in range(repeats):
        for k in tables:
            states[k].step()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(steps):
                    states[k].step()
            tables[k].append({e.key: (e.self_cpu_time_total / 1000.0 / steps, e.count // steps) for e in prof.key_averages()})

    def per_op_min(runs):
        keys = set().union(*runs)
        return {k: (min(r.get(k, (0.0, 0))[0] for r in runs), max(r.get(k, (0.0, 0))[1] for r in runs)) for k in keys}

    base, patched = per_op_min(tables["base"]), per_op_min(tables["1x50"])
    keys = set(base) | set(patched)
    diffs = sorted(((patched.get(k, (0, 0))[0] - base.get(k, (0, 0))[0], k) for k in keys), reverse=True)
    top = [{"op": k, "base_ms": base.get(k, (0, 0))[0], "patched_ms": patched.get(k, (0, 0))[0], "delta_ms": d,
            "calls_per_step": patched.get(k, (0, 0))[1]} for d, k in diffs[:10]]
    total_b, total_p = sum(v[0] for v in base.values()), sum(v[0] for v in patched.values())
    top_base = sorted(((v[0], k) for k, v in base.items()), reverse=True)[:8]
    return {"rows": len(rows), "kv_length": {"base": states["base"].length, "1x50": states["1x50"].length},
            "self_cpu_ms_per_step": {"base": total_b, "1x50": total_p}, "largest_increases": top,
            "top_ops_base": [{"op": k, "ms": v, "share": v / total_b} for v, k in top_base]}


# ---------------------------------------------------------------- report

def paired_overhead(bench: Bench, pairs: int, new_tokens: int) -> dict:
    """Many short back-to-back pairs (ours-base, ours-1x50; order alternating) per batch size:
    each pair's ratio sees the same background load, so the median of many pairs resolves a
    1-2 % difference that 10-20 % round-to-round noise hides. 95 % interval: bootstrap of the
    median over pairs (percentiles of 2,000 resamples, fixed seed)."""
    import random

    rng, out = random.Random(0), {}
    for b, groups in ((1, [[i] for i in BATCH1_PROMPTS]), (8, [list(range(8))])):
        ratios = []
        for i in range(pairs):
            rows = groups[i % len(groups)]
            order = ("ours-base", "ours-1x50") if i % 2 == 0 else ("ours-1x50", "ours-base")
            got = {v: bench.run(v, rows, new_tokens)["decode_ms_per_token"] for v in order}
            ratios.append(got["ours-1x50"] / got["ours-base"])
        medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(2000))
        out[b] = {"pairs": pairs, "median_ratio": statistics.median(ratios), "ci95": [medians[49], medians[1949]],
                  "mean_ratio": statistics.mean(ratios), "ratios": ratios}
        print(f"  batch {b}: median ratio {out[b]['median_ratio']:.4f} ({(out[b]['median_ratio'] - 1) * 100:+.1f} %), "
              f"95 % interval {out[b]['ci95'][0]:.4f}..{out[b]['ci95'][1]:.4f}, mean {out[b]['mean_ratio']:.4f}, "
              f"{pairs} pairs of {new_tokens} new tokens; target <= {1 + TARGET_OVERHEAD:.2f}", flush=True)
    return out


def med(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def summarise(samples: dict) -> dict:
    """samples[batch][variant] = list of per-round dicts (aggregated over that round's prompts)."""
    summary = {}
    for batch, per_variant in samples.items():
        summary[batch] = {}
        for v in VARIANTS:
            rounds = per_variant[v]
            base = per_variant[BASELINE[v]]
            entry = {"baseline": BASELINE[v], "rounds": len(rounds)}
            for metric in ("decode_ms_per_token", "prefill_ms", "total_ms"):
                vals = [r[metric] for r in rounds]
                ratios = [r[metric] / b[metric] for r, b in zip(rounds, base)]
                entry[metric] = med(vals)
                entry[metric + "_spread"] = (max(vals) - min(vals)) / med(vals) if len(vals) > 1 else 0.0
                entry[metric + "_ratio"] = med(ratios)
                entry[metric + "_ratio_range"] = [min(ratios), max(ratios)]
                entry[metric + "_min"] = min(vals)
                entry[metric + "_ratio_of_min"] = min(vals) / min(b[metric] for b in base)
            entry["steps"] = med([r["steps"] for r in rounds])
            summary[batch][v] = entry
    return summary


def print_table(summary: dict, new_tokens: int) -> None:
    for batch, per_variant in summary.items():
        print(f"\n== batch {batch}  ({'3 prompts one at a time' if batch == 1 else '8 prompts, left-padded'}; "
              f"greedy, up to {new_tokens} new tokens; median and best over rounds) ==")
        print(f"{'':<12} {'decode ms/token':^48} | {'prefill ms':^18} | {'total ms':^17} |")
        print(f"{'variant':<12} {'median':>7} {'best':>6} {'ratio':>6} {'range':>11} {'spread':>6} {'best/best':>9} | "
              f"{'median':>7} {'ratio':>10} | {'median':>7} {'ratio':>9} | {'steps':>5} vs         target / reference")
        for v, e in per_variant.items():
            lo, hi = e["decode_ms_per_token_ratio_range"]
            over = (e["decode_ms_per_token_ratio"] - 1) * 100
            over_best = (e["decode_ms_per_token_ratio_of_min"] - 1) * 100
            target = ""
            if v == "ours-1x50":
                target = (f"<= +2.0 %: median {over:+.1f} % ({'MET' if over <= 2 else 'MISSED'}), best {over_best:+.1f} % "
                          f"({'MET' if over_best <= 2 else 'MISSED'}); paper +2.5 %")
            elif v == "ours-2x50":
                target = f"100 virtual tokens: {over:+.1f} % (best {over_best:+.1f} %)"
            elif v == "peft-lora16":
                target = f"paper +22.5 %, peer +17-18 %: here {over:+.1f} % (best {over_best:+.1f} %)"
            elif v == "peft-pt50":
                target = f"{over:+.1f} % (best {over_best:+.1f} %)"
            print(f"{v:<12} {e['decode_ms_per_token']:>7.1f} {e['decode_ms_per_token_min']:>6.1f} {e['decode_ms_per_token_ratio']:>6.3f} "
                  f"{f'{lo:.2f}..{hi:.2f}':>11} {e['decode_ms_per_token_spread'] * 100:>5.0f}% {e['decode_ms_per_token_ratio_of_min']:>9.3f} | "
                  f"{e['prefill_ms']:>7.0f} {e['prefill_ms_ratio']:>10.2f} | {e['total_ms']:>7.0f} {e['total_ms_ratio']:>9.3f} | "
                  f"{e['steps']:>5.0f} {e['baseline']:<10} {target}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds, 16 new tokens, one identity-check prompt")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5, quick 2)")
    parser.add_argument("--new-tokens", type=int, help="new tokens per call (default 64, quick 16)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--all-batch1", action="store_true", help="run all three batch-1 prompts every round (default: rotate, one per round)")
    parser.add_argument("--max-minutes", type=float, default=0, help="stop starting new rounds after this long (at least 2 rounds)")
    parser.add_argument("--json", metavar="PATH", help="write all figures and raw samples here")
    parser.add_argument("--no-profile", action="store_true", help="skip the profile even if the 2 %% target is missed")
    parser.add_argument("--no-check", action="store_true", help="skip the token-identity check")
    parser.add_argument("--paired", type=int, metavar="N", help="instead of the rounds: N back-to-back pairs of ours-base and "
                        "ours-1x50 per batch size, median paired ratio with a bootstrap interval")
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 5)
    new_tokens = args.new_tokens or (16 if args.quick else 64)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    load1 = os.getloadavg()
    bench = Bench(args)
    print(f"llm-patch model latency  {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}  torch {torch.__version__}  "
          f"threads {torch.get_num_threads()}  cpus {os.cpu_count()}  load avg at start {load1[0]:.2f}")
    print(f"model {bench.loaded.location.display_name} loaded in {bench.load_s:.1f} s; prompt lengths (chat-templated) "
          f"batch 1: {[len(bench.prompt_ids[i]) for i in BATCH1_PROMPTS]}, batch 8: {[len(p) for p in bench.prompt_ids]}")
    print("one-time prefix KV computation (PrefixCache miss): "
          + ", ".join(f"{k} {v:.0f} ms" for k, v in bench.prefix_miss_ms.items()))

    bench.args_new_tokens = new_tokens
    if args.paired:
        for v in ("ours-base", "ours-1x50"):  # warm-up
            bench.run(v, [BATCH1_PROMPTS[0]], 2)
            bench.run(v, list(range(8)), 2)
        print(f"\n== paired decode overhead of one 50-token patch (ours-1x50 / ours-base, decode ms/token) ==")
        paired = paired_overhead(bench, args.paired, new_tokens)
        load2 = os.getloadavg()
        print(f"load average {load1[0]:.2f} at start, {load2[0]:.2f} at end")
        if args.json:
            Path(args.json).write_text(json.dumps({
                "benchmark": "model_latency --paired", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "host": {"cpus": os.cpu_count(), "threads": torch.get_num_threads(), "python": platform.python_version(),
                         "torch": torch.__version__, "load_avg_start": load1[0], "load_avg_end": load2[0]},
                "new_tokens": new_tokens, "target_overhead": TARGET_OVERHEAD, "paired": {str(b): v for b, v in paired.items()}}, indent=2))
        return 0
    batches = {1: [[i] for i in BATCH1_PROMPTS], 8: [list(range(8))]}
    samples = {b: {v: [] for v in VARIANTS} for b in batches}
    raw = []
    # warm-up: a short call of every variant (first-call costs, allocator, PEFT wrappers)
    for v in VARIANTS:
        bench.run(v, [BATCH1_PROMPTS[0]], 2)
        bench.run(v, batches[8][0], 2)
    t_start = now()
    for r in range(rounds):
        order = VARIANTS[r % len(VARIANTS):] + VARIANTS[: r % len(VARIANTS)]
        runs = {(b, v): [] for b in batches for v in VARIANTS}
        # finest interleave: for each prompt group, every variant back to back (rotated order per round),
        # so paired ratios compare calls made seconds apart under the same background load
        for b, groups in batches.items():
            if b == 1 and not args.all_batch1:  # one batch-1 prompt per round, rotating through the three lengths
                groups = [groups[r % len(groups)]]
            for rows in groups:
                for v in order:
                    runs[(b, v)].append(bench.run(v, rows, new_tokens))
        for (b, v), xs in runs.items():
            # one sample per round: prompts pooled (decode weighted by steps, prefill/total averaged)
            dec_steps = sum(x["steps"] - 1 for x in xs)
            agg = {
                "decode_ms_per_token": sum(x["decode_ms_per_token"] * (x["steps"] - 1) for x in xs) / dec_steps,
                "prefill_ms": statistics.mean(x["prefill_ms"] for x in xs),
                "total_ms": statistics.mean(x["total_ms"] for x in xs),
                "steps": statistics.mean(x["steps"] for x in xs),
            }
            samples[b][v].append(agg)
            raw.append({"round": r, "variant": v, "batch": b, **agg,
                        "per_prompt": [{k: x[k] for k in ("prefill_ms", "decode_ms_per_token", "total_ms", "steps")} for x in xs]})
        print(f"  round {r + 1}/{rounds} done ({now() - t_start:.0f} s, load avg {os.getloadavg()[0]:.2f})", flush=True)
        if args.max_minutes and r >= 1 and now() - t_start > args.max_minutes * 60 * (r + 1) / (r + 2):
            print(f"  stopping after {r + 1} rounds: --max-minutes {args.max_minutes} would be exceeded", flush=True)
            rounds = r + 1
            break
    load2 = os.getloadavg()
    summary = summarise(samples)
    print_table(summary, new_tokens)
    spreads = [e["decode_ms_per_token_spread"] for per in summary.values() for e in per.values()]
    print(f"\nnoise: decode ms/token varied {min(spreads) * 100:.0f}-{max(spreads) * 100:.0f} % (max-min over median) across "
          f"{rounds} rounds; load average {load1[0]:.2f} at start, {load2[0]:.2f} at end (2 cores, shared machine). "
          f"Ratio ranges are the min..max of per-round paired ratios.")
    peer = {1: 68.0, 8: 104.0}
    print("peer figures (idle box, ml-findings.md): unpatched " + ", ".join(
        f"batch {b}: {peer[b]:.0f} ms/token (here ours-base {summary[b]['ours-base']['decode_ms_per_token']:.0f}, "
        f"hf-base {summary[b]['hf-base']['decode_ms_per_token']:.0f})" for b in peer))

    checks = []
    if not args.no_check:
        checks = identity_checks(bench)
        print(f"\n== token identity, batch 1, greedy up to {new_tokens} tokens: our patched outputs from the timed runs vs the "
              f"reference cat(prefix, token embeddings) run with no cache (teacher-forced: one pass, argmax at every step) ==")
        for c in checks:
            extra = ""
            if "peft_pt_identical" in c:
                extra = f"  | PEFT prompt tuning vs ours: {'identical' if c['peft_pt_identical'] else 'DIFFERENT from token ' + str(c['peft_pt_first_difference'])}"
            verdict = "IDENTICAL" if c["identical"] else f"DIFFERENT at token {c['first_difference']}"
            print(f"  {c['patch_set']}  prompt {c['prompt_tokens']:>3} tokens: {verdict} ({c['ours_tokens']} tokens"
                  f"{', then EOS' if c['stopped_on_eos'] else ''}; smallest top-1 logit margin {c['min_top1_margin']:.3f}){extra}")
        print(f"  overall: {'PASS' if checks and all(c['identical'] for c in checks) else 'FAIL'} ({sum(c['identical'] for c in checks)}/{len(checks)})")

    reps = 6 if args.quick else 12
    steps = step_microbench(bench, reps)
    print(f"\n== isolated decode step (one forward pass on the prefilled cache, cropped back; variants alternated "
          f"step by step, {reps} reps) ==")
    print(f"{'batch':>5} {'variant':<8} {'kv len':>6} {'median ms':>9} {'min ms':>7} {'ratio (median of pairs)':>24} {'ratio of mins':>14}")
    for b, per in steps.items():
        for k, e in per.items():
            print(f"{b:>5} {k:<8} {e['kv_length']:>6} {e['median_ms']:>9.1f} {e['min_ms']:>7.1f} {e['ratio_median']:>24.3f} {e['ratio_of_min']:>14.3f}")

    profile = None
    worst = max(summary, key=lambda b: summary[b]["ours-1x50"]["decode_ms_per_token_ratio"])
    over = summary[worst]["ours-1x50"]["decode_ms_per_token_ratio"] - 1
    if over > TARGET_OVERHEAD and not args.no_profile:
        rows = batches[worst][-1]
        profile = profile_steps(bench, rows)
        ps = profile["self_cpu_ms_per_step"]
        print(f"\n== profile: ours-1x50 decode is {over * 100:+.1f} % per token over ours-base at batch {worst}; torch.profiler "
              f"over 5 isolated decode steps x 3 alternated repeats, per-op minimum, ms per step ==")
        print(f"  self CPU per step: base {ps['base']:.1f} ms (kv {profile['kv_length']['base']}), "
              f"1x50 {ps['1x50']:.1f} ms (kv {profile['kv_length']['1x50']}), {((ps['1x50'] / ps['base']) - 1) * 100:+.1f} %")
        print(f"  {'op':<48} {'base':>7} {'1x50':>7} {'delta':>7} {'calls':>5}")
        for row in profile["largest_increases"]:
            print(f"  {row['op'][:48]:<48} {row['base_ms']:>7.2f} {row['patched_ms']:>7.2f} {row['delta_ms']:>+7.2f} {row['calls_per_step']:>5}")
        print("  largest ops in base: " + ", ".join(f"{r['op']} {r['ms']:.1f} ms ({r['share'] * 100:.0f} %)" for r in profile["top_ops_base"]))

    if args.json:
        doc = {"benchmark": "model_latency", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "host": {"cpus": os.cpu_count(), "threads": torch.get_num_threads(), "python": platform.python_version(),
                        "torch": torch.__version__, "load_avg_start": load1[0], "load_avg_end": load2[0]},
               "new_tokens": new_tokens, "rounds": rounds, "quick": args.quick,
               "prompt_lengths": [len(p) for p in bench.prompt_ids], "batch1_prompts": list(BATCH1_PROMPTS),
               "prefix_miss_ms": bench.prefix_miss_ms, "target_overhead": TARGET_OVERHEAD, "paper_overhead": PAPER_OVERHEAD,
               "summary": {str(b): s for b, s in summary.items()}, "identity_checks": checks, "decode_step": {str(b): v for b, v in steps.items()}, "profile": profile, "raw": raw}
        Path(args.json).write_text(json.dumps(doc, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
