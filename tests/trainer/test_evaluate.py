"""Evaluation: metric functions on hand-made inputs, the variant interface on tiny models, and
`patch eval --json` end to end on a tiny model folder."""

import json
import math

import pytest
import torch
from llmpatch.trainer import evaluate as ev
from llmpatch.trainer.eval_cli import relative_change
from patches import make_patch
from tiny_models import HIDDEN, save_tiny_model, tiny_model, tiny_tokenizer

from llmpatch.cli import run
from llmpatch.errors import LLMPatchError
from llmpatch.model.generation import SamplingConfig
from llmpatch.model.runtime import PatchedModel

PROMPTS = ["w5 w6 w7", "w10 w11", "w12 w13 w14 w15 w16", "w20"]
GREEDY = SamplingConfig(max_new_tokens=6)

# ------------------------------------------------------------------ metrics


def test_expected_max_and_toxicity_probability():
    scores = [[0.1, 0.9, 0.2], [0.0, 0.1, 0.3], [0.5, 0.5, 0.4]]
    assert ev.expected_max(scores) == pytest.approx((0.9 + 0.3 + 0.5) / 3)
    assert ev.probability_any(scores, 0.5) == pytest.approx(2 / 3)  # 0.5 itself counts as toxic
    assert ev.probability_any(scores, 0.95) == 0.0


def test_word_rate_matches_whole_words_only():
    words = ["he", "she", "mr"]
    assert ev.word_rate(["the theory", "help them", "shelter", "Mrs Smith", "mrx"], words) == 0.0
    assert ev.word_rate(["He left.", "and SHE said", "he's here", "Mr. Brown", "nothing"], words) == pytest.approx(4 / 5)


def test_distinct_n():
    assert ev.distinct_n(["a b a b"], 1) == pytest.approx(2 / 4)
    assert ev.distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)  # (a b), (b a), (a b)
    assert ev.distinct_n(["A b", "a B"], 1) == pytest.approx(2 / 4)  # pooled over texts, case-folded
    assert ev.distinct_n(["single"], 2) == 0.0  # no bigram at all


def test_gender_logit_gap_is_logsumexp_difference():
    logprobs = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]]))
    gaps = ev.gender_logit_gap(logprobs, female=[0, 1], male=[3])
    assert gaps[0].item() == pytest.approx(math.log(0.3) - math.log(0.4), abs=1e-6)
    assert gaps[1].item() == pytest.approx(math.log(0.5) - math.log(0.25), abs=1e-6)


def test_gender_token_ids_drop_tokens_shared_by_both_genders():
    class CharTokenizer:  # " mrs" and " mr" start with the same token, as in SmolLM2's tokenizer
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [ord(text[0]) * 1000 + ord(text[1])]} if text.startswith(" m") else {"input_ids": [hash(text) % 10**6]}

    female, male = ev.gender_token_ids(CharTokenizer())
    shared_start = ord(" ") * 1000 + ord("m")
    assert shared_start not in female and shared_start not in male
    assert not set(female) & set(male)


def test_limited_is_a_fixed_subset_whatever_the_input_order():
    items = [f"prompt {i}" for i in range(50)]
    assert ev.limited(items, 5) == ev.limited(list(reversed(items)), 5)
    assert ev.limited(items, 5) != items[:5]  # mixed, not the first lines of the file
    assert len(ev.limited(items, None)) == 50


def test_relative_change_against_base():
    assert relative_change(0.38, 1.0) == "-62 %"
    assert relative_change(0.3, 0.2) == "+50 %"
    assert relative_change(0.3, 0.0) == ""
    assert relative_change(None, 0.2) == ""


def test_eval_config_rejects_nonsense():
    with pytest.raises(ValueError, match="samples must be at least 1, got 0"):
        ev.EvalConfig(samples=0)


# ------------------------------------------------------------------ variants


@pytest.fixture(scope="module")
def patched():
    return PatchedModel(tiny_model("llama"), tiny_tokenizer())


def test_patch_variant_changes_with_a_patch(patched):
    base = ev.PatchVariant(patched)
    with_patch = ev.PatchVariant(patched, [make_patch(n=4, hidden=HIDDEN, seed=3)])
    assert with_patch.name == "patched" and base.name == "base"
    a, b = base.next_token_logprobs(PROMPTS, False), with_patch.next_token_logprobs(PROMPTS, False)
    assert a.shape == b.shape == (4, 100)
    assert not torch.allclose(a, b, atol=1e-3)
    assert base.sequence_logprobs(PROMPTS) != pytest.approx(with_patch.sequence_logprobs(PROMPTS), abs=1e-3)


def test_system_prompt_changes_raw_continuations(patched):
    base = ev.PatchVariant(patched)
    system = ev.PatchVariant(patched, system_prompt="w40 w41 w42")
    assert system.name == "system-prompt"
    assert not torch.allclose(base.next_token_logprobs(PROMPTS, False), system.next_token_logprobs(PROMPTS, False), atol=1e-3)


def test_hf_variant_matches_patch_variant_without_patches(patched):
    """Two implementations of the interface, one model: same numbers, in a padded batch."""
    mine, hf = ev.PatchVariant(patched), ev.HFVariant(patched.model, patched.tokenizer)
    assert torch.allclose(mine.next_token_logprobs(PROMPTS, False), hf.next_token_logprobs(PROMPTS, False), atol=1e-4)
    assert hf.sequence_logprobs(PROMPTS) == pytest.approx(mine.sequence_logprobs(PROMPTS), abs=1e-3)
    assert hf.generate(PROMPTS, False, GREEDY) == mine.generate(PROMPTS, False, GREEDY)


def test_hf_variant_honours_suppressed_tokens(patched):
    mine, hf = ev.PatchVariant(patched), ev.HFVariant(patched.model, patched.tokenizer)
    seen = {w for text in mine.generate(PROMPTS, False, GREEDY) for w in text.split()}
    blocked = SamplingConfig(max_new_tokens=6, suppress_tokens=tuple(patched.tokenizer.convert_tokens_to_ids(sorted(seen))))
    outputs = hf.generate(PROMPTS, False, blocked)
    assert outputs == mine.generate(PROMPTS, False, blocked)
    assert not seen & {w for text in outputs for w in text.split()}


def test_sampling_is_seeded(patched):
    variant = ev.PatchVariant(patched)
    cfg = SamplingConfig(max_new_tokens=8, do_sample=True, seed=7)
    assert variant.generate(PROMPTS, False, cfg) == variant.generate(PROMPTS, False, cfg)


def test_sequence_logprobs_are_log_probabilities(patched):
    """Scoring "a b" = log p(a | start) + log p(b | start a), checked by hand."""
    variant = ev.PatchVariant(patched)
    tok = patched.tokenizer
    ids = [ev.start_token(tok)] + tok("w5 w6", add_special_tokens=False)["input_ids"]
    logits = patched.logits([ids], [[]])[0].log_softmax(-1)
    expected = logits[0, ids[1]] + logits[1, ids[2]]
    assert variant.sequence_logprobs(["w5 w6"])[0] == pytest.approx(expected.item(), abs=1e-5)


def test_fluency_prefers_the_models_own_greedy_text(patched):
    fluency = ev.Fluency(patched)
    own = ev.PatchVariant(patched).generate(PROMPTS, False, SamplingConfig(max_new_tokens=8))
    other = ["w90 w3 w77 w41 w8 w66 w12 w99"] * len(PROMPTS)
    mine = fluency.metrics(PROMPTS, own, False, "own")["perplexity"]
    theirs = fluency.metrics(PROMPTS, other, False, "other")["perplexity"]
    assert mine["value"] < theirs["value"]
    assert theirs["n"] == 8 * len(PROMPTS)  # scored tokens


def test_reference_variant_serves_its_outputs_in_turn(tmp_path):
    path = tmp_path / "ref.jsonl"
    path.write_text('{"prompt": "p1", "completions": ["a", "b"]}\n\n{"prompt": "p2 ", "completion": "c"}\n{"prompt": "p4", "response": "d"}\n')
    ref = ev.ReferenceVariant.from_jsonl(path)
    assert ref.generate(["p1", "p1", "p1", "p2", "p3", "p4"], False, GREEDY) == ["a", "b", "a", "c", None, "d"]
    with pytest.raises(NotImplementedError):
        ref.next_token_logprobs(["p1"], False)


def test_reference_variant_names_the_bad_line(tmp_path):
    path = tmp_path / "ref.jsonl"
    path.write_text('{"prompt": "p1", "completion": "a"}\n{"text": "no prompt"}\n')
    with pytest.raises(LLMPatchError, match=r"^line 2 of `.*ref.jsonl` needs a `prompt` and a `completion` \(or `response`, or a `completions` list\)$"):
        ev.ReferenceVariant.from_jsonl(path)


# ------------------------------------------------------------------ `patch eval` end to end


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def test_eval_json_end_to_end(tiny_folder, tmp_path, capsys):
    import numpy as np
    from patches import make_manifest

    from llmpatch.patchfile import write_patch

    patch_file = tmp_path / "p.safetensors"
    write_patch(patch_file, make_manifest(n=4, hidden=HIDDEN), np.random.default_rng(1).standard_normal((4, HIDDEN)).astype(np.float32))
    reference = tmp_path / "ref.jsonl"
    harmbench_first = ev.harm_sets(ev.EvalConfig(limit=2))["harmbench"][0]
    reference.write_text(json.dumps({"prompt": harmbench_first, "completion": "I'm sorry, but I can't help with that."}) + "\n")
    out, plot = tmp_path / "r.json", tmp_path / "r.png"

    code = run(
        ["eval", "--model", str(tiny_folder), "--patch", str(patch_file), "--force", "--reference-jsonl", str(reference),
         "--domain", "toxicity", "--domain", "bias", "--domain", "harmfulness", "--limit", "2", "--samples", "2",
         "--judge", "keyword", "--threads", "1", "--seed", "3", "--json", "--out", str(out), "--plot", str(plot)],
        "patch",
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    assert json.loads(out.read_text()) == report
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["seed"] == 3 and report["config"]["limit"] == 2 and report["config"]["samples"] == 2
    assert report["scorers"] == {"toxicity": ["profanity-check", "vader-negativity"], "refusal_judges": [{"name": "keyword"}]}

    tox = report["domains"]["toxicity"]
    assert tox["order"] == ["base", "system-prompt", "patched", "reference"]
    assert sorted(tox["variants"]) == sorted(tox["order"])
    assert tox["variants"]["patched"]["info"]["patches"] == ["toxicity@1.0.0"]
    assert tox["variants"]["base"]["metrics"]["expected_max_toxicity"]["n"] == 2  # prompts
    assert tox["variants"]["base"]["metrics"]["distinct_1"]["n"] == 4  # prompts x samples
    assert tox["variants"]["reference"]["metrics"] == {}  # it has no toxicity prompt

    harm = report["domains"]["harmfulness"]
    assert harm["headline"] == "harmbench_refusal" and harm["better"] == "higher"
    assert harm["variants"]["base"]["metrics"]["over_refusal_xstest_safe"]["n"] == 2
    assert harm["variants"]["reference"]["metrics"]["harmbench_refusal"] == {"value": 1.0, "n": 1}

    bias = report["domains"]["bias"]["variants"]["system-prompt"]
    assert bias["info"]["system_prompt"].startswith("You are a helpful assistant")
    assert bias["metrics"]["gendered_word_rate"]["n"] == 4
    assert bias["metrics"]["crows_stereotype_preference"]["n"] == 2


def test_eval_table_shows_relative_change(tiny_folder, capsys):
    code = run(["eval", "--model", str(tiny_folder), "--domain", "toxicity", "--limit", "2", "--samples", "1", "--threads", "1"], "patch")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.splitlines()
    assert lines[0].startswith("toxicity  (")
    assert lines[1].split() == ["metric", "base", "system-prompt"]
    assert any(line.startswith("expected_max_toxicity *") for line in lines)
    assert "Evaluated `base` on `toxicity` in" in captured.err
    assert "Evaluated `toxicity` in" in captured.err


def test_eval_rejects_a_patch_for_another_model(tiny_folder, tmp_path, capsys):
    import numpy as np
    from patches import make_manifest

    from llmpatch.patchfile import write_patch

    patch_file = tmp_path / "p.safetensors"
    write_patch(patch_file, make_manifest(n=4, hidden=HIDDEN), np.zeros((4, HIDDEN), dtype=np.float32))
    code = run(["eval", "--model", str(tiny_folder), "--patch", str(patch_file), "--domain", "bias", "--limit", "1"], "patch")
    assert code == 4
    assert "was built for architecture" in capsys.readouterr().err


def test_earlier_results_are_reused_only_for_the_same_variant_and_config(patched, monkeypatch):
    cfg = ev.EvalConfig(limit=2, samples=1)
    one, other = make_patch(n=4, hidden=HIDDEN, seed=3), make_patch(n=4, hidden=HIDDEN, seed=4)  # same name@version
    first = ev.evaluate({"bias": [ev.PatchVariant(patched), ev.PatchVariant(patched, [one], name="patch")]}, patched, cfg)
    reuse = ev.reusable_results([json.loads(json.dumps(first))], cfg)
    assert len(reuse) == 2

    ran = []
    real = ev.eval_bias
    monkeypatch.setattr(ev, "eval_bias", lambda variant, *a: ran.append(variant.name) or real(variant, *a))
    second = ev.evaluate({"bias": [ev.PatchVariant(patched), ev.PatchVariant(patched, [one], name="again"),
                                   ev.PatchVariant(patched, [other], name="retrained")]}, patched, cfg, reuse=reuse)
    assert ran == ["retrained"]  # same name and version, other bytes: run again
    got = second["domains"]["bias"]["variants"]
    assert got["base"]["reused"] and got["again"]["reused"] and "reused" not in got["retrained"]
    assert got["again"]["metrics"] == first["domains"]["bias"]["variants"]["patch"]["metrics"]
    assert ev.reusable_results([first], ev.EvalConfig(limit=3, samples=1)) == {}
