"""Patches of placement `kv` (keys and values at every layer), on three tiny architectures:
a kv prefix made from an input prefix computes what that input prefix computes, it composes
with input prefixes in either order, and its file and manifest are checked like any patch's."""

import json
import struct

import numpy as np
import pytest
import torch

from llmpatch.errors import IncompatibleModel, InvalidManifest, InvalidPatchFile
from llmpatch.fingerprint import Fingerprint
from llmpatch.manifest import KVLayout, Manifest
from llmpatch.model.generation import SamplingConfig, generate
from llmpatch.model.kv_prefix import flatten_kv, kv_layers, kv_of_input_prefix, model_kv_layout
from llmpatch.model.runtime import PatchedModel, check_compatible
from llmpatch.patchfile import PatchFile, encode_patch, read_patch_bytes
from patches import FAKE_FP, make_manifest, make_patch
from tiny_models import ARCHITECTURES, HIDDEN, tiny_model, tiny_tokenizer

ATOL = 1e-5
PROMPTS = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]


@pytest.fixture(params=ARCHITECTURES)
def patched(request):
    return PatchedModel(tiny_model(request.param), tiny_tokenizer())


def kv_patch(layout: KVLayout, prefix: np.ndarray, name="kv") -> PatchFile:
    manifest = make_manifest(name=name, n=prefix.shape[0], hidden=HIDDEN, placement="kv", kv_layout=layout)
    return read_patch_bytes(encode_patch(manifest, prefix))


def as_kv(patched, input_patch: PatchFile, name="kv") -> PatchFile:
    """The kv patch equivalent to an input patch: its keys and values at positions 0..P-1."""
    flat = kv_of_input_prefix(patched.model, torch.from_numpy(input_patch.prefix.copy()))
    return kv_patch(model_kv_layout(patched.model), flat.numpy(), name)


def test_layout_comes_from_the_models_cache(patched):
    layout = model_kv_layout(patched.model)
    with torch.no_grad():
        out = patched.model(input_ids=torch.tensor([[5, 6, 7]]), use_cache=True)
    layer = out.past_key_values.layers[0]
    assert (len(out.past_key_values.layers), layer.keys.shape[1], layer.keys.shape[3]) == (layout.layers, layout.kv_heads, layout.head_dim)
    flat = torch.randn(3, layout.width)
    torch.testing.assert_close(flatten_kv(kv_layers(flat, layout)), flat, atol=0, rtol=0)


def test_kv_prefix_of_an_input_prefix_computes_the_same(patched):
    a = make_patch(name="a", n=5, hidden=HIDDEN, seed=1)
    kv = as_kv(patched, a)
    assert kv.manifest.format_version == 2 and kv.prefix.shape == (5, model_kv_layout(patched.model).width)
    torch.testing.assert_close(patched.logits(PROMPTS, [[kv]] * 3), patched.logits(PROMPTS, [[a]] * 3), atol=ATOL, rtol=0)
    cfg = SamplingConfig(max_new_tokens=6)
    assert [g.token_ids for g in generate(patched, PROMPTS, [[kv]] * 3, cfg)] == [g.token_ids for g in generate(patched, PROMPTS, [[a]] * 3, cfg)]


def test_an_input_prefix_after_a_kv_prefix_attends_to_it(patched):
    a, b = make_patch(name="a", n=5, hidden=HIDDEN, seed=1), make_patch(name="b", n=3, hidden=HIDDEN, seed=2)
    kv_a = as_kv(patched, a)
    # b runs after a's keys and values, at positions 5..7: as if a were still an input prefix
    torch.testing.assert_close(patched.logits(PROMPTS, [[kv_a, b]] * 3), patched.logits(PROMPTS, [[a, b]] * 3), atol=ATOL, rtol=0)
    # the other order: b's keys and values cannot see a kv prefix that comes after them
    assert (patched.logits([PROMPTS[0]], [[b, kv_a]])[0] - patched.logits([PROMPTS[0]], [[kv_a, b]])[0]).abs().max() > 1e-6


def test_mixed_batch_rows_match_each_row_alone(patched):
    a, b = make_patch(name="a", n=5, hidden=HIDDEN, seed=1), make_patch(name="b", n=3, hidden=HIDDEN, seed=2)
    kv_b = as_kv(patched, b, "kvb")
    sets = [[a, kv_b], [kv_b], []]
    batch = patched.logits(PROMPTS, sets)
    for prompt, patch_set, row in zip(PROMPTS, sets, batch):
        torch.testing.assert_close(row, patched.logits([prompt], [patch_set])[0], atol=ATOL, rtol=0)


def test_a_kv_prefix_changes_the_logits(patched):
    layout = model_kv_layout(patched.model)
    kv = kv_patch(layout, np.random.default_rng(0).standard_normal((4, layout.width)).astype(np.float32))
    assert (patched.logits([PROMPTS[0]], [[kv]])[0] - patched.logits([PROMPTS[0]], [[]])[0]).abs().max() > 1e-3


LAYOUT = KVLayout(layers=2, kv_heads=2, head_dim=8)
FP = Fingerprint(FAKE_FP, FAKE_FP)


def test_other_attention_layout_is_refused_even_when_forced():
    patch = kv_patch(LAYOUT, np.zeros((4, LAYOUT.width), np.float32))
    with pytest.raises(IncompatibleModel, match="2 layers x 2 KV heads x 8, the model's attention is 2 layers x 1 KV heads x 8"):
        check_compatible(patch, FP, HIDDEN, force=True, kv_layout=KVLayout(2, 1, 8))
    check_compatible(patch, FP, HIDDEN, kv_layout=LAYOUT)


def test_input_patches_stay_format_1_byte_for_byte():
    data = make_manifest(hidden=8).to_dict()
    assert data["format_version"] == 1 and "placement" not in data and "kv_layout" not in data
    kv = make_manifest(hidden=8, placement="kv", kv_layout=LAYOUT)
    assert kv.to_dict()["format_version"] == 2 and kv.to_dict()["kv_layout"] == {"layers": 2, "kv_heads": 2, "head_dim": 8}
    assert Manifest.from_json(kv.to_json()) == kv


@pytest.mark.parametrize("change, message", [
    ({"placement": "deep"}, "placement 'deep' is not one of input, kv"),
    ({"kv_layout": None}, "needs `kv_layout`"),
    ({"kv_layout": {"layers": 2, "kv_heads": 2}}, "needs `kv_layout`"),
    ({"kv_layout": {"layers": 0, "kv_heads": 2, "head_dim": 8}}, "`layers` must be an integer from 1"),
    ({"kv_layout": {"layers": 4096, "kv_heads": 64, "head_dim": 256}}, "floats per virtual token; the limit is"),
    ({"format_version": 1}, "placement 'kv' patch has format_version 2, not 1"),
    ({"format_version": 3}, "format_version 3 is not supported"),
    ({"placement": "input"}, "placement 'input' patch has format_version 1, not 2"),
])
def test_bad_kv_manifests_are_refused(change, message):
    data = make_manifest(hidden=8, placement="kv", kv_layout=LAYOUT).to_dict() | change
    with pytest.raises(InvalidManifest, match=message):
        Manifest.from_dict(data)


def test_input_manifest_with_a_layout_is_refused():
    with pytest.raises(InvalidManifest, match="`kv_layout` belongs to placement `kv` patches only"):
        Manifest.from_dict(make_manifest(hidden=8).to_dict() | {"kv_layout": {"layers": 2, "kv_heads": 2, "head_dim": 8}})


def rewrite_header(data: bytes, edit) -> bytes:
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    edit(header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data[8 + length :]


def test_kv_file_checks_its_tensor_against_the_layout():
    good = encode_patch(make_manifest(n=4, hidden=8, placement="kv", kv_layout=LAYOUT), np.zeros((4, LAYOUT.width), np.float32))
    assert read_patch_bytes(good).manifest.prefix_width == 64
    with pytest.raises(InvalidManifest, match=r"prefix shape \[4, 8\] does not match the manifest's 4 x 64"):
        encode_patch(make_manifest(n=4, hidden=8, placement="kv", kv_layout=LAYOUT), np.zeros((4, 8), np.float32))

    def claim_format_1(header):
        header["__metadata__"]["format_version"] = "1"

    with pytest.raises(InvalidPatchFile, match="file says format version 1 but its manifest says 2"):
        read_patch_bytes(rewrite_header(good, claim_format_1))

    def claim_other_layout(header):
        manifest = json.loads(header["__metadata__"]["manifest"])
        manifest["kv_layout"]["kv_heads"] = 1
        header["__metadata__"]["manifest"] = json.dumps(manifest)

    with pytest.raises(InvalidPatchFile, match="manifest says 4 x 32 but the tensor is 4 x 64"):
        read_patch_bytes(rewrite_header(good, claim_other_layout))
