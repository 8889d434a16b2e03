"""The training loop on a tiny model: only the prefix learns, runs are reproducible and
resumable, and bad data gets a clear error."""

import json

import pytest
import torch

from llmpatch.model.kv_prefix import kv_of_input_prefix
from llmpatch.model.runtime import PatchedModel
from llmpatch.trainer.objectives import Example, Pair, batch_loss, dpo_loss, fill_reference_logprobs, soft_targets, target_logprobs
from llmpatch.trainer.recipes import ReferenceError_, TrainingData, jsonl_reference
from llmpatch.trainer.train import TrainConfig, TrainingError, train
from tiny_models import tiny_model, tiny_tokenizer


def patched_tiny(seed=0):
    return PatchedModel(tiny_model("llama", seed, initializer_range=0.3), tiny_tokenizer())


def toy_data(patched, n=12):
    """Teach: after `w5 w6` say `w40 w41 w42`."""
    examples = [Example([5, 6, 7 + i % 3], [40, 41, 42], "sft", group="g") for i in range(n)]
    held = examples[:2]

    def validate(prefix):
        loss = float(batch_loss(patched.model, prefix, held))
        return {"score": -loss, "loss": loss}

    pairs = [Pair([5, 6, 7], [40, 41, 42], [50, 51, 52])]
    return [TrainingData("harmfulness", False, examples, pairs, validate, {"examples": n})]


def config(**overrides):
    base = dict(domains=("harmfulness",), n_virtual_tokens=4, init_text="w10 w11", sft_steps=12, dpo_steps=4,
                batch_size=4, lr=3e-2, dpo_lr=1e-2, eval_every=4, checkpoint_every=4)
    return TrainConfig(**(base | overrides))


def test_only_the_prefix_learns_and_the_loss_falls():
    patched = patched_tiny()
    before = {k: v.clone() for k, v in patched.model.state_dict().items()}
    data = toy_data(patched)
    start = data[0].validate(None)["loss"]  # no prefix at all
    result = train(patched, config(), datasets=data)
    assert all(torch.equal(before[k], v) for k, v in patched.model.state_dict().items()), "base weights changed"
    assert all(p.grad is None for p in patched.model.parameters()), "base weights got gradients"
    assert result.prefix.shape == (4, 32)
    assert result.best["harmfulness"]["loss"] < start * 0.7
    assert [r["stage"] for r in result.history].count("dpo") == 4


def test_runs_are_reproducible():
    a = train(patched_tiny(), config(), datasets=toy_data(patched_tiny()))
    b = train(patched_tiny(), config(), datasets=toy_data(patched_tiny()))
    torch.testing.assert_close(a.prefix, b.prefix, atol=0, rtol=0)


def test_resume_continues_the_same_run(tmp_path):
    full = train(patched_tiny(), config(), datasets=toy_data(patched_tiny()), checkpoint_dir=tmp_path / "full")
    train(patched_tiny(), config(sft_steps=8, dpo_steps=0), datasets=toy_data(patched_tiny()), checkpoint_dir=tmp_path / "part")
    assert json.loads((tmp_path / "part" / "state.json").read_text())["step"] == 8
    # a resumed run must carry the same config: the digest guards against mixing runs
    with pytest.raises(TrainingError, match="another configuration"):
        train(patched_tiny(), config(), datasets=toy_data(patched_tiny()), checkpoint_dir=tmp_path / "part", resume=True)
    resumed = train(patched_tiny(), config(), datasets=toy_data(patched_tiny()), checkpoint_dir=tmp_path / "full", resume=True)
    assert resumed.best_step == full.best_step
    torch.testing.assert_close(resumed.prefix, full.prefix)


def test_resume_without_checkpoint_is_refused(tmp_path):
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(patched_tiny(), config(), datasets=toy_data(patched_tiny()), checkpoint_dir=tmp_path, resume=True)


def test_empty_data_is_refused():
    patched = patched_tiny()
    empty = [TrainingData("harmfulness", False, [], [], lambda p: {"score": 0.0})]
    with pytest.raises(TrainingError, match="produced no training examples"):
        train(patched, config(), datasets=empty)


@pytest.mark.parametrize("bad,message", [
    (dict(domains=("toxic",)), "unknown domain"),
    (dict(batch_size=0), "`batch_size` must be at least 1"),
    (dict(sft_steps=0, dpo_steps=0), "at least one SFT or DPO step"),
    (dict(lr=5.0), "learning rates must be in"),
    (dict(placement="deep"), "`placement` must be one of input, kv"),
])
def test_bad_config_is_refused(bad, message):
    with pytest.raises(TrainingError, match=message):
        config(**bad)


def test_dpo_prefers_chosen_after_training():
    patched = patched_tiny()
    prefix = torch.nn.Parameter(torch.randn(4, 32, generator=torch.Generator().manual_seed(0)))
    pairs = [Pair([5, 6], [40, 41], [50, 51])]
    fill_reference_logprobs(patched.model, prefix.detach(), pairs)
    optimizer = torch.optim.Adam([prefix], lr=5e-2)
    for _ in range(20):
        loss, _ = dpo_loss(patched.model, prefix, pairs, beta=0.5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    _, margin = dpo_loss(patched.model, prefix, pairs, beta=0.5)
    assert margin > 1.0


def test_target_logprobs_match_a_plain_forward():
    model = tiny_model("llama")
    prefix = torch.randn(3, 32)
    context, target = [5, 6, 7], [8, 9]
    [ours] = target_logprobs(model, prefix, [(context, target)])
    x = torch.cat([prefix, model.get_input_embeddings()(torch.tensor(context + target))])[None]
    logits = model(inputs_embeds=x).logits[0]
    expected = torch.log_softmax(logits[3 + len(context) - 1 : 3 + len(context) + 1], dim=-1)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_kv_prefix_logprobs_match_its_input_prefix_and_pass_gradients():
    model = tiny_model("llama")
    prefix = torch.randn(3, 32)
    rows = [([5, 6, 7], [8, 9]), ([10], [11, 12, 13])]
    kv = torch.nn.Parameter(kv_of_input_prefix(model, prefix))
    assert kv.shape == (3, 64)  # 2 layers x (keys, values) x 2 KV heads x 8
    for ours, expected in zip(target_logprobs(model, kv, rows), target_logprobs(model, prefix, rows)):
        torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    batch_loss(model, kv, [Example(c, t, "sft") for c, t in rows]).backward()
    assert kv.grad is not None and kv.grad.abs().sum() > 0


def test_a_kv_patch_starts_as_the_input_patch_and_learns():
    data = toy_data(patched := patched_tiny())
    start = data[0].validate(None)["loss"]
    kv = train(patched, config(placement="kv", lr=1e-1), datasets=data)  # keys are ~10x the embeddings' scale
    shallow = train(patched_tiny(), config(), datasets=toy_data(patched_tiny()))
    assert kv.prefix.shape == (4, 64)
    assert kv.data_summary["baseline_val"]["harmfulness"]["loss"] == pytest.approx(shallow.data_summary["baseline_val"]["harmfulness"]["loss"], abs=1e-5)
    assert kv.best["harmfulness"]["loss"] < start * 0.7
    fields = config(placement="kv").manifest_fields(patched)
    assert fields["placement"] == "kv" and fields["kv_layout"].width == 64 and fields["hidden_size"] == 32
    assert "placement" not in config().to_dict()  # input configs keep their digests


def test_soft_targets_never_put_mass_on_blocked_tokens():
    model = tiny_model("llama")
    blocked = torch.tensor([10, 11, 12])
    [(ids, probs)] = soft_targets(model, [([5, 6], [7, 8, 9])], blocked, top_k=16)
    assert not torch.isin(ids[probs > 0], blocked).any()
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(3))


def test_jsonl_reference_errors_name_the_line(tmp_path):
    patched = patched_tiny()
    good = tmp_path / "ref.jsonl"
    good.write_text('{"prompt": "w5 w6", "response": "w40 w41"}\n\n{"prompt": "w7", "response": "w42"}\n')
    assert len(jsonl_reference(patched, "toxicity", good, chat=False).examples) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "w5"}\n')
    with pytest.raises(ReferenceError_, match="line 1 is not a JSON object with `prompt` and `response`"):
        jsonl_reference(patched, "toxicity", bad, chat=False)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ReferenceError_, match="holds no examples"):
        jsonl_reference(patched, "toxicity", tmp_path / "empty.jsonl", chat=False)


def test_each_domain_in_a_joint_batch_pulls_the_prefix_equally_hard():
    from llmpatch.trainer.train import _domain_balanced_backward

    patched = patched_tiny()
    blocked = torch.arange(40, 60)
    [(ids, probs)] = soft_targets(patched.model, [([5, 6], [7, 8, 9])], blocked, top_k=16)
    loud = [Example([5, 6], [7, 8, 9], "distill", soft_ids=ids, soft_probs=probs, blocked=blocked, blocked_weight=1000.0,
                    group="toxicity/toxic")]
    quiet = [Example([5, 6, 7], [40, 41], "sft", group="harmfulness/harmful")]
    prefix = torch.nn.Parameter(torch.randn(4, 32) * 0.1)
    pulls = {}
    for name, examples in (("loud", loud), ("quiet", quiet)):
        (grad,) = torch.autograd.grad(batch_loss(patched.model, prefix, examples), prefix)
        pulls[name] = grad / grad.norm()
        pulls[name + "_norm"] = grad.norm()
    assert pulls["loud_norm"] > 20 * pulls["quiet_norm"]  # summed, the loud domain alone would steer
    _domain_balanced_backward(patched.model, prefix, loud + quiet)
    along_loud, along_quiet = float(prefix.grad.flatten() @ pulls["loud"].flatten()), float(prefix.grad.flatten() @ pulls["quiet"].flatten())
    assert along_quiet > 0.3
    assert along_quiet == pytest.approx(along_loud, rel=1e-3)


def test_the_fluency_term_keeps_the_prefix_near_the_base_distribution():
    from llmpatch.trainer.objectives import blocked_mass_stats

    patched = patched_tiny()
    blocked = torch.arange(40, 60)
    rows = [([5 + i % 7, 6 + i % 5], [7 + i % 9, 8, 9 + i % 4, 10]) for i in range(16)]
    targets = soft_targets(patched.model, rows, blocked, top_k=16, keep_base=True)
    base = [b for _, _, b in targets]
    assert blocked_mass_stats(patched.model, None, rows, blocked, base=base)["drift"] == pytest.approx(0.0, abs=1e-3)

    def trained_drift(fluency_weight):
        examples = [Example(c, t, "distill", soft_ids=i, soft_probs=p, blocked=blocked, blocked_weight=50.0, base_logprobs=b,
                            fluency_weight=fluency_weight, group="g") for (c, t), (i, p, b) in zip(rows, targets)]
        data = [TrainingData("toxicity", False, examples, [], lambda prefix: {"score": 0.0}, {})]
        prefix = train(patched, config(domains=("toxicity",), sft_steps=30, dpo_steps=0, eval_every=100), datasets=data).prefix
        return blocked_mass_stats(patched.model, prefix, rows, blocked, base=base)["drift"]

    assert trained_drift(5.0) < 0.5 * trained_drift(0.0)
