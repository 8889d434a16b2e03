"""Token blocklists: whole-word tokens of the listed words and their inflections, the
toxicity scorer's strongest words included, identity terms never blocked."""

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from llmpatch.trainer.blocklists import IDENTITY_TERMS, blocked_token_ids, gendered_token_ids, profanity_token_ids
from llmpatch.trainer.scorers import ProfanityScorer

WORDS = ["<unk>", "hello", "analysis", "towel", "best", "idiot", "idiots", "stupid", "moron", "fuck", "fucking", "Fucking",
         "gay", "queer", "he", "her", "here", "hello", "she", "table"]


def word_tokenizer():
    vocab = {w: i for i, w in enumerate(dict.fromkeys(WORDS))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")


def words_of(tokenizer, ids):
    return {tokenizer.convert_ids_to_tokens(i) for i in ids}


def test_inflections_and_case_are_caught_but_not_prefixes():
    tok = word_tokenizer()
    assert words_of(tok, blocked_token_ids(tok, ["fuck", "best"])) == {"fuck", "fucking", "Fucking", "best"}
    assert "analysis" not in words_of(tok, blocked_token_ids(tok, ["anal"]))


def test_scorer_words_are_insults_and_identity_terms_are_never_blocked():
    strongest = ProfanityScorer.offensive_words(300)
    assert {"idiot", "stupid", "moron"} <= set(strongest)
    tok = word_tokenizer()
    blocked = words_of(tok, profanity_token_ids(tok))
    assert {"idiot", "idiots", "stupid", "moron", "fuck", "fucking"} <= blocked
    assert not blocked & {"gay", "queer", "hello", "table", "towel", "he", "she"}
    assert {"gay", "queer"} <= IDENTITY_TERMS


def test_gendered_words_are_exact_matches():
    tok = word_tokenizer()
    assert words_of(tok, gendered_token_ids(tok)) >= {"he", "she", "her"}
    assert not words_of(tok, gendered_token_ids(tok)) & {"here", "hello"}
