"""Tokenisation: ``--tokenize auto|default|none`` and ``--lowercase``, saved with a run and reused with it.

``auto`` (the default of ``xlfast train``) looks at the corpora once, before training, and picks one of the
two tokenizers below for the whole run: ``none`` when every side already looks tokenised (punctuation
stands apart from the words, as in every word-alignment gold set of the field), ``default`` otherwise.
Re-splitting pre-tokenised text can only undo the segmentation its gold alignments were made on.

``default`` is Unicode-aware and language-independent:

* a word is a run of letters with their combining marks (Devanagari vowel signs and viramas, accents
  written as combining characters) and digits;
* a hyphen between two word characters stays inside the word (``Kathmandu-based``, ``ex-presidente``);
  so do ``.`` and ``,`` between two digits (``3.5``, ``20,000``);
* an apostrophe (``'`` or ``’``) between two letters ends the word *after* itself: ``l'acqua`` →
  ``l'`` ``acqua``, ``aujourd'hui`` → ``aujourd'`` ``hui``, ``don't`` → ``don'`` ``t``.  This is the
  Romance-language elision split that the Italian and French gold data of the field already use (so that
  ``acqua`` is one vocabulary entry with or without its article), applied the same way to every language.
  A word-final apostrophe is split off, because words in single quotes (``'like this'``) are common in
  raw English and Nepali text; the standalone elided ``l'`` occurs in pre-tokenised text, which ``auto``
  leaves as it is;
* every other non-space character (punctuation, symbols, the Devanagari danda ``।``) is a token of its own.

``none`` is for pre-tokenised text: split on whitespace, nothing else.  Lowercasing is plain ``str.lower()``
(not ``casefold``, which would turn German ``ß`` into ``ss`` and change words).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import regex

from xlfast.errors import XlfastError

SPLITTERS = ("default", "none")  # what text is split with
TOKENIZERS = ("auto",) + SPLITTERS  # what a run may be told: auto picks a splitter from its corpora

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
    """Character (start, end) of every token, so outputs can quote the user's original text. ``auto``,
    where no corpus was looked at, splits as ``default``."""
    if name not in TOKENIZERS:
        raise XlfastError(f"unknown tokenizer {name!r}; choose one of: {', '.join(TOKENIZERS)}")
    pattern = _WHITESPACE if name == "none" else _DEFAULT
    return [m.span() for m in pattern.finditer(text)]


# A whitespace token with punctuation attached: a word followed by closing punctuation (``word,``
# ``word.`` ``word)`` ``word।``) or opening punctuation followed by a word (``(word`` ``¿Qué``).
_ATTACHED = regex.compile(r"[\p{L}\p{M}\p{N}][,.;:!?)\]\"”»।…]+$|^[(\[\"“«¿¡][\p{L}\p{N}]")
# Raw text: in running prose nearly every line ends in an attached mark and one word in 8–30 carries one;
# in tokenised text only abbreviations (``Mr.``) do, well under 1% of words and almost never at a line's end.
# A side is raw when either rate is reached (measured on English, Spanish, Shipibo-Konibo, Nepali, French,
# Romanian, Italian and Griko text, raw and tokenised: raw sides ≥6% / ≥30%, tokenised ≤0.6% / 0%).
RAW_WORD_RATE, RAW_LINE_RATE = 0.015, 0.10


@dataclass(frozen=True)
class Tokenisedness:
    """How much of a text's punctuation is attached to its words, from a sample of its lines."""

    words: int = 0
    attached_words: int = 0
    lines: int = 0
    attached_line_ends: int = 0

    @classmethod
    def of(cls, lines) -> "Tokenisedness":
        words = attached = n = ends = 0
        for line in lines:
            tokens = line.split()
            if not tokens:
                continue
            flags = [bool(_ATTACHED.search(t)) for t in tokens]
            words, attached, n, ends = words + len(tokens), attached + sum(flags), n + 1, ends + flags[-1]
        return cls(words, attached, n, ends)

    @property
    def raw(self) -> bool:
        return (self.attached_words >= RAW_WORD_RATE * self.words
                or self.attached_line_ends >= RAW_LINE_RATE * self.lines) and self.words > 0

    def describe(self) -> str:
        return (f"{self.attached_words / max(self.words, 1):.1%} of words and "
                f"{self.attached_line_ends / max(self.lines, 1):.1%} of line ends carry punctuation")


@dataclass(frozen=True)
class TokenizerSpec:
    """How text becomes tokens; saved in a run (``to_dict``) so alignment and mining tokenise the same way."""

    name: str = "auto"  # "auto" (pick from the corpora) | "default" (splits punctuation) | "none" (whitespace)
    lowercase: bool = False
    auto: bool = field(default=False, compare=False)  # the name was picked by `resolved`, not by the user
    reason: str = field(default="", compare=False, repr=False)  # why `resolved` picked it (not saved)

    def __post_init__(self):
        if self.name not in TOKENIZERS:
            raise XlfastError(f"unknown tokenizer {self.name!r}; choose one of: {', '.join(TOKENIZERS)}")

    def resolved(self, sides: dict[str, Tokenisedness]) -> "TokenizerSpec":
        """``auto`` made a splitter from a sample of each side of the corpora (name → its measure):
        ``none`` when every side looks tokenised already, ``default`` when any looks raw."""
        if self.name != "auto":
            return self
        raw = [f"{name} looks like raw text ({t.describe()})" for name, t in sides.items() if t.raw]
        why = "; ".join(raw) or ("every side looks tokenised already (" + "; ".join(
            f"{name}: {t.describe()}" for name, t in sides.items()) + "); --tokenize default splits it anyway")
        return TokenizerSpec("default" if raw else "none", self.lowercase, auto=True, reason=why)

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
        return {"name": self.name, "lowercase": self.lowercase, "auto": self.auto}

    @classmethod
    def from_dict(cls, d: dict) -> "TokenizerSpec":
        unknown = set(d) - {"name", "lowercase", "auto"}
        if unknown:
            raise XlfastError(f"unknown tokenizer settings: {', '.join(sorted(unknown))}")
        # runs saved before `auto` existed named "default" or "none" and were never automatic
        return cls(name=str(d.get("name", "default")), lowercase=bool(d.get("lowercase", False)),
                   auto=bool(d.get("auto", False)))
