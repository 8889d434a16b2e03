"""The strict validator: every rejection names what is wrong, and valid files round-trip."""

import json
import math
import pickle
import struct

import numpy as np
import pytest
from safetensors.numpy import load as safetensors_load

from llmpatch.errors import InvalidManifest, InvalidPatchFile
from llmpatch.patchfile import (
    MAX_HEADER_BYTES,
    PatchFile,
    count_nonfinite,
    encode_patch,
    read_patch,
    read_patch_bytes,
    write_patch,
)
from patches import make_manifest, make_patch_bytes


def rebuild(data: bytes, mutate) -> bytes:
    """Decode a patch's header, let `mutate(header, payload)` change it, re-encode."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    payload = data[8 + length :]
    payload = mutate(header, payload) or payload
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + payload


def set_manifest(**changes):
    def mutate(header, payload):
        manifest = json.loads(header["__metadata__"]["manifest"])
        manifest.update(changes)
        header["__metadata__"]["manifest"] = json.dumps(manifest)
    return mutate


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
def test_round_trip_in_each_dtype(dtype, rng):
    prefix = rng.standard_normal((4, 8)).astype(np.float32)
    data = encode_patch(make_manifest(dtype=dtype), prefix)
    patch = read_patch_bytes(data)
    assert patch.manifest.dtype == dtype
    assert patch.prefix.shape == (4, 8) and patch.prefix.dtype == np.float32
    tolerance = {"F32": 0, "F16": 1e-3, "BF16": 1e-2}[dtype]
    np.testing.assert_allclose(patch.prefix, prefix, rtol=tolerance, atol=tolerance)


def test_file_is_plain_safetensors_readable_by_the_library():
    data = make_patch_bytes()
    tensors = safetensors_load(data)
    assert list(tensors) == ["prefix"] and tensors["prefix"].shape == (4, 8)


def test_same_input_gives_same_bytes():
    assert make_patch_bytes(seed=3) == make_patch_bytes(seed=3)


def test_write_is_atomic_and_readable(tmp_path, rng):
    path = tmp_path / "p.safetensors"
    written = write_patch(path, make_manifest(), rng.standard_normal((4, 8)))
    assert read_patch(path).sha256 == written.sha256
    assert [p.name for p in tmp_path.iterdir()] == ["p.safetensors"]


def test_rejects_header_length_overflow():
    data = struct.pack("<Q", 2**63) + b"{}"
    with pytest.raises(InvalidPatchFile, match=f"claims {2**63} bytes; the limit is {MAX_HEADER_BYTES}"):
        read_patch_bytes(data)


def test_rejects_header_longer_than_file():
    data = struct.pack("<Q", 500) + b"{}"
    with pytest.raises(InvalidPatchFile, match="header claims 500 bytes but the file has only 2"):
        read_patch_bytes(data)


def test_rejects_huge_header_within_the_file():
    raw = b'{"x": "' + b"a" * (MAX_HEADER_BYTES + 10) + b'"}'
    with pytest.raises(InvalidPatchFile, match="the limit is"):
        read_patch_bytes(struct.pack("<Q", len(raw)) + raw)


def test_rejects_too_short_file():
    with pytest.raises(InvalidPatchFile, match="too short"):
        read_patch_bytes(b"abc")


def test_rejects_oversized_file(monkeypatch):
    monkeypatch.setattr("llmpatch.patchfile.MAX_FILE_BYTES", 100)
    with pytest.raises(InvalidPatchFile, match="the limit for a patch is 100"):
        read_patch_bytes(make_patch_bytes())


def test_rejects_pickle_renamed():
    data = pickle.dumps({"prefix": [1.0, 2.0]}, protocol=4)
    with pytest.raises(InvalidPatchFile, match="pickle"):
        read_patch_bytes(data)


def test_rejects_non_utf8_header():
    raw = b"\xff\xfe{}"
    with pytest.raises(InvalidPatchFile, match="not UTF-8"):
        read_patch_bytes(struct.pack("<Q", len(raw)) + raw)


def test_rejects_duplicate_json_keys():
    raw = b'{"prefix": {}, "prefix": {}}'
    with pytest.raises(InvalidPatchFile, match="duplicate keys: prefix"):
        read_patch_bytes(struct.pack("<Q", len(raw)) + raw)


def test_rejects_offsets_out_of_range():
    def mutate(header, payload):
        header["prefix"]["data_offsets"] = [0, 10_000]
    with pytest.raises(InvalidPatchFile, match=r"data_offsets \[0, 10000\] do not match shape \[4, 8\] of F32 \(128 bytes\)"):
        read_patch_bytes(rebuild(make_patch_bytes(), mutate))


def test_rejects_truncated_data():
    data = make_patch_bytes()
    with pytest.raises(InvalidPatchFile, match="tensor data is truncated: header says 128 bytes, file has 120"):
        read_patch_bytes(data[:-8])


def test_rejects_trailing_bytes():
    with pytest.raises(InvalidPatchFile, match="followed by extra bytes"):
        read_patch_bytes(make_patch_bytes() + b"\0" * 8)


def test_rejects_dtype_disagreeing_with_manifest():
    def mutate(header, payload):
        header["prefix"]["dtype"] = "F16"
        header["prefix"]["data_offsets"] = [0, 64]
        return payload[:64]
    with pytest.raises(InvalidPatchFile, match="manifest says dtype F32 but the tensor is F16"):
        read_patch_bytes(rebuild(make_patch_bytes(), mutate))


def test_rejects_shape_disagreeing_with_manifest():
    def mutate(header, payload):
        header["prefix"]["shape"] = [8, 4]
    with pytest.raises(InvalidPatchFile, match="manifest says 4 x 8 but the tensor is 8 x 4"):
        read_patch_bytes(rebuild(make_patch_bytes(), mutate))


def test_rejects_disallowed_dtype():
    def mutate(header, payload):
        header["prefix"]["dtype"] = "I32"
    with pytest.raises(InvalidPatchFile, match="tensor dtype 'I32' is not allowed"):
        read_patch_bytes(rebuild(make_patch_bytes(), mutate))


def test_rejects_extra_tensors():
    def mutate(header, payload):
        header["evil"] = dict(header["prefix"])
    with pytest.raises(InvalidPatchFile, match="exactly one tensor `prefix`; this file holds: evil, prefix"):
        read_patch_bytes(rebuild(make_patch_bytes(), mutate))


def test_rejects_bad_shape_rank():
    def mutate(header, payload):
        header["prefix"]["shape"] = [32]
    with pytest.raises(InvalidPatchFile, match=r"shape \[32\] must be \[n_virtual_tokens, width\]"):
        read_patch_bytes(rebuild(make_patch_bytes(), mutate))


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_rejects_non_finite_values(value):
    def mutate(header, payload):
        values = np.frombuffer(payload, dtype="<f4").copy()
        values[5] = value
        return values.tobytes()
    with pytest.raises(InvalidPatchFile, match="tensor holds 1 NaN or infinite values"):
        read_patch_bytes(rebuild(make_patch_bytes(), mutate))


@pytest.mark.parametrize("dtype", ["F16", "BF16"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_rejects_non_finite_values_in_half_precision(dtype, value):
    def mutate(header, payload):
        values = _decode(payload, dtype).copy()
        values[[1, 6]] = value
        return _encode(values, dtype)
    data = encode_patch(make_manifest(dtype=dtype), np.ones((4, 8), np.float32))
    with pytest.raises(InvalidPatchFile, match="tensor holds 2 NaN or infinite values"):
        read_patch_bytes(rebuild(data, mutate))


# Bit patterns as numpy sees them, to check the byte-level test in `count_nonfinite` against.
def _decode(raw: bytes, dtype: str) -> np.ndarray:
    if dtype == "BF16":
        return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
    return np.frombuffer(raw, {"F32": "<f4", "F16": "<f2"}[dtype])


def _encode(values: np.ndarray, dtype: str) -> bytes:
    if dtype == "BF16":
        return (values.astype("<f4").view(np.uint32) >> 16).astype("<u2").tobytes()
    return values.astype({"F32": "<f4", "F16": "<f2"}[dtype]).tobytes()


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
def test_count_nonfinite_agrees_with_numpy_on_random_bit_patterns(dtype):
    rng = np.random.default_rng(7)
    for size in (0, 1, 3, 1000, 100_000):
        raw = rng.bytes(size * {"F32": 4, "F16": 2, "BF16": 2}[dtype])
        expected = int((~np.isfinite(_decode(raw, dtype))).sum())
        assert count_nonfinite(raw, dtype) == expected, size
    # random bytes rarely hit an all-ones exponent in F32: force many of them
    words = rng.integers(0, 2**32, 50_000, dtype=np.uint64).astype(np.uint32)
    words[::3] |= np.uint32(0x7F800000)
    raw = words.astype("<u4").tobytes()
    if dtype != "F32":
        raw = raw[: len(raw) // 2 * 2]
    assert count_nonfinite(raw, dtype) == int((~np.isfinite(_decode(raw, dtype))).sum()) > 0


# (sign bit, exponent bits, mantissa bits) of each format
_LAYOUT = {"F32": (31, 0x7F800000, 0x007FFFFF), "F16": (15, 0x7C00, 0x03FF), "BF16": (15, 0x7F80, 0x007F)}


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
def test_count_nonfinite_edge_values(dtype):
    sign_bit, exponent, mantissa = _LAYOUT[dtype]
    lowest_exponent = exponent & -exponent  # exponent field == 1
    finite = [
        0, 1, mantissa, lowest_exponent,  # +0, smallest and largest subnormal, smallest normal
        exponent - lowest_exponent | mantissa,  # largest finite
        lowest_exponent * 5 | 123,  # an ordinary value
    ]
    finite += [bits | 1 << sign_bit for bits in finite]  # -0.0 and the negatives
    nonfinite = [exponent, exponent | 1, exponent | mantissa, exponent | mantissa >> 1]  # inf, NaNs (signalling, quiet)
    nonfinite += [bits | 1 << sign_bit for bits in nonfinite]  # -inf, negative NaNs
    width = "<u4" if dtype == "F32" else "<u2"

    def raw(words):
        return np.array(words, dtype=np.uint64).astype(width).tobytes()

    decoded = _decode(raw(finite), dtype)
    assert np.isfinite(decoded).all() and np.signbit(decoded[len(finite) // 2]) and decoded[1] != 0
    assert count_nonfinite(raw(finite), dtype) == 0
    assert not np.isfinite(_decode(raw(nonfinite), dtype)).any()
    assert count_nonfinite(raw(nonfinite), dtype) == len(nonfinite)
    for i, bits in enumerate(nonfinite):  # each one alone, anywhere among finite values
        assert count_nonfinite(raw(finite[:i] + [bits] + finite[i:]), dtype) == 1, hex(bits)


def test_count_nonfinite_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="not a float dtype"):
        count_nonfinite(b"\0" * 8, "F64")
    with pytest.raises(ValueError, match="not a whole number of F32 values"):
        count_nonfinite(b"\0" * 6, "F32")


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
def test_prefix_is_decoded_on_first_use_read_only_and_frozen(dtype, rng):
    import dataclasses

    data = encode_patch(make_manifest(dtype=dtype), rng.standard_normal((4, 8)).astype(np.float32))
    patch = read_patch_bytes(data)
    assert "_prefix" in vars(patch) and not isinstance(vars(patch)["_prefix"], np.ndarray)  # not decoded yet
    prefix = patch.prefix
    assert patch.prefix is prefix and isinstance(vars(patch)["_prefix"], np.ndarray)
    assert prefix.dtype == np.float32 and prefix.shape == (4, 8) and not prefix.flags.writeable
    np.testing.assert_array_equal(prefix, _decode(data[-4 * 8 * (4 if dtype == "F32" else 2):], dtype).reshape(4, 8))
    with pytest.raises(dataclasses.FrozenInstanceError):
        patch.prefix = prefix
    assert [f.name for f in dataclasses.fields(PatchFile)] == ["manifest", "prefix", "sha256", "size"]
    again = PatchFile(patch.manifest, prefix * 2, patch.sha256, patch.size)  # built from an array, as before
    np.testing.assert_array_equal(again.prefix, prefix * 2)


def test_refuses_to_write_non_finite(rng):
    prefix = rng.standard_normal((4, 8)).astype(np.float32)
    prefix[0, 0] = np.nan
    with pytest.raises(InvalidPatchFile, match="NaN"):
        encode_patch(make_manifest(), prefix)


def test_rejects_missing_metadata():
    def mutate(header, payload):
        del header["__metadata__"]
    with pytest.raises(InvalidPatchFile, match="not an llm-patch file"):
        read_patch_bytes(rebuild(make_patch_bytes(), mutate))


def test_rejects_other_format():
    def mutate(header, payload):
        header["__metadata__"]["format"] = "pt"
    with pytest.raises(InvalidPatchFile, match="metadata `format` is 'pt', expected 'llm-patch'"):
        read_patch_bytes(rebuild(make_patch_bytes(), mutate))


def test_rejects_future_format_version():
    def mutate(header, payload):
        header["__metadata__"]["format_version"] = "3"
    with pytest.raises(InvalidPatchFile, match=r"format version '3' is not supported \(this llm-patch reads 1, 2\)"):
        read_patch_bytes(rebuild(make_patch_bytes(), mutate))


def test_manifest_errors_surface_through_the_file():
    with pytest.raises(InvalidManifest, match="`1.2` is not a semantic version"):
        read_patch_bytes(rebuild(make_patch_bytes(), set_manifest(version="1.2")))


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(InvalidPatchFile, match="no such file"):
        read_patch(tmp_path / "nope.safetensors")
