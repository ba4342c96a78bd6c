"""Words whose spelling alone says what they translate to: numbers in any script's digits, and words
spelt the same in both languages (names, loanwords). Identical strings are the classic seed dictionary
between languages that share a script (Artetxe et al. 2017, "Learning bilingual word embeddings with
(almost) no bilingual data", §4); the digits of a number mean the same whatever script writes them.
Sentence mining (`xlfast.mine`) and word alignment (`xlfast.align`) both trust these keys over the vectors
(`shared_keys`)."""
from __future__ import annotations

import unicodedata
from collections.abc import Sequence

NUMBER_SEPARATORS = frozenset(",.'")
SHARED_SPELLING_MIN = 3  # shorter words spelt alike are too often different words ('a', 'no', 'en' in two languages)
LOANWORD_STEM_MIN = 6  # a shorter word of the other language beginning a word is too often chance, not its stem


def number_key(token: str) -> str | None:
    """The digits of a number written in any script, as ASCII ('१,९९०' and '1990' -> '1990'); None for
    a token that is not a number."""
    if not any(ch.isdecimal() for ch in token) or not all(ch.isdecimal() or ch in NUMBER_SEPARATORS for ch in token):
        return None
    return "".join(str(unicodedata.decimal(ch)) for ch in token if ch.isdecimal())


def shared_spelling_key(token: str) -> str | None:
    """The spelling of a word with a letter and at least SHARED_SPELLING_MIN characters, case-folded and
    without diacritics ('Grècia' and 'Grecia' -> 'grecia': one language marks the stress, the other not);
    None otherwise."""
    key = "".join(ch for ch in unicodedata.normalize("NFKD", token.casefold()) if not unicodedata.combining(ch))
    return key if len(key) >= SHARED_SPELLING_MIN and any(ch.isalpha() for ch in key) else None


def anchor_key(token: str) -> tuple[str, str] | None:
    """('number', digits) or ('spelling', case-folded word), or None: two tokens with the same key
    translate each other."""
    number = number_key(token)
    if number is not None:
        return "number", number
    spelling = shared_spelling_key(token)
    return None if spelling is None else ("spelling", spelling)



def shared_keys(words_a: Sequence[str], words_b: Sequence[str]) -> tuple[list, list]:
    """Per word of each side, its `anchor_key` where the other side has a word with the same key, else
    None; numbers keep theirs either way (two different numbers are known not to translate). A word whose
    spelling the other side lacks takes the key of the longest word of the other side, of at least
    LOANWORD_STEM_MIN characters, that begins it, and that word keeps its key: a loanword under the
    suffixes of an agglutinative language ('tecnologianinra' and 'tecnología': 'tecnologia')."""
    keys_a, keys_b = [anchor_key(w) for w in words_a], [anchor_key(w) for w in words_b]

    def spellings(keys) -> set[str]:
        return {k[1] for k in keys if k is not None and k[0] == "spelling"}

    def matched(keys, other: set[str]) -> list:
        out = []
        for k in keys:
            if k is not None and k[0] == "spelling" and k[1] not in other:
                s = k[1]
                stem = next((s[:n] for n in range(len(s) - 1, LOANWORD_STEM_MIN - 1, -1) if s[:n] in other), None)
                k = None if stem is None else ("spelling", stem)
            out.append(k)
        return out

    found_a, found_b = matched(keys_a, spellings(keys_b)), matched(keys_b, spellings(keys_a))
    stems = spellings(found_a) | spellings(found_b)  # a word another took as its stem anchors too

    def kept(found, keys) -> list:
        return [f if f is not None or k is None or k[1] not in stems else k for f, k in zip(found, keys)]

    return kept(found_a, keys_a), kept(found_b, keys_b)
