"""Pluggable contextual encoders for mining: a trained xlfast run, or a transformer from a local directory.

Both give one vector per *word* of a pre-tokenised sentence, so the miner never sees subword pieces:
an xlfast run already embeds words; a transformer gives the vector of the word's last sub-token
(Hangya et al. 2022). Nothing here downloads anything: the transformer path is `local_files_only`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from xlfast.errors import XlfastError


class Encoder(Protocol):
    """What the miner needs: per side ('src' or 'tgt'), a tokenizer and word-level contextual vectors."""

    name: str
    dim: int

    def tokenize(self, side: str, text: str) -> list[str]: ...

    def embed(self, side: str, sentences: Sequence[Sequence[str]]) -> list[np.ndarray]: ...

    # Optional: `word_vectors(side, words) -> [len(words), d']`, context-free vectors of word types (an
    # xlfast run's subword-aware table). Sentence mining uses them beside the contextual ones where present.


def whitespace_tokenizer(text: str) -> list[str]:
    return text.split()


def load_encoder(model=None, hf_model=None, tokenize: str | None = None, lowercase: bool | None = None,
                 src_lang: str | None = None, tgt_lang: str | None = None) -> "Encoder":
    """The encoder `xlfast mine` asks for: a run directory (`model`) or a local transformer (`hf_model`).
    `tokenize` / `lowercase` (when not None) replace the parts of the tokenizer the run remembers; a
    transformer reads whitespace tokens as written unless told otherwise."""
    if (model is None) == (hf_model is None):
        raise XlfastError("give exactly one encoder: --model RUN_DIR or --hf-model PATH")
    if hf_model is not None:
        from xlfast.tokenize import TokenizerSpec

        told = tokenize is not None or lowercase is not None
        return HFEncoder(hf_model, tokenizer=TokenizerSpec(tokenize or "none", bool(lowercase)) if told else None)
    return RunEncoder.load(model, src_lang, tgt_lang, tokenize=tokenize, lowercase=lowercase)


class RunEncoder:
    """The shared encoder of a trained xlfast run (xlfast.run.Run): contextual states per word (the top
    encoder layer of a parallel run; forward and backward LM states of a mono run, twice as wide)."""

    def __init__(self, run, src_lang: str | None = None, tgt_lang: str | None = None,
                 tokenizer: Callable[[str], list[str]] | None = None, batch_size: int = 64):
        langs = list(run.langs)
        src_lang = src_lang or langs[0]
        tgt_lang = tgt_lang or (langs[1] if len(langs) > 1 else langs[0])
        for lang in (src_lang, tgt_lang):
            if lang not in langs:
                raise XlfastError(f"the run has no language '{lang}' (it has: {', '.join(langs)})")
        self.run = run
        self.langs = {"src": src_lang, "tgt": tgt_lang}
        # The run remembers how its training text was tokenised; reuse it unless told otherwise.
        self._tokenize = tokenizer or getattr(run, "tokenizer", None) or whitespace_tokenizer
        self.batch_size = batch_size
        self.name = f"xlfast run ({src_lang}-{tgt_lang})"
        self.dim = int(run.model.context_dim)  # what embed_sentences returns, not the static vectors' size

    @classmethod
    def load(cls, run_dir, src_lang=None, tgt_lang=None, tokenize: str | None = None,
             lowercase: bool | None = None, device="cpu") -> "RunEncoder":
        """The encoder of a run directory, tokenising as the run was trained unless `tokenize` /
        `lowercase` say otherwise."""
        try:
            from xlfast.run import Run
        except ImportError as exc:  # the run API lands with `xlfast train`
            raise XlfastError(f"loading xlfast runs is not available in this build ({exc})") from None
        if not Path(run_dir).is_dir():
            raise XlfastError(f"{run_dir}: not a run directory")
        run = Run.load(run_dir, device=device)
        return cls(run, src_lang, tgt_lang, run.tokenizer_with(tokenize, lowercase))

    def tokenize(self, side: str, text: str) -> list[str]:
        return list(self._tokenize(text))

    def embed(self, side: str, sentences: Sequence[Sequence[str]]) -> list[np.ndarray]:
        out = self.run.embed_sentences(self.langs[side], [list(s) for s in sentences], batch_size=self.batch_size)
        return [_as_numpy(v) for v in out]

    def word_vectors(self, side: str, words: Sequence[str]) -> np.ndarray:
        """The run's static subword-aware vectors (unseen words: from their pieces), float32."""
        return _as_numpy(self.run.embed_words(self.langs[side], list(words)).float())


class HFEncoder:
    """A pre-trained transformer (AutoModel + AutoTokenizer) from a local directory; last sub-token per word."""

    def __init__(self, path, tokenizer: Callable[[str], list[str]] | None = None, layer: int = -1,
                 batch_size: int = 32, device: str = "cpu"):
        try:
            import torch
            from transformers import AutoModel, AutoTokenizer
        except ImportError:
            raise XlfastError("--hf-model needs the optional extra: pip install 'xlfast[hf]'") from None
        path = Path(path)
        if not path.is_dir():
            raise XlfastError(f"{path}: not a directory with a saved transformer (config.json, weights, tokenizer)")
        try:
            self.tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(path), local_files_only=True).to(device).eval()
        except (OSError, ValueError) as exc:
            raise XlfastError(f"{path}: cannot load a transformer from it ({str(exc).splitlines()[0]})") from None
        self.torch = torch
        self.device = device
        self.layer = layer
        self.batch_size = batch_size
        self._tokenize = tokenizer or whitespace_tokenizer
        self.name = f"transformer {path.name}"
        self.dim = int(self.model.config.hidden_size)
        self.max_len = int(min(getattr(self.model.config, "max_position_embeddings", 512), 512))
        self._pieces: dict[str, list[int]] = {}  # word -> sub-token ids, cached per word type
        self.cls_id = self.tok.cls_token_id if self.tok.cls_token_id is not None else self.tok.bos_token_id
        self.sep_id = self.tok.sep_token_id if self.tok.sep_token_id is not None else self.tok.eos_token_id
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0

    def tokenize(self, side: str, text: str) -> list[str]:
        return list(self._tokenize(text))

    def word_pieces(self, word: str) -> list[int]:
        ids = self._pieces.get(word)
        if ids is None:
            ids = self.tok(word, add_special_tokens=False)["input_ids"] or [self.tok.unk_token_id]
            self._pieces[word] = ids
        return ids

    def _windows(self, words: Sequence[str]):
        """Split a sentence into word windows that fit the model (specials included)."""
        budget = self.max_len - 2
        start, used = 0, 0
        for i, w in enumerate(words):
            n = min(len(self.word_pieces(w)), budget)
            if used + n > budget and i > start:
                yield start, i
                start, used = i, 0
            used += n
        if start < len(words):
            yield start, len(words)

    def embed(self, side: str, sentences: Sequence[Sequence[str]]) -> list[np.ndarray]:
        torch = self.torch
        # Each item: (sentence index, first word, input ids, positions of each word's last sub-token).
        items = []
        for si, words in enumerate(sentences):
            for a, b in self._windows(words):
                ids, last = [self.cls_id], []
                for w in words[a:b]:
                    ids.extend(self.word_pieces(w)[: self.max_len - 2])
                    last.append(len(ids) - 1)
                ids.append(self.sep_id)
                items.append((si, a, ids[: self.max_len], last))
        out = [np.zeros((len(s), self.dim), dtype=np.float32) for s in sentences]
        for lo in range(0, len(items), self.batch_size):
            batch = items[lo: lo + self.batch_size]
            width = max(len(it[2]) for it in batch)
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, (_, _, seq, _) in enumerate(batch):
                ids[r, : len(seq)] = torch.tensor(seq)
                mask[r, : len(seq)] = 1
            with torch.inference_mode():
                res = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                 output_hidden_states=self.layer != -1)
                hidden = res.last_hidden_state if self.layer == -1 else res.hidden_states[self.layer]
                hidden = hidden.float().cpu().numpy()
            for r, (si, a, _, last) in enumerate(batch):
                out[si][a: a + len(last)] = hidden[r, last]
        return out


def _as_numpy(v) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().float().cpu().numpy()
    return np.asarray(v, dtype=np.float32)
