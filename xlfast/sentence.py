"""Sentence embeddings with word-level objectives (WACSE; Miao et al. 2024) on xlfast's encoder.

`train_sentence_encoder` continues a trained parallel run on a parallel corpus with three losses and
writes a new run directory (the same files, the fine-tuned `model.pt`, and `sentence.json`), so every
command that takes a run (`mine`, `align`, `eval`) uses the fine-tuned encoder as it is:

- translation ranking (TR, Miao et al. §3.1; Yang et al. 2019): in-batch contrastive loss between the
  mean-pooled contextual vectors of a sentence and of its translation, both directions, cosine / τ with
  an optional additive margin on the true pair (LaBSE, Feng et al. 2022);
- word translation ranking (WTR, Miao et al. §3.2): the contextual vector of an aligned source word must
  rank its aligned target word above the other words of the target sentence, and the reverse;
- aligned word prediction (AWP, Miao et al. §3.2): one aligned word per sentence is replaced by a learned
  mask vector and its aligned word of the other language is predicted from the masked context through the
  run's tied output layer (W, then the other language's subword-aware table), both directions.

Loss = w_TR·TR + w_WTR·WTR + w_AWP·AWP, weights 0.8 / 0.1 / 0.1 by default (Miao et al. §4.1). The word
alignments come from the run itself (`xlfast.align.align_lines`, the intersection of both directions:
the confident links, as awesome-align's self-training uses), computed once before training with the
frozen starting model. The model is selected by bitext retrieval accuracy (both directions, mean) on a
held-out slice of the corpus after each epoch, the way `xlfast train` selects (`xlfast.train.Selection`):
the latest epoch within one standard error of the best is kept.
"""
from __future__ import annotations

import copy
import json
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from xlfast import threads
from xlfast.errors import XlfastError
from xlfast.model import PAD
from xlfast.rundir import CONFIG, MODEL, PIECES, RunDir
from xlfast.train import Score, Selection, standard_error

SENTENCE_FILE = "sentence.json"  # marks a run whose encoder was trained for sentence embeddings


@dataclass
class SentenceConfig:
    weights: tuple[float, float, float] = (0.8, 0.1, 0.1)  # TR, WTR, AWP (Miao et al. §4.1)
    temperature: float = 0.05  # cosine / τ in TR and WTR
    margin: float = 0.0  # additive margin on the true pair's cosine in TR (LaBSE)
    epochs: int = 5
    patience: int = 2  # epochs without a strict rise of held-out accuracy before stopping
    batch_size: int = 32  # sentence pairs per step: the in-batch negatives of TR
    lr: float = 1e-3
    dropout: float = 0.1  # on the embedding tables (the run trained with 0.5; fine-tuning needs less)
    heldout: int = 200  # pairs held out for model selection (at most a tenth of the corpus)
    clip: float = 5.0
    seed: int = 1
    # Keep the run's word tables (E, Z) as they are and tune the encoder only: the static subword-aware
    # vectors are what sentence mining compares words with (xlfast.mine.word_evidence). Measured with the
    # mining defaults (benchmarks/bench_sentence_mining.py): shp-es F1 0.689 frozen against 0.549 with the
    # tables trained (the base run alone: 0.688); ne-en 0.404 against 0.449 (base 0.340).
    freeze_tables: bool = True

    def __post_init__(self):
        if len(self.weights) != 3 or min(self.weights) < 0 or sum(self.weights) <= 0:
            raise XlfastError(f"the loss weights are three non-negative numbers (TR, WTR, AWP), got {self.weights}")
        if self.temperature <= 0:
            raise XlfastError(f"the temperature must be positive, got {self.temperature}")
        if self.batch_size < 2:
            raise XlfastError("TR needs at least 2 pairs per batch (the other pairs are its negatives)")


@dataclass
class PairExample:
    src: list[int]  # word ids in the run's vocabulary
    tgt: list[int]
    links: list[tuple[int, int]]  # token links (0-based), both directions' intersection


@dataclass
class SentenceLog:
    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_accuracy: float = -1.0


def mean_pool(u: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean of the contextual vectors of each sentence's real tokens ([B, L, d] -> [B, d])."""
    mask = (torch.arange(u.shape[1], device=u.device)[None, :] < lengths[:, None]).to(u.dtype)
    return (u * mask.unsqueeze(-1)).sum(1) / lengths.clamp_min(1).to(u.dtype).unsqueeze(1)


def translation_ranking(a: torch.Tensor, b: torch.Tensor, temperature: float, margin: float = 0.0) -> torch.Tensor:
    """In-batch contrastive loss both ways: row i of `a` must pick row i of `b` among all rows of `b`, and
    the reverse; cosine / τ, the true pair's cosine lowered by `margin` (additive margin softmax)."""
    cos = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).t()
    logits = (cos - margin * torch.eye(len(a), device=a.device, dtype=cos.dtype)) / temperature
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def word_translation_ranking(ua, ub, len_a, len_b, links, temperature: float) -> torch.Tensor:
    """Each linked word must rank its aligned word first among the words of the other sentence, both
    ways. `links`: [K, 3] rows (pair in batch, position in a, position in b)."""
    if len(links) == 0:
        return ua.sum() * 0.0
    sim = torch.bmm(F.normalize(ua, dim=-1), F.normalize(ub, dim=-1).transpose(1, 2)) / temperature
    cols_b = torch.arange(ub.shape[1], device=ub.device)[None, :] < len_b[:, None]
    cols_a = torch.arange(ua.shape[1], device=ua.device)[None, :] < len_a[:, None]
    b, i, j = links[:, 0], links[:, 1], links[:, 2]
    forward = sim[b, i].masked_fill(~cols_b[b], float("-inf"))  # a-word i against every word of b
    backward = sim[b, :, j].masked_fill(~cols_a[b], float("-inf"))  # b-word j against every word of a
    return 0.5 * (F.cross_entropy(forward, j) + F.cross_entropy(backward, i))


def masked_positions(examples: list[PairExample], side: int, rng: random.Random) -> list[tuple[int, int]]:
    """One aligned word per pair to mask on `side` (0: source, 1: target), with the word of the other
    side it is aligned to: (position to mask, aligned position); (-1, -1) when the pair has no link."""
    out = []
    for ex in examples:
        if not ex.links:
            out.append((-1, -1))
            continue
        i, j = rng.choice(ex.links)
        out.append((i, j) if side == 0 else (j, i))
    return out


class SentenceTrainer:
    """Fine-tunes `run.model` (a CrossLingualModel) in place; `fit` returns the selected state."""

    def __init__(self, run, src_lang: str, tgt_lang: str, train: list[PairExample], heldout: tuple[list, list],
                 cfg: SentenceConfig, log: Callable[[str], None] = print):
        if run.kind != "parallel":
            raise XlfastError("sentence-encoder training continues a parallel run (an encoder shared by the "
                              "languages); this run is a monolingual multilingual LM")
        self.run, self.cfg, self.log = run, cfg, log
        self.langs = (src_lang, tgt_lang)
        self.train_set, self.heldout = train, heldout
        self.model = run.model
        d = self.model.cfg.dim
        # AWP's learned mask vector, in place of the masked word's embedding (Miao et al. §3.2)
        self.mask_vector = torch.nn.Parameter(torch.empty(d).uniform_(-self.model.cfg.init_range,
                                                                     self.model.cfg.init_range))
        skip = ("decoders.", "embed.") if cfg.freeze_tables else ("decoders.",)
        params = [p for name, p in self.model.named_parameters() if not name.startswith(skip)]
        if cfg.freeze_tables:
            for p in self.model.embed.parameters():
                p.requires_grad_(False)  # no gradient computed for them at all
        self.opt = torch.optim.Adam(params + [self.mask_vector], lr=cfg.lr)
        self.params = params + [self.mask_vector]
        self.rng = random.Random(cfg.seed)

    def _padded(self, sentences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.run.device
        lengths = torch.tensor([len(s) for s in sentences], device=device)
        ids = torch.full((len(sentences), int(lengths.max())), PAD, dtype=torch.long, device=device)
        for r, s in enumerate(sentences):
            ids[r, : len(s)] = torch.tensor(s, dtype=torch.long)
        return ids, lengths

    def losses(self, batch: list[PairExample]) -> dict[str, torch.Tensor]:
        """TR, WTR and AWP of one batch of pairs. The encoder runs once over the sentences of both
        languages and their masked copies, stacked as one batch."""
        s, t = self.langs
        model, B = self.model, len(batch)
        # one dropout mask per table and step, shared by inputs and AWP's tied output (as `xlfast train`)
        tables = {lang: model.embed.table(lang, dropout=self.cfg.dropout) for lang in (s, t)}
        x_ids, x_len = self._padded([ex.src for ex in batch])
        y_ids, y_len = self._padded([ex.tgt for ex in batch])
        L = max(x_ids.shape[1], y_ids.shape[1])
        x_emb = F.pad(F.embedding(x_ids, tables[s]), (0, 0, 0, L - x_ids.shape[1]))
        y_emb = F.pad(F.embedding(y_ids, tables[t]), (0, 0, 0, L - y_ids.shape[1]))
        masks = [masked_positions(batch, side, self.rng) for side in (0, 1)]
        masked = []
        for emb, picks in ((x_emb, masks[0]), (y_emb, masks[1])):
            keep = torch.ones(B, L, 1, dtype=emb.dtype)
            for r, (p, _) in enumerate(picks):
                if p >= 0:
                    keep[r, p] = 0
            masked.append(emb * keep + (1 - keep) * self.mask_vector)
        lengths = torch.cat([x_len, y_len, x_len, y_len])
        u = model.encode(torch.cat([x_emb, y_emb] + masked), lengths)
        ux, uy, ux_masked, uy_masked = u[:B], u[B:2 * B], u[2 * B:3 * B], u[3 * B:]
        tr = translation_ranking(mean_pool(ux, x_len), mean_pool(uy, y_len), self.cfg.temperature, self.cfg.margin)
        links = torch.tensor([(b, i, j) for b, ex in enumerate(batch) for i, j in ex.links], dtype=torch.long)
        wtr = word_translation_ranking(ux, uy, x_len, y_len, links.reshape(-1, 3), self.cfg.temperature)
        awp = []
        for states, picks, other_ids, other_lang in ((ux_masked, masks[0], y_ids, t), (uy_masked, masks[1], x_ids, s)):
            rows = [r for r, (p, _) in enumerate(picks) if p >= 0]
            if not rows:
                continue
            h = states[rows, [picks[r][0] for r in rows]]
            # the run's tied output layer: W, then the other language's table (<pad> is not a class)
            logits = model.W(h) @ tables[other_lang][1:].t()
            target = other_ids[rows, [picks[r][1] for r in rows]] - 1
            awp.append(F.cross_entropy(logits, target))
        awp_loss = sum(awp) / len(awp) if awp else u.sum() * 0.0
        return {"tr": tr, "wtr": wtr, "awp": awp_loss}

    def step(self, batch: list[PairExample]) -> dict[str, float]:
        threads.poll()  # between steps: share the CPUs when other work runs (xlfast.threads)
        parts = self.losses(batch)
        w_tr, w_wtr, w_awp = self.cfg.weights
        loss = w_tr * parts["tr"] + w_wtr * parts["wtr"] + w_awp * parts["awp"]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.cfg.clip)
        self.opt.step()
        return {k: float(v.detach()) for k, v in dict(parts, loss=loss).items()}

    def heldout_accuracy(self) -> dict:
        """Retrieval accuracy on the held-out pairs through the run's own inference path (mean pooling)."""
        from xlfast.evaluate import retrieval
        from xlfast.run import Run

        src, tgt = self.heldout
        # A fresh Run: the one we train caches static tables that the last steps changed.
        run = Run(self.run.run_dir, self.model, self.run.vocabs, self.run.tokenizer, self.run.config, self.run.device)
        vecs = [torch.stack([v.float().mean(0) for v in run.embed_sentences(lang, sents)]).numpy()
                for lang, sents in zip(self.langs, (src, tgt))]
        self.model.train()
        return retrieval(vecs[0], vecs[1], [" ".join(x) for x in src], [" ".join(y) for y in tgt])

    def fit(self, on_epoch: Callable[[dict], None] | None = None) -> tuple[dict, SentenceLog]:
        cfg, history = self.cfg, SentenceLog()
        start = self.heldout_accuracy()
        history.epochs.append({"epoch": 0, "heldout": start})
        selection = Selection()
        selection.observe(0, 0, heldout_score(start), final=False)
        best_state = copy.deepcopy(self.model.state_dict())
        if on_epoch:
            on_epoch(history.epochs[-1])
        order = list(range(len(self.train_set)))
        for epoch in range(1, cfg.epochs + 1):
            if selection.exhausted(cfg.patience):
                break
            self.model.train()
            self.rng.shuffle(order)
            t0, sums, steps = time.perf_counter(), {}, 0
            # every batch full: TR's difficulty depends on the number of in-batch negatives
            for lo in range(0, len(order) - cfg.batch_size + 1, cfg.batch_size):
                parts = self.step([self.train_set[k] for k in order[lo:lo + cfg.batch_size]])
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v
                steps += 1
            seconds = time.perf_counter() - t0
            acc = self.heldout_accuracy()
            rec = {"epoch": epoch, **{k: round(v / max(steps, 1), 4) for k, v in sums.items()}, "heldout": acc,
                   "seconds": round(seconds, 2), "steps": steps}
            history.epochs.append(rec)
            # As `xlfast train` selects: the latest epoch within one standard error of the best is kept (a
            # few hundred held-out pairs, or a tenth of a small corpus, often start near 1 already, and the
            # starting model would otherwise be kept untrained), and patience counts epochs without a
            # strict rise.
            if selection.observe(epoch, 0, heldout_score(acc), final=False):
                best_state = copy.deepcopy(self.model.state_dict())
            if on_epoch:
                on_epoch(rec)
        history.best_accuracy, history.best_epoch = selection.kept_score, selection.best_epoch
        return best_state, history


def heldout_score(acc: dict) -> Score:
    """Retrieval accuracy (mean of both directions) as a selection score, with its standard error."""
    n = acc["sentences"]
    return Score(acc["mean"], standard_error([(acc["src2tgt"], n), (acc["tgt2src"], n)]))


def examples_from_corpus(run, src_lines, tgt_lines, src_lang: str, tgt_lang: str) -> list[PairExample]:
    """Token ids and the run's own alignment links (intersection of both directions) of each pair."""
    from xlfast.align import align_lines

    results, segs = align_lines(run, src_lines, tgt_lines, src_lang, tgt_lang, run.tokenizer, on="tokens")
    out = []
    for res, (a, b) in zip(results, segs):
        if not a.tokens or not b.tokens:
            continue
        out.append(PairExample(run.ids(src_lang, a.tokens), run.ids(tgt_lang, b.tokens),
                               sorted(res.forward & res.backward)))
    return out


def split_heldout(n: int, heldout: int, seed: int) -> tuple[list[int], list[int]]:
    """(training indices, held-out indices): at most a tenth of the pairs held out, chosen at random."""
    size = min(heldout, n // 10)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[size:]), sorted(order[:size])


def train_sentence_encoder(run_dir, corpus, out_dir, cfg: SentenceConfig, src_lang: str | None = None,
                           tgt_lang: str | None = None, log: Callable[[str], None] = print,
                           on_epoch: Callable[[dict], None] | None = None, tokenize: str | None = None,
                           lowercase: bool | None = None) -> dict:
    """Fine-tune the run in `run_dir` on `corpus` (an xlfast.io.ParallelCorpus) and write the new run to
    `out_dir`; returns the summary also written to `out_dir/sentence.json`. `tokenize` / `lowercase`
    (when not None) replace the parts of the run's tokenizer, for this corpus and in the new run."""
    from xlfast.run import Run

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if out_dir.resolve() == run_dir.resolve():
        raise XlfastError("write the sentence encoder to a new run directory (-o), not over the starting run")
    if RunDir(out_dir).has_model():
        raise XlfastError(f"{out_dir} already holds a run: choose another -o")
    torch.manual_seed(cfg.seed)
    run = Run.load(run_dir)
    run.tokenizer = run.tokenizer_with(tokenize, lowercase)
    langs = list(run.langs)
    src_lang = src_lang or langs[0]
    tgt_lang = tgt_lang or next((lang for lang in langs if lang != src_lang), src_lang)
    for lang in (src_lang, tgt_lang):
        if lang not in langs:
            raise XlfastError(f"language '{lang}' is not in this run (it has: {', '.join(langs)})")
    t0 = time.perf_counter()
    train_idx, held_idx = split_heldout(len(corpus), cfg.heldout, cfg.seed)
    if len(held_idx) < 2 or len(train_idx) < cfg.batch_size:
        raise XlfastError(f"{corpus.path}: {len(corpus)} pairs are too few (a held-out tenth of at least 2 pairs "
                          f"and at least one batch of {cfg.batch_size} to train on)")
    examples = examples_from_corpus(run, [corpus.src[k] for k in train_idx], [corpus.tgt[k] for k in train_idx],
                                    src_lang, tgt_lang)
    align_seconds = time.perf_counter() - t0
    tok = run.tokenizer
    heldout = ([tok(corpus.src[k]) for k in held_idx], [tok(corpus.tgt[k]) for k in held_idx])
    n_links = sum(len(ex.links) for ex in examples)
    log(f"{len(examples)} training pairs ({n_links} alignment links from the run, {align_seconds:.1f}s), "
        f"{len(held_idx)} held out")
    trainer = SentenceTrainer(run, src_lang, tgt_lang, examples, heldout, cfg, log)
    best_state, history = trainer.fit(on_epoch)
    out_dir.mkdir(parents=True, exist_ok=True)
    # the starting run's files as they are (configuration, vocabularies, pieces); the model is the new one
    base, new = RunDir(run_dir), RunDir(out_dir)
    for name in [PIECES] + [f(lang).name for lang in langs for f in (base.vocab_path, base.spm_path)]:
        if (base.path / name).exists():
            shutil.copy2(base.path / name, new.path / name)
    config = base.read_config()
    config["train"]["tokenizer"] = run.tokenizer.to_dict()  # the new run tokenises as it was trained here
    new.write_config(config)
    new.save_state({"model": best_state, "epoch": history.best_epoch}, MODEL)
    summary = {"base_run": str(run_dir), "corpus": corpus.path, "langs": [src_lang, tgt_lang],
               "pooling": "mean", "config": asdict(cfg), "train_pairs": len(examples), "heldout_pairs": len(held_idx),
               "links": n_links, "best_epoch": history.best_epoch, "heldout_accuracy": history.best_accuracy,
               "epochs": history.epochs, "seconds": round(time.perf_counter() - t0, 2),
               "align_seconds": round(align_seconds, 2)}
    from xlfast.io import atomic_write_text

    atomic_write_text(out_dir / SENTENCE_FILE, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary
