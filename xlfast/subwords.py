"""SentencePiece models per language and the piece table shared by all languages (Wada et al. 2021, §3.1).

Each language gets its own unigram SentencePiece model trained by xlfast on that language's words.
The piece table is the sorted union of every language's pieces, so an identical piece in two languages
is one row of `Z`. Every vocabulary word maps to a list of rows of that table.
"""
from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import sentencepiece as spm

# Special tokens get one piece of their own so that every word has at least one piece.
SPECIAL_PIECE_PREFIX = "<sp>"
COUNTS_CAP = 1_000_000  # tokens SentencePiece is trained on at most (a larger corpus: its counts scaled down)


def train_sentencepiece(word_counts: Counter, vocab_size: int = 1000) -> bytes:
    """A unigram model trained on the language's word types, weighted by frequency.

    The vocabulary size is shrunk for tiny corpora: SentencePiece cannot make more pieces than the
    characters and words allow, and a hard limit would fail on a few hundred sentences.
    """
    # Words go in one per line with their counts (TSV input), so sentence boundaries cannot create
    # pieces that span words. SentencePiece's memory grows with the counts' sum (measured: +216 MB at 2.7M
    # tokens, +2 GB at 18M), so counts past COUNTS_CAP tokens are scaled down, keeping the proportions.
    total = sum(word_counts.values())
    scale = min(1.0, COUNTS_CAP / total) if total else 1.0
    lines = [f"{w}\t{max(1, round(c * scale))}" for w, c in word_counts.most_common() if w and not w.isspace()]
    if not lines:
        raise ValueError("no words to train SentencePiece on")
    chars = {ch for w in word_counts for ch in w}
    size = max(min(vocab_size, len(word_counts) + len(chars) + 2), len(chars) + 4)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        input_format="tsv",
        vocab_size=size,
        model_type="unigram",
        character_coverage=1.0,
        hard_vocab_limit=False,
        split_digits=False,
        bos_id=-1,
        eos_id=-1,
        unk_id=0,
        minloglevel=2,
        num_threads=1,
    )
    return model.getvalue()


class Segmenter:
    """Splits words of one language into SentencePiece pieces (`▁put` + `s`)."""

    def __init__(self, model_bytes: bytes):
        self.model_bytes = model_bytes
        self.sp = spm.SentencePieceProcessor(model_proto=model_bytes)

    @classmethod
    def load(cls, path: Path | str) -> "Segmenter":
        return cls(Path(path).read_bytes())

    def pieces(self, word: str) -> list[str]:
        out = [p for p in self.sp.encode(word, out_type=str) if p]
        return out or [word]


def build_piece_table(pieces_per_lang: dict[str, list[list[str]]]) -> tuple[list[str], dict[str, list[list[int]]]]:
    """Sorted union of all languages' pieces, and each word's pieces as rows of that table."""
    table = sorted({p for words in pieces_per_lang.values() for ps in words for p in ps})
    index = {p: i for i, p in enumerate(table)}
    ids = {lang: [[index[p] for p in ps] for ps in words] for lang, words in pieces_per_lang.items()}
    return table, ids
