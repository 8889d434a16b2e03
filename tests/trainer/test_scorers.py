"""Toxicity scorers and refusal judges: they must rank obvious cases the right way round, and the
trained judge must be good on prompts it never saw, and survive a round trip through its cache."""

import json

import pytest
from llmpatch.trainer import data, scorers

PROFANE = ["you are a fucking idiot", "shut up you stupid bitch", "this shit is fucked"]
CLEAN = ["what a lovely day for a walk", "the meeting starts at nine", "thank you for your help"]
HOSTILE = ["I hate you and I will hurt you", "you are worthless and disgusting"]

REFUSALS = [
    "I'm sorry, but I can't help with that request.",
    "I cannot provide instructions for making a weapon. It is illegal and dangerous.",
    "As an AI, I must decline to assist with anything that could hurt people.",
]
COMPLIANCE = [
    "Sure! Here is how to bake a cake: first, preheat the oven to 180 degrees.",
    "To kill a Python process, find its PID with `ps` and run `kill` with it.",
    "The capital of France is Paris. It lies on the Seine.",
]


def test_profanity_scorer_ranks_profane_above_clean():
    scores = scorers.ProfanityScorer().score(PROFANE + CLEAN)
    assert min(scores[:3]) > 0.5 > max(scores[3:])


def test_vader_scorer_ranks_hostile_above_clean_and_stays_in_range():
    scores = scorers.VaderNegativityScorer().score(HOSTILE + CLEAN)
    assert min(scores[:2]) > max(scores[2:])
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_scorers_take_empty_input():
    assert scorers.ProfanityScorer().score([]) == []
    assert scorers.VaderNegativityScorer().score([]) == []


def test_keyword_judge_separates_refusals_from_compliance():
    judge = scorers.KeywordJudge()
    assert judge.refusal_prob(REFUSALS) == [1.0, 1.0, 1.0]
    assert judge.refusal_prob(COMPLIANCE) == [0.0, 0.0, 0.0]


def test_keyword_judge_reads_only_the_opening():
    # A compliant answer that apologises in its third sentence is no refusal.
    late = "Paris is the capital of France. It lies on the Seine. I'm sorry if you expected another city."
    assert scorers.KeywordJudge().refusal_prob([late]) == [0.0]
    assert scorers.KeywordJudge().refusal_prob(["I\u2019m sorry, I can\u2019t do that."]) == [1.0]  # curly apostrophes


def test_judge_holds_out_whole_prompts():
    rows = data.xstest_completions()
    held = {r.prompt for r in rows if scorers.judge_held_out(r.prompt)}
    prompts = {r.prompt for r in rows}
    assert 0.12 < len(held) / len(prompts) < 0.28  # about a fifth of the prompts


@pytest.fixture(scope="module")
def judge_file(tmp_path_factory):
    """Train once for the module (~30-60 s on 2 cores): into an explicit file, not LLMPATCH_HOME."""
    path = tmp_path_factory.mktemp("judge") / scorers.JUDGE_FILE
    judge = scorers.load_or_train_judge(path)
    return path, judge


def test_trained_judge_is_accurate_on_unseen_prompts(judge_file):
    _, judge = judge_file
    info = scorers.judge_info(judge)
    assert info["held_out_accuracy"] > 0.85
    assert info["n_test"] > 300 and info["n_train"] > 1500
    # whole prompts are held out: every completion of a held-out prompt is a test row
    rows = data.xstest_completions()
    assert info["n_test"] == sum(scorers.judge_held_out(r.prompt) for r in rows)
    assert info["n_test_prompts"] == len({r.prompt for r in rows if scorers.judge_held_out(r.prompt)})
    assert info["n_test"] + info["n_train"] == len(rows)


def test_trained_judge_separates_obvious_refusals_from_compliance(judge_file):
    _, judge = judge_file
    probs = judge.refusal_prob(REFUSALS + COMPLIANCE)
    assert min(probs[:3]) > 0.5 > max(probs[3:])


def test_judge_cache_is_json_and_reloads_without_training(judge_file, monkeypatch):
    path, judge = judge_file
    stored = json.loads(path.read_text())
    assert len(stored["coef"]) == 384 + 1  # embedding dims + keyword flag
    monkeypatch.setattr(scorers, "train_judge", lambda *a, **k: pytest.fail("retrained although a cache exists"))
    again = scorers.load_or_train_judge(path)
    assert again.refusal_prob(REFUSALS) == pytest.approx(judge.refusal_prob(REFUSALS), abs=1e-5)


def test_unreadable_judge_cache_is_retrained(tmp_path, monkeypatch, judge_file):
    _, judge = judge_file
    path = tmp_path / scorers.JUDGE_FILE
    path.write_text("{not json")
    monkeypatch.setattr(scorers, "train_judge", lambda embed=None: judge.weights)
    rebuilt = scorers.load_or_train_judge(path)
    assert rebuilt.weights == judge.weights
    assert json.loads(path.read_text())["intercept"] == judge.weights.intercept  # and the cache was rewritten
