"""Token blocklists: which vocabulary entries a constrained reference may not emit.

A word list becomes token ids by looking at the whole vocabulary, so capitalised,
space-prefixed and inflected forms are caught too: a token is blocked when its letters,
lower-cased, are a listed word, or a listed word plus an inflection ("fuck" + "ing").
Only whole-word tokens are blocked everywhere: blocking first pieces of multi-token words,
or any token that merely starts with a listed word, blocked "analysis", "towel" and "best"
in trials. Words the tokenizer splits (SmolLM2 spells " fuck" as " f" + "uck", " idiot" as
" id" + "iot") are blocked by context instead: the piece that would complete the word is
banned right after the pieces that begin it, as `bad_words_ids` does when decoding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import torch

from . import data

_LETTERS = re.compile(r"[^a-z]")


def _normalise(token_text: str) -> str:
    return _LETTERS.sub("", token_text.lower())


@dataclass(frozen=True)
class Blocklist:
    """`anywhere`: token ids banned at every position. `after`: the pieces that begin a
    multi-token word, mapped to the pieces that would complete it there."""

    anywhere: tuple[int, ...]
    after: Mapping[tuple[int, ...], frozenset[int]] = field(default_factory=dict)

    def ids(self) -> torch.Tensor:
        return torch.tensor(self.anywhere, dtype=torch.long)

    def banned_positions(self, context: list[int], target: list[int]) -> tuple[tuple[int, int], ...]:
        """(target position, token id) pairs that `after` bans along `context` + `target`.

        Where `target` does spell a banned word, its first pieces are banned where they
        stand too: after " f" the model is all but bound to "uck", so a reference that
        only bans "uck" would still teach " f" (and a penalty there could not move); the
        place to steer is the piece that began the word, in the context where it did."""
        if not self.after:
            return ()
        lengths = sorted({len(key) for key in self.after})
        sequence, anywhere, banned = context + target, set(self.anywhere), set()
        for position in range(len(target)):
            end = len(context) + position
            for length in lengths:
                if end < length:
                    continue
                for token in self.after.get(tuple(sequence[end - length : end]), ()):
                    if token in anywhere:
                        continue
                    banned.add((position, token))
                    if target[position] == token:  # the word was spelt: ban its first pieces there
                        banned.update((position - back, sequence[end - back]) for back in range(1, length + 1)
                                      if position - back >= 0)
        return tuple(sorted(banned))

    def emitted(self, context: list[int], target: list[int]) -> bool:
        """Whether `target` contains a blocked token where it stands."""
        return not set(self.anywhere).isdisjoint(target) or any(
            target[position] == token for position, token in self.banned_positions(context, target))


INFLECTIONS = ("s", "es", "ed", "er", "ers", "ing", "in", "y", "ies")


def blocked_token_ids(tokenizer, words: Iterable[str], *, inflections: bool = True) -> list[int]:
    words = {w.lower() for w in words if w and w.isalpha()}
    forms = set(words)
    if inflections:
        forms |= {w + suffix for w in words if len(w) >= 4 for suffix in INFLECTIONS}
    blocked: set[int] = set()
    for token, index in tokenizer.get_vocab().items():
        text = tokenizer.convert_tokens_to_string([token]).strip()
        if text.isalpha() and _normalise(text) in forms:
            blocked.add(index)
    return sorted(blocked)


# Words that name people (and "sex", as in sexual orientation) rather than insult them: a
# toxicity patch must not learn to avoid them (the classic failure of word-list filters),
# even where a classifier weighs them up. Explicit body words are not exempt: RealToxicity-
# Prompts counts sexually explicit text as toxic.
IDENTITY_TERMS = frozenset({"gay", "gays", "homosexual", "homosexuals", "queer", "queers", "lesbian", "lesbians", "negro",
                            "negroes", "black", "blacks", "jew", "jews", "jewish", "muslim", "muslims", "trans", "minorities",
                            "women", "woman", "girl", "girls", "racist", "sexual", "sex"})


# Ordinary words the classifier happens to weigh up (artefacts of its training data), and
# first pieces of ordinary words that an inflection rule catches ("anal" + "y" = "analy" of
# "analysis"): blocking them costs fluency and removes nothing offensive.
SCORER_ARTEFACTS = frozenset({"analy", "assess", "butter", "bunch", "cancer", "cancers", "chambers", "clouds", "drove",
                              "expense", "expenses", "graves", "mental", "mentally", "mouth", "mouths", "participating",
                              "publicly", "skull", "skulls", "spices", "spicy", "spikes", "worm", "worms", "buzz", "buzzing", "ing"})


def profane_words() -> set[str]:
    """Profane words from the lists, plus the words the default toxicity scorer weighs most
    (insults such as "idiot", "stupid", "moron" are in no swear-word list, yet they are what
    makes a continuation score as toxic), minus identity terms, the scorer's artefacts and
    fragments shorter than three letters ("sh", "ho")."""
    from .scorers import ProfanityScorer

    words = {w.lower() for w in set(data.profanity_words()) | set(ProfanityScorer.offensive_words()) if w.isalpha()}
    return {w for w in words - IDENTITY_TERMS - SCORER_ARTEFACTS if len(w) >= 3}


_WORD_START = ("Ġ", "▁", " ")  # byte-level BPE, SentencePiece, plain


def _word_start_test(tokenizer):
    """Whether a vocabulary entry begins a word. A word-level vocabulary has no markers:
    each of its entries is a whole word."""
    if not any(token.startswith(_WORD_START) for token in tokenizer.get_vocab()):
        return lambda token: True
    return lambda token: token.startswith(_WORD_START)


def profanity_blocklist(tokenizer) -> Blocklist:
    words = profane_words()
    # Everywhere: whole-word tokens that begin a word. A piece inside a word ("ass" of
    # "bass", "ing") is only banned by context, below.
    starts_word = _word_start_test(tokenizer)
    anywhere = [t for t in blocked_token_ids(tokenizer, words)
                if starts_word(tokenizer.convert_ids_to_tokens(t)) and _normalise(tokenizer.decode([t])) not in SCORER_ARTEFACTS]
    forms = words | {w + suffix for w in words if len(w) >= 4 for suffix in INFLECTIONS}
    after: dict[tuple[int, ...], set[int]] = {}
    for form in forms:
        for spelling in {form, form.capitalize()}:
            for text in (" " + spelling, spelling):
                pieces = tokenizer.encode(text, add_special_tokens=False)
                if len(pieces) >= 2:
                    after.setdefault(tuple(pieces[:-1]), set()).add(pieces[-1])
    return Blocklist(tuple(anywhere), {key: frozenset(value) for key, value in after.items()})


def gendered_token_ids(tokenizer) -> list[int]:
    # Exact matches only: "he" must not block "hello", "her" must not block "here".
    words = data.GENDERED_WORDS["female"] + data.GENDERED_WORDS["male"]
    return blocked_token_ids(tokenizer, words, inflections=False)


def domain_blocklist(domain: str, tokenizer) -> Blocklist:
    if domain == "toxicity":
        return profanity_blocklist(tokenizer)
    if domain == "bias":
        return Blocklist(tuple(gendered_token_ids(tokenizer)))
    raise ValueError(f"domain `{domain}` has no token blocklist")
