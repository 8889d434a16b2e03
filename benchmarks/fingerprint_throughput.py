"""Weights-fingerprint throughput: `fingerprint_folder(dir, use_cache=False)` against
`sha256sum` over the same safetensors bytes (and Python's hashlib.sha256 as a second peer).

    python benchmarks/fingerprint_throughput.py [--quick] [--rounds N] [--json out.json]

Methods: fingerprint (as shipped), sha256sum, hashlib (sha256 in Python, 16 MiB reads) and
fp-proposed: fingerprint_folder with a faster BF16 -> float32 conversion patched in for the
run (see `faster_float32_chunks`), to show what that change would buy; its digest is checked
against the shipped one.

Folders:
  smollm2-f32   the cached, dequantised SmolLM2-135M-Instruct folder (~540 MB of F32)
  synth-bf16    a synthetic BF16 llama-style folder of ~500 MB written to a temp dir
                (config.json with tie_word_embeddings false, a 1,000-token tokenizer.json)

The page cache is warmed first (every file read once), so these are CPU figures, not disk
figures. Variants are interleaved (fingerprint, sha256sum, hashlib, then again, rotated) for
--rounds rounds; the table gives medians and the min..max spread. MB/s is file bytes on disk
per second for every method (a BF16 fingerprint hashes twice as many bytes, since it hashes
the canonical float32 form). The cached call is `fingerprint_folder(dir)` after a full run:
stat the files, read a small JSON.

Fingerprint cache entries written here go to a temporary LLMPATCH_HOME, not your cache.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

TARGET_RATIO = 0.8  # fingerprint throughput / sha256sum throughput
PEER = {"sha256sum": 272.0, "hashlib": 1440.0}  # MB/s, idle box, ml-findings.md


def now() -> float:
    return time.perf_counter()


def cpu_seconds() -> float:
    """CPU time of this process plus its finished children (sha256sum runs as a child)."""
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + child.ru_utime + child.ru_stime


# ---------------------------------------------------------------- synthetic BF16 folder

def write_safetensors_bf16(path: Path, tensors: dict[str, tuple[int, ...]], rng: np.random.Generator) -> int:
    """Write BF16 tensors (normal * 0.02, truncated from float32) without holding them all in memory."""
    header, offset = {}, 0
    for name, shape in tensors.items():
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as fh:
        fh.write(len(raw).to_bytes(8, "little") + raw)
        for name, shape in tensors.items():
            count = int(np.prod(shape))
            for start in range(0, count, 1 << 24):
                part = (rng.standard_normal(min(1 << 24, count - start), dtype=np.float32) * 0.02)
                fh.write((part.view(np.uint32) >> 16).astype("<u2").tobytes())
    return path.stat().st_size


def make_synthetic_folder(folder: Path, hidden=1024, layers=12, intermediate=4096, vocab=32000) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
        "intermediate_size": intermediate, "num_hidden_layers": layers, "num_attention_heads": 16,
        "num_key_value_heads": 16, "head_dim": hidden // 16, "vocab_size": vocab, "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5, "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    vocab_map = {f"tok{i}": i for i in range(1000)}
    tokenizer = {"version": "1.0", "added_tokens": [{"id": 1000, "content": "<|endoftext|>", "special": True}],
                 "model": {"type": "BPE", "vocab": vocab_map, "merges": []}}
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    tensors = {"model.embed_tokens.weight": (vocab, hidden), "lm_head.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
    for i in range(layers):
        p = f"model.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            tensors[p + f"self_attn.{proj}.weight"] = (hidden, hidden)
        tensors[p + "mlp.gate_proj.weight"] = (intermediate, hidden)
        tensors[p + "mlp.up_proj.weight"] = (intermediate, hidden)
        tensors[p + "mlp.down_proj.weight"] = (hidden, intermediate)
        tensors[p + "input_layernorm.weight"] = (hidden,)
        tensors[p + "post_attention_layernorm.weight"] = (hidden,)
    write_safetensors_bf16(folder / "model.safetensors", tensors, np.random.default_rng(0))
    return folder


# ---------------------------------------------------------------- methods

def weight_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def warm(folder: Path) -> float:
    t = now()
    for f in weight_files(folder):
        with open(f, "rb") as fh:
            while fh.read(64 << 20):
                pass
    return now() - t


def run_fingerprint(folder: Path):
    from llmpatch.fingerprint import fingerprint_folder

    return fingerprint_folder(folder, use_cache=False)


def run_sha256sum(folder: Path):
    out = subprocess.run(["sha256sum", *map(str, weight_files(folder))], check=True, capture_output=True, text=True)
    return out.stdout.split()[0]


def run_hashlib(folder: Path):
    digest = None
    for f in weight_files(folder):
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            while chunk := fh.read(16 << 20):
                h.update(chunk)
        digest = h.hexdigest()
    return digest


def faster_float32_chunks(raw_chunks, dtype):
    """A candidate for llmpatch.fingerprint.float32_chunks: BF16 -> float32 by writing the 16 bits
    into the high half of a reused, zeroed buffer (one strided copy) and hashing a memoryview of
    it, instead of astype(uint32) + shift + tobytes (three full-size temporaries per chunk).
    Same canonical bytes, so the same digest (checked below)."""
    if dtype != "BF16":
        yield from ORIGINAL_FLOAT32_CHUNKS(raw_chunks, dtype)
        return
    buf = None
    for chunk in raw_chunks:
        part = np.frombuffer(chunk, dtype="<u2")
        if buf is None or buf.shape[0] < part.size:
            buf = np.zeros((part.size, 2), dtype="<u2")  # column 0 (low half) stays zero
        view = buf[: part.size]
        view[:, 1] = part
        yield memoryview(view).cast("B")


def run_fingerprint_proposed(folder: Path):
    import llmpatch.fingerprint as fpmod

    fpmod.float32_chunks = faster_float32_chunks
    try:
        return fpmod.fingerprint_folder(folder, use_cache=False)
    finally:
        fpmod.float32_chunks = ORIGINAL_FLOAT32_CHUNKS


def _original():
    from llmpatch.fingerprint import float32_chunks

    return float32_chunks


ORIGINAL_FLOAT32_CHUNKS = _original()
METHODS = {"fingerprint": run_fingerprint, "sha256sum": run_sha256sum, "hashlib": run_hashlib,
           "fp-proposed": run_fingerprint_proposed}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds and a ~130 MB synthetic folder")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 7, quick 2)")
    parser.add_argument("--json", metavar="PATH", help="write all figures and raw samples here")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic folder (path is printed)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 7)
    load1 = os.getloadavg()

    from llmpatch.model.loading import locate_model

    smol = locate_model("smollm2").folder  # may convert the GGUF once (~20 s) into the normal cache
    tmp = Path(tempfile.mkdtemp(prefix="llmpatch-fp-bench-"))
    os.environ["LLMPATCH_HOME"] = str(tmp / "home")  # fingerprint cache entries go here from now on
    t = now()
    synth = make_synthetic_folder(tmp / "synth-bf16", layers=3 if args.quick else 12)
    make_s = now() - t
    folders = {"smollm2-f32": smol, "synth-bf16": synth}
    sizes = {k: sum(f.stat().st_size for f in weight_files(v)) for k, v in folders.items()}

    print(f"llm-patch fingerprint throughput  {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}  cpus {os.cpu_count()}  "
          f"load avg at start {load1[0]:.2f}")
    for k, v in folders.items():
        print(f"  {k:<12} {sizes[k] / 1e6:7.1f} MB in {len(weight_files(v))} file(s)  {v}")
    print(f"  synthetic folder written in {make_s:.1f} s")
    warm_s = {k: warm(v) for k, v in folders.items()}
    print("  page cache warmed: " + ", ".join(f"{k} {sizes[k] / 1e6 / s:.0f} MB/s" for k, s in warm_s.items()))

    samples = {k: {m: [] for m in METHODS} for k in folders}
    cpu = {k: {m: [] for m in METHODS} for k in folders}
    digests = {}
    t_start = now()
    for r in range(rounds):
        order = list(METHODS)[r % len(METHODS):] + list(METHODS)[: r % len(METHODS)]
        for k, folder in folders.items():
            for m in order:
                t, c = now(), cpu_seconds()
                digests[(k, m)] = METHODS[m](folder)
                samples[k][m].append(now() - t)
                cpu[k][m].append(cpu_seconds() - c)
        print(f"  round {r + 1}/{rounds} done ({now() - t_start:.0f} s, load avg {os.getloadavg()[0]:.2f})", flush=True)
    load2 = os.getloadavg()

    from llmpatch.fingerprint import fingerprint_folder

    cached = {}
    for k, folder in folders.items():
        first = fingerprint_folder(folder)  # the cache entry exists from the use_cache=False runs
        times = []
        for _ in range(20):
            t = now()
            again = fingerprint_folder(folder)
            times.append((now() - t) * 1000)
        cached[k] = {"median_ms": statistics.median(times), "min_ms": min(times), "same_result": again == first == digests[(k, "fingerprint")]}

    summary = {}
    print(f"\n== throughput over page-cached bytes; medians of {rounds} interleaved rounds ==")
    print("   wall: elapsed time (what a user waits; inflated by other load).  cpu: user+sys CPU time of the hashing")
    print("   process (or the sha256sum child), much less sensitive to a busy machine.  ratio = throughput / sha256sum's,")
    print("   median of per-round pairs, with the min..max of those pairs.")
    print(f"{'folder':<12} {'method':<12} {'wall s':>7} {'MB/s':>6} {'spread':>6} {'ratio':>6} {'range':>11} | "
          f"{'cpu s':>6} {'MB/s':>6} {'ratio':>6} {'range':>11} | {'target (>= 0.8x)':<17} peer, idle box")
    for k in folders:
        summary[k] = {}
        ref, ref_cpu = samples[k]["sha256sum"], cpu[k]["sha256sum"]
        for m in METHODS:
            xs, cs = samples[k][m], cpu[k][m]
            ratios = [r / x for x, r in zip(xs, ref)]  # throughput ratio = time(sha256sum) / time(method), paired per round
            cratios = [r / x for x, r in zip(cs, ref_cpu)]
            e = {"median_s": statistics.median(xs), "mb_per_s": sizes[k] / 1e6 / statistics.median(xs),
                 "spread": (max(xs) - min(xs)) / statistics.median(xs), "ratio_vs_sha256sum": statistics.median(ratios),
                 "ratio_range": [min(ratios), max(ratios)], "times_s": xs,
                 "cpu_median_s": statistics.median(cs), "cpu_mb_per_s": sizes[k] / 1e6 / statistics.median(cs),
                 "cpu_ratio_vs_sha256sum": statistics.median(cratios), "cpu_ratio_range": [min(cratios), max(cratios)],
                 "cpu_s": cs}
            summary[k][m] = e
            target = ""
            if m in ("fingerprint", "fp-proposed"):
                verdict = lambda r: "MET" if r >= TARGET_RATIO else "MISSED"  # noqa: E731
                target = f"wall {verdict(e['ratio_vs_sha256sum'])}, cpu {verdict(e['cpu_ratio_vs_sha256sum'])}"
            peer = f"{PEER[m]:.0f} MB/s" if m in PEER else ""
            rng = f"{min(ratios):.2f}..{max(ratios):.2f}"
            crng = f"{min(cratios):.2f}..{max(cratios):.2f}"
            print(f"{k:<12} {m:<12} {e['median_s']:>7.2f} {e['mb_per_s']:>6.0f} {e['spread'] * 100:>5.0f}% "
                  f"{e['ratio_vs_sha256sum']:>5.2f}x {rng:>11} | {e['cpu_median_s']:>6.2f} {e['cpu_mb_per_s']:>6.0f} "
                  f"{e['cpu_ratio_vs_sha256sum']:>5.2f}x {crng:>11} | {target:<17} {peer}")
    print("\n== cached second call: fingerprint_folder(dir) with the per-file-identity cache (20 calls) ==")
    for k, c in cached.items():
        full = summary[k]["fingerprint"]["median_s"] * 1000
        print(f"  {k:<12} median {c['median_ms']:.2f} ms (min {c['min_ms']:.2f} ms), {full / c['median_ms']:,.0f}x faster than "
              f"a full run; same fingerprint: {c['same_result']}")
    same = {k: digests[(k, "fp-proposed")] == digests[(k, "fingerprint")] for k in folders}
    print("  fp-proposed (BF16 conversion into a reused buffer, hashed via memoryview; benchmark-only monkeypatch of "
          "llmpatch.fingerprint.float32_chunks) gives the same fingerprint: " + ", ".join(f"{k} {v}" for k, v in same.items()))
    spreads = [e["spread"] for per in summary.values() for e in per.values()]
    print(f"\nnoise: run times varied {min(spreads) * 100:.0f}-{max(spreads) * 100:.0f} % (max-min over median) across "
          f"{rounds} rounds; load average {load1[0]:.2f} at start, {load2[0]:.2f} at end (2 cores, shared machine). "
          f"sha256sum and hashlib are single-threaded, as is fingerprint_folder.")

    if args.json:
        doc = {"benchmark": "fingerprint_throughput", "proposed_same_digest": same, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_start": load1[0], "load_avg_end": load2[0]},
               "rounds": rounds, "quick": args.quick, "bytes": sizes, "folders": {k: str(v) for k, v in folders.items()},
               "target_ratio": TARGET_RATIO, "peer_mb_per_s": PEER, "summary": summary, "cached_call": cached,
               "fingerprints": {k: digests[(k, "fingerprint")].to_dict() for k in folders}}
        Path(args.json).write_text(json.dumps(doc, indent=2))
        print(f"wrote {args.json}")
    if args.keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
