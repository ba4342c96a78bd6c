"""Mining translation pairs from two monolingual corpora: word pairs from the nearest neighbours of
contextual token vectors (Hangya et al. 2022), parallel sentences by margin (Artetxe & Schwenk 2019).

Stages, each timed and shown as a progress stage:

1. **encode** – every sentence of both corpora goes through a pluggable encoder (`xlfast.encoders`);
   token vectors stream into float16 `np.memmap` files in a work directory (so corpora larger than
   memory work), with each token's sentence and word-type id; sentence vectors (mean of the contextual
   token vectors, float32) are kept beside them.
2. **search** – `xlfast.search.search`: the best target per source row and the best source per target
   row, in one process, in blocks or sharded over processes, always with the one-process answer
   (sentence level: `search_topk`, the `candidates` best both ways).
3. **lexical** and **rescore** (sentence level, two stages) – more candidates from the coverage of each
   sentence by the run's own translation lexicon (`lexical_candidates`); each candidate pair's word
   evidence from the word vectors (`word_evidence`), combined with the cosine of the sentence vectors.
4. **aggregate** – word level: token pairs above the threshold (both directions, a pair found both ways
   counts once) become word-type pairs with counts and mean score. Sentence level: forward and
   backward best candidates, highest margin first, one-to-one, above the threshold.

`mine_corpora` runs the stages as `xlfast mine` does: defaults by level and metric, a scratch
directory for the token vectors, the TSV written once (by the first rank under torchrun). `mine_files`
is the whole command: it reads the two files and loads the encoder first.

`iterations > 0` runs the mine→update loop: per iteration a sample of sentences from each side is
mined and language-specific linear maps are refit on the mined token pairs with the encoder frozen;
the last mining over the whole corpora uses the final maps. The maps are fit on the iteration's
*mutual* best token pairs (`fit_on`; the confident subset, as MUSE/vecmap induce dictionaries).
Map update (`map_update`):

* ``procrustes`` (default): W_t = I and W_s the orthogonal Procrustes solution over the mined pairs.
  Orthogonality removes the trivial W = 0 minimum of Σ||W_s e_s − W_t e_t||² by construction and keeps
  cosine geometry inside each language, so an iteration cannot collapse the space.
* ``adam``: the paper's recipe (Hangya et al. 2022) – W_s, W_t initialised to identity + U(−0.01, 0.01),
  no bias, a few Adam steps on the mean squared distance; only the init and the small step count keep
  it from drifting to 0.

Measured: on a synthetic pair (rotation + noise) the loop lifts word-pair precision to 1.0 (tests); on
ne-en devtest with a 6-epoch xlfast run (one shared encoder, so identity is already a good map and only
~7% of the mined pairs are right) both updates *lowered* precision (cos 0.2: 0.067 -> 0.049 Procrustes,
0.055 Adam, 2 iterations). Iterations are therefore off by default (`iterations=0`).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from xlfast import threads
from xlfast.anchors import positions, shared_keys
from xlfast.errors import XlfastError
from xlfast.kernels.csls import normalize
from xlfast.search import BestMatches, Rows, is_primary, scratch_dir, search, search_topk, validate

log = logging.getLogger("xlfast.mine")

LEVELS = ("word", "sentence")
WORD_METRICS = ("cos", "csls")  # the ratio margin scores sentences (Artetxe & Schwenk 2019)
MAP_UPDATES = ("procrustes", "adam")
DEFAULT_METRIC = {"word": "cos", "sentence": "margin"}
# The paper's cosine threshold is 0.2 (Hangya et al. 2022). Token-level CSLS sits near 0 for frequent
# words (their K nearest tokens are copies of the same word), so 0.2 would keep almost nothing under csls.
DEFAULT_THRESHOLD = {"cos": 0.2, "csls": 0.0, "margin": 1.05}
DEFAULT_KNN = {"word": 10, "sentence": 4}
# Two-stage sentence mining: candidates per sentence both ways from stage 1, the weight of the word
# evidence in stage 2 (0: one stage), the word vectors it compares, the weight of the length-ratio penalty,
# and the threshold on stage 2's distance margin. The threshold 0 keeps a pair that scores above the mean
# of its two neighbourhoods: F1 peaks there on both pairs measured (ne-en devtest, shp-es dev;
# benchmarks/bench_sentence_mining.py). The rest was chosen on four trained runs together (ne-en: the
# default run on FLoRes dev and its WACSE encoder; shp-es: the default run after 1 and 6 epochs). Static
# (subword-aware) word vectors compared by CSLS beat the contextual ones on all four (WACSE's contextual
# vectors, trained to match words, come closest) at a tenth of the time; 20 candidates beat 10 on three
# (+0.02 to +0.03 F1) and equal it on the fourth; a word weight of 0.7 beats 0.5 on three (equal on the fourth) and 0.3 on all;
# the length penalty (0.01-0.04 alike) helps on shp-es and is neutral on ne-en. Through `xlfast mine`,
# two stages, F1 before -> after (the stage-1 static vectors and these settings): ne-en base 0.209 ->
# 0.340, WACSE 0.327 -> 0.449; shp-es base 0.414 -> 0.688.
DEFAULT_CANDIDATES = 20
DEFAULT_WORD_WEIGHT = 0.7
RESCORED_THRESHOLD = 0.0
EVIDENCE = ("context", "static", "both")
DEFAULT_EVIDENCE = "static"
DEFAULT_LENGTH_WEIGHT = 0.02
# Stage 1 also takes, both ways, the `lexical` sentences best covered by the translations of a sentence's
# words (`lexical_candidates`; each word type's LEXICON_SIZE nearest words by static CSLS): dense sentence
# vectors blur a sentence's rare content words, which a lexicon matches one by one. On ne-en devtest (the
# WACSE run) the gold target is among the candidates for 53% of the sources with the sentence vectors
# alone and 80% with both; lexicons of 5 words reach more gold than 1, 2 or 10 (3: within 0.2%), and 10, 20 or 40
# lexical candidates end within 0.01 F1. Through `xlfast mine`, two stages, F1 without -> with them (and
# the √idf-weighted word evidence): ne-en base 0.340 -> 0.452, WACSE 0.404 -> 0.466; shp-es base
# 0.688 -> 0.718, WACSE 0.689 -> 0.722; about 1 s more on 2,835 sentences a side.
DEFAULT_LEXICAL = 20
# After a first pass, the source's sentence vectors are mapped onto the target's by the orthogonal map that
# best fits the pairs just mined (Procrustes), and both stages run again: the iterative mine -> update of
# Hangya et al. 2022, §3, at the sentence level (their word-level maps are `mine_words`). The encoder's two
# languages are not equally placed in its space; the mined pairs say how they differ. Through `xlfast mine`,
# two stages, F1 without -> with one refinement: ne-en base 0.452 -> 0.476, WACSE 0.466 -> 0.492; shp-es
# base 0.718 -> 0.731, WACSE 0.722 -> 0.736 (13.3 s instead of 11.4 s for 2,835 sentences a side). A
# second and third refinement changed nothing (±0.001), nor did a ridge least-squares map instead of an
# orthogonal one.
DEFAULT_REFINE = 1
MIN_REFINE_PAIRS = 50  # fewer mined pairs than this leave the vectors as they are (a map of d×d from a handful overfits)
LEXICON_SIZE = 5
# Lexicon entries one word takes from its anchor: a stem that many word forms share (a large corpus has
# dozens per stem) must not flood the lexicon (shp-es dev: F1 0.853, as without a limit).
ANCHOR_PARTNERS_MAX = 20
LEXICAL_MAX_POSTINGS = 5000  # translations found in more sentences are skipped (see xlfast.kernels.coverage)
IDF_FLOOR = 1e-3  # the least IDF a token weighs with in the word evidence (a word in every sentence has 0)

Progress = Callable[[str, int, int], None]  # (stage, done, total)


def _threshold(metric: str, threshold: float | None) -> float:
    return DEFAULT_THRESHOLD[metric] if threshold is None else threshold


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


# ----------------------------------------------------------------------------------------------
# encode: token vectors streamed to disk


@dataclass
class EncodedCorpus:
    lines: list[str]  # the sentences as the user wrote them
    line_numbers: list[int]  # 1-based line of each sentence in its file
    vectors: np.ndarray  # [T, d] float16 memmap, one row per token
    token_sentence: np.ndarray  # [T] int32
    token_word: np.ndarray  # [T] int32, index into `words`
    words: list[str]  # word types, in order of first occurrence
    sentence_offsets: np.ndarray  # [S+1] int64: tokens of sentence s are rows offsets[s]:offsets[s+1]
    sentence_vectors: np.ndarray  # [S, d] float32, mean of the sentence's token vectors (0 when empty)
    # Where the encoder has context-free word vectors (an xlfast run's subword-aware table): them, unit
    # length, per word type [W, d'], and the IDF-weighted sum of them per sentence [S, d'] (0 when empty).
    word_vectors: np.ndarray | None = None
    static_sentence_vectors: np.ndarray | None = None

    @property
    def n_tokens(self) -> int:
        return int(self.vectors.shape[0])

    @cached_property
    def word_sets(self) -> tuple[np.ndarray, np.ndarray]:
        """(sentence, word type) of every distinct word of every sentence, sorted by sentence then word."""
        n_words = max(len(self.words), 1)
        pairs = np.unique(self.token_sentence.astype(np.int64) * n_words + self.token_word)
        return pairs // n_words, pairs % n_words

    @cached_property
    def idf(self) -> np.ndarray:
        """[W] float32: log(S / sentences containing the word type)."""
        df = np.bincount(self.word_sets[1], minlength=len(self.words))
        return np.log(max(len(self.lines), 1) / np.maximum(df, 1)).astype(np.float32)

    def rows_of(self, sentences: np.ndarray) -> np.ndarray:
        """Token rows of the given sentences, in order."""
        starts, ends = self.sentence_offsets[sentences], self.sentence_offsets[sentences + 1]
        if len(sentences) == 0:
            return np.zeros(0, dtype=np.int64)
        lengths = ends - starts
        base = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        return base + np.arange(int(lengths.sum()), dtype=np.int64)


def encode_corpus(encoder, side: str, lines: Sequence[str], work_dir, line_numbers: Sequence[int] | None = None,
                  batch_sentences: int = 256, progress: Progress = _no_progress) -> EncodedCorpus:
    """Tokenise and encode every sentence; token vectors go to `work_dir/<side>.tokens.f16.npy`."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    tokens = [encoder.tokenize(side, line) for line in lines]
    lengths = np.fromiter((len(t) for t in tokens), dtype=np.int64, count=len(tokens))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n_tokens, dim = int(offsets[-1]), int(encoder.dim)
    if n_tokens == 0:
        raise XlfastError(f"the {side} corpus has no tokens to mine")
    vectors = np.lib.format.open_memmap(work_dir / f"{side}.tokens.f16.npy", mode="w+", dtype=np.float16,
                                        shape=(n_tokens, dim))
    sentence_vectors = np.zeros((len(tokens), dim), dtype=np.float32)
    vocab: dict[str, int] = {}
    token_word = np.fromiter((vocab.setdefault(w, len(vocab)) for t in tokens for w in t), dtype=np.int32,
                             count=n_tokens)
    token_sentence = np.repeat(np.arange(len(tokens), dtype=np.int32), lengths)
    progress(f"encode {side}", 0, len(tokens))
    for lo in range(0, len(tokens), batch_sentences):
        threads.poll()  # between batches: share the CPUs when other work runs (xlfast.threads)
        batch = list(range(lo, min(lo + batch_sentences, len(tokens))))
        todo = [s for s in batch if lengths[s] > 0]
        embedded = encoder.embed(side, [tokens[s] for s in todo]) if todo else []
        for s, vec in zip(todo, embedded):
            vec = np.asarray(vec, dtype=np.float32)
            if vec.shape != (lengths[s], dim):
                raise XlfastError(f"{encoder.name} returned {vec.shape} for a sentence of {lengths[s]} tokens "
                                  f"(expected ({lengths[s]}, {dim}))")
            vectors[offsets[s]: offsets[s + 1]] = vec
            sentence_vectors[s] = vec.mean(axis=0)
        progress(f"encode {side}", batch[-1] + 1, len(tokens))
    vectors.flush()
    corpus = EncodedCorpus(list(lines), list(line_numbers or range(1, len(lines) + 1)), vectors, token_sentence,
                           token_word, list(vocab), offsets, sentence_vectors)
    if hasattr(encoder, "word_vectors"):
        corpus.word_vectors, corpus.static_sentence_vectors = _static_vectors(encoder, side, corpus)
    return corpus


def _static_vectors(encoder, side: str, corpus: EncodedCorpus, chunk: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """Unit context-free vectors of the corpus's word types, and per sentence the sum of its words' vectors
    weighted by their inverse document frequency (`EncodedCorpus.idf`; as IDF-weighted averages of word
    embeddings make sentence vectors; Arora et al. 2017 weight by frequency alike)."""
    words, idf = corpus.words, corpus.idf
    table = np.concatenate([normalize(np.asarray(encoder.word_vectors(side, words[i: i + chunk]), np.float32)).numpy()
                            for i in range(0, len(words), chunk)])
    out = torch.zeros(len(corpus.lines), table.shape[1])
    for lo in range(0, corpus.n_tokens, chunk):  # a chunk's weighted rows: 128 MB at d = 500
        threads.poll()
        w = corpus.token_word[lo: lo + chunk]
        out.index_add_(0, torch.from_numpy(corpus.token_sentence[lo: lo + chunk].astype(np.int64)),
                       torch.from_numpy(table[w] * idf[w, None]))
    return table, out.numpy()


# ----------------------------------------------------------------------------------------------
# word level


@dataclass
class WordPairs:
    src: list[str]
    tgt: list[str]
    count: np.ndarray  # token pairs behind each word pair
    score: np.ndarray  # their mean score

    def __len__(self) -> int:
        return len(self.src)

    def rows(self) -> list[tuple[str, str, int, float]]:
        return [(s, t, int(c), float(v)) for s, t, c, v in zip(self.src, self.tgt, self.count, self.score)]


@dataclass
class IterationStats:
    iteration: int
    sampled_src_tokens: int
    sampled_tgt_tokens: int
    token_pairs: int
    map_change: float  # ||W_s - W_s(previous)||_F
    precision: float | None = None  # filled by callers that know the answer (tests, benchmarks)


@dataclass
class WordMiningResult:
    pairs: WordPairs
    token_pairs: int
    maps: tuple[np.ndarray, np.ndarray] | None
    iterations: list[IterationStats] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)


def token_pairs_above(best: BestMatches, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source row, target row, score) of every best match above the threshold, both directions,
    a pair found both ways kept once."""
    n_src = len(best.fwd_indices)
    n_tgt = len(best.bwd_indices)
    keep_f = best.fwd_scores > threshold
    keep_b = best.bwd_scores > threshold
    src = np.concatenate([np.arange(n_src)[keep_f], best.bwd_indices[keep_b]])
    tgt = np.concatenate([best.fwd_indices[keep_f], np.arange(n_tgt)[keep_b]])
    score = np.concatenate([best.fwd_scores[keep_f], best.bwd_scores[keep_b]])
    _, first = np.unique(src.astype(np.int64) * max(n_tgt, 1) + tgt, return_index=True)
    return src[first], tgt[first], score[first]


def aggregate_word_pairs(src_words: np.ndarray, tgt_words: np.ndarray, scores: np.ndarray,
                         src_vocab: Sequence[str], tgt_vocab: Sequence[str], min_count: int = 1) -> WordPairs:
    """Token pairs (as word-type ids) -> word pairs with counts and mean score, most confident first
    (mean score, then count, then the words)."""
    key = src_words.astype(np.int64) * len(tgt_vocab) + tgt_words
    uniq, inverse = np.unique(key, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(uniq))
    means = np.bincount(inverse, weights=scores.astype(np.float64), minlength=len(uniq)) / np.maximum(counts, 1)
    keep = counts >= min_count
    uniq, counts, means = uniq[keep], counts[keep], means[keep]
    # Sorted by the score as printed (4 decimals): ulp-level differences between runs (thread counts,
    # split searches) must not reorder pairs whose printed scores are equal.
    order = np.lexsort((uniq, -counts, -np.round(means, 4)))
    s_ids, t_ids = uniq[order] // len(tgt_vocab), uniq[order] % len(tgt_vocab)
    return WordPairs([src_vocab[i] for i in s_ids], [tgt_vocab[j] for j in t_ids], counts[order],
                     means[order].astype(np.float32))


def initial_maps(dim: int, seed: int = 0, noise: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Identity plus uniform noise in [-noise, noise] (Hangya et al.), one map per language."""
    rng = np.random.default_rng(seed)
    eye = np.eye(dim, dtype=np.float32)
    return (eye + rng.uniform(-noise, noise, (dim, dim)).astype(np.float32),
            eye + rng.uniform(-noise, noise, (dim, dim)).astype(np.float32))


def fit_maps(src_vecs: np.ndarray, tgt_vecs: np.ndarray, maps: tuple[np.ndarray, np.ndarray],
             method: str = "procrustes", steps: int = 20, lr: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Refit (W_s, W_t) on paired rows so that W_s e_s ≈ W_t e_t (rows are unit token vectors)."""
    if method == "procrustes":
        from xlfast.mapping import procrustes

        dim = src_vecs.shape[1]
        return procrustes(src_vecs, tgt_vecs), np.eye(dim, dtype=np.float32)
    if method == "adam":
        w_s = torch.tensor(maps[0], requires_grad=True)
        w_t = torch.tensor(maps[1], requires_grad=True)
        a, b = torch.from_numpy(np.ascontiguousarray(src_vecs)), torch.from_numpy(np.ascontiguousarray(tgt_vecs))
        opt = torch.optim.Adam([w_s, w_t], lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            loss = ((a @ w_s.T - b @ w_t.T) ** 2).sum(dim=1).mean()
            loss.backward()
            opt.step()
        return w_s.detach().numpy().copy(), w_t.detach().numpy().copy()
    raise XlfastError(f"unknown map update '{method}' (choose procrustes or adam)")


def mine_words(src: EncodedCorpus, tgt: EncodedCorpus, metric: str = DEFAULT_METRIC["word"],
               threshold: float | None = None, knn: int = DEFAULT_KNN["word"], iterations: int = 0,
               sample: int = 10000, map_update: str = "procrustes", map_steps: int = 20, fit_on: str = "mutual",
               min_count: int = 1, nproc: int = 1, seed: int = 0, mem=None, work_dir=None,
               progress: Progress = _no_progress,
               on_iteration: Callable[[IterationStats, WordPairs], None] | None = None) -> WordMiningResult:
    """Word-type translation pairs mined from token-level nearest neighbours (module docstring); the
    threshold defaults to DEFAULT_THRESHOLD[metric]. Maps are fit on the mutual best token pairs of an
    iteration (`fit_on="mutual"`), or on every kept pair (`"all"`): on a weak encoder most one-way
    matches are wrong and a fit on them rotates away."""
    _check_word_metric(metric)
    threshold = _threshold(metric, threshold)
    rng = np.random.default_rng(seed)
    seconds = {"search": 0.0, "aggregate": 0.0, "maps": 0.0}
    maps = initial_maps(src.vectors.shape[1], seed) if iterations > 0 else None
    history: list[IterationStats] = []

    def mine_rows(rows_s, rows_t):
        t0 = time.perf_counter()
        xs = Rows(src.vectors, rows_s, maps[0] if maps else None)
        xt = Rows(tgt.vectors, rows_t, maps[1] if maps else None)
        best = search(xs, xt, metric, knn, nproc=nproc, mem=mem, work_dir=work_dir)
        seconds["search"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        i, j, s = token_pairs_above(best, threshold)
        if metric == "cos":
            # Rescore each kept pair from its two stored rows: a tile's GEMM rounds differently for other
            # shapes (shards, blocks), and the output must not depend on how the search was split.
            s = np.concatenate([np.einsum("ij,ij->i", xs.take(i[lo:lo + 65536]), xt.take(j[lo:lo + 65536]))
                                for lo in range(0, len(i), 65536)] or [np.zeros(0, np.float32)])
        # Mutual best matches (each is the other's nearest) are the confident subset the maps are fit on.
        mutual = (best.bwd_indices[j] == i) & (best.fwd_indices[i] == j)
        gi = i if rows_s is None else rows_s[i]
        gj = j if rows_t is None else rows_t[j]
        pairs = aggregate_word_pairs(src.token_word[gi], tgt.token_word[gj], s, src.words, tgt.words, min_count)
        seconds["aggregate"] += time.perf_counter() - t0
        return gi, gj, pairs, mutual

    total = iterations + 1
    for it in range(iterations):
        progress("mine", it, total)
        n_s, n_t = len(src.lines), len(tgt.lines)
        rows_s = src.rows_of(np.sort(rng.choice(n_s, min(sample, n_s), replace=False)))
        rows_t = tgt.rows_of(np.sort(rng.choice(n_t, min(sample, n_t), replace=False)))
        gi, gj, pairs, mutual = mine_rows(rows_s, rows_t)
        t0 = time.perf_counter()
        previous = maps[0]
        if fit_on == "mutual" and mutual.sum() >= 2:
            gi, gj = gi[mutual], gj[mutual]
        if len(gi) >= 2:
            maps = fit_maps(Rows(src.vectors).take(gi), Rows(tgt.vectors).take(gj), maps, map_update, map_steps)
        seconds["maps"] += time.perf_counter() - t0
        stats = IterationStats(it + 1, len(rows_s), len(rows_t), len(gi), float(np.linalg.norm(maps[0] - previous)))
        if on_iteration is not None:
            on_iteration(stats, pairs)
        history.append(stats)
    progress("mine", iterations, total)
    gi, _, pairs, _ = mine_rows(None, None)
    progress("mine", total, total)
    return WordMiningResult(pairs, len(gi), maps, history, seconds)


def _check_word_metric(metric: str) -> None:
    if metric not in WORD_METRICS:
        raise XlfastError(f"--metric {metric} is for --level sentence; word level uses {' or '.join(WORD_METRICS)}")


def word_pairs_tsv(pairs: WordPairs) -> str:
    lines = ["src\ttgt\tcount\tscore"]
    lines += [f"{s}\t{t}\t{c}\t{v:.4f}" for s, t, c, v in pairs.rows()]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# sentence level


@dataclass
class SentencePairs:
    src: np.ndarray  # sentence index into the source corpus
    tgt: np.ndarray
    score: np.ndarray  # ratio margin (one stage) or margin of the re-scored candidates (two stages), highest first
    seconds: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.src)


def one_to_one(cand_s: np.ndarray, cand_t: np.ndarray, cand_v: np.ndarray, threshold: float):
    """Candidate pairs, highest score first, each sentence used once, at or above the threshold:
    (source, target, score) arrays of the pairs kept."""
    order = np.lexsort((cand_t, cand_s, -cand_v))
    used_s, used_t = set(), set()
    keep = []
    for o in order:
        if cand_v[o] < threshold:
            break
        i, j = int(cand_s[o]), int(cand_t[o])
        if i in used_s or j in used_t:
            continue
        used_s.add(i)
        used_t.add(j)
        keep.append(o)
    keep = np.asarray(keep, np.int64)
    return cand_s[keep].astype(np.int64), cand_t[keep].astype(np.int64), cand_v[keep].astype(np.float32)


def best_both_ways(pair_s: np.ndarray, pair_t: np.ndarray, score: np.ndarray):
    """Of scored candidate pairs, each source's best and each target's best (indices into the pairs,
    a pair that is both once): the likely pairs the length model is estimated from."""
    def firsts(key):
        order = np.lexsort((pair_t, pair_s, -score, key))
        return order[np.concatenate([[True], np.diff(key[order]) != 0])]

    return np.union1d(firsts(pair_s), firsts(pair_t))


def _anchor_word_ids(src: EncodedCorpus, tgt: EncodedCorpus) -> tuple[np.ndarray, np.ndarray]:
    """Per word type of each corpus: an id of what its spelling alone says it translates to, -1 for other
    words: numbers in any script, and words spelt alike on both sides in their first characters
    (`xlfast.anchors.shared_keys`). Two words with the same id translate each other, two with different ids
    do not."""
    ids: dict[tuple[str, str], int] = {}
    keys_s, keys_t = shared_keys(src.words, tgt.words)

    def per_side(keys: list) -> np.ndarray:
        return np.array([-1 if k is None else ids.setdefault(k, len(ids)) for k in keys], np.int64)

    return per_side(keys_s), per_side(keys_t)


def _anchor_ids(src: EncodedCorpus, tgt: EncodedCorpus) -> tuple[np.ndarray, np.ndarray]:
    """Per token of each corpus: its word's anchor id (`_anchor_word_ids`), -1 for other tokens."""
    by_word_s, by_word_t = _anchor_word_ids(src, tgt)
    return by_word_s[src.token_word], by_word_t[tgt.token_word]


def _token_vectors(corpus: EncodedCorpus, rows: np.ndarray, static: bool) -> np.ndarray:
    if static:
        return corpus.word_vectors[corpus.token_word[rows]]
    order = np.argsort(rows)  # a memmap reads in order
    return normalize(np.asarray(corpus.vectors[rows[order]], np.float32)).numpy()[np.argsort(order)]


def word_evidence(src: EncodedCorpus, tgt: EncodedCorpus, pair_s: np.ndarray, pair_t: np.ndarray,
                  static: bool = False, hubness: tuple[np.ndarray, np.ndarray] | None = None,
                  anchors: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Word-level evidence for candidate sentence pairs (stage 2): the mean over the source tokens of
    their best cosine to a target token, and the same from the target side, averaged (as BERTScore
    matches tokens, Zhang et al. 2020). The means weigh each token by √idf of its word type (BERTScore
    weighs by IDF too: a rare content word says more than "the"; the square root keeps the frequent
    words in, which measured better on ne-en and shp-es); where every word has IDF 0 (one sentence) the
    weights are equal. Two anchors (numbers in any script's digits, words spelt alike on both sides:
    `_anchor_word_ids`) match with cosine 1 when they are the same and 0 otherwise, whatever the encoder
    says. `static`: the cosines of the
    context-free word vectors (`EncodedCorpus.word_vectors`) instead of the contextual ones; with
    `hubness` (per word type of each side, its mean cosine to its nearest words of the other side,
    `static_hubness`) their CSLS, 2·cos − r_s − r_t (Conneau et al. 2018), so that a word close to every
    word of the other language (a hub) does not match every sentence. `anchors`: `_anchor_ids(src, tgt)`
    where the caller keeps it (it looks at every word type of both corpora)."""
    out = np.zeros(len(pair_s), np.float32)
    if len(pair_s) == 0:
        return out
    anchor_s, anchor_t = _anchor_ids(src, tgt) if anchors is None else anchors
    order = np.argsort(pair_s, kind="stable")
    cuts = np.flatnonzero(np.diff(pair_s[order])) + 1
    # The same bits whatever the thread governor does meanwhile: stage 2's one-to-one choice turns last-bit
    # differences into different pairs (up to 40 of 1,133 on ne-en when the count changed mid-loop).
    with threads.one_blas_thread():
        for group in np.split(order, cuts):
            _score_group(src, tgt, pair_s, pair_t, group, static, hubness, anchor_s, anchor_t, out)
    return out


def _score_group(src, tgt, pair_s, pair_t, group, static, hubness, anchor_s, anchor_t, out) -> None:
    """`word_evidence` of the pairs `group`, which share their source sentence, into out[group]."""
    i = int(pair_s[group[0]])
    rows_a = np.arange(src.sentence_offsets[i], src.sentence_offsets[i + 1])
    rows_b = tgt.rows_of(pair_t[group])
    sim = _token_vectors(src, rows_a, static) @ _token_vectors(tgt, rows_b, static).T
    if static and hubness is not None:
        sim = 2 * sim - hubness[0][src.token_word[rows_a]][:, None] - hubness[1][tgt.token_word[rows_b]][None, :]
    na, nb = anchor_s[rows_a][:, None], anchor_t[rows_b][None, :]
    both = (na >= 0) & (nb >= 0)
    sim = np.where(both, (na == nb).astype(np.float32), sim)
    lengths = np.diff(tgt.sentence_offsets)[pair_t[group]]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    wa, wb = _evidence_weights(src, rows_a), _evidence_weights(tgt, rows_b)
    src_side = wa @ np.maximum.reduceat(sim, starts, axis=1) / wa.sum()
    tgt_side = np.add.reduceat(sim.max(axis=0) * wb, starts) / np.add.reduceat(wb, starts)
    out[group] = 0.5 * (src_side + tgt_side)


def _evidence_weights(corpus: EncodedCorpus, rows: np.ndarray) -> np.ndarray:
    """√idf of the tokens' word types, floored so that a sentence never weighs to 0 in all."""
    return np.sqrt(np.maximum(corpus.idf[corpus.token_word[rows]], IDF_FLOOR))


def static_hubness(src: EncodedCorpus, tgt: EncodedCorpus, knn: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """CSLS's neighbourhood terms of the word types of both corpora against each other (one pass of
    `xlfast.kernels.csls.neighbourhood_means` over their context-free vectors)."""
    from xlfast.kernels.csls import neighbourhood_means

    r_s, r_t = neighbourhood_means(torch.from_numpy(src.word_vectors), torch.from_numpy(tgt.word_vectors), knn,
                                   normalized=True)
    return r_s.numpy(), r_t.numpy()


def neighbourhood_margin(pair_s: np.ndarray, pair_t: np.ndarray, score: np.ndarray, knn: int) -> np.ndarray:
    """Distance margin (Artetxe & Schwenk 2019, "Margin-based scoring") over candidate lists:
    score − ½(mean of the source's knn best candidate scores + mean of the target's knn best)."""
    def means(key):
        order = np.lexsort((-score, key))
        k_sorted, s_sorted = key[order], score[order]
        starts = np.flatnonzero(np.concatenate([[True], np.diff(k_sorted) != 0]))
        rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.append(starts, len(order))))
        top = rank < knn
        total = np.bincount(k_sorted[top], weights=s_sorted[top].astype(np.float64))
        count = np.bincount(k_sorted[top])
        return (total / np.maximum(count, 1))[key]

    return (score - 0.5 * (means(pair_s) + means(pair_t))).astype(np.float32)


def _check_evidence(evidence: str) -> None:
    if evidence not in EVIDENCE:
        raise XlfastError(f"unknown word evidence '{evidence}' (choose {', '.join(EVIDENCE)})")


def sentence_features(src: EncodedCorpus, tgt: EncodedCorpus, keep_s: np.ndarray, keep_t: np.ndarray,
                      center: bool) -> tuple[np.ndarray, np.ndarray]:
    """Stage 1's sentence vectors: the mean contextual vector, and where both corpora have context-free
    word vectors, beside it the IDF-weighted sum of those (each part centred per corpus when `center`,
    then unit length, so that the two weigh alike in a cosine)."""
    def unit_parts(a: np.ndarray, b: np.ndarray):
        if center:
            a, b = a - a.mean(axis=0), b - b.mean(axis=0)
        return normalize(a).numpy(), normalize(b).numpy()

    xs, xt = unit_parts(src.sentence_vectors[keep_s], tgt.sentence_vectors[keep_t])
    if src.static_sentence_vectors is None or tgt.static_sentence_vectors is None:
        return xs, xt
    ss, st = unit_parts(src.static_sentence_vectors[keep_s], tgt.static_sentence_vectors[keep_t])
    return np.hstack([xs, ss]) / np.sqrt(2), np.hstack([xt, st]) / np.sqrt(2)


def length_penalty(src: EncodedCorpus, tgt: EncodedCorpus, pair_s: np.ndarray, pair_t: np.ndarray,
                   score: np.ndarray) -> np.ndarray:
    """z² of each pair's log ratio of character lengths (Gale & Church 1993: translations' lengths are
    proportional), the mean and spread of the ratio estimated robustly (median, MAD) from each sentence's
    best-scoring candidate: no parameter of the language pair needs to be known."""
    len_s = np.fromiter((max(len(x), 1) for x in src.lines), np.float64, len(src.lines))
    len_t = np.fromiter((max(len(x), 1) for x in tgt.lines), np.float64, len(tgt.lines))
    ratio = np.log(len_t[pair_t] / len_s[pair_s])
    best = ratio[best_both_ways(pair_s, pair_t, score)]
    mid = np.median(best)
    spread = max(1.4826 * float(np.median(np.abs(best - mid))), 0.05)
    return (((ratio - mid) / spread) ** 2).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# sentence level, stage 1's second source of candidates: coverage by the run's own lexicon


@dataclass
class Lexicon:
    """For every word type of one corpus, its best translations among the word types of the other
    (CSR: the entries of word w are offsets[w]:offsets[w + 1]) with their weights, descending."""

    offsets: np.ndarray  # [W+1] int64
    words: np.ndarray  # [E] int64, word types of the other corpus
    weights: np.ndarray  # [E] float32, > 0


def static_lexicons(src: EncodedCorpus, tgt: EncodedCorpus, hubness: tuple[np.ndarray, np.ndarray],
                    size: int = LEXICON_SIZE) -> tuple[Lexicon, Lexicon]:
    """Both ways, each word type's `size` nearest word types of the other corpus by CSLS of the static
    vectors (one `xlfast.kernels.csls.topk` pass, both directions, never the full matrix), weighted by
    max(CSLS / 2, 0) (at most 1): the translation lexicon the run itself implies (as a dictionary-coverage matcher takes
    one from a word aligner). Two anchors (the same number in any script's digits, or the same spelling in
    its first characters: `_anchor_word_ids`) are each other's best translation, weight 1."""
    from xlfast.kernels.csls import topk

    found = topk(src.word_vectors, tgt.word_vectors, size, metric="csls", both=True, normalized=True,
                 means=(torch.from_numpy(hubness[0]), torch.from_numpy(hubness[1])))
    anchor_s, anchor_t = _anchor_word_ids(src, tgt)

    def lexicon(scores, indices, anchor_a, anchor_b) -> Lexicon:
        scores, indices = scores.numpy().astype(np.float32), indices.numpy().astype(np.int64)
        rows = np.repeat(np.arange(len(indices)), indices.shape[1])
        cols, vals = indices.ravel(), np.maximum(scores.ravel() / 2, 0)  # CSLS = 2·cos − r − r: halve to ≤ 1
        # every word of the other side with the anchor ('tecnologianin', …)
        where_b = positions([k if k >= 0 else None for k in anchor_b.tolist()])
        same = [(i, j) for i, k in enumerate(anchor_a.tolist()) if k >= 0
                for j in where_b.get(k, ())[:ANCHOR_PARTNERS_MAX]]
        if same:
            ni, nj = np.array(same, np.int64).T
            rows, cols = np.concatenate([rows, ni]), np.concatenate([cols, nj])
            vals = np.concatenate([vals, np.ones(len(ni), np.float32)])
        keep = vals > 0
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
        order = np.lexsort((-vals, rows))
        rows, cols, vals = rows[order], cols[order], vals[order]
        return Lexicon(np.searchsorted(rows, np.arange(len(anchor_a) + 1)).astype(np.int64), cols,
                       vals.astype(np.float32))

    return (lexicon(found.scores, found.indices, anchor_s, anchor_t),
            lexicon(found.rev_scores, found.rev_indices, anchor_t, anchor_s))


def coverage_candidates(a: EncodedCorpus, b: EncodedCorpus, lexicon: Lexicon, k: int) -> np.ndarray:
    """For every sentence of `a`, the `k` sentences of `b` its words' translations cover best [S_a, k]
    (−1 where fewer are covered at all): Σ over the distinct words w of the sentence of idf(w) × the
    weight of w's best translation present in the other sentence (a dictionary-coverage score, as
    classic sentence aligners use a bilingual lexicon; Moore 2002). The `k` best of each sentence come from
    an inverted index of `b`, so only sentences sharing a translation with it are ever scored."""
    from xlfast.kernels.coverage import coverage_topk

    sent_a, word_a = a.word_sets
    sent_b, word_b = b.word_sets
    by_word = np.argsort(word_b, kind="stable")
    postings = sent_b[by_word].astype(np.int32)
    posting_offsets = np.searchsorted(word_b[by_word], np.arange(len(b.words) + 1)).astype(np.int64)
    sentence_offsets = np.searchsorted(sent_a, np.arange(len(a.lines) + 1)).astype(np.int64)
    return coverage_topk(sentence_offsets, word_a, a.idf, lexicon.offsets, lexicon.words,
                         lexicon.weights, posting_offsets, postings, len(b.lines), k, LEXICAL_MAX_POSTINGS)


def lexical_candidates(src: EncodedCorpus, tgt: EncodedCorpus, hubness: tuple[np.ndarray, np.ndarray],
                       k: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidate sentence pairs (source, target indices) by lexicon coverage, the `k` best both ways."""
    fwd_lex, bwd_lex = static_lexicons(src, tgt, hubness)
    fwd = coverage_candidates(src, tgt, fwd_lex, k)
    bwd = coverage_candidates(tgt, src, bwd_lex, k)
    cand_s = np.concatenate([np.repeat(np.arange(len(fwd)), k), bwd.ravel()])
    cand_t = np.concatenate([fwd.ravel(), np.repeat(np.arange(len(bwd)), k)])
    found = (cand_s >= 0) & (cand_t >= 0)
    return cand_s[found], cand_t[found]


def mine_sentences(src: EncodedCorpus, tgt: EncodedCorpus, threshold: float | None = None,
                   knn: int = DEFAULT_KNN["sentence"], metric: str = DEFAULT_METRIC["sentence"], nproc: int = 1,
                   mem=None, work_dir=None, center: bool = True, candidates: int = DEFAULT_CANDIDATES,
                   word_weight: float = DEFAULT_WORD_WEIGHT, evidence: str = DEFAULT_EVIDENCE,
                   length_weight: float = DEFAULT_LENGTH_WEIGHT, lexical: int = DEFAULT_LEXICAL,
                   refine: int = DEFAULT_REFINE) -> SentencePairs:
    """Parallel sentences in one or two stages.

    Stage 1: margin search over sentence vectors (`sentence_features`; ratio margin, cos / mean of both
    kNN neighbourhoods; Artetxe & Schwenk 2019) through `xlfast.search`, the `candidates` best both ways;
    in two stages with static word vectors also the `lexical` best both ways by lexicon coverage
    (`lexical_candidates`).
    `word_weight` = 0: one stage: every source's and every target's best candidate, highest margin
    first, each sentence used once, at or above the threshold (default DEFAULT_THRESHOLD[metric]).
    Stage 2 (`word_weight` > 0): every candidate pair is re-scored as (1 − w)·cos(sentence vectors)
    + w·word_evidence − length_weight·length_penalty, then a distance margin over each sentence's
    candidates; of all candidates, highest margin first, each sentence used once (competitive linking),
    the pairs at or above the threshold (default RESCORED_THRESHOLD) are kept. `evidence`: the word vectors stage 2 compares, 'context', 'static' (context-free,
    where the encoder has them) or 'both' (the mean of the two evidences).
    `center` subtracts each corpus's mean sentence vector first (removes a per-language offset; on ne-en
    devtest it doubled the best-candidate accuracy of a 6-epoch run, 2.3% -> 4.4%).
    `refine` more passes follow, each with the source's sentence vectors mapped by the orthogonal map fitted
    to the last pass's pairs (`procrustes_refined`; DEFAULT_REFINE)."""
    if not 0.0 <= word_weight <= 1.0:
        raise XlfastError(f"the word weight must lie in [0, 1], got {word_weight}")
    _check_evidence(evidence)
    if length_weight < 0:
        raise XlfastError(f"the length weight must be at least 0, got {length_weight}")
    if lexical < 0:
        raise XlfastError(f"the lexical candidates must be at least 0, got {lexical}")
    if refine < 0:
        raise XlfastError(f"the refinement passes must be at least 0, got {refine}")
    two_stage = word_weight > 0
    threshold = (RESCORED_THRESHOLD if two_stage else _threshold(metric, None)) if threshold is None else threshold
    seconds = {"search": 0.0, "aggregate": 0.0}
    keep_s = np.flatnonzero(np.diff(src.sentence_offsets) > 0)  # empty sentences have no vector
    keep_t = np.flatnonzero(np.diff(tgt.sentence_offsets) > 0)
    xs, xt = sentence_features(src, tgt, keep_s, keep_t, center)
    static = two_stage and src.word_vectors is not None and tgt.word_vectors is not None
    hubness, lexical_pairs = None, None
    if two_stage:
        t0 = time.perf_counter()
        hubness = static_hubness(src, tgt) if static and (lexical > 0 or evidence != "context") else None
        seconds["rescore"] = time.perf_counter() - t0
    if static and lexical > 0:  # the lexicon's candidates do not depend on the sentence vectors: found once
        t0 = time.perf_counter()
        lex_s, lex_t = lexical_candidates(src, tgt, hubness, lexical)  # sentences with words: all kept
        lexical_pairs = np.searchsorted(keep_s, lex_s), np.searchsorted(keep_t, lex_t)
        seconds["lexical"] = time.perf_counter() - t0
    evidence_cache: dict = {}  # the word evidence of candidate pairs already scored, for the refined passes

    def one_pass(xs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(source, target, score) of the pairs one pass keeps, as indices into keep_s / keep_t."""
        t0 = time.perf_counter()
        top = search_topk(xs, xt, candidates if two_stage else 1, metric, knn, nproc=nproc, mem=mem,
                          work_dir=work_dir)
        seconds["search"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        n, m = len(keep_s), len(keep_t)
        cand_s = np.concatenate([np.repeat(np.arange(n), top.fwd_indices.shape[1]), top.bwd_indices.ravel()])
        cand_t = np.concatenate([top.fwd_indices.ravel(), np.repeat(np.arange(m), top.bwd_indices.shape[1])])
        cand_v = np.concatenate([top.fwd_scores.ravel(), top.bwd_scores.ravel()])
        if two_stage:
            if lexical_pairs is not None:
                cand_s = np.concatenate([cand_s, lexical_pairs[0]])
                cand_t = np.concatenate([cand_t, lexical_pairs[1]])
            _, first = np.unique(cand_s.astype(np.int64) * max(m, 1) + cand_t, return_index=True)
            cand_s, cand_t = cand_s[first], cand_t[first]
            sentence = np.einsum("ij,ij->i", xs[cand_s], xt[cand_t])
            seconds["aggregate"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            pair_s, pair_t = keep_s[cand_s], keep_t[cand_t]
            words = _cached_word_evidence(src, tgt, pair_s, pair_t, evidence, static, hubness, evidence_cache)
            score = (1 - word_weight) * sentence + word_weight * words
            if length_weight > 0:
                score = score - length_weight * length_penalty(src, tgt, pair_s, pair_t, score)
            seconds["rescore"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            # Every candidate stays in the greedy one-to-one choice (competitive linking, Melamed 2000), not
            # only each sentence's best: once a better pair has taken a sentence's best partner, its
            # second may be free and right. Through `xlfast mine` (WACSE runs), ne-en F1 0.492 -> 0.646,
            # shp-es 0.736 -> 0.738; with half or less of each side parallel it gained or tied on both.
            cand_v = neighbourhood_margin(cand_s, cand_t, score, knn)
        kept = one_to_one(cand_s, cand_t, cand_v, threshold)
        seconds["aggregate"] += time.perf_counter() - t0
        return kept

    out_s, out_t, out_v = one_pass(xs)
    for _ in range(refine):
        if len(out_s) < MIN_REFINE_PAIRS:
            break
        t0 = time.perf_counter()
        xs = procrustes_refined(xs, xt, out_s, out_t)
        seconds["refine"] = seconds.get("refine", 0.0) + time.perf_counter() - t0
        out_s, out_t, out_v = one_pass(xs)
    return SentencePairs(keep_s[out_s], keep_t[out_t], out_v, seconds)


def procrustes_refined(xs: np.ndarray, xt: np.ndarray, pair_s: np.ndarray, pair_t: np.ndarray) -> np.ndarray:
    """The source vectors `xs` (unit rows) mapped by the orthogonal W minimising ‖xs[pair_s]·Wᵀ − xt[pair_t]‖
    (`xlfast.mapping.procrustes`); still unit rows, since W is orthogonal."""
    from xlfast.mapping import procrustes

    return (xs @ procrustes(xs[pair_s], xt[pair_t]).T).astype(xs.dtype)


def _cached_word_evidence(src, tgt, pair_s, pair_t, evidence, static, hubness, cache: dict) -> np.ndarray:
    """`word_evidence` of the pairs (averaged over the kinds `evidence` asks for), computed only for pairs
    an earlier pass of the same mining did not already score (`cache`: sorted pair keys and their values,
    and the anchor ids of both corpora)."""
    keys = pair_s.astype(np.int64) * len(tgt.lines) + pair_t
    known_keys, known = cache.get("keys", np.empty(0, np.int64)), cache.get("values", np.empty(0, np.float32))
    at = np.minimum(np.searchsorted(known_keys, keys), max(len(known_keys) - 1, 0))
    hit = known_keys[at] == keys if len(known_keys) else np.zeros(len(keys), bool)
    out = np.empty(len(keys), np.float32)
    out[hit] = known[at[hit]]
    new = ~hit
    if new.any():
        kinds = {"context": [False], "static": [static], "both": [False, True] if static else [False]}[evidence]
        if "anchors" not in cache:
            cache["anchors"] = _anchor_ids(src, tgt)
        out[new] = np.mean([word_evidence(src, tgt, pair_s[new], pair_t[new], k, hubness, cache["anchors"])
                            for k in kinds], axis=0)
        merged = np.concatenate([known_keys, keys[new]])
        order = np.argsort(merged, kind="stable")
        cache["keys"], cache["values"] = merged[order], np.concatenate([known, out[new]])[order]
    return out


SENTENCE_COLUMNS = ("score", "src_line", "tgt_line", "src", "tgt")


def sentence_pairs_tsv(pairs: SentencePairs, src: EncodedCorpus, tgt: EncodedCorpus) -> str:
    """Header, then `score, source line number, target line number, source, target` per pair (1-based)."""
    rows = [f"{v:.4f}\t{src.line_numbers[i]}\t{tgt.line_numbers[j]}\t{src.lines[i]}\t{tgt.lines[j]}\n"
            for i, j, v in zip(pairs.src, pairs.tgt, pairs.score)]
    return "\t".join(SENTENCE_COLUMNS) + "\n" + "".join(rows)


def read_sentence_pairs(path) -> list[tuple[str, str]]:
    """The (source, target) sentences of a mined-pairs TSV as `sentence_pairs_tsv` writes it."""
    from xlfast.errors import InputError
    from xlfast.io import iter_mono

    pairs = []
    for number, line in iter_mono(path):
        fields = line.split("\t")
        if number == 1:
            if tuple(fields) != SENTENCE_COLUMNS:
                raise InputError(path, f"expected the header '{' '.join(SENTENCE_COLUMNS)}' (TAB-separated) "
                                       "of `xlfast mine --level sentence`", number)
            continue
        if len(fields) != len(SENTENCE_COLUMNS):
            raise InputError(path, f"expected {len(SENTENCE_COLUMNS)} TAB-separated fields, found {len(fields)}",
                             number)
        pairs.append((fields[3], fields[4]))
    return pairs


# ----------------------------------------------------------------------------------------------
# both levels, as `xlfast mine` runs them

SHOWN_PAIRS = 15  # the most confident pairs a summary carries for display


@dataclass
class MiningSummary:
    """What `mine_corpora` did: the settings it resolved, sizes, stage times and the best pairs."""

    level: str
    metric: str
    threshold: float
    knn: int
    nproc: int
    pairs: int
    src_sentences: int
    tgt_sentences: int
    src_tokens: int
    tgt_tokens: int
    seconds: dict
    # word level: (source word, target word, count, score); sentence level: (score, source line, target line)
    best: list[tuple]
    encoder: str  # its name
    token_pairs: int | None = None  # word level
    iterations: list[IterationStats] | None = None  # word level
    candidates: int | None = None  # sentence level: stage 1's candidates per sentence, both ways
    lexical: int | None = None  # sentence level: stage 1's lexicon-coverage candidates per sentence, both ways
    word_weight: float | None = None  # sentence level: stage 2's weight of the word evidence (0: one stage)
    evidence: str | None = None  # sentence level: the word vectors stage 2 compares (context, static, both)
    length_weight: float | None = None  # sentence level: stage 2's weight of the length-ratio penalty
    refine: int | None = None  # sentence level: passes after the first, each with the Procrustes-mapped vectors

    @property
    def tokens_per_second(self) -> float:
        return (self.src_tokens + self.tgt_tokens) / max(sum(self.seconds.values()), 1e-9)

    def to_dict(self) -> dict:
        """The JSON summary: every field but `best`; word-level fields only at word level."""
        out = {k: v for k, v in asdict(self).items() if k != "best" and v is not None}
        return dict(out, tokens_per_second=self.tokens_per_second)


def mine_corpora(encoder, src_lines: Sequence[str], tgt_lines: Sequence[str], output, *, level: str = "word",
                 metric: str | None = None, threshold: float | None = None, knn: int | None = None,
                 nproc: int = 1, mem=None, work_dir=None, progress: Progress = _no_progress,
                 **options) -> MiningSummary:
    """Encode both corpora, mine pairs at `level` and write them to `output` as TSV (atomically; under
    torchrun only the first rank writes). metric, threshold and knn default by level (DEFAULT_METRIC,
    DEFAULT_THRESHOLD, DEFAULT_KNN); `options` go to `mine_words` or `mine_sentences`. Token vectors
    live in `work_dir` (kept), or else in a temporary directory removed afterwards. `src_lines` /
    `tgt_lines` may carry their file line numbers as `.lines` (`xlfast.io.read_mono`)."""
    from xlfast.io import atomic_write_text

    if level not in LEVELS:
        raise XlfastError(f"unknown level '{level}' (choose {' or '.join(LEVELS)})")
    metric = metric or DEFAULT_METRIC[level]
    validate(metric, nproc, mem)  # argument errors before the encoding, not after it
    if level == "word":
        _check_word_metric(metric)
    _check_evidence(options.get("evidence", DEFAULT_EVIDENCE))
    if level == "sentence" and options.get("word_weight", DEFAULT_WORD_WEIGHT) > 0 and threshold is None:
        threshold = RESCORED_THRESHOLD  # stage 2 thresholds its own margin
    threshold = _threshold(metric, threshold)
    knn = DEFAULT_KNN[level] if knn is None else knn
    seconds: dict[str, float] = {}
    with scratch_dir(work_dir) as scratch:
        t0 = time.perf_counter()
        src = encode_corpus(encoder, "src", src_lines, scratch, getattr(src_lines, "lines", None), progress=progress)
        tgt = encode_corpus(encoder, "tgt", tgt_lines, scratch, getattr(tgt_lines, "lines", None), progress=progress)
        seconds["encode"] = time.perf_counter() - t0
        if level == "word":
            words = mine_words(src, tgt, metric, threshold, knn, nproc=nproc, mem=mem, work_dir=scratch,
                               progress=progress, **options)
            seconds.update(words.seconds)
            text = word_pairs_tsv(words.pairs)
            best = words.pairs.rows()[:SHOWN_PAIRS]
            extra = dict(pairs=len(words.pairs), token_pairs=words.token_pairs, iterations=words.iterations)
        else:
            sentences = mine_sentences(src, tgt, threshold, knn, metric, nproc, mem, scratch, **options)
            seconds.update(sentences.seconds)
            text = sentence_pairs_tsv(sentences, src, tgt)
            best = [(float(v), src.lines[i], tgt.lines[j])
                    for i, j, v in list(zip(sentences.src, sentences.tgt, sentences.score))[:SHOWN_PAIRS]]
            extra = dict(pairs=len(sentences), candidates=options.get("candidates", DEFAULT_CANDIDATES),
                         lexical=options.get("lexical", DEFAULT_LEXICAL),
                         word_weight=options.get("word_weight", DEFAULT_WORD_WEIGHT),
                         evidence=options.get("evidence", DEFAULT_EVIDENCE),
                         length_weight=options.get("length_weight", DEFAULT_LENGTH_WEIGHT),
                         refine=options.get("refine", DEFAULT_REFINE))
        summary = MiningSummary(level, metric, threshold, knn, nproc, src_sentences=len(src.lines),
                                tgt_sentences=len(tgt.lines), src_tokens=src.n_tokens, tgt_tokens=tgt.n_tokens,
                                seconds=seconds, best=best, encoder=encoder.name, **extra)
    if is_primary():
        atomic_write_text(output, text)
    return summary


def mine_files(src, tgt, output, *, model=None, hf_model=None, tokenize: str | None = None,
               lowercase: bool | None = None, src_lang: str | None = None, tgt_lang: str | None = None,
               nproc: int = 1, say: Callable[[str], None] = print, **mining) -> MiningSummary:
    """`xlfast mine`: read two monolingual files ('-': standard input, once; empty or undecodable lines
    are skipped, each file's count in a warning), load the encoder (`xlfast.encoders.load_encoder`: a
    run directory `model` or a local transformer `hf_model`), `say` which, and mine them with
    `mine_corpora` (`mining`: its options)."""
    from xlfast.encoders import load_encoder
    from xlfast.errors import shown_path
    from xlfast.io import check_stdin_once, read_mono

    check_stdin_once(src, tgt)
    src_lines, tgt_lines = read_mono(src, skip_bad_lines=True), read_mono(tgt, skip_bad_lines=True)
    for lines in (src_lines, tgt_lines):
        if lines.skipped:
            log.warning("%s: skipped %d empty or undecodable line(s) in all", shown_path(lines.path), lines.skipped)
    encoder = load_encoder(model, hf_model, tokenize, lowercase, src_lang, tgt_lang)
    say(f"encoder: {encoder.name}, dim {encoder.dim}; search: xlfast.kernels.csls, {nproc} process(es)")
    return mine_corpora(encoder, src_lines, tgt_lines, output, nproc=nproc, **mining)
