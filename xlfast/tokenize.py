"""Tokenisation: ``--tokenize default|none`` and ``--lowercase``, saved with a run and reused with it.

``default`` is Unicode-aware and language-independent:

* a word is a run of letters with their combining marks (Devanagari vowel signs and viramas, accents
  written as combining characters) and digits;
* a hyphen between two word characters stays inside the word (``Kathmandu-based``, ``ex-presidente``);
  so do ``.`` and ``,`` between two digits (``3.5``, ``20,000``);
* an apostrophe (``'`` or ``’``) between two letters ends the word *after* itself: ``l'acqua`` →
  ``l'`` ``acqua``, ``aujourd'hui`` → ``aujourd'`` ``hui``, ``don't`` → ``don'`` ``t``.  This is the
  Romance-language elision split that the Italian and French gold data of the field already use (so that
  ``acqua`` is one vocabulary entry with or without its article), applied the same way to every language;
* every other non-space character (punctuation, symbols, the Devanagari danda ``।``) is a token of its own.

``none`` is for pre-tokenised text: split on whitespace, nothing else.  Lowercasing is plain ``str.lower()``
(not ``casefold``, which would turn German ``ß`` into ``ss`` and change words).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import regex

from xlfast.errors import XlfastError

TOKENIZERS = ("default", "none")

_WORD_CHAR = r"[\p{L}\p{M}\p{N}]"
_DEFAULT = regex.compile(
    r"""
    (?:\p{L}\p{M}*)+['’](?=\p{L})                      # elided word with its apostrophe: l'  aujourd'
    | [\p{L}\p{M}\p{N}]+(?:-[\p{L}\p{M}\p{N}]+)*       # word, internal hyphens kept
      (?:(?<=\p{N})[.,](?=\p{N})[\p{N}]+)*             # digits joined by . or , : 3.5  20,000
      (?:-[\p{L}\p{M}\p{N}]+)*
    | \p{M}+                                           # a stray combining mark (no base letter)
    | \S                                               # anything else: one token per character
    """,
    regex.VERBOSE,
)
_WHITESPACE = regex.compile(r"\S+")


def token_spans(text: str, name: str = "default") -> list[tuple[int, int]]:
    """Character (start, end) of every token, so outputs can quote the user's original text."""
    pattern = _DEFAULT if name == "default" else _WHITESPACE
    if name not in TOKENIZERS:
        raise XlfastError(f"unknown tokenizer {name!r}; choose one of: {', '.join(TOKENIZERS)}")
    return [m.span() for m in pattern.finditer(text)]


@dataclass(frozen=True)
class TokenizerSpec:
    """How text becomes tokens; saved in a run (``to_dict``) so alignment and mining tokenise the same way."""

    name: str = "default"  # "default" (Unicode-aware, splits punctuation) | "none" (split on whitespace)
    lowercase: bool = False

    def __post_init__(self):
        if self.name not in TOKENIZERS:
            raise XlfastError(f"unknown tokenizer {self.name!r}; choose one of: {', '.join(TOKENIZERS)}")

    def __call__(self, text: str) -> list[str]:
        if self.name == "none":
            tokens = text.split()
        else:
            tokens = _DEFAULT.findall(text)
        if self.lowercase:
            tokens = [t.lower() for t in tokens]
        return tokens

    def spans(self, text: str) -> list[tuple[int, int]]:
        return token_spans(text, self.name)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TokenizerSpec":
        unknown = set(d) - {"name", "lowercase"}
        if unknown:
            raise XlfastError(f"unknown tokenizer settings: {', '.join(sorted(unknown))}")
        return cls(name=str(d.get("name", "default")), lowercase=bool(d.get("lowercase", False)))
