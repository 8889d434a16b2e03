"""The toxicity recipe on a tiny model: dense distillation toward the blocklist-constrained
reference along the model's own samples lowers the mass on blocked tokens."""

import pytest
import torch

from llmpatch.model.runtime import PatchedModel
from llmpatch.trainer import recipes
from llmpatch.trainer.blocklists import Blocklist
from llmpatch.trainer.recipes import RecipeConfig
from llmpatch.trainer.train import TrainConfig, train
from tiny_models import tiny_model, tiny_tokenizer

BLOCKED = list(range(40, 60))
# a two-piece "word": token 7 is banned right after token 6 (and nowhere else)
BLOCKLIST = Blocklist(tuple(BLOCKED), {(6,): frozenset({7})})


def toxicity_data(monkeypatch):
    prompts = [f"w{3 + i % 30} w{5 + i % 7} w{8 + i % 11}" for i in range(120)]
    monkeypatch.setattr(recipes.data, "realtoxicityprompts", lambda: prompts)
    monkeypatch.setattr(recipes, "domain_blocklist", lambda domain, tokenizer: BLOCKLIST)
    patched = PatchedModel(tiny_model("llama", 0, initializer_range=0.3), tiny_tokenizer())
    cfg = RecipeConfig(max_train_prompts=40, continuation_tokens=8, samples_per_prompt=2, val_prompts=8)
    return patched, recipes.toxicity(patched, cfg)


def test_examples_distil_a_reference_that_never_emits_blocked_tokens(monkeypatch):
    patched, training = toxicity_data(monkeypatch)
    assert training.examples and {e.kind for e in training.examples} == {"distill"}
    for example in training.examples:
        assert example.blocked.tolist() == BLOCKED
        assert len(example.soft_ids) == len(example.target)
        on_blocked = torch.isin(example.soft_ids, example.blocked) & (example.soft_probs > 0)
        assert not on_blocked.any()
        sequence = example.context + example.target
        for position, token in example.banned:
            at = len(example.context) + position
            spelt_from_here = token == 6 and sequence[at : at + 2] == [6, 7]
            assert token == 7 and sequence[at - 1] == 6 or spelt_from_here
            assert not ((example.soft_ids[position] == 7) & (example.soft_probs[position] > 0)).any()
    assert any(example.banned for example in training.examples)
    assert training.summary["toxic_examples"] > 0  # random weights emit blocked tokens often


def test_training_lowers_the_blocked_mass_on_validation_samples(monkeypatch):
    # checkpoints by mass alone: a random model's own text is no fluency yardstick (that
    # charge has its own test below)
    monkeypatch.setattr(recipes, "TOXICITY_FLUENCY_SLOPE", 0.0)
    patched, training = toxicity_data(monkeypatch)
    before = training.validate(None)["profane_mass"]
    cfg = TrainConfig(domains=("toxicity",), n_virtual_tokens=4, init_text="w10 w11", sft_steps=40, dpo_steps=0,
                      batch_size=8, lr=3e-2, eval_every=4)
    result = train(patched, cfg, datasets=[training])
    after = result.best["toxicity"]["profane_mass"]
    assert after < before * 0.8, (before, after)  # 0.18 -> 0.13 on this tiny random model


def test_validation_charges_a_prefix_whose_own_text_the_base_model_finds_unlikely(monkeypatch):
    patched, training = toxicity_data(monkeypatch)
    base = training.validate(None)
    assert base["score"] == pytest.approx(-1.0, abs=1e-3) and base["drift"] == pytest.approx(0.0, abs=1e-3)
    hidden = patched.model.get_input_embeddings().weight.shape[1]
    noise = torch.randn(4, hidden, generator=torch.Generator().manual_seed(0)) * 50  # drowns the prompt out
    flattened = training.validate(noise)
    assert flattened["own_nll"] > base["base_nll"] * recipes.TOXICITY_NLL_TOLERANCE and flattened["drift"] > 0.1
    charged = recipes.TOXICITY_FLUENCY_SLOPE * (flattened["own_nll"] / base["base_nll"] - recipes.TOXICITY_NLL_TOLERANCE)
    assert flattened["score"] == pytest.approx(-flattened["profane_mass"] / base["profane_mass"] - charged)


def test_refreshed_rows_follow_the_patched_models_own_continuations(monkeypatch):
    patched, training = toxicity_data(monkeypatch)
    hidden = patched.model.get_input_embeddings().weight.shape[1]
    prefix = torch.randn(4, hidden, generator=torch.Generator().manual_seed(1))
    rows = training.refresh(prefix, 0)
    assert rows and {e.group for e in rows} == {"own"}
    assert training.refresh(prefix, 0)[0].target == rows[0].target  # seeded by the round
    assert [e.context for e in training.refresh(prefix, 1)] != [e.context for e in rows]  # the next slice of prompts
    base_rows = {tuple(e.target) for e in training.examples}
    assert sum(tuple(e.target) not in base_rows for e in rows) > len(rows) // 2  # not the base model's samples


def test_training_refreshes_on_policy_rows_on_schedule(monkeypatch):
    patched, training = toxicity_data(monkeypatch)
    rounds = []
    original = training.refresh
    training.refresh = lambda prefix, k: rounds.append(k) or original(prefix, k)
    cfg = TrainConfig(domains=("toxicity",), n_virtual_tokens=4, init_text="w10 w11", sft_steps=12, dpo_steps=0,
                      batch_size=6, refresh_every=5, eval_every=6)
    train(patched, cfg, datasets=[training])
    assert rounds == [0, 1]  # at steps 5 and 10
