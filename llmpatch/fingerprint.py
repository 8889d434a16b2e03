"""Base-model fingerprints, at two levels.

- architecture: structural config keys, tensor names and shapes (floating dtypes count as one
  kind, so storage precision does not matter) and the tokenizer vocabulary. Read from the
  headers alone, without touching the weights.
- weights: sha256 over every tensor, in name order, converted to little-endian float32. The
  same values give the same digest whether they were stored as BF16, F32 or dequantised from
  GGUF; one changed weight changes it.

When `tie_word_embeddings` is set, `lm_head.weight` is the embedding matrix again and is left
out (checkpoints differ on whether they store it). Digests of a folder are cached per file
identity (path, size, mtime), so asking twice about a multi-GB model costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from . import paths
from .errors import ModelLoadError
from .manifest import canonical_json

WEIGHTS_DOMAIN = b"llm-patch-weights/1\n"
ARCHITECTURE_DOMAIN = "llm-patch-architecture/1"
CHUNK_BYTES = 16 * 1024 * 1024  # read and converted in pieces to keep memory flat

FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}

# Config keys that change what a prefix means to the model; the rest (token ids, dropout,
# library versions, dtype) can differ between two copies of the same network.
STRUCTURAL_CONFIG_KEYS = (
    "model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings", "rope_parameters",
    "rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon", "hidden_act", "hidden_activation",
    "tie_word_embeddings", "sliding_window", "n_embd", "n_layer", "n_head", "n_positions", "n_inner",
    "activation_function", "attention_bias", "mlp_bias", "query_pre_attn_scalar",
    "final_logit_softcapping", "attn_logit_softcapping",
)


@dataclass(frozen=True)
class Fingerprint:
    architecture: str
    weights: str

    def to_dict(self) -> dict:
        return {"architecture": self.architecture, "weights": self.weights}


@dataclass(frozen=True)
class TensorRecord:
    name: str
    dtype: str  # safetensors spelling: F32, BF16, I64, ...
    shape: tuple[int, ...]


# ---------------------------------------------------------------- canonical forms

def _round_floats(value):
    if isinstance(value, float):
        return float(f"{value:.6g}")  # GGUF stores eps as float32: 9.9999997e-06 == 1e-05
    if isinstance(value, dict):
        return {k: _round_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round_floats(v) for v in value]
    return value


def structural_config(config: dict) -> dict:
    config = dict(config)
    if "rope_theta" in config and "rope_parameters" not in config:  # transformers < 5 layout
        scaling = config.get("rope_scaling") or {}
        config["rope_parameters"] = {
            "rope_theta": config["rope_theta"],
            "rope_type": scaling.get("rope_type", scaling.get("type", "default")),
        }
    return _round_floats({k: config[k] for k in STRUCTURAL_CONFIG_KEYS if config.get(k) is not None})


def skipped_tensor(name: str, config: dict) -> bool:
    return bool(config.get("tie_word_embeddings")) and name.endswith("lm_head.weight")


def vocabulary_digest(vocab: dict[str, int]) -> str:
    """sha256 over `id<TAB>token` lines in id order."""
    h = hashlib.sha256()
    for token, index in sorted(vocab.items(), key=lambda item: item[1]):
        h.update(f"{index}\t{token}\n".encode("utf-8", "surrogatepass"))
    return "sha256:" + h.hexdigest()


def architecture_digest(config: dict, tensors: Iterable[TensorRecord], vocab_digest: str) -> str:
    layout = sorted(
        [t.name, "float" if t.dtype in FLOAT_DTYPES else t.dtype, list(t.shape)]
        for t in tensors
        if not skipped_tensor(t.name, config)
    )
    document = {"format": ARCHITECTURE_DOMAIN, "config": structural_config(config), "tensors": layout, "vocabulary": vocab_digest}
    return "sha256:" + hashlib.sha256(canonical_json(document).encode()).hexdigest()


class WeightsHasher:
    """Feed tensors in any order as (record, canonical-bytes chunks); sorted by the caller."""

    def __init__(self):
        self._hash = hashlib.sha256(WEIGHTS_DOMAIN)

    def add(self, record: TensorRecord, chunks: Iterable[bytes | memoryview]) -> None:
        kind = "F32" if record.dtype in FLOAT_DTYPES else record.dtype
        self._hash.update(f"{record.name}\t{kind}\t{list(record.shape)}\n".encode())
        for chunk in chunks:
            self._hash.update(chunk)

    def hexdigest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


def float32_chunks(raw_chunks: Iterable[bytes], dtype: str) -> Iterator[bytes | memoryview]:
    """Canonical little-endian float32 bytes of a stored tensor, chunk by chunk. Each chunk
    is hashed before the next is made, so BF16 reuses one buffer."""
    if dtype == "F32":
        yield from raw_chunks
        return
    import numpy as np  # only for conversions: F32 folders and cached fingerprints never load it

    if dtype == "BF16":
        # A BF16 value is the upper half of a float32: write the halves into the odd u16
        # slots of a zeroed buffer (little-endian), no temporary copies.
        buffer = np.zeros(0, dtype="<u2")
        for chunk in raw_chunks:
            halves = np.frombuffer(chunk, dtype="<u2")
            if buffer.size < 2 * halves.size:
                buffer = np.zeros(2 * halves.size, dtype="<u2")
            out = buffer[: 2 * halves.size]
            out[1::2] = halves
            yield memoryview(out).cast("B")
        return
    source = {"F16": "<f2", "F64": "<f8"}.get(dtype)
    if source is None:
        raise ModelLoadError(f"cannot fingerprint tensors of dtype {dtype}")
    for chunk in raw_chunks:
        yield np.frombuffer(chunk, dtype=source).astype("<f4").tobytes()


def _file_chunks(handle, start: int, end: int) -> Iterator[bytes]:
    handle.seek(start)
    remaining = end - start
    while remaining > 0:
        chunk = handle.read(min(CHUNK_BYTES, remaining))
        if not chunk:
            raise ModelLoadError(f"`{handle.name}` is truncated")
        remaining -= len(chunk)
        yield chunk


# ---------------------------------------------------------------- safetensors folders

def _read_safetensors_header(path: Path) -> tuple[dict, int]:
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise ModelLoadError(f"`{path}` is not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", head)
        if length > 100 * 1024 * 1024:
            raise ModelLoadError(f"`{path}` claims a {length}-byte header; refusing to read it")
        header = json.loads(handle.read(length))
    header.pop("__metadata__", None)
    return header, 8 + length


def model_files(model_dir: Path) -> list[Path]:
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        pickled = sorted(p.name for p in model_dir.glob("*.bin")) + sorted(p.name for p in model_dir.glob("*.pt"))
        if pickled:
            raise ModelLoadError(
                f"`{model_dir}` holds only pickled weights ({', '.join(pickled[:3])}); llm-patch never loads pickle",
                hint="convert the model to safetensors first (e.g. `save_pretrained(..., safe_serialization=True)`)",
            )
        raise ModelLoadError(f"no *.safetensors weights in `{model_dir}`")
    return files


def read_vocabulary(model_dir: Path) -> dict[str, int]:
    """The token -> id map from `tokenizer.json` (fast tokenizers) or `vocab.json`."""
    tokenizer_json = model_dir / "tokenizer.json"
    if tokenizer_json.exists():
        data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
        model = data.get("model", {})
        raw = model.get("vocab", {})
        vocab = dict(raw) if isinstance(raw, dict) else {entry[0]: i for i, entry in enumerate(raw)}
        for added in data.get("added_tokens", []):
            vocab[added["content"]] = added["id"]
        return vocab
    vocab_json = model_dir / "vocab.json"
    if vocab_json.exists():
        return json.loads(vocab_json.read_text(encoding="utf-8"))
    raise ModelLoadError(f"no tokenizer.json or vocab.json in `{model_dir}`; cannot fingerprint its tokenizer")


def _file_identity(files: list[Path]) -> str:
    stats = [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    return hashlib.sha256(canonical_json(stats).encode()).hexdigest()


def fingerprint_folder(model_dir: str | Path, *, use_cache: bool = True) -> Fingerprint:
    """Fingerprint a Hugging Face model folder with safetensors weights."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").exists():
        raise ModelLoadError(f"`{model_dir}` has no config.json; is it a Hugging Face model folder?")
    weights = model_files(model_dir)
    identity_files = [model_dir / "config.json", *weights]
    identity_files += [p for p in (model_dir / "tokenizer.json", model_dir / "vocab.json") if p.exists()]
    cache_file = paths.cache_dir() / "fingerprints" / f"{_file_identity(identity_files)}.json"
    if use_cache and cache_file.exists():
        cached = json.loads(cache_file.read_text())
        return Fingerprint(cached["architecture"], cached["weights"])

    config = json.loads((model_dir / "config.json").read_text())
    headers = []
    for path in weights:
        header, data_start = _read_safetensors_header(path)
        for name, info in header.items():
            headers.append((TensorRecord(name, info["dtype"], tuple(info["shape"])), path, data_start, info["data_offsets"]))
    headers.sort(key=lambda item: item[0].name)
    architecture = architecture_digest(config, [h[0] for h in headers], vocabulary_digest(read_vocabulary(model_dir)))

    hasher = WeightsHasher()
    handles = {}
    try:
        for record, path, data_start, (begin, end) in headers:
            if skipped_tensor(record.name, config):
                continue
            handle = handles.get(path) or handles.setdefault(path, open(path, "rb"))
            raw = _file_chunks(handle, data_start + begin, data_start + end)
            hasher.add(record, float32_chunks(raw, record.dtype) if record.dtype in FLOAT_DTYPES else raw)
    finally:
        for handle in handles.values():
            handle.close()
    result = Fingerprint(architecture, hasher.hexdigest())
    paths.atomic_write_bytes(cache_file, json.dumps(result.to_dict()).encode())
    return result


def short(fingerprint: str) -> str:
    """`sha256:0123456789ab` for messages; full digests go to --json."""
    return fingerprint[:19]
