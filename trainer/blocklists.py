"""Token blocklists: which vocabulary entries a constrained reference may not emit.

A word list becomes token ids by looking at the whole vocabulary, so capitalised,
space-prefixed and inflected forms are caught too: a token is blocked when its letters,
lower-cased, are a listed word, or a listed word plus an inflection ("fuck" + "ing").
Only whole-word tokens count: blocking first pieces of multi-token words, or any token
that merely starts with a listed word, blocked "analysis", "towel" and "best" in trials.
"""

from __future__ import annotations

import re
from typing import Iterable

from . import data

_LETTERS = re.compile(r"[^a-z]")


def _normalise(token_text: str) -> str:
    return _LETTERS.sub("", token_text.lower())


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


# Words that name people rather than insult them: a toxicity patch must not learn to avoid
# them (the classic failure of word-list filters), even where a classifier weighs them up.
IDENTITY_TERMS = frozenset({"gay", "gays", "homosexual", "homosexuals", "queer", "queers", "lesbian", "lesbians", "negro",
                            "negroes", "black", "blacks", "jew", "jews", "jewish", "muslim", "muslims", "trans", "minorities",
                            "women", "woman", "girl", "girls", "racist", "sexual", "sex", "penis", "boobs", "semen", "butt"})


def profanity_token_ids(tokenizer) -> list[int]:
    """Profane words from the lists, plus the words the default toxicity scorer weighs most
    (insults such as "idiot", "stupid", "moron" are in no swear-word list, yet they are what
    makes a continuation score as toxic), minus identity terms."""
    from .scorers import ProfanityScorer

    words = set(data.profanity_words()) | set(ProfanityScorer.offensive_words())
    return blocked_token_ids(tokenizer, words - IDENTITY_TERMS)


def gendered_token_ids(tokenizer) -> list[int]:
    # Exact matches only: "he" must not block "hello", "her" must not block "here".
    words = data.GENDERED_WORDS["female"] + data.GENDERED_WORDS["male"]
    return blocked_token_ids(tokenizer, words, inflections=False)


def domain_blocklist(domain: str, tokenizer) -> list[int]:
    if domain == "toxicity":
        return profanity_token_ids(tokenizer)
    if domain == "bias":
        return gendered_token_ids(tokenizer)
    raise ValueError(f"domain `{domain}` has no token blocklist")
