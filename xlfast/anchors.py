"""Words whose spelling alone says what they translate to: numbers in any script's digits, and words
spelt alike in both languages (names, loanwords, cognates; in two scripts, once romanised). Identical
strings are the classic seed dictionary between languages that share a script (Artetxe et al. 2017,
"Learning bilingual word embeddings with (almost) no bilingual data", §4); the digits of a number mean the
same whatever script writes them.
Sentence mining (`xlfast.mine`) and word alignment (`xlfast.align`) both trust these keys over the vectors
(`shared_keys`)."""
from __future__ import annotations

import functools
import unicodedata
from collections.abc import Sequence

from anyascii import anyascii

NUMBER_SEPARATORS = frozenset(",.'")
SHARED_SPELLING_MIN = 3  # shorter words spelt alike are too often different words ('a', 'no', 'en' in two languages)
# Longer words compare by their first this many characters: a loanword or cognate under the inflections and
# suffixes of either language keeps its stem (Shipibo 'teatronboanra' and Spanish 'teatros'; 'informations'
# and 'information'), as statistical aligners truncate the words of inflected languages. 6 measured best of
# 6 and 7 on shp-es mining; en-fr, ro-en and grk-it alignment came out alike with longest-shared-prefix keys.
SPELLING_PREFIX = 6


def number_key(token: str) -> str | None:
    """The digits of a number written in any script, as ASCII ('१,९९०' and '1990' -> '1990'); None for
    a token that is not a number."""
    if not any(ch.isdecimal() for ch in token) or not all(ch.isdecimal() or ch in NUMBER_SEPARATORS for ch in token):
        return None
    return "".join(str(unicodedata.decimal(ch)) for ch in token if ch.isdecimal())


def shared_spelling_key(token: str) -> str | None:
    """The first SPELLING_PREFIX characters of a word with a letter and at least SHARED_SPELLING_MIN
    characters, case-folded and without diacritics ('Grècia' and 'Grecia' -> 'grecia': one language marks
    the stress, the other not), romanised where it is written in another script (`anyascii`: Nepali
    'नेपाल' -> 'nepal'); None otherwise."""
    key = "".join(ch for ch in unicodedata.normalize("NFKD", token.casefold()) if not unicodedata.combining(ch))
    if not key.isascii():  # another script: its romanisation, so that names match across scripts
        key = anyascii(key).casefold()
    return key[:SPELLING_PREFIX] if len(key) >= SHARED_SPELLING_MIN and any(ch.isalpha() for ch in key) else None


@functools.lru_cache(maxsize=1 << 16)  # alignment asks for the same words sentence after sentence
def anchor_key(token: str) -> tuple[str, str] | None:
    """('number', digits) or ('spelling', shared_spelling_key), or None: two tokens with the same key
    translate each other."""
    number = number_key(token)
    if number is not None:
        return "number", number
    spelling = shared_spelling_key(token)
    return None if spelling is None else ("spelling", spelling)


def shared_keys(words_a: Sequence[str], words_b: Sequence[str]) -> tuple[list, list]:
    """Per word of each side, its `anchor_key` where the other side has a word with the same key, else
    None; numbers keep theirs either way (two different numbers are known not to translate, while a
    spelling only one side has says nothing)."""
    keys_a, keys_b = [anchor_key(w) for w in words_a], [anchor_key(w) for w in words_b]
    both = set(keys_a) & set(keys_b)

    def kept(keys) -> list:
        return [k if k is None or k[0] == "number" or k in both else None for k in keys]

    return kept(keys_a), kept(keys_b)


def positions(keys: Sequence) -> dict:
    """Where each key occurs: {key: [its positions, in order]}, None skipped."""
    where: dict = {}
    for pos, k in enumerate(keys):
        if k is not None:
            where.setdefault(k, []).append(pos)
    return where
