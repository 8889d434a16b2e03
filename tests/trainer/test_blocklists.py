"""Token blocklists: whole-word tokens of the listed words and their inflections, the
toxicity scorer's strongest words included, identity terms never blocked."""

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from llmpatch.trainer.blocklists import IDENTITY_TERMS, Blocklist, blocked_token_ids, gendered_token_ids, profanity_blocklist
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
    blocked = words_of(tok, profanity_blocklist(tok).anywhere)
    assert {"idiot", "idiots", "stupid", "moron", "fuck", "fucking"} <= blocked
    assert not blocked & {"gay", "queer", "hello", "table", "towel", "he", "she"}
    assert {"gay", "queer"} <= IDENTITY_TERMS


def test_gendered_words_are_exact_matches():
    tok = word_tokenizer()
    assert words_of(tok, gendered_token_ids(tok)) >= {"he", "she", "her"}
    assert not words_of(tok, gendered_token_ids(tok)) & {"here", "hello"}


def test_split_words_are_banned_by_context_only():
    # " idiot" as two pieces, " id" + "iot": "iot" is banned after " id", " id" stays free
    blocklist = Blocklist((), {(1,): frozenset({2})})
    assert blocklist.banned_positions([9, 1], [3, 1, 4]) == ((0, 2), (2, 2))
    # where the word was spelt, the piece that began it is banned there too
    assert blocklist.banned_positions([9], [1, 2, 1, 4]) == ((0, 1), (1, 2), (3, 2))
    assert blocklist.banned_positions([9, 1], [2]) == ((0, 2),)  # its first piece is in the context: fixed
    assert blocklist.emitted([9, 1], [2]) and not blocklist.emitted([9], [1, 3, 2])
    assert Blocklist((5,)).emitted([], [1, 5]) and not Blocklist((5,)).emitted([5], [1])


def bpe_tokenizer():
    """A byte-level BPE learnt from clean text, so profane words come out in pieces, as in
    SmolLM2's vocabulary (" f" + "uck")."""
    from tokenizers import decoders, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    corpus = ["the bass player had an idea to assign a classic tune", "what the weather is fine you see"] * 50
    backend.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=backend)


def test_profanity_blocklist_bans_the_pieces_of_a_bpe_tokenizer():
    tok = bpe_tokenizer()
    assert len(tok.encode(" fuck", add_special_tokens=False)) > 1
    blocklist = profanity_blocklist(tok)
    for text in (" what the fuck", " you idiot"):
        ids = tok.encode(text, add_special_tokens=False)
        assert blocklist.emitted([], ids), text
    for text in (" the bass idea", " assign a classic tune"):
        ids = tok.encode(text, add_special_tokens=False)
        assert not blocklist.emitted([], ids), text
