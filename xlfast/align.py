"""Word alignment from embeddings: in-pair CSLS, both directions, symmetrisation, NULL heuristic.

For a sentence pair with source vectors x_1..x_n and target vectors y_1..y_m (static, contextual, or
both mixed — `mix_vectors`, the default),
cos(x_i, y_j) is turned into CSLS (Conneau et al. 2018, §2.3) with K=3 where the neighbourhood of a word
is the *other sentence*, as Wada et al. (2021) align in their word-alignment experiments (computed by
`xlfast.kernels.csls.csls_dense` — the project's only CSLS). Every source word links to its best target
(forward), every target word to its best source (backward); the two are symmetrised (grow-diag-final-and
of Koehn et al. 2005, intersect, union, or none = forward only).

Many pairs are padded into one [B, n, m] batch (pairs sorted by length so padding stays small), so the
similarities are one batched matmul, never a loop over pairs.

NULL heuristic of Wada et al. (2021), applied to each direction before symmetrisation as the authors' code
(twadada/multilingual-nlm) does: keep (x, y) only if CSLS(x, y) > 0 and
cos_static(x, y) > agg(cos_static(x, BOS_t), cos_static(y, BOS_s)), agg = min (paper) or max (authors'
code); cosines on static embeddings whatever `emb` is.

`align_file` is the whole of `xlfast align`: it streams a corpus, aligns it chunk by chunk and writes
the links and the optional outputs; `picture_pair` is what `xlfast show` draws.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
import regex
import torch

from xlfast.anchors import positions, shared_keys
from xlfast.errors import UsageError, XlfastError

Link = tuple[int, int]
EMBEDDINGS = ("mix", "contextual", "static")
SYMMETRISATIONS = ("grow-diag-final-and", "intersect", "union", "none")
NULL_RULES = ("none", "min", "max")
LINK_UNITS = ("words", "tokens")  # what links index: the whitespace words of a line, or the tokenizer's tokens
SCORES = ("csls", "cos")  # what `picture_pair` colours by
CHUNK_PAIRS = 4096  # pairs `align_file` reads, embeds and writes at a time: memory stays flat on big corpora
# Koehn's order: the four direct neighbours, then the diagonals.
NEIGHBOURS = ((-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))


@dataclass(frozen=True)
class AlignOptions:
    """How links are chosen from a run's vectors. The defaults are those of `xlfast align`, and
    `xlfast show` draws with the same, so the picture shows the links the aligner writes."""

    emb: str = "mix"
    sym: str = "grow-diag-final-and"
    null: str = "none"
    static_weight: float = 0.5
    anchors: bool = True  # numbers and words spelt alike (`xlfast.anchors`) link to each other first (`anchor_matrix`)

    def __post_init__(self):
        for value, allowed, what in ((self.emb, EMBEDDINGS, "embedding kind"), (self.sym, SYMMETRISATIONS,
                                     "symmetrisation"), (self.null, NULL_RULES, "NULL rule")):
            if value not in allowed:
                raise UsageError(f"unknown {what} {value!r}: use one of {', '.join(allowed)}")
        if not 0.0 <= self.static_weight <= 1.0:
            raise UsageError(f"the static weight must lie in [0, 1], got {self.static_weight}")


# ----------------------------------------------------------------------------- symmetrisation


def grow_diag_final_and(forward: Iterable[Link], backward: Iterable[Link], n_src: int, n_tgt: int) -> set[Link]:
    """Koehn's grow-diag-final-and, visiting points in the same (source, target) order as the
    reference pseudo-code's full-grid loop, so links added during a sweep are grown in that sweep."""
    forward, backward = set(forward), set(backward)
    union = forward | backward
    alignment = forward & backward
    rows: list[set[int]] = [set() for _ in range(n_src)]
    src_aligned, tgt_aligned = set(), set()

    def add(i, j):
        alignment.add((i, j))
        rows[i].add(j)
        src_aligned.add(i)
        tgt_aligned.add(j)

    for i, j in alignment:
        rows[i].add(j)
        src_aligned.add(i)
        tgt_aligned.add(j)

    changed = True
    while changed:  # GROW-DIAG
        changed = False
        for i in range(n_src):
            j = -1
            while True:  # the row's aligned points in increasing j, including ones added meanwhile
                later = [x for x in rows[i] if x > j]
                if not later:
                    break
                j = min(later)
                for di, dj in NEIGHBOURS:
                    a, b = i + di, j + dj
                    if (a not in src_aligned or b not in tgt_aligned) and (a, b) in union:
                        if (a, b) not in alignment:
                            add(a, b)
                            changed = True
    for direction in (forward, backward):  # FINAL-AND(e2f), FINAL-AND(f2e)
        for i, j in sorted(direction):
            if i not in src_aligned and j not in tgt_aligned:
                add(i, j)
    return alignment


def symmetrise(forward: Iterable[Link], backward: Iterable[Link], n_src: int, n_tgt: int, method: str) -> set[Link]:
    forward, backward = set(forward), set(backward)
    if method == "grow-diag-final-and":
        return grow_diag_final_and(forward, backward, n_src, n_tgt)
    if method == "intersect":
        return forward & backward
    if method == "union":
        return forward | backward
    if method == "none":
        return forward
    raise XlfastError(f"unknown symmetrisation {method!r}: use one of {', '.join(SYMMETRISATIONS)}")


# ----------------------------------------------------------------------------- batched scoring


def pad(vectors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack [n_i, d] matrices into [B, max n, d] (zeros) and a [B, max n] validity mask."""
    longest = max((v.shape[0] for v in vectors), default=0)
    d = next((v.shape[1] for v in vectors if v.ndim == 2), 1)
    out = torch.zeros(len(vectors), max(longest, 1), d, dtype=torch.float32)
    mask = torch.zeros(len(vectors), max(longest, 1), dtype=torch.bool)
    for b, v in enumerate(vectors):
        out[b, : v.shape[0]] = v
        mask[b, : v.shape[0]] = True
    return out, mask


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


def pair_scores(src_vecs: Sequence[torch.Tensor], tgt_vecs: Sequence[torch.Tensor], knn: int = 3):
    """Cosine and in-pair CSLS for a batch of pairs: ([B,n,m] cos, [B,n,m] csls, src mask, tgt mask)."""
    from xlfast.kernels.csls_dense import csls_dense

    src, src_mask = pad(src_vecs)
    tgt, tgt_mask = pad(tgt_vecs)
    cos = torch.bmm(_unit(src), _unit(tgt).transpose(1, 2))
    csls = csls_dense(cos, knn, row_mask=src_mask, col_mask=tgt_mask)
    return cos, csls, src_mask, tgt_mask


def null_keep_mask(
    static_src: Sequence[torch.Tensor],
    static_tgt: Sequence[torch.Tensor],
    src_bos: torch.Tensor,
    tgt_bos: torch.Tensor,
    rule: str,
) -> torch.Tensor:
    """[B,n,m] True where cos_static(x,y) beats the BOS threshold (the CSLS>0 half is applied by the caller)."""
    src, _ = pad(static_src)
    tgt, _ = pad(static_tgt)
    src, tgt = _unit(src), _unit(tgt)
    cos = torch.bmm(src, tgt.transpose(1, 2))
    src_to_bos = (src @ _unit(tgt_bos)).unsqueeze(2)  # cos(x, BOS_t): [B,n,1]
    tgt_to_bos = (tgt @ _unit(src_bos)).unsqueeze(1)  # cos(y, BOS_s): [B,1,m]
    agg = torch.minimum if rule == "min" else torch.maximum
    return cos > agg(src_to_bos, tgt_to_bos)


@dataclass
class PairAlignment:
    """One sentence pair's links (sorted) and, per link, (cosine, CSLS) of the alignment embeddings."""

    links: list[Link]
    scores: list[tuple[float, float]] = field(default_factory=list)
    forward: set[Link] = field(default_factory=set)
    backward: set[Link] = field(default_factory=set)

    def pharaoh(self) -> str:
        return " ".join(f"{i}-{j}" for i, j in self.links)


def align_batch(
    src_vecs: Sequence[torch.Tensor],
    tgt_vecs: Sequence[torch.Tensor],
    sym: str = AlignOptions.sym,
    null: str = AlignOptions.null,
    static_src: Sequence[torch.Tensor] | None = None,
    static_tgt: Sequence[torch.Tensor] | None = None,
    src_bos: torch.Tensor | None = None,
    tgt_bos: torch.Tensor | None = None,
    knn: int = 3,
    anchors: Sequence[torch.Tensor] | None = None,
) -> list[PairAlignment]:
    """Align a batch of sentence pairs given per-pair [n_i,d] / [m_i,d] vector matrices. `anchors`: per
    pair an [n_i, m_i] bool matrix of the word pairs whose spelling says they translate (`anchor_matrix`):
    each is the best match of both its words and passes the NULL heuristic, whatever the vectors say."""
    if len(src_vecs) != len(tgt_vecs):
        raise XlfastError(f"{len(src_vecs)} source sentences but {len(tgt_vecs)} target sentences")
    if sym not in SYMMETRISATIONS:
        raise XlfastError(f"unknown symmetrisation {sym!r}: use one of {', '.join(SYMMETRISATIONS)}")
    if null not in NULL_RULES:
        raise XlfastError(f"unknown NULL rule {null!r}: use one of {', '.join(NULL_RULES)}")
    if all(v.shape[0] == 0 for v in src_vecs) or all(v.shape[0] == 0 for v in tgt_vecs):
        return [PairAlignment(links=[]) for _ in src_vecs]
    cos, csls, _, _ = pair_scores(src_vecs, tgt_vecs, knn)
    neg = torch.finfo(csls.dtype).min
    masked = csls.clone()
    tgt_len = torch.tensor([v.shape[0] for v in tgt_vecs])
    src_len = torch.tensor([v.shape[0] for v in src_vecs])
    cols = torch.arange(masked.shape[2])
    rows = torch.arange(masked.shape[1])
    masked.masked_fill_(~(cols[None, None, :] < tgt_len[:, None, None]), neg)
    masked.masked_fill_(~(rows[None, :, None] < src_len[:, None, None]), neg)
    anchored = None
    if anchors is not None:
        anchored = torch.zeros(masked.shape, dtype=torch.bool)
        for b, a in enumerate(anchors):
            anchored[b, : a.shape[0], : a.shape[1]] = a
        masked.masked_fill_(anchored, torch.finfo(csls.dtype).max)
    best_tgt = masked.argmax(dim=2).tolist()  # forward: per source word
    best_src = masked.argmax(dim=1).tolist()  # backward: per target word

    keep = None
    if null != "none":
        if static_src is None or static_tgt is None or src_bos is None or tgt_bos is None:
            raise XlfastError("the NULL heuristic needs static embeddings and both <bos> vectors")
        keep = null_keep_mask(static_src, static_tgt, src_bos, tgt_bos, null) & (csls > 0)
        keep = (keep if anchored is None else keep | anchored).tolist()

    results = []
    for b, (n, m) in enumerate(zip(src_len.tolist(), tgt_len.tolist())):
        if n == 0 or m == 0:
            results.append(PairAlignment(links=[]))
            continue
        forward = {(i, best_tgt[b][i]) for i in range(n)}
        backward = {(best_src[b][j], j) for j in range(m)}
        if keep is not None:
            forward = {(i, j) for i, j in forward if keep[b][i][j]}
            backward = {(i, j) for i, j in backward if keep[b][i][j]}
        links = sorted(symmetrise(forward, backward, n, m, sym))
        scores = [(float(cos[b, i, j]), float(csls[b, i, j])) for i, j in links]
        results.append(PairAlignment(links=links, scores=scores, forward=forward, backward=backward))
    return results


def length_batches(lengths: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar (n, m) so padding stays small; order restored by caller."""
    order = sorted(range(len(lengths)), key=lambda k: (lengths[k][0], lengths[k][1]))
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


# ----------------------------------------------------------------------------- the user's words


_WORDLIKE = regex.compile(r"[\p{L}\p{N}]")


@dataclass
class Segmented:
    """One input line as the user wrote it (`words`: its whitespace tokens) and as the model reads it
    (`tokens`: the run's tokenizer applied to each word). `word_of[k]` is the word token k came from,
    or -1 for a token that carries no links of its own (see `segment`)."""

    words: list[str]
    tokens: list[str]
    word_of: list[int]


def segment(line: str, tokenizer: Callable[[str], list[str]]) -> Segmented:
    """Tokenise each whitespace token on its own. Neither tokenizer joins characters across whitespace,
    so the tokens are exactly those of the whole line, and each one knows the word it belongs to.

    Punctuation split off a word that has letters or digits (the `.` of `house.`, the `\\` and `'` of
    Griko's escaped `è\\'`) stays in the sentence the model reads but carries no links: its best match
    is any other punctuation mark, which would link the word to the wrong place (measured on grk-it
    with the default tokenizer: 1−AER 0.919 with every token's links, 0.930 without those)."""
    words = line.split()
    tokens: list[str] = []
    word_of: list[int] = []
    for w, word in enumerate(words):
        pieces = tokenizer(word)
        wordlike = [bool(_WORDLIKE.search(p)) for p in pieces]
        tokens += pieces
        word_of += [w if ok or not any(wordlike) else -1 for ok in wordlike]
    return Segmented(words, tokens, word_of)


def project_to_words(result: PairAlignment, src: Segmented, tgt: Segmented) -> PairAlignment:
    """Token links → links between the words the tokens came from: two words are linked when any of their
    tokens are (as subword aligners project subword links to words). Each word link keeps the best
    (cosine, CSLS) of the token links behind it, so a scores file still has one score per written link."""
    best: dict[Link, tuple[float, float]] = {}
    scores = result.scores or [(float("nan"), float("nan"))] * len(result.links)
    for (i, j), score in zip(result.links, scores):
        a, b = src.word_of[i], tgt.word_of[j]
        if a < 0 or b < 0:
            continue
        old = best.get((a, b))
        best[(a, b)] = score if old is None or score[1] > old[1] else old
    links = sorted(best)

    def words(direction: set[Link]) -> set[Link]:
        pairs = ((src.word_of[i], tgt.word_of[j]) for i, j in direction)
        return {(a, b) for a, b in pairs if a >= 0 and b >= 0}

    return PairAlignment(links=links, scores=[best[x] for x in links] if result.scores else [],
                         forward=words(result.forward), backward=words(result.backward))


# ----------------------------------------------------------------------------- with a trained run


def mix_vectors(contextual: Sequence[torch.Tensor], static: Sequence[torch.Tensor],
                static_weight: float = AlignOptions.static_weight):
    """Unit contextual and unit static vectors side by side, scaled so that the cosine of two mixed
    vectors is (1−w)·cos_contextual + w·cos_static. The static half tells apart words the encoder blurs
    with their neighbours; on grk-it it added about +0.8 1−AER over contextual vectors alone (w = 0.5)."""
    if not 0.0 <= static_weight <= 1.0:
        raise XlfastError(f"the static weight must lie in [0, 1], got {static_weight}")
    a, b = (1.0 - static_weight) ** 0.5, static_weight ** 0.5
    return [torch.cat([_unit(c) * a, _unit(s) * b], dim=-1) for c, s in zip(contextual, static)]


def anchor_matrix(src: Sequence[str], tgt: Sequence[str]) -> torch.Tensor:
    """[n, m] bool: True where the two tokens share a key of `xlfast.anchors.shared_keys` (the same number
    in any script's digits, or the same spelling, case and diacritics aside, in its first characters). A key
    found k times on both sides links the occurrences in order, first to first; found a different number of
    times on the two sides it links none (which 'ladro' is which is the vectors' to say)."""
    keys_s, keys_t = shared_keys(src, tgt)
    out = torch.zeros(len(src), len(tgt), dtype=torch.bool)
    if not any(keys_s):
        return out
    where_t = positions(keys_t)
    for k, rows in positions(keys_s).items():
        cols = where_t.get(k, [])
        if len(cols) == len(rows):
            out[rows, cols] = True
    return out


def _static_for(run, lang: str, sentences: Sequence[Sequence[str]]) -> list[torch.Tensor]:
    """Static vectors for each sentence, embedding each distinct word once."""
    vocab = sorted({w for s in sentences for w in s})
    if not vocab:
        return [torch.zeros(0, 1) for _ in sentences]
    table = run.embed_words(lang, vocab).float()
    index = {w: k for k, w in enumerate(vocab)}
    return [table[torch.tensor([index[w] for w in s], dtype=torch.long)] for s in sentences]


@dataclass
class PairVectors:
    """What alignment compares for a batch of pairs: the vectors of the chosen kind, and the static
    vectors the NULL heuristic reads (None when neither needs them)."""

    src: list[torch.Tensor]
    tgt: list[torch.Tensor]
    static_src: list[torch.Tensor] | None
    static_tgt: list[torch.Tensor] | None


def pair_vectors(run, src: Sequence[Sequence[str]], tgt: Sequence[Sequence[str]], src_lang: str, tgt_lang: str,
                 emb: str = AlignOptions.emb, static_weight: float = AlignOptions.static_weight,
                 need_static: bool = False) -> PairVectors:
    """Vectors of tokenised sentence pairs from a trained run, as `align_sentences` and `xlfast show` use them."""
    if emb not in EMBEDDINGS:
        raise XlfastError(f"unknown embedding kind {emb!r}: use one of {', '.join(EMBEDDINGS)}")
    static_src = static_tgt = None
    if emb != "contextual" or need_static:
        static_src, static_tgt = _static_for(run, src_lang, src), _static_for(run, tgt_lang, tgt)
    if emb == "static":
        return PairVectors(static_src, static_tgt, static_src, static_tgt)
    src_vecs = [v.float() for v in run.embed_sentences(src_lang, src)]
    tgt_vecs = [v.float() for v in run.embed_sentences(tgt_lang, tgt)]
    if emb == "mix":
        src_vecs = mix_vectors(src_vecs, static_src, static_weight)
        tgt_vecs = mix_vectors(tgt_vecs, static_tgt, static_weight)
    return PairVectors(src_vecs, tgt_vecs, static_src, static_tgt)


def align_sentences(
    run,
    src_sents: Sequence[Sequence[str]],
    tgt_sents: Sequence[Sequence[str]],
    src_lang: str,
    tgt_lang: str,
    emb: str = AlignOptions.emb,
    sym: str = AlignOptions.sym,
    null: str = AlignOptions.null,
    batch_size: int = 256,
    on_batch: Callable[[int], None] | None = None,
    static_weight: float = AlignOptions.static_weight,
    anchors: bool = AlignOptions.anchors,
) -> list[PairAlignment]:
    """Align tokenised sentence pairs with a trained run (xlfast.run.Run); results in input order, links
    indexing the given tokens."""
    if emb not in EMBEDDINGS:
        raise XlfastError(f"unknown embedding kind {emb!r}: use one of {', '.join(EMBEDDINGS)}")
    if len(src_sents) != len(tgt_sents):
        raise XlfastError(f"{len(src_sents)} source sentences but {len(tgt_sents)} target sentences")
    src_bos = tgt_bos = None
    if null != "none":
        src_bos, tgt_bos = run.bos_vector(src_lang).float(), run.bos_vector(tgt_lang).float()
    results: list[PairAlignment | None] = [None] * len(src_sents)
    lengths = [(len(s), len(t)) for s, t in zip(src_sents, tgt_sents)]
    with torch.no_grad():
        for batch in length_batches(lengths, batch_size):
            src = [src_sents[k] for k in batch]
            tgt = [tgt_sents[k] for k in batch]
            v = pair_vectors(run, src, tgt, src_lang, tgt_lang, emb, static_weight, need_static=null != "none")
            marks = [anchor_matrix(a, b) for a, b in zip(src, tgt)] if anchors else None
            out = align_batch(v.src, v.tgt, sym, null, v.static_src, v.static_tgt, src_bos, tgt_bos, anchors=marks)
            for k, res in zip(batch, out):
                results[k] = res
            if on_batch is not None:
                on_batch(len(batch))
    return results  # type: ignore[return-value]


def align_lines(run, src_lines: Sequence[str], tgt_lines: Sequence[str], src_lang: str, tgt_lang: str,
                tokenizer: Callable[[str], list[str]], options: AlignOptions = AlignOptions(), on: str = "words",
                batch_size: int = 256, on_batch: Callable[[int], None] | None = None,
                ) -> tuple[list[PairAlignment], list[tuple[Segmented, Segmented]]]:
    """Align lines of text as the user wrote them. The model reads the tokenizer's tokens; with
    `on="words"` (what every aligner and gold set of the field does) the links index the whitespace
    tokens of each line, with `on="tokens"` the tokenizer's own tokens. Returns the alignments and each
    line pair's segmentation (to write the tokens beside the links)."""
    if on not in LINK_UNITS:
        raise UsageError(f"links go on {' or '.join(LINK_UNITS)}, not {on!r}")
    segs = [(segment(s, tokenizer), segment(t, tokenizer)) for s, t in zip(src_lines, tgt_lines)]
    results = align_sentences(run, [a.tokens for a, _ in segs], [b.tokens for _, b in segs], src_lang, tgt_lang,
                              batch_size=batch_size, on_batch=on_batch, **asdict(options))
    if on == "words":
        results = [project_to_words(r, a, b) for r, (a, b) in zip(results, segs)]
    return results, segs


# ----------------------------------------------------------------------------- a corpus, as `xlfast align`


@dataclass(frozen=True)
class AlignOutputs:
    """Where `align_file` writes (paths as `xlfast.io.atomic_open` takes them; '-' is standard output).

    `links`: Pharaoh i-j per input line. Optional, one line per input line too: `scores`, each written
    link's in-pair CSLS in link order (awesome-align's probability file); `tokens`, the units the links
    index (`src ||| tgt`); `forward` / `backward`, the two directions before symmetrisation (eflomal's and
    fast_align's two runs). `word_pairs`: the linked units themselves, `src<TAB>tgt`, one line per link."""

    links: object
    scores: object = None
    tokens: object = None
    forward: object = None
    backward: object = None
    word_pairs: object = None


@dataclass
class AlignSummary:
    pairs: int  # sentence pairs aligned (bad lines skipped are not among them)
    skipped: int
    links: int
    src_lang: str
    tgt_lang: str
    options: AlignOptions
    tokenizer: object  # xlfast.tokenize.TokenizerSpec
    on: str
    seconds: float

    def to_dict(self) -> dict:
        return dict(pairs=self.pairs, skipped=self.skipped, links=self.links, src_lang=self.src_lang,
                    tgt_lang=self.tgt_lang, **asdict(self.options), tokenizer=self.tokenizer.to_dict(), on=self.on,
                    seconds=round(self.seconds, 3))


def align_file(run, outputs: AlignOutputs, parallel, tgt_file=None, *, src_lang: str | None = None,
               tgt_lang: str | None = None, tokenize: str | None = None, lowercase: bool | None = None,
               options: AlignOptions = AlignOptions(), on: str = "words", batch_size: int = 256,
               skip_bad_lines: bool = False, on_pairs: Callable[[int], None] | None = None) -> AlignSummary:
    """Align a parallel corpus (one `src ||| tgt` / TSV file, or two line-aligned files; '-' is standard
    input) with a trained run, streaming it CHUNK_PAIRS pairs at a time, and write `outputs`. Languages
    and tokenizer are the run's unless given. Output line i always belongs to input line i: a bad line
    skipped with `skip_bad_lines` gets an empty line in every per-line output. Nothing is written where
    the input turns out bad (every output is replaced only when all went well)."""
    from xlfast.io import atomic_open, format_pharaoh, iter_parallel

    started = time.perf_counter()
    src_lang, tgt_lang = run.language_pair(src_lang, tgt_lang)
    tokenizer = run.tokenizer_with(tokenize, lowercase)
    if on not in LINK_UNITS:
        raise UsageError(f"links go on {' or '.join(LINK_UNITS)}, not {on!r}")
    reader = iter_parallel(parallel, tgt_file, skip_bad_lines=skip_bad_lines)
    n_lines = n_links = 0
    with ExitStack() as stack:
        files = {name: stack.enter_context(atomic_open(path)) for name, path in asdict(outputs).items()
                 if path is not None}

        def flush(src_lines: list[str], tgt_lines: list[str]) -> None:
            nonlocal n_lines, n_links
            results, segs = align_lines(run, src_lines, tgt_lines, src_lang, tgt_lang, tokenizer, options, on,
                                        batch_size, on_pairs)
            for res, (a, b) in zip(results, segs):
                src_units, tgt_units = (a.words, b.words) if on == "words" else (a.tokens, b.tokens)
                lines = {"links": format_pharaoh(res.links),
                         "scores": " ".join(f"{csls:.4f}" for _, csls in res.scores),
                         "tokens": f"{' '.join(src_units)} ||| {' '.join(tgt_units)}",
                         "forward": format_pharaoh(res.forward), "backward": format_pharaoh(res.backward)}
                for name, f in files.items():
                    if name == "word_pairs":
                        f.writelines(f"{src_units[i]}\t{tgt_units[j]}\n" for i, j in res.links)
                    else:
                        f.write(lines[name] + "\n")
                n_links += len(res.links)
            n_lines += len(results)

        src_chunk, tgt_chunk = [], []
        for number, s, t in reader:
            # a skipped input line still gets its (empty) output line: output line i belongs to input line i
            gap = number - 1 - (n_lines + len(src_chunk))
            src_chunk += [""] * gap + [s]
            tgt_chunk += [""] * gap + [t]
            if len(src_chunk) >= CHUNK_PAIRS:
                flush(src_chunk, tgt_chunk)
                src_chunk, tgt_chunk = [], []
        gap = reader.lines_read - (n_lines + len(src_chunk))  # bad lines at the very end
        flush(src_chunk + [""] * gap, tgt_chunk + [""] * gap)
    return AlignSummary(n_lines - reader.skipped, reader.skipped, n_links, src_lang, tgt_lang, options, tokenizer,
                        on, time.perf_counter() - started)


# ----------------------------------------------------------------------------- one pair, as `xlfast show`


@dataclass
class PairPicture:
    """One sentence pair as `xlfast show` draws it: the user's words, a words × words matrix of `score`
    (each cell the best of its two words' token cells) and the links `xlfast align` would write."""

    src_lang: str
    tgt_lang: str
    src_words: list[str]
    tgt_words: list[str]
    matrix: torch.Tensor
    score: str
    alignment: PairAlignment


def picture_pair(run, src: str, tgt: str, *, src_lang: str | None = None, tgt_lang: str | None = None,
                 tokenize: str | None = None, lowercase: bool | None = None,
                 options: AlignOptions = AlignOptions(), score: str = "csls") -> PairPicture:
    if score not in SCORES:
        raise UsageError(f"unknown score {score!r}: use {' or '.join(SCORES)}")
    src_lang, tgt_lang = run.language_pair(src_lang, tgt_lang)
    tokenizer = run.tokenizer_with(tokenize, lowercase)
    [result], [(a, b)] = align_lines(run, [src], [tgt], src_lang, tgt_lang, tokenizer, options)
    if not a.tokens or not b.tokens:
        raise UsageError("both sentences need at least one word")
    v = pair_vectors(run, [a.tokens], [b.tokens], src_lang, tgt_lang, options.emb, options.static_weight)
    cos, csls, _, _ = pair_scores(v.src, v.tgt)
    matrix = (csls if score == "csls" else cos)[0]
    words = torch.full((len(a.words), len(b.words)), float("-inf"))
    for i, row in enumerate(a.word_of):
        for j, col in enumerate(b.word_of):
            if row >= 0 and col >= 0:  # a token without links of its own (see `segment`) is not drawn
                words[row, col] = max(words[row, col], matrix[i, j])
    return PairPicture(src_lang, tgt_lang, a.words, b.words, words, score, result)
