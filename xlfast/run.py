"""A trained run, for notebooks and for `align`, `mine`, `eval`, `nn`:

    from xlfast.run import Run
    run = Run.load("runs/grk-it")
    words, vecs = run.word_vectors("grk")            # static subword-aware vectors, whole vocabulary
    run.embed_words("it", ["casa", "cas-nuova"])      # unseen words go through their subword pieces
    run.embed_sentences("grk", [run.tokenizer("ìcha na aforàso to tsomì")])   # contextual vectors
"""
from __future__ import annotations

from pathlib import Path

import torch

from xlfast import threads
from xlfast.errors import XlfastError
from xlfast.model import BOS, PAD, SPECIALS, UNK
from xlfast.rundir import MODEL, RunDir
from xlfast.tokenize import TokenizerSpec


class Run:
    def __init__(self, run_dir: Path, model, vocabs: dict[str, list[str]], tokenizer: TokenizerSpec,
                 config: dict, device: torch.device):
        self.run_dir = run_dir
        self.files = RunDir(run_dir)
        self.model = model.eval()
        self.vocabs = vocabs
        self.tokenizer = tokenizer
        self.config = config
        self.device = device
        self.langs: list[str] = list(model.cfg.langs)
        self._index = {lang: {w: i for i, w in enumerate(v)} for lang, v in vocabs.items()}
        self._tables: dict[str, torch.Tensor] = {}
        self._segmenters: dict = {}
        self._piece_index: dict[str, int] | None = None

    @classmethod
    def load(cls, run_dir, device: str = "cpu", checkpoint: str = MODEL) -> "Run":
        """A run directory's model (`checkpoint`: model.pt, the selected one, or checkpoint.pt, the last
        epoch's) on `device`. A missing or damaged file of the run is one line naming it."""
        files = RunDir(run_dir)
        config = files.read_config()
        mcfg = files.model_config(config)
        dev = torch.device(device)
        model = files.load_model(checkpoint, dev, mcfg)
        vocabs = {lang: files.read_vocab(lang) for lang in mcfg.langs}
        return cls(files.path, model, vocabs, files.tokenizer(config), config, dev)

    def language_pair(self, src_lang: str | None = None, tgt_lang: str | None = None) -> tuple[str, str]:
        """(source, target): the run's first language and its other one unless given; each must be in the run."""
        if len(self.langs) < 2 and (src_lang is None or tgt_lang is None):
            raise XlfastError(f"the run has one language ({self.langs[0]}); pass --src-lang and --tgt-lang")
        src_lang = src_lang or self.langs[0]
        tgt_lang = tgt_lang or next(lang for lang in self.langs if lang != src_lang)
        for lang in (src_lang, tgt_lang):
            self._check_lang(lang)
        return src_lang, tgt_lang

    def tokenizer_with(self, name: str | None = None, lowercase: bool | None = None) -> TokenizerSpec:
        """The tokenizer the run was trained with, with the parts given (not None) replaced."""
        return TokenizerSpec(name=self.tokenizer.name if name is None else name,
                             lowercase=self.tokenizer.lowercase if lowercase is None else lowercase)

    def _check_lang(self, lang: str) -> None:
        if lang not in self.vocabs:
            raise XlfastError(f"language '{lang}' is not in this run (it has: {', '.join(self.langs)})")

    def vocab(self, lang: str) -> list[str]:
        self._check_lang(lang)
        return self.vocabs[lang][len(SPECIALS) :]

    def table(self, lang: str) -> torch.Tensor:
        """Ẽ of the whole vocabulary, specials included (row = word id)."""
        self._check_lang(lang)
        if lang not in self._tables:
            self._tables[lang] = self.model.static_table(lang)
        return self._tables[lang]

    def word_vectors(self, lang: str) -> tuple[list[str], torch.Tensor]:
        return self.vocab(lang), self.table(lang)[len(SPECIALS) :]

    def bos_vector(self, lang: str) -> torch.Tensor:
        return self.table(lang)[BOS]

    def _pieces_of(self, lang: str, words: list[str]) -> list[list[int]]:
        if self._piece_index is None:
            self._piece_index = {p: i for i, p in enumerate(self.files.read_pieces())}
        if lang not in self._segmenters:
            self._segmenters[lang] = self.files.segmenter(lang)
        seg = self._segmenters[lang]
        return [[self._piece_index[p] for p in seg.pieces(w) if p in self._piece_index] for w in words]

    @torch.no_grad()
    def embed_words(self, lang: str, words: list[str]) -> torch.Tensor:
        """Static vectors; words outside the vocabulary get E[<unk>] + F(their pieces)."""
        table = self.table(lang)
        index = self._index[lang]
        ids = [index.get(w, -1) for w in words]
        out = torch.empty(len(words), table.shape[1], dtype=table.dtype, device=table.device)
        known = [i for i, j in enumerate(ids) if j >= 0]
        if known:
            out[known] = table[[ids[i] for i in known]]
        oov = [i for i, j in enumerate(ids) if j < 0]
        if oov:
            if self.model.cfg.subword == "none":
                out[oov] = table[UNK]
            else:
                out[oov] = self.model.embed.lookup_oov(lang, self._pieces_of(lang, [words[i] for i in oov]))
        return out

    def ids(self, lang: str, tokens: list[str]) -> list[int]:
        index = self._index[lang]
        return [index.get(w, UNK) for w in tokens]

    @property
    def kind(self) -> str:
        """'parallel' (encoder-decoder) or 'mono' (multilingual LM)."""
        return self.model.cfg.kind

    @torch.no_grad()
    def embed_sentences(self, lang: str, sentences: list[list[str]], batch_size: int = 64) -> list[torch.Tensor]:
        """Contextual vectors, one [n_i, d] tensor per tokenised sentence: the top encoder layer of a
        parallel run; [forward LM state ; backward LM state] after each word ([n_i, 2d]) of a mono run.

        Unseen words enter the encoder with their subword-aware vectors, not as a bare <unk>."""
        self._check_lang(lang)
        table = self.table(lang)
        out: list[torch.Tensor | None] = [None] * len(sentences)
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))  # little padding
        for k in range(0, len(order), batch_size):
            threads.poll()  # between batches: share the CPUs when other work runs (xlfast.threads)
            chunk = order[k : k + batch_size]
            nonempty = [i for i in chunk if sentences[i]]
            for i in chunk:
                if not sentences[i]:
                    out[i] = torch.zeros(0, self.model.context_dim)
            if not nonempty:
                continue
            L = max(len(sentences[i]) for i in nonempty)
            emb = torch.zeros(len(nonempty), L, table.shape[1], dtype=table.dtype, device=table.device)
            for r, i in enumerate(nonempty):
                emb[r, : len(sentences[i])] = self.embed_words(lang, sentences[i])
            lengths = torch.tensor([len(sentences[i]) for i in nonempty], device=table.device)
            u = self.model.encode(emb, lengths)
            for r, i in enumerate(nonempty):
                out[i] = u[r, : len(sentences[i])].float().cpu()
        return out  # type: ignore[return-value]


__all__ = ["Run", "PAD", "UNK"]
