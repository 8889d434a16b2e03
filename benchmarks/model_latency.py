"""Per-token generation latency on SmolLM2-135M-Instruct: our soft-prefix patches against
PEFT prompt tuning and PEFT LoRA, each against the matching unpatched baseline.

    python benchmarks/model_latency.py [--quick] [--rounds N] [--json out.json] [--no-profile]

Variants (greedy, torch.set_num_threads(2), 64 new tokens unless --quick / --new-tokens):
  ours-base    our generate() with empty patch sets                     (baseline for ours)
  ours-1x50    our generate() with one 50-token patch
  ours-2x50    our generate() with a composition of two 50-token patches (100 virtual tokens)
  hf-base      transformers model.generate(), unpatched                 (baseline for PEFT)
  peft-pt50    PEFT prompt tuning, 50 virtual tokens initialised from our patch, its generate()
  peft-lora16  PEFT LoRA r=16 on q_proj,v_proj, unmerged, HF generate()

Each is run at batch 1 (three chat-templated prompts of different lengths, one at a time)
and batch 8 (eight prompts of different lengths, left-padded). Variants are interleaved
(A B C ... then again, in a rotated order) for --rounds rounds; the tables give medians over
rounds, and ratios are medians of per-round paired ratios (variant / its baseline in the
same round), with the min..max of those ratios to show the noise.

Timing points: prefill = call start -> first new token chosen (includes our prefix-KV copy,
or PEFT's re-encoding of its virtual tokens); decode ms/token = (last token - first token) /
(steps - 1); total = the whole call. The first patched call of a patch set computes the
prefix keys/values once (`PrefixCache` miss); that one-time cost is printed separately and
kept out of the per-call figures by a warm-up round.

Also checks, at batch 1, that our patched greedy output is token-identical to a reference
decoded without any cache from inputs_embeds = cat(prefix, token embeddings), and reports
whether PEFT prompt tuning (same prefix) gives the same tokens as ours.

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
            return self._run_ours(variant, prompts, new_tokens)
        return self._run_hf(variant, prompts, new_tokens)

    def _run_ours(self, variant, prompts, new_tokens):
        from llmpatch.model.generation import SamplingConfig, generate

        pset = {"ours-base": [], "ours-1x50": self.patches[:1], "ours-2x50": self.patches}[variant]
        stamps: list[float] = []
        t0 = now()
        gens = generate(self.patched, prompts, [pset] * len(prompts), SamplingConfig(max_new_tokens=new_tokens),
                        on_step=lambda _s: stamps.append(now()))
        t1 = now()
        return _timing(t0, stamps, t1, [g.token_ids for g in gens])

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
        tokens = []
        for row in new.tolist():
            cut = row.index(2) if 2 in row else len(row)  # eos id 2, as in our generate()
            tokens.append(row[:cut])
        return _timing(t0, timer.times, t1, tokens)


def _timing(t0, stamps, t1, tokens):
    steps = len(stamps)
    decode = (stamps[-1] - stamps[0]) / (steps - 1) * 1000 if steps > 1 else float("nan")
    return {"prefill_ms": (stamps[0] - t0) * 1000, "decode_ms_per_token": decode, "total_ms": (t1 - t0) * 1000,
            "steps": steps, "tokens": tokens}


# ---------------------------------------------------------------- reference check

@torch.no_grad()
def reference_greedy(model, prefix: torch.Tensor, prompt: list[int], new_tokens: int, stops: set[int]) -> list[int]:
    """Greedy decoding with no cache: every step reruns cat(prefix, embeddings(tokens so far))."""
    embed = model.get_input_embeddings()
    tokens = list(prompt)
    out = []
    for _ in range(new_tokens):
        x = torch.cat([prefix, embed(torch.tensor(tokens))])[None]
        logits = model(inputs_embeds=x, use_cache=False, logits_to_keep=1).logits[0, -1]
        nxt = int(logits.argmax())
        if nxt in stops:
            break
        out.append(nxt)
        tokens.append(nxt)
    return out


def first_difference(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def identity_checks(bench: Bench, new_tokens: int, rows: tuple[int, ...]) -> list[dict]:
    from llmpatch.model.generation import SamplingConfig, generate, stop_token_ids
    from llmpatch.model.runtime import prefix_embeddings

    stops = stop_token_ids(bench.model, bench.tok)
    results = []
    for label, pset in (("1x50", bench.patches[:1]), ("2x50", bench.patches)):
        prefix = prefix_embeddings(pset, bench.model)
        for i in rows:
            prompt = bench.prompt_ids[i]
            ours = generate(bench.patched, [prompt], [pset], SamplingConfig(max_new_tokens=new_tokens))[0].token_ids
            ref = reference_greedy(bench.model, prefix, prompt, new_tokens, stops)
            entry = {"patch_set": label, "prompt_tokens": len(prompt), "ours_tokens": len(ours), "ref_tokens": len(ref),
                     "identical": ours == ref, "first_difference": first_difference(ours, ref)}
            if label == "1x50":  # PEFT prompt tuning with the same prefix, its own generate()
                peft = bench._run_hf("peft-pt50", [prompt], new_tokens)["tokens"][0]
                entry["peft_pt_identical"] = peft == ours
                entry["peft_pt_first_difference"] = first_difference(peft, ours)
            results.append(entry)
    return results


# ---------------------------------------------------------------- profiling

def profile_decode(bench: Bench, rows: list[int], new_tokens: int) -> dict:
    """torch.profiler over a whole call of ours-base and ours-1x50; op self-CPU totals side by side."""
    from torch.profiler import ProfilerActivity, profile

    tables = {}
    for variant in ("ours-base", "ours-1x50"):
        bench.run(variant, rows, new_tokens)  # warm
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            bench.run(variant, rows, new_tokens)
        ops = {}
        for evt in prof.key_averages():
            ops[evt.key] = (evt.self_cpu_time_total / 1000.0, evt.count)
        tables[variant] = ops
    base, patched = tables["ours-base"], tables["ours-1x50"]
    keys = set(base) | set(patched)
    diffs = sorted(((patched.get(k, (0, 0))[0] - base.get(k, (0, 0))[0], k) for k in keys), reverse=True)
    total_b = sum(v[0] for v in base.values())
    total_p = sum(v[0] for v in patched.values())
    top = [{"op": k, "base_ms": round(base.get(k, (0, 0))[0], 2), "patched_ms": round(patched.get(k, (0, 0))[0], 2),
            "delta_ms": round(d, 2), "calls": patched.get(k, (0, 0))[1]} for d, k in diffs[:12]]
    top_base = sorted(((v[0], k) for k, v in base.items()), reverse=True)[:8]
    return {"rows": len(rows), "new_tokens": new_tokens, "total_self_cpu_ms": {"ours-base": round(total_b, 1), "ours-1x50": round(total_p, 1)},
            "largest_increases": top, "top_ops_base": [{"op": k, "ms": round(v, 1)} for v, k in top_base]}


# ---------------------------------------------------------------- report

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
            entry["steps"] = med([r["steps"] for r in rounds])
            summary[batch][v] = entry
    return summary


def print_table(summary: dict, new_tokens: int) -> None:
    for batch, per_variant in summary.items():
        print(f"\n== batch {batch}  ({'3 prompts one at a time' if batch == 1 else '8 prompts, left-padded'}; "
              f"greedy, up to {new_tokens} new tokens; medians over rounds) ==")
        print(f"{'variant':<12} {'decode ms/tok':>13} {'ratio':>7} {'ratio range':>15} {'spread':>7}  "
              f"{'prefill ms':>10} {'ratio':>6}  {'total ms':>9} {'ratio':>6}  {'steps':>5}  vs         target")
        for v, e in per_variant.items():
            lo, hi = e["decode_ms_per_token_ratio_range"]
            target = ""
            if v == "ours-1x50":
                over = e["decode_ms_per_token_ratio"] - 1
                target = f"<= +2.0 % ({'MET' if over <= TARGET_OVERHEAD else 'MISSED'}: {over * 100:+.1f} %; paper +2.5 %)"
            elif v == "ours-2x50":
                target = f"({(e['decode_ms_per_token_ratio'] - 1) * 100:+.1f} % for 100 virtual tokens)"
            elif v == "peft-lora16":
                target = f"(paper +22.5 %, peer notes +17-18 %: here {(e['decode_ms_per_token_ratio'] - 1) * 100:+.1f} %)"
            elif v == "peft-pt50":
                target = f"({(e['decode_ms_per_token_ratio'] - 1) * 100:+.1f} %)"
            print(f"{v:<12} {e['decode_ms_per_token']:>13.1f} {e['decode_ms_per_token_ratio']:>7.3f} "
                  f"{f'{lo:.3f}..{hi:.3f}':>15} {e['decode_ms_per_token_spread'] * 100:>6.0f}%  "
                  f"{e['prefill_ms']:>10.1f} {e['prefill_ms_ratio']:>6.2f}  {e['total_ms']:>9.0f} {e['total_ms_ratio']:>6.3f}  "
                  f"{e['steps']:>5.0f}  {e['baseline']:<10} {target}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds, 16 new tokens, one identity-check prompt")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5, quick 2)")
    parser.add_argument("--new-tokens", type=int, help="new tokens per call (default 64, quick 16)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", metavar="PATH", help="write all figures and raw samples here")
    parser.add_argument("--no-profile", action="store_true", help="skip the profile even if the 2 %% target is missed")
    parser.add_argument("--no-check", action="store_true", help="skip the token-identity check")
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

    batches = {1: [[i] for i in BATCH1_PROMPTS], 8: [list(range(8))]}
    samples = {b: {v: [] for v in VARIANTS} for b in batches}
    raw = []
    # warm-up: one pass of everything (first-call costs, allocator, PEFT wrappers)
    for v in VARIANTS:
        for groups in batches.values():
            for rows in groups:
                bench.run(v, rows, min(new_tokens, 4))
    t_start = now()
    for r in range(rounds):
        order = VARIANTS[r % len(VARIANTS):] + VARIANTS[: r % len(VARIANTS)]
        runs = {(b, v): [] for b in batches for v in VARIANTS}
        # finest interleave: for each prompt group, every variant back to back (rotated order per round),
        # so paired ratios compare calls made seconds apart under the same background load
        for b, groups in batches.items():
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
        rows = BATCH1_PROMPTS[:1] if args.quick else BATCH1_PROMPTS
        checks = identity_checks(bench, new_tokens, rows)
        print(f"\n== token identity, batch 1, greedy {new_tokens} tokens: ours (prefix KV cache) vs no-cache reference "
              f"on inputs_embeds = cat(prefix, token embeddings) ==")
        for c in checks:
            extra = ""
            if "peft_pt_identical" in c:
                extra = f"   PEFT prompt tuning vs ours: {'identical' if c['peft_pt_identical'] else 'DIFFERENT from token ' + str(c['peft_pt_first_difference'])}"
            verdict = "IDENTICAL" if c["identical"] else f"DIFFERENT from token {c['first_difference']}"
            print(f"  {c['patch_set']}  prompt {c['prompt_tokens']:>3} tokens: {verdict} ({c['ours_tokens']} vs {c['ref_tokens']} tokens){extra}")
        print(f"  overall: {'PASS' if all(c['identical'] for c in checks) else 'FAIL'} ({sum(c['identical'] for c in checks)}/{len(checks)})")

    profile = None
    worst = max(summary, key=lambda b: summary[b]["ours-1x50"]["decode_ms_per_token_ratio"])
    over = summary[worst]["ours-1x50"]["decode_ms_per_token_ratio"] - 1
    if over > TARGET_OVERHEAD and not args.no_profile:
        rows = batches[worst][-1]
        profile = profile_decode(bench, rows, new_tokens)
        print(f"\n== profile (torch.profiler, self CPU time, one call, batch {worst}, {new_tokens} tokens): "
              f"ours-1x50 is {over * 100:+.1f} % per token over ours-base ==")
        print(f"  total self CPU: base {profile['total_self_cpu_ms']['ours-base']:.0f} ms, "
              f"1x50 {profile['total_self_cpu_ms']['ours-1x50']:.0f} ms")
        print(f"  {'op':<40} {'base ms':>9} {'1x50 ms':>9} {'delta':>8} {'calls':>6}")
        for row in profile["largest_increases"]:
            print(f"  {row['op'][:40]:<40} {row['base_ms']:>9.1f} {row['patched_ms']:>9.1f} {row['delta_ms']:>+8.1f} {row['calls']:>6}")
        print("  largest ops in ours-base: " + ", ".join(f"{r['op']} {r['ms']:.0f} ms" for r in profile["top_ops_base"]))

    if args.json:
        doc = {"benchmark": "model_latency", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "host": {"cpus": os.cpu_count(), "threads": torch.get_num_threads(), "python": platform.python_version(),
                        "torch": torch.__version__, "load_avg_start": load1[0], "load_avg_end": load2[0]},
               "new_tokens": new_tokens, "rounds": rounds, "quick": args.quick,
               "prompt_lengths": [len(p) for p in bench.prompt_ids], "batch1_prompts": list(BATCH1_PROMPTS),
               "prefix_miss_ms": bench.prefix_miss_ms, "target_overhead": TARGET_OVERHEAD, "paper_overhead": PAPER_OVERHEAD,
               "summary": {str(b): s for b, s in summary.items()}, "identity_checks": checks, "profile": profile, "raw": raw}
        Path(args.json).write_text(json.dumps(doc, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
