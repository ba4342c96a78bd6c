"""Words whose spelling alone says what they translate to: numbers in any script's digits, and words
spelt the same in both languages (names, loanwords). Identical strings are the classic seed dictionary
between languages that share a script (Artetxe et al. 2017, "Learning bilingual word embeddings with
(almost) no bilingual data", §4); the digits of a number mean the same whatever script writes them.
Sentence mining (`xlfast.mine`) and word alignment (`xlfast.align`) both trust these keys over the vectors."""
from __future__ import annotations

import unicodedata

NUMBER_SEPARATORS = frozenset(",.'")
SHARED_SPELLING_MIN = 3  # shorter words spelt alike are too often different words ('a', 'no', 'en' in two languages)


def number_key(token: str) -> str | None:
    """The digits of a number written in any script, as ASCII ('१,९९०' and '1990' -> '1990'); None for
    a token that is not a number."""
    if not any(ch.isdecimal() for ch in token) or not all(ch.isdecimal() or ch in NUMBER_SEPARATORS for ch in token):
        return None
    return "".join(str(unicodedata.decimal(ch)) for ch in token if ch.isdecimal())


def shared_spelling_key(token: str) -> str | None:
    """The case-folded spelling of a word with a letter and at least SHARED_SPELLING_MIN characters; None
    otherwise."""
    key = token.casefold()
    return key if len(key) >= SHARED_SPELLING_MIN and any(ch.isalpha() for ch in key) else None


def anchor_key(token: str) -> tuple[str, str] | None:
    """('number', digits) or ('spelling', case-folded word), or None: two tokens with the same key
    translate each other."""
    number = number_key(token)
    if number is not None:
        return "number", number
    spelling = shared_spelling_key(token)
    return None if spelling is None else ("spelling", spelling)
