"""The cross-lingual encoder-decoder of Wada et al. (2021), with the details of the authors' released code
(github.com/twadada/multilingual-nlm) where the paper is silent.

One step trains every objective of a batch of one corpus pair (s, t) at once:
- the shared encoder runs once over the source sentences of both languages (stacked as one batch);
- each decoder (target language, direction) runs once: with a zero initial state and no input feeding
  its hidden states do not depend on the source, so the same states serve reconstruction (source = own
  language) and translation (source = the other language) — the authors' code runs them twice;
- attention and the tied output layer are batched over both sources and both directions.

Bidirectional LSTMs over right-padded batches are exact here: the backward direction is a forward LSTM
over each sequence reversed within its own length, so padding never feeds a real position.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from xlfast.kernels.linear_ce import linear_cross_entropy, sampled_cross_entropy
from xlfast.kernels.subword_embed import PieceLayout, subword_embed, table_dropout

SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
PAD, UNK, BOS, EOS = 0, 1, 2, 3

PRESETS = {
    # Model sizes of Wada et al. (2021): their low-resource settings, and the medium / high-resource ones
    # used for the larger corpora of their Table 7.
    "low": dict(dim=500, enc_layers=1, dec_layers=1, batch_size=16),
    "medium": dict(dim=500, enc_layers=2, dec_layers=1, batch_size=32),
    "high": dict(dim=768, enc_layers=3, dec_layers=2, batch_size=80),
}


@dataclass
class ModelConfig:
    langs: list[str]
    vocab_sizes: dict[str, int]
    num_pieces: int = 0
    dim: int = 500
    enc_layers: int = 1
    dec_layers: int = 1
    subword: str = "ave"  # none | ave | cnn
    dropout: float = 0.5
    init_range: float = 0.1
    kind: str = "parallel"  # parallel: CrossLingualModel; mono: MultilingualLM
    softmax: str = "full"  # full | sampled (training only; needs a sampler, see _EmbeddingModel.output_loss)
    # language → {"rows": rows of its frozen pre-trained table, "added": how many of them are words the
    # trained vocabulary lacks} (Wada et al. 2021, §3.7; xlfast.pretrained). vocab_sizes counts the trained
    # vocabulary only (the output classes), not the words only pre-trained vectors know.
    pretrained: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return cls(**d)


def reverse_index(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """Index that reverses each sequence within its length and leaves padding in place (an involution)."""
    t = torch.arange(max_len, device=lengths.device).unsqueeze(0)
    n = lengths.unsqueeze(1)
    return torch.where(t < n, n - 1 - t, t)


def reverse_padded(x: torch.Tensor, rev: torch.Tensor) -> torch.Tensor:
    return x.gather(1, rev.unsqueeze(-1).expand_as(x))


class SubwordEmbedding(nn.Module):
    """Per-language word tables E^ℓ plus F over pieces of the shared table Z: Ẽ^ℓ_w = E^ℓ_w + F(Z_{Q(w)}).

    A language with pre-trained vectors (Wada et al. 2021, §3.7) takes `a ⊗ E_pre_w + b` instead for the
    words those vectors know: E_pre frozen, a and b trainable and shared by all of them. Its words that only
    the vectors know follow the trained vocabulary: `table(lang)` appends them, `table(lang, full=False)`
    (training: the tied output layer's classes) leaves them out. `pretrained`: language → its frozen rows
    (`xlfast.pretrained.PretrainedRows`), one for each language of `cfg.pretrained`."""

    def __init__(self, cfg: ModelConfig, pieces_per_word: dict[str, list[list[int]]] | None,
                 pretrained: dict | None = None):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.E = nn.ParameterDict({lang: nn.Parameter(torch.empty(cfg.vocab_sizes[lang], d)) for lang in cfg.langs})
        self.subword = cfg.subword
        self._layouts: dict[str, PieceLayout] = {}
        if self.subword != "none":
            self.Z = nn.Parameter(torch.empty(cfg.num_pieces, d))
            if pieces_per_word is None:
                raise ValueError("a subword model needs the pieces of every word (CrossLingualModel.from_state)")
            for lang in cfg.langs:
                lay = PieceLayout.from_lists(pieces_per_word[lang], cfg.num_pieces)
                # Buffers so that the layout travels with the checkpoint and with .to(device).
                self.register_buffer(f"offsets_{lang}", lay.offsets.long(), persistent=True)
                self.register_buffer(f"pieces_{lang}", lay.pieces.long(), persistent=True)
        if self.subword == "cnn":
            # Conv1d(d→d, kernel 3, padding 1) over a word's pieces, then the mean (SWcnn, Wada et al. 2021, §3.1; as the authors' code does it).
            self.conv = nn.Conv1d(d, d, kernel_size=3, padding=1)
        self.pre_scale = nn.ParameterDict({lang: nn.Parameter(torch.ones(d)) for lang in cfg.pretrained})
        self.pre_shift = nn.ParameterDict({lang: nn.Parameter(torch.zeros(d)) for lang in cfg.pretrained})
        for lang in cfg.pretrained:
            if lang not in (pretrained or {}):
                raise ValueError(f"the model takes pre-trained vectors for '{lang}': pass them (RunDir.read_pretrained)")
            rows = pretrained[lang]
            # Buffers travel with .to(device); non-persistent: the frozen vectors (often the largest tensor)
            # are saved once in the run directory, not in every checkpoint (xlfast.rundir)
            self.register_buffer(f"pre_ids_{lang}", torch.as_tensor(rows.ids, dtype=torch.long), persistent=False)
            self.register_buffer(f"pre_vectors_{lang}", torch.as_tensor(rows.vectors, dtype=torch.float32),
                                 persistent=False)

    def reset_pretrained(self) -> None:
        """a = 1, b = 0: the pre-trained vectors enter as they are."""
        for p in self.pre_scale.values():
            nn.init.ones_(p)
        for p in self.pre_shift.values():
            nn.init.zeros_(p)

    def _with_pretrained(self, lang: str, table: torch.Tensor, dropout: float, full: bool) -> torch.Tensor:
        """`table` (the trained vocabulary) with its pre-trained words' rows set to a ⊗ E_pre + b, and with
        `full` the words only the vectors know appended."""
        ids, vectors = getattr(self, f"pre_ids_{lang}"), getattr(self, f"pre_vectors_{lang}")
        size = self.cfg.pretrained[lang]
        in_vocab = size["rows"] - size["added"]  # ids ascend: the added words come last
        rows = vectors if full else vectors[:in_vocab]
        pre = rows * self.pre_scale[lang] + self.pre_shift[lang]
        if dropout:
            pre = table_dropout(pre, dropout)
        table = table.index_copy(0, ids[:in_vocab], pre[:in_vocab].to(table.dtype))
        return torch.cat([table, pre[in_vocab:].to(table.dtype)]) if full else table

    def layout(self, lang: str) -> PieceLayout:
        offsets = getattr(self, f"offsets_{lang}")
        lay = self._layouts.get(lang)
        if lay is None or lay.offsets.device != offsets.device or lay.offsets.data_ptr() != offsets.data_ptr():
            lay = PieceLayout(offsets, getattr(self, f"pieces_{lang}"), self.cfg.num_pieces, check=False)
            self._layouts[lang] = lay
        return lay

    def table(self, lang: str, dropout: float = 0.0, backend: str | None = None, full: bool = True) -> torch.Tensor:
        """Ẽ for the whole vocabulary of `lang` (`full=False`: the trained vocabulary only, without the
        words only pre-trained vectors know). With `dropout` (training): one mask on the piece table
        and one on the resulting matrix, so every token of a word type shares it (the authors' code)."""
        table = self._trained_table(lang, dropout, backend)
        if lang in self.pre_scale:
            return self._with_pretrained(lang, table, dropout, full)
        return table

    def _trained_table(self, lang: str, dropout: float, backend: str | None) -> torch.Tensor:
        E = self.E[lang]
        if self.subword == "none":
            return table_dropout(E, dropout, backend=backend) if dropout else E
        kind = E.device.type
        bf16 = torch.is_autocast_enabled(kind) and torch.get_autocast_dtype(kind) == torch.bfloat16
        # The tables stay in fp32 under bf16 autocast: the lookup kernels and the tied output read them.
        with torch.profiler.record_function("subword_embed"), torch.autocast(kind, enabled=False):
            lay = self.layout(lang)
            if self.subword == "ave":
                # Both masks fused into the kernel: hashed, not stored, ~10x cheaper than F.dropout here.
                return subword_embed(E, self.Z, lay, backend=backend, piece_dropout=dropout, output_dropout=dropout)
            out = self._cnn_table(E, self.Z, lay, backend, dropout, bf16)
            return table_dropout(out, dropout, backend=backend) if dropout else out

    def _cnn_table(self, E, Z, lay: PieceLayout, backend, dropout: float = 0.0, bf16: bool = False) -> torch.Tensor:
        # The mean over positions of a width-3 convolution is linear in the pieces, so the whole
        # vocabulary needs no per-word convolution: with taps W0, W1, W2 and z_{-1} = z_n = 0,
        #   mean_t y_t = [Σ_t (W0+W1+W2)·z_t − W0·z_last − W2·z_first] / n + b.
        # Three d×d products on the rows of the piece table this language uses (about half of the shared
        # table: 531 of 781 pieces for Griko) replace a conv over every word (V × pieces).
        used, lay = lay.compacted()
        Z = Z.index_select(0, used)
        if dropout:  # on the pieces this language uses only, with the lookup's hashed mask (no RNG tensor)
            Z = table_dropout(Z, dropout, backend=backend)
        d = Z.shape[1]
        # [in, 3·out] = W0ᵀ | W1ᵀ | W2ᵀ: one permuted copy of the conv weight [out, in, 3], whose gradient is
        # one permuted add. Building (W0+W1+W2)ᵀ beside W0ᵀ and W2ᵀ from slices and a sum over the taps cost
        # more than the products (strided reads over the kernel axis, forward and backward): a grk-it
        # step's two tables took 28.6 ms against 21.2 ms this way (SWave: 4.4 ms; 2-core AMX CPU).
        taps = self.conv.weight.permute(1, 2, 0).reshape(d, 3 * d)
        # Under bf16 autocast the products run in bf16 (fp32 accumulation), as every other GEMM of the step
        # does; the encoder and the output layer read the table in bf16 all the same.
        zt = (Z.bfloat16() @ taps.bfloat16()).float() if bf16 else Z @ taps
        z0, z1, z2 = zt[:, :d], zt[:, d : 2 * d], zt[:, 2 * d :]
        mean_part = subword_embed(E, z0 + z1 + z2, lay, backend=backend)
        first, last = lay.first_last()
        # index_select, not z0[last]: its gradient is an index_add, not a sort-based index_put
        ends = z0.index_select(0, last) + z2.index_select(0, first)
        return torch.addcmul(mean_part + self.conv.bias, ends, lay.inv_counts(Z.dtype).unsqueeze(1), value=-1.0)

    def lookup_oov(self, lang: str, piece_ids: list[list[int]]) -> torch.Tensor:
        """Ẽ for words outside the vocabulary: E[<unk>] + F(their pieces)."""
        E = self.E[lang]
        n = len(piece_ids)
        base = E[UNK].expand(n, -1)
        if self.subword == "none" or n == 0:
            return base.clone()
        lay = PieceLayout.from_lists([p if p else [0] for p in piece_ids], self.cfg.num_pieces).to(E.device)
        zeros = torch.zeros(n, E.shape[1], dtype=E.dtype, device=E.device)
        if self.subword == "ave":
            f = subword_embed(zeros, self.Z, lay)
        else:
            f = self._cnn_table(zeros, self.Z, lay, None)
        has = torch.tensor([bool(p) for p in piece_ids], device=E.device).unsqueeze(1)
        return base + torch.where(has, f, torch.zeros_like(f))


class BiEncoder(nn.Module):
    """Stacked single-layer bi-LSTMs (d/2 units per direction); only the top layer is returned."""

    def __init__(self, dim: int, layers: int):
        super().__init__()
        half = dim // 2
        self.fwd = nn.ModuleList([nn.LSTM(dim if i == 0 else 2 * half, half, batch_first=True) for i in range(layers)])
        self.bwd = nn.ModuleList([nn.LSTM(dim if i == 0 else 2 * half, half, batch_first=True) for i in range(layers)])

    def forward(self, x: torch.Tensor, rev: torch.Tensor) -> torch.Tensor:
        h = x
        for f, b in zip(self.fwd, self.bwd):
            hf, _ = f(h)
            hb, _ = b(reverse_padded(h, rev))
            h = torch.cat([hf, reverse_padded(hb, rev)], dim=-1)
        return h


class _EmbeddingModel(nn.Module):
    """What both models share: the subword-aware tables, loading, initialisation and inference."""

    embed: SubwordEmbedding
    sampler = None  # xlfast.kernels.linear_ce.UnigramSampler, set by the Trainer for softmax="sampled"

    @classmethod
    def from_state(cls, cfg: ModelConfig, state: dict, pretrained: dict | None = None) -> "_EmbeddingModel":
        """Rebuild a saved model; the piece layouts come from the state's own buffers, the frozen pre-trained
        rows (language → PretrainedRows) from the run directory."""
        pieces_per_word = None
        if cfg.subword != "none":
            pieces_per_word = {}
            for lang in cfg.langs:
                off = state[f"embed.offsets_{lang}"].tolist()
                pcs = state[f"embed.pieces_{lang}"].tolist()
                pieces_per_word[lang] = [pcs[off[i] : off[i + 1]] for i in range(len(off) - 1)]
        model = cls(cfg, pieces_per_word, pretrained)
        model.load_state_dict(state)
        return model

    def reset_parameters(self) -> None:
        r = self.cfg.init_range
        for p in self.parameters():
            nn.init.uniform_(p, -r, r)
        self.embed.reset_pretrained()

    def forward(self, batch, **kwargs) -> tuple[torch.Tensor, dict[str, float]]:
        """The training loss (`loss`): what DistributedDataParallel calls to synchronise gradients."""
        return self.loss(batch, **kwargs)

    def tables(self, langs, backend: str | None = None) -> dict[str, torch.Tensor]:
        """Ẽ per language; while training, matrix dropout once per call (every token of a word type
        shares the mask) — the same dropped matrix feeds the inputs and the tied output layer."""
        p = self.cfg.dropout if self.training else 0.0
        # the trained vocabulary only: words only pre-trained vectors know are never output classes
        return {lang: self.embed.table(lang, dropout=p, backend=backend, full=False) for lang in langs}

    def output_loss(self, x: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, lang: str,
                    bias: torch.Tensor | None = None, first_class: int = 0, backend: str | None = None) -> torch.Tensor:
        """Summed cross-entropy of the output layer (targets -1 ignored), fused so that the logits are never
        stored; while training with softmax="sampled", over the batch's targets plus sampled words."""
        if self.training and self.cfg.softmax == "sampled":
            if self.sampler is None:
                raise ValueError('softmax="sampled" needs class counts: set model.sampler = UnigramSampler(...)')
            return sampled_cross_entropy(self.sampler, x, weight, target, lang, bias, ignore_index=-1,
                                         first_class=first_class, backend=backend)
        return linear_cross_entropy(x, weight, target, bias, ignore_index=-1, first_class=first_class, backend=backend)

    @property
    def context_dim(self) -> int:
        """Size of the contextual vectors `encode` returns."""
        return self.cfg.dim

    def encode(self, emb: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def static_table(self, lang: str) -> torch.Tensor:
        was = self.training
        self.eval()
        try:
            return self.embed.table(lang).detach()
        finally:
            self.train(was)

    @torch.no_grad()
    def contextual(self, lang: str, ids: torch.Tensor, lengths: torch.Tensor, table: torch.Tensor | None = None):
        """Contextual vectors for a padded batch of one language."""
        was = self.training
        self.eval()
        try:
            table = self.embed.table(lang) if table is None else table
            return self.encode(F.embedding(ids, table), lengths)
        finally:
            self.train(was)


def activation_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """`F.dropout(x, p, training)` with the lookup's hashed mask (`table_dropout` over the rows of x):
    nothing stored, the backward recomputes it. Torch's Bernoulli draw took ~90 ms for a 4M-element
    activation on the 2-core CPU, a sizeable share of a training step; the hashed mask takes ~2 ms."""
    if not training or not p:
        return x
    return table_dropout(x.reshape(-1, x.shape[-1]), p).view(x.shape)


def _lookup(table: torch.Tensor, *ids: torch.Tensor) -> list[torch.Tensor]:
    """`[F.embedding(i, table) for i in ids]` as one lookup (one backward into the table)."""
    rows = F.embedding(torch.cat([i.reshape(-1) for i in ids]), table)
    return [r.view(*i.shape, table.shape[1]) for r, i in zip(rows.split([i.numel() for i in ids]), ids)]


class CrossLingualModel(_EmbeddingModel):
    def __init__(self, cfg: ModelConfig, pieces_per_word: dict[str, list[list[int]]] | None = None,
                 pretrained: dict | None = None):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        if d % 2:
            raise ValueError("the embedding size must be even (two encoder directions of d/2)")
        self.embed = SubwordEmbedding(cfg, pieces_per_word, pretrained)
        self.encoder = BiEncoder(d, cfg.enc_layers)
        self.decoders = nn.ModuleDict(
            {
                f"{lang}_{direction}": nn.LSTM(d, d, num_layers=cfg.dec_layers, batch_first=True)
                for lang in cfg.langs
                for direction in ("fwd", "bwd")
            }
        )
        # One bias-free d×d output matrix shared by all languages and directions (Wada et al. 2021, §3; as in the authors' code).
        self.W = nn.Linear(d, d, bias=False)
        self.reset_parameters()

    # -- training ------------------------------------------------------------------------------------
    def encode(self, emb: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Top-layer encoder states [B, L, d] of a padded batch of embedded sentences."""
        rev = reverse_index(lengths, emb.shape[1])
        return self.encoder(emb, rev)

    def _attend_project(self, h, mem, mem_emb, mem_mask) -> torch.Tensor:
        scores = torch.bmm(h, mem.transpose(1, 2))
        scores = scores.masked_fill(~mem_mask.unsqueeze(1), float("-inf"))
        alpha = torch.softmax(scores, dim=-1)
        # Attention over encoder states and source embeddings alike: ū + r̄ = α·(u + r).
        ctx = torch.bmm(alpha, mem + mem_emb)
        return self.W(activation_dropout(ctx + h, self.cfg.dropout, self.training))

    def loss(self, batch: "PairBatch", backend: str | None = None,
             output_backend: str | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Reconstruction + translation, both decoder directions, both languages as target. `backend`:
        the subword lookup's; `output_backend`: the output layer's ('torch' materialises the logits)."""
        s, t = batch.langs
        tables = self.tables((s, t), backend)
        B = batch.size
        # Every input row of a language (its sentences as source, both decoders' inputs) in one lookup: each
        # lookup's backward zero-fills and adds a dense [V, d] gradient, several per step otherwise.
        looked_up = [_lookup(tables[lang], batch.src_ids[side], batch.dec_in[side]["fwd"], batch.dec_in[side]["bwd"])
                     for side, lang in enumerate((s, t))]
        # The shared encoder runs once over the sentences of both languages.
        src_emb = torch.cat([looked_up[0][0], looked_up[1][0]], 0)
        lengths = torch.cat([batch.src_lens[0], batch.src_lens[1]], 0)
        u = self.encode(src_emb, lengths)
        mask = torch.arange(u.shape[1], device=u.device).unsqueeze(0) < lengths.unsqueeze(1)
        mem, mem_emb, mem_mask = u.repeat(2, 1, 1), src_emb.repeat(2, 1, 1), mask.repeat(2, 1)
        total = 0.0
        parts = {}
        for side, lang in enumerate((s, t)):
            hs, targets = [], []
            for k, direction in enumerate(("fwd", "bwd")):
                dec_out = batch.dec_out[side][direction]
                h, _ = self.decoders[f"{lang}_{direction}"](looked_up[side][1 + k])
                # Same decoder states for both sources: [own language (reconstruction); other (translation)]
                # lines up with the encoder batch order [s-sentences; t-sentences].
                hs += [h, h]
                targets += [dec_out, dec_out]
            H = torch.cat(hs, 0)
            o = self._attend_project(H, mem, mem_emb, mem_mask)
            tgt = torch.cat(targets, 0) - 1  # pad (0) → -1, ignored
            # <pad> (row 0) is not a class: class c is row c + 1 of the tied table
            ce = self.output_loss(o.reshape(-1, o.shape[-1]), tables[lang], tgt.reshape(-1), lang, first_class=1,
                                  backend=output_backend)
            parts[lang] = float(ce.detach()) / B
            total = total + ce
        return total / B, parts


class MultilingualLM(_EmbeddingModel):
    """The multilingual neural language model of Wada & Iwata (2018): monolingual text only.

    A forward and a backward LSTM language model shared by every language; per-language input tables
    (the same subword-aware tables and kernels as CrossLingualModel, pieces shared across languages)
    and per-language output projections; one <bos> and one <eos> input vector and one <bos>/<eos>
    output row shared by all languages. Nothing else ties the languages together: the shared LSTMs
    and boundaries push words that play the same role in their sentences to the same place.
    """

    def __init__(self, cfg: ModelConfig, pieces_per_word: dict[str, list[list[int]]] | None = None,
                 pretrained: dict | None = None):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.embed = SubwordEmbedding(cfg, pieces_per_word, pretrained)
        self.lms = nn.ModuleDict({direction: nn.LSTM(d, d, num_layers=cfg.dec_layers, batch_first=True)
                                  for direction in ("fwd", "bwd")})
        # Row 0: <bos>, row 1: <eos> — as inputs (the first token of each direction) and as classes.
        self.boundary_in = nn.Parameter(torch.empty(2, d))
        self.boundary_out = nn.Parameter(torch.empty(2, d))
        self.boundary_bias = nn.Parameter(torch.empty(2))
        self.out = nn.ParameterDict({lang: nn.Parameter(torch.empty(cfg.vocab_sizes[lang], d)) for lang in cfg.langs})
        self.out_bias = nn.ParameterDict({lang: nn.Parameter(torch.empty(cfg.vocab_sizes[lang])) for lang in cfg.langs})
        self.reset_parameters()

    @property
    def context_dim(self) -> int:
        return 2 * self.cfg.dim

    def _start(self, direction: str) -> torch.Tensor:
        return self.boundary_in[0 if direction == "fwd" else 1]

    def _run(self, direction: str, emb: torch.Tensor) -> torch.Tensor:
        """LSTM states over [boundary; emb] (emb: [B, L, d]) → [B, L + 1, d]."""
        start = self._start(direction).to(emb.dtype).expand(emb.shape[0], 1, -1)
        h, _ = self.lms[direction](torch.cat([start, emb], 1))
        return h

    def _classes(self, lang: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Output weights and biases in class order (class = word id − 1: <unk>, <bos>, <eos>, words)."""
        W, b = self.out[lang], self.out_bias[lang]
        return torch.cat([W[UNK : UNK + 1], self.boundary_out, W[EOS + 1 :]]), torch.cat(
            [b[UNK : UNK + 1], self.boundary_bias, b[EOS + 1 :]])

    def loss(self, batch: "LMBatch", backend: str | None = None,
             output_backend: str | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Forward and backward LM cross-entropy of one batch of one language (summed, / batch size)."""
        lang = batch.lang
        table = self.tables((lang,), backend)[lang]
        hs, targets = [], []
        for direction in ("fwd", "bwd"):
            # position 0 is the boundary token: its vector is the shared one, not the language's row
            emb = F.embedding(batch.dec_in[direction][:, 1:], table)
            hs.append(self._run(direction, emb))
            targets.append(batch.dec_out[direction])
        H = activation_dropout(torch.cat(hs, 0), self.cfg.dropout, self.training)
        W, b = self._classes(lang)
        tgt = torch.cat(targets, 0).reshape(-1) - 1  # pad (0) → -1, ignored
        ce = self.output_loss(H.reshape(tgt.shape[0], -1), W, tgt, lang, b, backend=output_backend)
        return ce / batch.size, {lang: float(ce.detach()) / batch.size}

    def encode(self, emb: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """[forward state after w_t ; backward state after w_t] for every real token: [B, L, 2d]."""
        L = emb.shape[1]
        rev = reverse_index(lengths, L)
        hf = self._run("fwd", emb)[:, 1:]
        hb = reverse_padded(self._run("bwd", reverse_padded(emb, rev))[:, 1:], rev)
        return torch.cat([hf, hb], -1)

    @torch.no_grad()
    def static_table(self, lang: str) -> torch.Tensor:
        """Ẽ with the shared <bos>/<eos> vectors in their rows (the NULL heuristic reads <bos>)."""
        table = super().static_table(lang).clone()
        table[BOS] = self.boundary_in[0].to(table.dtype)
        table[EOS] = self.boundary_in[1].to(table.dtype)
        return table


def model_class(cfg: ModelConfig) -> type[_EmbeddingModel]:
    return MultilingualLM if cfg.kind == "mono" else CrossLingualModel


@dataclass
class PairBatch:
    """A batch of one corpus pair: source ids of both languages and decoder inputs/targets."""

    langs: tuple[str, str]
    size: int
    src_ids: tuple[torch.Tensor, torch.Tensor]  # [B, S] each, right-padded with PAD
    src_lens: tuple[torch.Tensor, torch.Tensor]
    dec_in: tuple[dict, dict]  # per side: {"fwd": [B,T], "bwd": [B,T]}
    dec_out: tuple[dict, dict]

    @classmethod
    def build(cls, langs, sents_s: list[list[int]], sents_t: list[list[int]], device="cpu") -> "PairBatch":
        B = len(sents_s)
        S = max(max(len(x) for x in sents_s), max(len(y) for y in sents_t))
        src, lens, din, dout = [], [], [], []
        for sents in (sents_s, sents_t):
            ids = torch.full((B, S), PAD, dtype=torch.long)
            for i, x in enumerate(sents):
                ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
            inputs, targets = lm_inputs(sents, device)
            src.append(ids.to(device))
            lens.append(torch.tensor([len(x) for x in sents], dtype=torch.long, device=device))
            din.append(inputs)
            dout.append(targets)
        return cls(tuple(langs), B, (src[0], src[1]), (lens[0], lens[1]), (din[0], din[1]), (dout[0], dout[1]))


def lm_inputs(sents: list[list[int]], device="cpu") -> tuple[dict, dict]:
    """Inputs and targets of a forward and a backward language model over right-padded sentences:
    forward <bos> y → y <eos>; backward <eos> rev(y) → rev(y) <bos> (the authors' code). Position 0 of
    every input row is the boundary token, which the multilingual LM replaces by its shared vector."""
    B = len(sents)
    T = max(len(x) for x in sents) + 1
    fi = torch.full((B, T), PAD, dtype=torch.long)
    fo = torch.full((B, T), PAD, dtype=torch.long)
    bi = torch.full((B, T), PAD, dtype=torch.long)
    bo = torch.full((B, T), PAD, dtype=torch.long)
    for i, x in enumerate(sents):
        n = len(x)
        xt = torch.tensor(x, dtype=torch.long)
        fi[i, 0] = BOS
        fi[i, 1 : n + 1] = xt
        fo[i, :n] = xt
        fo[i, n] = EOS
        rx = xt.flip(0)
        bi[i, 0] = EOS
        bi[i, 1 : n + 1] = rx
        bo[i, :n] = rx
        bo[i, n] = BOS
    return {"fwd": fi.to(device), "bwd": bi.to(device)}, {"fwd": fo.to(device), "bwd": bo.to(device)}


@dataclass
class LMBatch:
    """A batch of sentences of one language for the multilingual LM."""

    lang: str
    size: int
    dec_in: dict  # {"fwd": [B, T], "bwd": [B, T]}
    dec_out: dict

    @classmethod
    def build(cls, lang: str, sents: list[list[int]], device="cpu") -> "LMBatch":
        inputs, targets = lm_inputs(sents, device)
        return cls(lang, len(sents), inputs, targets)
