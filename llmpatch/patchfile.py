"""The patch file: one safetensors file holding the prefix tensor `prefix`
[n_virtual_tokens, width] (width: the hidden size, or layers x 2 x kv heads x head dim for a
`kv` patch) and the manifest as string metadata. Nothing pickled.

`read_patch` is the strict validator every side uses (trainer output, registry upload,
client install). It parses the safetensors header itself, before handing anything to a
library, so that hostile files are refused with a message that names the problem and the
limit, and never cost more memory than the caps below.

Validation needs no numpy (the finiteness check reads exponent bits from the raw bytes), so
`patch install` does not pay for importing it; `PatchFile.prefix` is decoded to a float32
array on first access.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InvalidManifest, InvalidPatchFile
from .manifest import FORMAT_NAME, SUPPORTED_FORMAT_VERSIONS, Manifest, strict_json_loads
from .paths import atomic_write_bytes

if TYPE_CHECKING:
    import numpy as np

TENSOR_NAME = "prefix"
FILE_SUFFIX = ".safetensors"

# Limits; a 4096-token prefix for a 16k-wide model in F32 is 256 MiB, far beyond real patches.
MAX_HEADER_BYTES = 1024 * 1024  # the JSON header, manifest included
MAX_FILE_BYTES = 256 * 1024 * 1024

_ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2}

# Byte -> 1/0 tables for `count_nonfinite`: is this byte's part of the exponent all ones?
_F16_EXPONENT = bytes(int(b & 0x7C == 0x7C) for b in range(256))  # high byte: sign, 5 exponent bits, 2 mantissa
_HIGH_EXPONENT = bytes(int(b & 0x7F == 0x7F) for b in range(256))  # F32/BF16 top byte: sign, 7 exponent bits
_LOW_EXPONENT = bytes(int(b & 0x80 == 0x80) for b in range(256))  # next byte: last exponent bit, 7 mantissa


def count_nonfinite(payload: bytes, dtype: str) -> int:
    """How many values of a little-endian F32, F16 or BF16 buffer are NaN or +-inf: those whose
    exponent bits are all ones (F32 and BF16: bits 23-30 / 7-14, F16: bits 10-14). Works on
    the raw bytes with C-speed slicing and `bytes.translate`, so it needs no numpy."""
    if dtype not in _ITEMSIZE:
        raise ValueError(f"not a float dtype of a patch: {dtype!r}")
    step = _ITEMSIZE[dtype]
    if len(payload) % step:
        raise ValueError(f"{len(payload)} bytes is not a whole number of {dtype} values")
    payload = bytes(payload)
    if dtype == "F16":
        return payload[1::2].translate(_F16_EXPONENT).count(1)
    high = payload[step - 1 :: step].translate(_HIGH_EXPONENT)
    if 1 not in high:
        return 0
    low = payload[step - 2 :: step].translate(_LOW_EXPONENT)
    # one byte per value, each 0 or 1: AND the two flag strings as integers and count the bits
    return (int.from_bytes(high, "little") & int.from_bytes(low, "little")).bit_count()


class _Prefix:
    """`PatchFile.prefix`: stored as given (an array), or as the validated raw bytes, which are
    decoded to a read-only float32 array (with numpy) on first access."""

    def __set_name__(self, owner, name):
        self.slot = "_" + name

    def __get__(self, instance, owner=None):
        if instance is None:
            raise AttributeError("prefix")  # so the dataclass sees a field without a default
        value = instance.__dict__[self.slot]
        if isinstance(value, _RawPrefix):
            value = _decode_prefix(value.payload, value.dtype, value.shape)
            value.setflags(write=False)
            instance.__dict__[self.slot] = value
        return value

    def __set__(self, instance, value):
        instance.__dict__[self.slot] = value


@dataclass(frozen=True)
class _RawPrefix:
    payload: bytes
    dtype: str
    shape: list[int]


@dataclass(frozen=True)
class PatchFile:
    """A validated patch: its manifest, the prefix as float32 and the exact bytes' identity."""

    manifest: Manifest
    prefix: np.ndarray = _Prefix()  # float32 [n_virtual_tokens, hidden_size], read-only
    sha256: str  # hex digest of the whole file
    size: int

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha256}"


def _parse_header(data: bytes) -> tuple[dict, int]:
    if len(data) < 8:
        raise InvalidPatchFile(f"file is {len(data)} bytes: too short to be a safetensors file")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > MAX_HEADER_BYTES:
        raise InvalidPatchFile(
            f"safetensors header claims {header_len} bytes; the limit is {MAX_HEADER_BYTES}",
            hint="this is not a patch file, or it was made to exhaust memory",
        )
    if 8 + header_len > len(data):
        raise InvalidPatchFile(f"safetensors header claims {header_len} bytes but the file has only {len(data) - 8} after the length")
    raw = data[8 : 8 + header_len]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPatchFile("safetensors header is not UTF-8 (is this a pickle or another format?)") from None
    try:
        header = strict_json_loads(text.rstrip(" "), "safetensors header")
    except InvalidManifest as exc:
        raise InvalidPatchFile(str(exc)) from None
    if not isinstance(header, dict):
        raise InvalidPatchFile("safetensors header must be a JSON object")
    return header, 8 + header_len


def _decode_prefix(buffer: bytes, dtype: str, shape: list[int]) -> np.ndarray:
    import numpy as np

    if dtype == "F32":
        array = np.frombuffer(buffer, dtype="<f4")
    elif dtype == "F16":
        array = np.frombuffer(buffer, dtype="<f2").astype(np.float32)
    else:  # BF16: the upper half of a float32
        array = (np.frombuffer(buffer, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    return array.reshape(shape)


def read_patch_bytes(data: bytes) -> PatchFile:
    """Validate a patch file's bytes and return its content; raise `InvalidPatchFile` otherwise."""
    if len(data) > MAX_FILE_BYTES:
        raise InvalidPatchFile(f"file is {len(data)} bytes; the limit for a patch is {MAX_FILE_BYTES}")
    # A header of 640 or 1152 bytes also starts with `\x80\x02` / `\x80\x04`; call it pickle only
    # when the length prefix is not a plausible safetensors header.
    plausible = len(data) >= 8 and 8 + struct.unpack("<Q", data[:8])[0] <= min(len(data), MAX_HEADER_BYTES + 8)
    if not plausible and (data[:2] == b"\x80\x04" or data[:2] == b"\x80\x02" or data[:4] == b"PK\x03\x04"):
        raise InvalidPatchFile(
            "file is a pickle or a torch zip archive, not safetensors; llm-patch never loads pickle",
            hint="convert the tensor to safetensors, e.g. with `patch import-peft` for PEFT adapters",
        )
    header, data_start = _parse_header(data)
    metadata = header.pop("__metadata__", None)
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise InvalidPatchFile("safetensors `__metadata__` is missing or not a map of strings; this is not an llm-patch file")
    if metadata.get("format") != FORMAT_NAME:
        raise InvalidPatchFile(f"metadata `format` is {metadata.get('format')!r}, expected {FORMAT_NAME!r}; this is not an llm-patch file")
    if metadata.get("format_version") not in {str(v) for v in SUPPORTED_FORMAT_VERSIONS}:
        raise InvalidPatchFile(
            f"patch format version {metadata.get('format_version')!r} is not supported"
            f" (this llm-patch reads {', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))})",
            hint="upgrade llm-patch",
        )
    if "manifest" not in metadata:
        raise InvalidPatchFile("metadata has no `manifest`")
    manifest = Manifest.from_json(metadata["manifest"])

    if set(header) != {TENSOR_NAME}:
        names = ", ".join(sorted(header)) or "none"
        raise InvalidPatchFile(f"a patch holds exactly one tensor `{TENSOR_NAME}`; this file holds: {names[:200]}")
    info = header[TENSOR_NAME]
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise InvalidPatchFile(f"tensor `{TENSOR_NAME}` entry must have exactly dtype, shape and data_offsets")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in _ITEMSIZE:
        raise InvalidPatchFile(f"tensor dtype {dtype!r} is not allowed; use one of {', '.join(_ITEMSIZE)}")
    if not (isinstance(shape, list) and len(shape) == 2 and all(type(d) is int and d > 0 for d in shape)):
        raise InvalidPatchFile(f"tensor shape {shape!r} must be [n_virtual_tokens, width] with positive sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
        raise InvalidPatchFile(f"tensor data_offsets {offsets!r} must be two integers")
    expected_bytes = shape[0] * shape[1] * _ITEMSIZE[dtype]
    begin, end = offsets
    available = len(data) - data_start
    if begin != 0 or end != expected_bytes:
        raise InvalidPatchFile(
            f"tensor data_offsets {offsets} do not match shape {shape} of {dtype} ({expected_bytes} bytes)"
        )
    if end != available:
        what = "truncated" if end > available else "followed by extra bytes"
        raise InvalidPatchFile(f"tensor data is {what}: header says {end} bytes, file has {available}")

    if metadata["format_version"] != str(manifest.format_version):
        raise InvalidPatchFile(
            f"file says format version {metadata['format_version']} but its manifest says {manifest.format_version}"
        )
    if [manifest.n_virtual_tokens, manifest.prefix_width] != shape:
        raise InvalidPatchFile(
            f"manifest says {manifest.n_virtual_tokens} x {manifest.prefix_width} but the tensor is {shape[0]} x {shape[1]}"
        )
    if manifest.dtype != dtype:
        raise InvalidPatchFile(f"manifest says dtype {manifest.dtype} but the tensor is {dtype}")

    payload = data[data_start:]
    bad = count_nonfinite(payload, dtype)
    if bad:
        raise InvalidPatchFile(f"tensor holds {bad} NaN or infinite values")
    prefix = _RawPrefix(payload, dtype, shape)  # decoded on first use of `.prefix`
    return PatchFile(manifest=manifest, prefix=prefix, sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def read_patch(path: str | Path) -> PatchFile:
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InvalidPatchFile(f"no such file: `{path}`") from None
    if size > MAX_FILE_BYTES:
        raise InvalidPatchFile(f"`{path}` is {size} bytes; the limit for a patch is {MAX_FILE_BYTES}")
    return read_patch_bytes(path.read_bytes())


def encode_patch(manifest: Manifest, prefix) -> bytes:
    """Serialise a prefix (numpy array or torch tensor) with its manifest, as safetensors."""
    import numpy as np

    array = _to_float32_numpy(prefix)
    if list(array.shape) != [manifest.n_virtual_tokens, manifest.prefix_width]:
        raise InvalidManifest(
            f"prefix shape {list(array.shape)} does not match the manifest's {manifest.n_virtual_tokens} x {manifest.prefix_width}"
        )
    if not np.isfinite(array).all():
        raise InvalidPatchFile("prefix holds NaN or infinite values; refusing to write it")
    if manifest.dtype == "F32":
        payload = np.ascontiguousarray(array, dtype="<f4").tobytes()
    elif manifest.dtype == "F16":
        payload = np.ascontiguousarray(array, dtype="<f2").tobytes()
    else:  # BF16 by round-to-nearest-even on the float32 bits
        bits = np.ascontiguousarray(array, dtype="<f4").view(np.uint32).astype(np.uint64)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        payload = rounded.astype("<u2").tobytes()
    header = {
        "__metadata__": {"format": FORMAT_NAME, "format_version": str(manifest.format_version), "manifest": manifest.to_json()},
        TENSOR_NAME: {"dtype": manifest.dtype, "shape": list(array.shape), "data_offsets": [0, len(payload)]},
    }
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)  # safetensors aligns the data to 8 bytes
    if len(header_bytes) > MAX_HEADER_BYTES:
        raise InvalidManifest(f"manifest makes the header {len(header_bytes)} bytes; the limit is {MAX_HEADER_BYTES}")
    data = struct.pack("<Q", len(header_bytes)) + header_bytes + payload
    read_patch_bytes(data)  # what we write must pass our own validator
    return data


def write_patch(path: str | Path, manifest: Manifest, prefix) -> PatchFile:
    data = encode_patch(manifest, prefix)
    atomic_write_bytes(Path(path), data)
    return read_patch_bytes(data)


def _to_float32_numpy(prefix) -> np.ndarray:
    import numpy as np

    if hasattr(prefix, "detach"):  # a torch tensor; imported lazily by whoever made it
        prefix = prefix.detach().to("cpu").float().numpy()
    return np.asarray(prefix, dtype=np.float32)
