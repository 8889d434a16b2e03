"""Applying and composing patches, on three tiny architectures: the cached-prefix path must
compute what a plain forward over [prefix; prompt] computes, in any batch."""

import numpy as np
import pytest
import torch

from llmpatch.errors import IncompatibleModel
from llmpatch.fingerprint import Fingerprint
from llmpatch.manifest import BaseModelRef
from llmpatch.model import runtime
from llmpatch.model.generation import SamplingConfig, generate
from llmpatch.model.runtime import PatchedModel, check_compatible
from patches import make_patch
from tiny_models import ARCHITECTURES, HIDDEN, tiny_model, tiny_tokenizer

ATOL = 1e-5
PROMPTS = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14], [20]]


@pytest.fixture(params=ARCHITECTURES)
def patched(request):
    return PatchedModel(tiny_model(request.param), tiny_tokenizer())


def patch(name, n, seed, **kw):
    return make_patch(name=name, n=n, hidden=HIDDEN, seed=seed, **kw)


def reference_logits(model, prompt, patch_set):
    """Plain forward: prefix embeddings and token embeddings concatenated, no cache."""
    tokens = model.get_input_embeddings()(torch.tensor(prompt))
    prefix = torch.cat([torch.from_numpy(p.prefix.copy()) for p in patch_set]) if patch_set else tokens[:0]
    with torch.no_grad():
        out = model(inputs_embeds=torch.cat([prefix, tokens])[None])
    return out.logits[0, prefix.shape[0]:]


def test_cached_prefix_matches_plain_forward(patched):
    a, b = patch("a", 5, 1), patch("b", 3, 2)
    for patch_set in ([], [a], [a, b]):
        ours = patched.logits([PROMPTS[0]], [patch_set])[0]
        torch.testing.assert_close(ours, reference_logits(patched.model, PROMPTS[0], patch_set), atol=ATOL, rtol=0)


def test_composition_equals_one_patch_holding_the_concatenation(patched):
    a, b = patch("a", 5, 1), patch("b", 3, 2)
    joined = make_patch(name="ab", n=8, hidden=HIDDEN)
    joined = type(joined)(joined.manifest, np.concatenate([a.prefix, b.prefix]), joined.sha256, joined.size)
    composed = patched.logits([PROMPTS[0]], [[a, b]])[0]
    single = patched.logits([PROMPTS[0]], [[joined]])[0]
    torch.testing.assert_close(composed, single, atol=ATOL, rtol=0)
    reversed_order = patched.logits([PROMPTS[0]], [[b, a]])[0]
    assert (composed - reversed_order).abs().max() > 1e-6, "order of composition must matter"


def test_mixed_batch_rows_match_each_row_alone(patched):
    a, b = patch("a", 5, 1), patch("b", 3, 2)
    sets = [[a], [a, b], [], [b]]
    batch = patched.logits(PROMPTS, sets)
    for prompt, patch_set, row in zip(PROMPTS, sets, batch):
        alone = patched.logits([prompt], [patch_set])[0]
        torch.testing.assert_close(row, alone, atol=ATOL, rtol=0)
        torch.testing.assert_close(row, reference_logits(patched.model, prompt, patch_set), atol=ATOL, rtol=0)


def test_mixed_batch_generation_matches_rows_alone(patched):
    a, b = patch("a", 5, 1), patch("b", 3, 2)
    sets = [[a], [a, b], [], [b]]
    cfg = SamplingConfig(max_new_tokens=8)
    together = [g.token_ids for g in generate(patched, PROMPTS, sets, cfg)]
    alone = [generate(patched, [p], [s], cfg)[0].token_ids for p, s in zip(PROMPTS, sets)]
    assert together == alone
    assert sum(len(ids) for ids in together) > 0


def test_patch_changes_the_logits(patched):
    with_patch = patched.logits([PROMPTS[0]], [[patch("a", 5, 1)]])[0]
    without = patched.logits([PROMPTS[0]], [[]])[0]
    assert (with_patch - without).abs().max() > 1e-6


def test_seeded_sampling_is_reproducible(patched):
    cfg = SamplingConfig(max_new_tokens=8, do_sample=True, temperature=1.5, top_k=20, top_p=0.9, seed=7)
    a = patch("a", 5, 1)
    first = generate(patched, PROMPTS, [[a]] * 4, cfg)
    second = generate(patched, PROMPTS, [[a]] * 4, cfg)
    assert [g.token_ids for g in first] == [g.token_ids for g in second]


def test_prefix_keys_values_are_computed_once_per_patch_set(patched, monkeypatch):
    a = patch("a", 5, 1)
    patched.logits([PROMPTS[0]], [[a]])

    def must_not_run(*args, **kwargs):
        raise AssertionError("prefix recomputed")

    monkeypatch.setattr(runtime, "prefix_embeddings", must_not_run)
    patched.logits([PROMPTS[1]], [[a]])
    with pytest.raises(AssertionError, match="prefix recomputed"):
        patched.logits([PROMPTS[1]], [[patch("b", 3, 2)]])


def test_generation_stops_at_end_of_sequence():
    patched = PatchedModel(tiny_model("llama"), tiny_tokenizer())
    cfg = SamplingConfig(max_new_tokens=6)
    free = generate(patched, [[5, 6]], [[]], cfg)[0]
    assert len(free.token_ids) == 6 and not free.finished
    patched.model.generation_config.eos_token_id = free.token_ids[2]  # stop at the third token
    stopped = generate(patched, [[5, 6]], [[]], cfg)[0]
    assert stopped.finished
    assert stopped.token_ids == free.token_ids[: free.token_ids.index(free.token_ids[2])]


ARCH_FP = "sha256:" + "11" * 32
WEIGHTS_FP = "sha256:" + "22" * 32
MODEL_FP = Fingerprint(ARCH_FP, WEIGHTS_FP)


def test_compatible_patch_passes():
    check_compatible(make_patch(hidden=8, base=BaseModelRef(ARCH_FP, WEIGHTS_FP, "tiny")), MODEL_FP, 8)


def test_other_architecture_is_refused_naming_both():
    other = "sha256:" + "33" * 32
    p = make_patch(hidden=8, base=BaseModelRef(other, WEIGHTS_FP, "big-model"))
    with pytest.raises(IncompatibleModel, match=r"built for architecture sha256:333333333333 \(big-model\), but this model is sha256:111111111111"):
        check_compatible(p, MODEL_FP, 8)


def test_other_weights_are_refused_unless_forced():
    other = "sha256:" + "44" * 32
    p = make_patch(hidden=8, base=BaseModelRef(ARCH_FP, other, "fine-tune"))
    with pytest.raises(IncompatibleModel, match=r"built for weights sha256:444444444444 .*same architecture, different weights"):
        check_compatible(p, MODEL_FP, 8)
    check_compatible(p, MODEL_FP, 8, force=True)


def test_hidden_size_mismatch_is_refused_even_when_forced():
    p = make_patch(hidden=8, base=BaseModelRef(ARCH_FP, WEIGHTS_FP))
    with pytest.raises(IncompatibleModel, match="has hidden size 8, the model has 16"):
        check_compatible(p, MODEL_FP, 16, force=True)


def test_reserved_kv_buffers_generate_the_same_tokens_as_a_growing_cache(patched, monkeypatch):
    from llmpatch.model import generation

    a, b = patch("a", 5, 1), patch("b", 3, 2)
    sets = [[a], [a, b], [], [b]]
    cfg = SamplingConfig(max_new_tokens=12, do_sample=True, seed=3)
    reserved = [g.token_ids for g in generate(patched, PROMPTS, sets, cfg)]
    monkeypatch.setattr(generation, "reserve", lambda cache, extra: None)
    growing = [g.token_ids for g in generate(patched, PROMPTS, sets, cfg)]
    assert reserved == growing and sum(map(len, reserved)) > 0


def test_reserved_layer_falls_back_to_growing_when_out_of_room():
    from llmpatch.model.kv_buffers import ReservedLayer

    keys, values = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 4, 8)
    layer = ReservedLayer(keys, values, extra=1)
    new = [(torch.randn(2, 3, 1, 8), torch.randn(2, 3, 1, 8)) for _ in range(3)]
    for k, v in new:
        out_k, out_v = layer.update(k, v)
    torch.testing.assert_close(out_k, torch.cat([keys] + [k for k, _ in new], dim=2))
    torch.testing.assert_close(out_v, torch.cat([values] + [v for _, v in new], dim=2))
    assert layer.get_seq_length() == 7
