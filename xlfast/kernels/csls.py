"""The only cosine / CSLS / margin top-k retrieval in xlfast: tiled, memory-bounded, several backends.

    normalize(X)                               unit rows (zero rows stay zero), float32, contiguous
    neighbourhood_means(X, Y, k)               (r_T [N], r_S [M]) from ONE pass over the tiles of X·Yᵀ
    topk(X, Y, k, metric=..., knn=...)         TopK(scores, indices[, rev_scores, rev_indices])
    csls_dense(sim, knn, row_mask, col_mask)   CSLS of small padded batches [B, n, m] (word alignment)

How it works. X and Y are normalised once. The product X·Yᵀ is computed tile by tile into one reused
buffer whose size follows the memory budget `mem` (never a constant); each tile is scanned by a
selection kernel that keeps a running top-k per row of X and, in the same scan, per column (= row of Y):
the compiled backends' fused kernel reads each tile once for both (threads own column stripes; row
candidates go to private per-stripe buffers of stripes × tile rows × k, merged once per tile).
A candidate is only inserted when it beats the row's (column's) current k-th best, so after a few tiles
the scan is one compare per element and the GEMM dominates. CSLS and margin need r_T and r_S first:
pass 1 gives both, pass 2 streams the tiles again with the score transform fused into the selection:

    cos:    s = cos(x, y)
    csls:   s = 2·cos(x, y) − r_T(x) − r_S(y)
    margin: s = cos(x, y) / ((r_T(x) + r_S(y)) / 2)     (ratio margin; the denominator is clamped at 1e-6)

precision='auto' (default) takes the bf16 path below on large inputs where bf16 is native, else fp32.
precision='bf16' (CPU backends): tiles are bf16 GEMMs (oneDNN, ≈4× the fp32 rate here) feeding k+extra
candidates per row/column; the candidates are re-scored exactly, each row carries a certificate
(worst-case bf16 error vs the gap to its k-th exact score), and uncertified rows are recomputed in fp32.

Backends (`KernelRegistry("csls")`, ranked by measurement on this machine, see `xlfast bench csls`):
numba and cpp (OpenBLAS GEMM via numpy into the reused buffer + a parallel selection kernel), torch
(torch.mm + torch.topk merges; the always-available fallback), triton (fused tile product + running
top-k, GPU or TRITON_INTERPRET=1), cuda (csrc/cuda/csls.cu through nvcc + ctypes, only where a GPU is
visible; k ≤ 10; unmeasured). approx='ivf' | 'ivfpq' swaps the exact scan for faiss inverted-file
indexes (approximate; see `topk`). The full-matrix `reference_*` functions exist for tests.
"""
from __future__ import annotations

import logging
import math
import re
from typing import NamedTuple

import numpy as np
import torch

from xlfast import threads
from xlfast.errors import XlfastError
from xlfast.kernels.dispatch import KernelRegistry, bf16_native

DEFAULT_MEM = 128 << 20  # bytes for the similarity tile; keeps total extra memory well under 256 MiB
METRICS = ("cos", "csls", "margin")
MODE = {"cos": 0, "csls": 1, "margin": 2}
log = logging.getLogger("xlfast")
MARGIN_EPS = 1e-6
PRECISIONS = ("auto", "fp32", "bf16")
# auto: bf16 (certified, so exact) once a pass has this many similarities; below it the fixed costs of
# the bf16 path (rounding norms, re-scoring, certificates) lose: measured on 2k×2k×300 CSLS 0.59× fp32,
# 10k×10k 1.6×, 20k×20k 2.5× (benchmarks/bench_csls_precision.py).
AUTO_BF16_MIN_PAIRS = 25_000_000
BF16_U = 2.0**-8  # unit roundoff of bfloat16 (8 significant bits, round to nearest even)
DEFAULT_EXTRA = 16  # bf16: candidates kept beyond k per row/column for the exact re-scoring


class TopK(NamedTuple):
    """Best k targets per source row (descending); with both=True also the best k sources per target."""

    scores: torch.Tensor
    indices: torch.Tensor
    rev_scores: torch.Tensor | None = None
    rev_indices: torch.Tensor | None = None


# ----------------------------------------------------------------------------------------- helpers
def parse_mem(mem) -> int:
    """Bytes from an int or a string such as '256M', '1G', '512k', '1.5GiB' (None: the default)."""
    if mem is None:
        return DEFAULT_MEM
    if isinstance(mem, (int, np.integer)):
        value = int(mem)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)(i?[bB])?\s*", str(mem))
        if not m:
            raise XlfastError(f"cannot read memory budget '{mem}' (use bytes or e.g. 256M, 1G)")
        scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
        value = int(float(m.group(1)) * scale)
    if value < 4096:
        raise XlfastError(f"memory budget {value} bytes is too small (at least 4096)")
    return value


def _as_float32(X) -> np.ndarray:
    """A C-contiguous float32 numpy view of X (no copy when X already is one; torch shares memory)."""
    if isinstance(X, torch.Tensor):
        X = X.detach()
        if X.device.type != "cpu":
            X = X.cpu()
        X = X.numpy()
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise XlfastError(f"expected a 2-D matrix of vectors, got shape {tuple(X.shape)}")
    return X


def normalize(X) -> torch.Tensor:
    """Unit-length rows as a contiguous float32 tensor; all-zero rows stay zero (never NaN)."""
    A = torch.as_tensor(_as_float32(X))
    norms = torch.linalg.vector_norm(A, dim=1, keepdim=True)
    return (A / torch.where(norms > 0, norms, torch.ones_like(norms))).contiguous()


def _prepare(X, Y, normalized: bool) -> tuple[np.ndarray, np.ndarray]:
    Xn = _as_float32(X) if normalized else normalize(X).numpy()
    Yn = _as_float32(Y) if normalized else normalize(Y).numpy()
    if Xn.shape[1] != Yn.shape[1] and Xn.shape[0] and Yn.shape[0]:
        raise XlfastError(f"dimension mismatch: X has {Xn.shape[1]} columns, Y has {Yn.shape[1]}")
    return Xn, Yn


def clip_k(k: int, m: int, exclude_self: bool) -> int:
    """k is clipped to the number of candidates (M, or M−1 when each row's own index is excluded)."""
    if k < 0:
        raise XlfastError(f"k must be ≥ 0, got {k}")
    return max(0, min(int(k), m - 1 if exclude_self else m))


def tile_shape(n: int, m: int, dim: int, mem) -> tuple[int, int]:
    """Rows × columns of the similarity tile that fits the budget: wide column blocks keep the GEMM
    efficient and the per-row scan long; rows fill what is left."""
    floats = max(1024, parse_mem(mem) // 4)
    bx = max(1, min(n, 2048, floats // 256))
    by = max(1, min(m, floats // bx))
    if by == m:
        bx = max(1, min(n, floats // max(by, 1)))
    return bx, by


# ------------------------------------------------------------------------- reference (full matrix)
def reference_cos(X, Y, normalized=False) -> torch.Tensor:
    Xn, Yn = _prepare(X, Y, normalized)
    return torch.from_numpy(Xn).double() @ torch.from_numpy(Yn).double().T


def reference_means(X, Y, k=10, normalized=False, exclude_self=False):
    """Plain float64 torch on the whole matrix: the ground truth for tests."""
    S = reference_cos(X, Y, normalized)
    n, m = S.shape
    if exclude_self and n and m:
        d = min(n, m)
        S[torch.arange(d), torch.arange(d)] = -math.inf
    kr, kc = clip_k(k, m, exclude_self), clip_k(k, n, exclude_self)
    r_T = S.topk(kr, dim=1).values.mean(1) if kr else torch.zeros(n, dtype=S.dtype)
    r_S = S.topk(kc, dim=0).values.mean(0) if kc else torch.zeros(m, dtype=S.dtype)
    return r_T, r_S


def reference_scores(X, Y, metric="csls", knn=10, normalized=False, exclude_self=False) -> torch.Tensor:
    S = reference_cos(X, Y, normalized)
    n, m = S.shape
    if metric != "cos":
        r_T, r_S = reference_means(X, Y, knn, normalized, exclude_self)
        if metric == "csls":
            S = 2 * S - r_T[:, None] - r_S[None, :]
        elif metric == "margin":
            S = 2 * S / (r_T[:, None] + r_S[None, :]).clamp_min(MARGIN_EPS)
        else:
            raise XlfastError(f"unknown metric '{metric}' (choose from {', '.join(METRICS)})")
    if exclude_self and n and m:
        d = min(n, m)
        S[torch.arange(d), torch.arange(d)] = -math.inf
    return S


def reference_topk(X, Y, k, metric="cos", knn=10, both=False, normalized=False, exclude_self=False) -> TopK:
    S = reference_scores(X, Y, metric, knn, normalized, exclude_self)
    n, m = S.shape
    kr, kc = clip_k(k, m, exclude_self), clip_k(k, n, exclude_self)
    fwd = S.topk(kr, dim=1)
    if not both:
        return TopK(fwd.values.float(), fwd.indices)
    rev = S.T.topk(kc, dim=1)
    return TopK(fwd.values.float(), fwd.indices, rev.values.float(), rev.indices)


# ----------------------------------------------------------------------------------- tiled driver
class _Running:
    """Running top-k buffers: values descending, −inf / −1 where not yet filled."""

    def __init__(self, n: int, k: int):
        self.vals = np.full((n, k), -np.inf, dtype=np.float32)
        self.idx = np.full((n, k), -1, dtype=np.int64)


def _stream(backend, Xn, Yn, *, k_rows, k_cols, mode, r_T, r_S, mem, exclude_self, precision="fp32"):
    """One pass over the tiles of Xn·Ynᵀ; returns (row buffers [n, k_rows], column buffers [m, k_cols]).
    With both k_rows and k_cols the backend's fused kernel reads each tile once for both. With
    precision='bf16' the tiles are bf16 GEMMs (torch/oneDNN) holding bf16 scores: the buffers then hold
    APPROXIMATE scores, to be re-scored exactly (`_bf16_topk`)."""
    n, m = Xn.shape[0], Yn.shape[0]
    rows, cols = _Running(n, k_rows), _Running(m, k_cols)
    if n == 0 or m == 0 or (k_rows == 0 and k_cols == 0):
        return rows, cols
    empty_v = np.empty((0, 1), np.float32)
    empty_i = np.empty((0, 1), np.int64)
    rterm = r_T if r_T is not None else np.zeros(n, np.float32)
    cterm = r_S if r_S is not None else np.zeros(m, np.float32)
    bx, by = tile_shape(n, m, Xn.shape[1], mem)
    if precision == "bf16":
        tiles = _bf16_tiles(_Bf16Tiler(bx, by), Xn, Yn, bx, by)
    else:
        tiler = backend.tiler(bx, by, Xn.shape[1])
        tiles = ((i0, j0, tiler.product(Xn[i0 : i0 + bx], Yn[j0 : j0 + by]))
                 for i0 in range(0, n, bx) for j0 in range(0, m, by))
    for i0, j0, S in tiles:
        threads.poll()  # between tiles: share the CPUs when other work runs (xlfast.threads)
        backend.update(
            S, i0, j0,
            rows.vals if k_rows else empty_v, rows.idx if k_rows else empty_i,
            cols.vals if k_cols else empty_v, cols.idx if k_cols else empty_i,
            mode, rterm, cterm, exclude_self,
        )
    return rows, cols


def _bf16_tiles(tiler, Xn, Yn, bx, by):
    """bf16 tiles, column block outermost: only one block of Y and one of X are ever held in bf16, so
    the extra memory stays within the tile budget at any N, M (whole bf16 copies of X and Y took
    +200 MiB at 100k×100k×512). Every row still meets the column blocks in ascending order and every
    column the row blocks, so ties resolve as in the fp32 order."""
    n, m = Xn.shape[0], Yn.shape[0]
    for j0 in range(0, m, by):
        Yb = torch.from_numpy(Yn[j0 : j0 + by]).to(torch.bfloat16)
        for i0 in range(0, n, bx):
            yield i0, j0, tiler.product(torch.from_numpy(Xn[i0 : i0 + bx]).to(torch.bfloat16), Yb)


def _means(buf: _Running, size: int) -> np.ndarray:
    if buf.vals.shape[1] == 0:
        return np.zeros(size, np.float32)
    return buf.vals.mean(axis=1, dtype=np.float64).astype(np.float32)


registry = KernelRegistry("csls")


def _backend(backend):
    return registry.choose("cpu", backend)[1]


def neighbourhood_means(X, Y, k=10, *, normalized=False, backend=None, mem=None, exclude_self=False,
                        precision="auto", extra=None, certify=True, stats=None, approx=None, nlist=None,
                        nprobe=None):
    """r_T[i] = mean cosine of X[i] to its k nearest rows of Y; r_S[j] = mean cosine of Y[j] to its k
    nearest rows of X. Both come from the same single pass over the tiles of X·Yᵀ. k is clipped to the
    number of candidates; with no candidates the mean is 0. precision='bf16': see `topk`.
    approx='ivf' / 'ivfpq': APPROXIMATE means from faiss inverted-file indexes over Y and over X (see
    `topk`); a neighbour missed by the index lowers the mean slightly (a true neighbour is replaced by a
    worse one, never by a better one)."""
    impl = _backend(backend)
    Xn, Yn = _prepare(X, Y, normalized)
    if approx is not None:
        ap = _approx_args(approx, nlist, nprobe, precision)
        r_T, r_S = _approx_means(impl, ap, Xn, Yn, k, exclude_self, _stats(stats))
        return torch.from_numpy(r_T), torch.from_numpy(r_S)
    precision = _precision(precision, impl, Xn.shape[0] * Yn.shape[0])
    if precision == "bf16":
        r_T, r_S = _means_bf16(impl, Xn, Yn, k, mem, exclude_self, extra, certify, _stats(stats))
    else:
        r_T, r_S = _neighbourhood_means_np(impl, Xn, Yn, k, mem, exclude_self)
    return torch.from_numpy(r_T), torch.from_numpy(r_S)


def _neighbourhood_means_np(impl, Xn, Yn, k, mem, exclude_self):
    n, m = Xn.shape[0], Yn.shape[0]
    if hasattr(impl, "neighbourhood_means"):  # backends with their own fused pass (triton)
        return impl.neighbourhood_means(Xn, Yn, clip_k(k, m, exclude_self), clip_k(k, n, exclude_self),
                                        mem, exclude_self)
    rows, cols = _stream(impl, Xn, Yn, k_rows=clip_k(k, m, exclude_self), k_cols=clip_k(k, n, exclude_self),
                         mode=0, r_T=None, r_S=None, mem=mem, exclude_self=exclude_self)
    return _means(rows, n), _means(cols, m)


def topk(X, Y, k, *, metric="cos", knn=10, both=False, normalized=False, backend=None, mem=None,
         exclude_self=False, means=None, rows=None, precision="auto", extra=None, certify=True,
         stats=None, approx=None, nlist=None, nprobe=None) -> TopK:
    """The k best rows of Y for every row of X under `metric` ('cos', 'csls' or 'margin', the last two
    with neighbourhood size `knn`), scores descending; with both=True also the k best rows of X for
    every row of Y. k larger than the number of candidates is clipped to it (M, or M−1 with
    exclude_self, which drops the pair (i, i) — for X and Y being the same set); empty inputs give
    empty results. Memory: one similarity tile of at most `mem` bytes (default 128 MiB, '256M' works)
    plus the k-sized result buffers; the N×M matrix is never stored. `means=(r_T, r_S)` supplies
    precomputed neighbourhood means for csls/margin (e.g. merged over shards) and skips pass 1.
    `rows` (indices into X) ranks only those queries — r_S still comes from every row of X, so a BLI
    query set gets the same CSLS scores as a full retrieval, for a fraction of the second pass.

    precision='bf16' (CPU backends, where the CPU has native bf16; otherwise fp32 is used): every pass
    computes its tiles with a bf16 GEMM (≈4× the fp32 rate here) and keeps k + `extra` (default 16)
    candidates per row (and column); the candidates are re-scored exactly (float32 vectors, float64
    sums), r_T / r_S come from exactly re-scored pass-1 candidates, and the top-k is taken from the exact
    scores. A row is CERTIFIED when its (k+extra)-th approximate score plus the worst-case bf16 error
    (input rounding measured per row, accumulation, output rounding) is below its k-th exact score: no
    other candidate can then enter its top-k. With certify=True (default) uncertified rows are recomputed
    in fp32, so the result is the exact one; certify=False returns the re-scored candidates as they are.
    Pass a dict as `stats` to receive the counts (rows, certified, recomputed per pass).

    approx='ivf' | 'ivfpq' (needs faiss; fp32 only): APPROXIMATE search, as in Hangya et al. (2022,
    Appendix C). Y (and X, for csls/margin or both=True) go into a faiss IndexIVFFlat (inner product on
    the unit rows; 'ivfpq': IndexIVFPQ, d/4 sub-quantizers of 8 bits, when d/4 divides d) with `nlist`
    k-means lists (default ≈4·√rows, at least 39 training rows per list) of which `nprobe` are scanned
    per query (default `APPROX_NPROBE`, chosen for recall@10 ≥ 0.95 against exact on clustered data,
    see benchmarks/bench_csls_approx.py). Each query gets max(knn, k + extra) candidates (extra default
    16, 'ivfpq' 48), re-scored exactly (float32 vectors, float64 sums); csls/margin take r_T / r_S from
    the same candidates, so the neighbourhood means are approximate too, and the csls/margin top-k is
    the best of the candidates nearest by cosine: a CSLS neighbour outside the cosine top-(k + extra) is
    missed (recall@10 measured at the defaults: clustered 100k×20k×300 cos and csls 0.995; real 64-d
    shp→es embeddings cos 0.991 but csls 0.79 — raise nprobe / extra there). Indexes are built per call. Memory: faiss's indexes
    are the cost — IVFFlat holds a copy of the vectors, rows·(4d + 8) bytes (8: the id), IVF-PQ
    rows·(d/4 + 8) bytes, plus nlist·d·4 for the centroids, per indexed side — and the candidate lists,
    queries·(k + extra)·12 bytes; `mem` does not apply. stats receives the index parameters."""
    if metric not in METRICS:
        raise XlfastError(f"unknown metric '{metric}' (choose from {', '.join(METRICS)})")
    impl = _backend(backend)
    if approx is not None:
        ap = _approx_args(approx, nlist, nprobe, precision, extra)
        return _approx_topk(impl, ap, X, Y, k, metric, knn, both, normalized, exclude_self, means, rows,
                            _stats(stats))
    Xn, Yn = _prepare(X, Y, normalized)
    n, m = Xn.shape[0], Yn.shape[0]
    # the largest pass decides: pass 1 covers every row of X even when `rows` ranks only a few
    queries = n if metric != "cos" and means is None or rows is None else len(np.asarray(rows).reshape(-1))
    precision = _precision(precision, impl, queries * m)
    st = _stats(stats)
    r_T = r_S = None
    rr = (_row_rounding(Xn), _row_rounding(Yn)) if precision == "bf16" else None
    if metric != "cos" and means is not None:
        # precomputed (r_T, r_S): xlfast.mine merges r_T over shards of Y held by other processes
        r_T, r_S = (np.ascontiguousarray(np.asarray(v, dtype=np.float32).reshape(-1)) for v in means)
    elif metric != "cos" and precision == "bf16":
        r_T, r_S = _means_bf16(impl, Xn, Yn, knn, mem, exclude_self, extra, certify, st, rr)
    elif metric != "cos":
        r_T, r_S = _neighbourhood_means_np(impl, Xn, Yn, knn, mem, exclude_self)
    if rows is not None:
        if both or exclude_self:
            raise XlfastError("topk: rows= cannot be combined with both=True or exclude_self")
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        Xn = np.ascontiguousarray(Xn[rows])
        r_T = None if r_T is None else np.ascontiguousarray(r_T[rows])
        rr = None if rr is None else (tuple(a[rows] for a in rr[0]), rr[1])
        n = Xn.shape[0]
    kr, kc = clip_k(k, m, exclude_self), clip_k(k, n, exclude_self) if both else 0
    if precision == "bf16":
        return _topk_bf16(impl, Xn, Yn, kr, kc, MODE[metric], r_T, r_S, mem, exclude_self, both, extra,
                          certify, st, rr)
    if hasattr(impl, "topk"):
        return impl.topk(Xn, Yn, kr, kc, MODE[metric], r_T, r_S, mem, exclude_self, both)
    rows, cols = _stream(impl, Xn, Yn, k_rows=kr, k_cols=kc, mode=MODE[metric], r_T=r_T, r_S=r_S,
                         mem=mem, exclude_self=exclude_self)
    out = TopK(torch.from_numpy(rows.vals), torch.from_numpy(rows.idx))
    if both:
        out = out._replace(rev_scores=torch.from_numpy(cols.vals), rev_indices=torch.from_numpy(cols.idx))
    return out


# ------------------------------------------------------------- bf16 tiles + exact re-scoring
def _precision(precision, impl, pairs: int = 0) -> str:
    """The precision a call runs at. 'auto' (the default) takes the certified bf16 path — exact results,
    ≈2.5× faster on large inputs — on the compiled CPU backends where bf16 is native and the pass has
    at least AUTO_BF16_MIN_PAIRS similarities (`pairs`), fp32 otherwise."""
    if precision not in PRECISIONS:
        raise XlfastError(f"unknown precision '{precision}' (choose from {', '.join(PRECISIONS)})")
    if precision == "auto":
        fast = getattr(impl, "rescore", None) is not None and not hasattr(impl, "topk")
        return "bf16" if fast and pairs >= AUTO_BF16_MIN_PAIRS and bf16_native() else "fp32"
    if precision == "bf16":
        if hasattr(impl, "topk"):
            raise XlfastError(f"precision='bf16' runs on the CPU backends, not on '{impl.name}'")
        if not bf16_native():
            log.info("csls: no native bf16 matmul on this CPU; precision='bf16' runs in fp32 (exact)")
            return "fp32"
    return precision


def _stats(stats):
    return stats if stats is not None else {}


class _Bf16Tiler:
    """torch bf16 GEMM (oneDNN) into one reused bf16 buffer; tiles are handed on as uint16 bits."""

    def __init__(self, bx, by):
        self.buf = torch.empty(bx * by, dtype=torch.bfloat16)

    def product(self, Xb, Yb):
        out = self.buf[: Xb.shape[0] * Yb.shape[0]].view(Xb.shape[0], Yb.shape[0])
        torch.mm(Xb, Yb.T, out=out)
        return out.view(torch.int16).numpy().view(np.uint16)


def _row_rounding(A: np.ndarray, chunk: int = 8192):
    """Per row: ‖a‖, ‖bf16(a)‖ and ‖bf16(a) − a‖, the inputs of the bf16 error bound. bf16(a) − a is exact
    in float32 (nearby floats); the float32 norms are within d·2⁻²⁴ relative, covered by a 1e-3 margin."""
    n = A.shape[0]
    norm, norm16, dnorm = (np.zeros(n) for _ in range(3))
    for i in range(0, n, chunk):
        a = torch.from_numpy(A[i : i + chunk])
        a16 = a.to(torch.bfloat16).float()
        norm[i : i + chunk] = a.norm(dim=1).double().numpy() * (1 + 1e-3)
        norm16[i : i + chunk] = a16.norm(dim=1).double().numpy() * (1 + 1e-3)
        dnorm[i : i + chunk] = (a16 - a).norm(dim=1).double().numpy() * (1 + 1e-3)
    return norm, norm16, dnorm


def _bf16_error(Q: np.ndarray, D: np.ndarray, rq=None, rd=None):
    """For every row q of Q: (eps_in[q], cmax[q]) with |c̃_acc(q, j) − q·d_j| ≤ eps_in[q] for every row j of D
    (c̃_acc: the fp32 accumulation of the bf16-rounded vectors, before its own rounding to bf16) and
    |c̃_acc| ≤ cmax[q]. x̃·ỹ − x·y = δx·ỹ + x·δy (Cauchy–Schwarz on each), plus the accumulation error
    γ_d Σ|x̃_t ỹ_t| (the bf16 products are exact in fp32), plus flushed denormals."""
    nq, nd, dq = rq if rq is not None else _row_rounding(Q)
    dnorm_d = rd if rd is not None else _row_rounding(D)
    d = Q.shape[1]
    gamma = d * 2.0**-24 / (1 - d * 2.0**-24)
    if D.shape[0] == 0:
        return np.zeros(Q.shape[0]), np.zeros(Q.shape[0])
    dmax16, dmax, ddmax = dnorm_d[1].max(), dnorm_d[0].max(), dnorm_d[2].max()
    eps_in = dq * dmax16 + nq * ddmax + gamma * nd * dmax16 + d * 2.0**-125
    cmax = nd * dmax16 * (1 + gamma) + d * 2.0**-125
    return eps_in, cmax


def _rescore(impl, Q, D, idx) -> np.ndarray:
    out = np.empty(idx.shape, np.float32)
    if idx.size == 0:
        return out
    fn = getattr(impl, "rescore", None)
    if fn is not None:
        fn(Q, D, idx, out)
        return out
    for i in range(0, idx.shape[0], 4096):  # numpy fallback, float64 sums, bounded chunks
        ix = idx[i : i + 4096]
        c = np.einsum("rcd,rd->rc", D[np.maximum(ix, 0)].astype(np.float64), Q[i : i + 4096].astype(np.float64))
        out[i : i + 4096] = np.where(ix >= 0, c, -np.inf)
    return out


def _transform(c, mode, qterm, dterm, idx):
    """The metric's score from exact cosines c [nq, w] (float32 arithmetic, as in the kernels)."""
    if mode == 0:
        return c
    a = qterm[:, None]
    b = dterm[np.maximum(idx, 0)]
    with np.errstate(invalid="ignore"):
        if mode == 1:
            s = np.float32(2.0) * c - a - b
        else:
            s = np.float32(2.0) * c / np.maximum(a + b, np.float32(MARGIN_EPS))
    return np.where(idx >= 0, s, np.float32(-np.inf)).astype(np.float32)


def _exact_rows(impl, Q, D, which, kq, mode, qterm, dterm, mem, exclude_self):
    """fp32 top-kq of the rows `which` of Q against D (exclude_self: the pair (which[r], which[r]) is
    dropped — one more neighbour is found, then the row's own index, or else the last, is removed)."""
    Qs = np.ascontiguousarray(Q[which])
    qt = None if qterm is None else np.ascontiguousarray(qterm[which])
    ke = min(kq + (1 if exclude_self else 0), D.shape[0])
    buf, _ = _stream(impl, Qs, D, k_rows=ke, k_cols=0, mode=mode, r_T=qt, r_S=dterm, mem=mem,
                     exclude_self=False)
    vals, idx = buf.vals, buf.idx
    if exclude_self:
        drop = idx == which[:, None]
        none = ~drop.any(1)
        drop[none, -1] = True
        keep = ~drop
        vals = vals[keep].reshape(len(which), ke - 1)[:, :kq]
        idx = idx[keep].reshape(len(which), ke - 1)[:, :kq]
    return vals, idx


def _bf16_select(impl, Q, D, approx, kq, mode, qterm, dterm, err, exclude_self, certify, mem, st, label):
    """Exact top-kq for every row of Q from its approximate candidates `approx` (a _Running of width ≥ kq):
    re-score exactly, sort by (score desc, index asc), certify, recompute uncertified rows in fp32."""
    nq = Q.shape[0]
    vals = np.full((nq, kq), -np.inf, np.float32)
    idx = np.full((nq, kq), -1, np.int64)
    if nq == 0 or kq == 0 or D.shape[0] == 0:
        st[label] = {"rows": nq, "certified": nq, "recomputed": 0}
        return vals, idx
    cand = approx.idx
    exact = _transform(_rescore(impl, Q, D, cand), mode, qterm, dterm, cand)
    order = np.lexsort((cand, -exact), axis=-1)[:, :kq]
    vals = np.take_along_axis(exact, order, 1)
    idx = np.take_along_axis(cand, order, 1)
    # certificate: every non-candidate has approximate score ≤ t (the last kept one)
    t = approx.vals[:, -1].astype(np.float64)
    eps_in, cmax = err
    u = BF16_U
    dc = u * cmax / (1 - u) + eps_in  # |exact cos − bf16 cos| (output rounding bounded via |c| ≤ cmax)
    if mode == 0:
        bound = t + u * np.abs(t) / (1 - u) + eps_in + 1e-5
    elif mode == 1:
        bound = t + 2 * dc + 1e-5 * (1 + cmax)
    else:
        den = np.maximum(qterm.astype(np.float64) + float(dterm.min()), MARGIN_EPS) * (1 - 2.0**-22)
        bound = t + (2 * dc + 1e-5 * (1 + cmax)) / den
    total = D.shape[0] - (1 if exclude_self else 0)
    with np.errstate(invalid="ignore"):
        cert = (approx.vals.shape[1] >= total) | (bound < vals[:, -1])
    bad = np.flatnonzero(~cert)
    if certify and len(bad):
        vals[bad], idx[bad] = _exact_rows(impl, Q, D, bad, kq, mode, qterm, dterm, mem, exclude_self)
    st[label] = {"rows": nq, "certified": int(cert.sum()), "recomputed": int(len(bad)) if certify else 0}
    return vals, idx


def _widths(k, total, extra):
    extra = DEFAULT_EXTRA if extra is None else int(extra)
    if extra < 0:
        raise XlfastError(f"extra must be ≥ 0, got {extra}")
    return min(k + extra, total) if k else 0


def _means_bf16(impl, Xn, Yn, k, mem, exclude_self, extra, certify, st, rr=None):
    n, m = Xn.shape[0], Yn.shape[0]
    ex = 1 if exclude_self else 0
    kr, kc = clip_k(k, m, exclude_self), clip_k(k, n, exclude_self)
    rows, cols = _stream(impl, Xn, Yn, k_rows=_widths(kr, m - ex, extra), k_cols=_widths(kc, n - ex, extra),
                         mode=0, r_T=None, r_S=None, mem=mem, exclude_self=exclude_self, precision="bf16")
    rx, ry = rr if rr is not None else (_row_rounding(Xn), _row_rounding(Yn))
    rv, _ = _bf16_select(impl, Xn, Yn, rows, kr, 0, None, None, _bf16_error(Xn, Yn, rx, ry), exclude_self,
                         certify, mem, st, "pass1_rows")
    cv, _ = _bf16_select(impl, Yn, Xn, cols, kc, 0, None, None, _bf16_error(Yn, Xn, ry, rx), exclude_self,
                         certify, mem, st, "pass1_cols")
    st["precision"] = "bf16"
    r_T = rv.mean(axis=1, dtype=np.float64).astype(np.float32) if kr else np.zeros(n, np.float32)
    r_S = cv.mean(axis=1, dtype=np.float64).astype(np.float32) if kc else np.zeros(m, np.float32)
    return r_T, r_S


def _topk_bf16(impl, Xn, Yn, kr, kc, mode, r_T, r_S, mem, exclude_self, both, extra, certify, st, rr) -> TopK:
    n, m = Xn.shape[0], Yn.shape[0]
    ex = 1 if exclude_self else 0
    rows, cols = _stream(impl, Xn, Yn, k_rows=_widths(kr, m - ex, extra),
                         k_cols=_widths(kc, n - ex, extra) if both else 0, mode=mode, r_T=r_T, r_S=r_S,
                         mem=mem, exclude_self=exclude_self, precision="bf16")
    rx, ry = rr
    fv, fi = _bf16_select(impl, Xn, Yn, rows, kr, mode, r_T, r_S, _bf16_error(Xn, Yn, rx, ry), exclude_self,
                          certify, mem, st, "rows")
    st["precision"] = "bf16"
    out = TopK(torch.from_numpy(fv), torch.from_numpy(fi))
    if both:
        bv, bi = _bf16_select(impl, Yn, Xn, cols, kc, mode, r_S, r_T, _bf16_error(Yn, Xn, ry, rx),
                              exclude_self, certify, mem, st, "cols")
        out = out._replace(rev_scores=torch.from_numpy(bv), rev_indices=torch.from_numpy(bi))
    return out


# ------------------------------------------------------------ approximate search (faiss IVF / IVF-PQ)
APPROX = ("ivf", "ivfpq")
APPROX_NPROBE = {"ivf": 32, "ivfpq": 32}  # measured: see the docstring of `topk` and benchmarks/bench_csls_approx.py
APPROX_EXTRA = {"ivf": DEFAULT_EXTRA, "ivfpq": 48}
MIN_PER_LIST = 39  # faiss's own minimum of training rows per k-means centroid


class _Approx(NamedTuple):
    kind: str
    nlist: int | None
    nprobe: int
    extra: int


def _approx_args(approx, nlist, nprobe, precision, extra=None) -> _Approx:
    if approx not in APPROX:
        raise XlfastError(f"unknown approx '{approx}' (choose from {', '.join(APPROX)}, or None for exact)")
    if precision not in ("fp32", "auto"):
        raise XlfastError(f"approx='{approx}' cannot be combined with precision='{precision}'")
    for name, v in (("nlist", nlist), ("nprobe", nprobe)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
            raise XlfastError(f"{name} must be a positive integer, got {v!r}")
    extra = APPROX_EXTRA[approx] if extra is None else int(extra)
    if extra < 0:
        raise XlfastError(f"extra must be ≥ 0, got {extra}")
    _faiss(approx)
    return _Approx(approx, None if nlist is None else int(nlist),
                   APPROX_NPROBE[approx] if nprobe is None else int(nprobe), extra)


def _faiss(approx):
    try:
        import faiss
    except ImportError:
        raise XlfastError(f"approx='{approx}' needs faiss: pip install faiss-cpu") from None
    return faiss


def approx_nlist(rows: int, nlist: int | None = None) -> int:
    """Inverted lists for `rows` indexed vectors: ≈4·√rows by default, never fewer than 39 rows per list."""
    cap = max(1, rows // MIN_PER_LIST)
    return max(1, min(cap, int(nlist) if nlist is not None else int(round(4 * math.sqrt(rows)))))


def _pq_shape(d: int, rows: int) -> tuple[int, int]:
    """(sub-quantizers, bits): d/4 sub-vectors of 8 bits (16× smaller than float32), or the largest divisor
    of d below d/4; fewer bits where there are too few rows to train 2^bits centroids per sub-vector."""
    sub = max(q for q in range(1, max(1, d // 4) + 1) if d % q == 0)
    bits = 8
    while bits > 1 and rows < MIN_PER_LIST * (1 << bits):
        bits -= 1
    return sub, bits


class _IvfIndex:
    """One faiss inverted-file index over the unit rows of D (inner product = cosine)."""

    def __init__(self, ap: _Approx, D: np.ndarray):
        faiss = _faiss(ap.kind)
        rows, d = D.shape
        self.nlist = approx_nlist(rows, ap.nlist)
        self.quantizer = faiss.IndexFlatIP(d)  # kept referenced: the IVF index points into it
        if ap.kind == "ivfpq":
            self.pq = _pq_shape(d, rows)
            self.index = faiss.IndexIVFPQ(self.quantizer, d, self.nlist, self.pq[0], self.pq[1],
                                          faiss.METRIC_INNER_PRODUCT)
            self.index.pq.cp.niter = 10  # vs faiss's 25: same recall here, 2.4× faster training
        else:
            self.pq = None
            self.index = faiss.IndexIVFFlat(self.quantizer, d, self.nlist, faiss.METRIC_INNER_PRODUCT)
        self.index.train(D)
        self.index.add(D)
        self.index.nprobe = min(ap.nprobe, self.nlist)

    def bytes(self, d: int) -> int:
        rows = self.index.ntotal
        code = d * 4 if self.pq is None else (self.pq[0] * self.pq[1] + 7) // 8
        return rows * (code + 8) + self.nlist * d * 4

    def search(self, impl, Q: np.ndarray, D: np.ndarray, width: int, exclude_self: bool):
        """Candidates [nq, width] (index −1 = none found) with EXACT cosines, sorted (cos desc, index asc);
        exclude_self drops each query's own index (one more is searched for)."""
        nq = Q.shape[0]
        if width == 0 or nq == 0:
            return np.zeros((nq, 0), np.float32), np.zeros((nq, 0), np.int64)
        w = min(width + (1 if exclude_self else 0), D.shape[0])
        _, idx = self.index.search(Q, w)
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        if exclude_self:
            drop = idx == np.arange(nq)[:, None]
            drop[~drop.any(1), -1] = True
            idx = idx[~drop].reshape(nq, w - 1)
        cos = _rescore(impl, Q, D, idx)
        order = np.lexsort((np.where(idx < 0, np.iinfo(np.int64).max, idx), -cos), axis=-1)
        return np.take_along_axis(cos, order, 1), np.take_along_axis(idx, order, 1)


def _width(ap: _Approx, *ks: int) -> int:
    """Candidates searched per query: the largest k needed plus `extra` (re-ranked exactly)."""
    k = max(ks)
    return k + ap.extra if k else 0


def _cand_means(cos: np.ndarray, k: int, size: int) -> np.ndarray:
    """Mean of the k best exact cosines (missing candidates, −inf, count as absent)."""
    if k == 0 or cos.shape[1] == 0:
        return np.zeros(size, np.float32)
    top = cos[:, :k].astype(np.float64)
    ok = np.isfinite(top)
    cnt = ok.sum(1)
    return np.where(cnt > 0, np.where(ok, top, 0).sum(1) / np.maximum(cnt, 1), 0).astype(np.float32)


def _approx_means(impl, ap, Xn, Yn, k, exclude_self, st):
    n, m = Xn.shape[0], Yn.shape[0]
    kr, kc = clip_k(k, m, exclude_self), clip_k(k, n, exclude_self)
    r_T = r_S = None
    if kr and n:
        iy = _IvfIndex(ap, Yn)
        r_T = _cand_means(iy.search(impl, Xn, Yn, _width(ap, kr, 0), exclude_self)[0], kr, n)
        st["index_Y"] = _index_stats(iy, Yn.shape[1])
    if kc and m:
        ix = _IvfIndex(ap, Xn)
        r_S = _cand_means(ix.search(impl, Yn, Xn, _width(ap, kc, 0), exclude_self)[0], kc, m)
        st["index_X"] = _index_stats(ix, Xn.shape[1])
    return (np.zeros(n, np.float32) if r_T is None else r_T), (np.zeros(m, np.float32) if r_S is None else r_S)


def _index_stats(ix: _IvfIndex, d: int) -> dict:
    return {"kind": "ivfpq" if ix.pq else "ivf", "nlist": ix.nlist, "nprobe": int(ix.index.nprobe),
            "pq": ix.pq, "bytes": ix.bytes(d)}


def _approx_select(cos, idx, k, mode, qterm, dterm):
    """The metric's top-k among exactly re-scored cosine candidates (score desc, index asc)."""
    s = _transform(cos, mode, qterm, dterm, idx) if mode else cos
    s = np.where(idx >= 0, s, np.float32(-np.inf)).astype(np.float32)
    order = np.lexsort((np.where(idx < 0, np.iinfo(np.int64).max, idx), -s), axis=-1)[:, :k]
    vals = np.full((idx.shape[0], k), -np.inf, np.float32)
    out_i = np.full((idx.shape[0], k), -1, np.int64)
    w = order.shape[1]
    vals[:, :w] = np.take_along_axis(s, order, 1)
    out_i[:, :w] = np.take_along_axis(idx, order, 1)
    return vals, out_i


def _approx_topk(impl, ap, X, Y, k, metric, knn, both, normalized, exclude_self, means, rows, st) -> TopK:
    Xn, Yn = _prepare(X, Y, normalized)
    n, m = Xn.shape[0], Yn.shape[0]
    mode = MODE[metric]
    if rows is not None and (both or exclude_self):
        raise XlfastError("topk: rows= cannot be combined with both=True or exclude_self")
    kr = clip_k(k, m, exclude_self)
    kc = clip_k(k, n, exclude_self) if both else 0
    need_means = mode != 0 and means is None
    kn_r, kn_c = (clip_k(knn, m, exclude_self), clip_k(knn, n, exclude_self)) if need_means else (0, 0)
    st.update({"approx": ap.kind, "extra": ap.extra})
    # forward: candidates of every row of X (all rows when r_T is needed for them, else only `rows`)
    Q = Xn if rows is None else np.ascontiguousarray(Xn[np.asarray(rows, dtype=np.int64).reshape(-1)])
    fc = fi = None
    if n and m and (kr or kn_r):
        iy = _IvfIndex(ap, Yn)
        st["index_Y"] = _index_stats(iy, Yn.shape[1])
        fc, fi = iy.search(impl, Q, Yn, _width(ap, kn_r, kr), exclude_self)
    # reverse: candidates of every row of Y (r_S always needs all of X)
    rc = ri = None
    if n and m and (kc or kn_c):
        ix = _IvfIndex(ap, Xn)
        st["index_X"] = _index_stats(ix, Xn.shape[1])
        rc, ri = ix.search(impl, Yn, Xn, _width(ap, kn_c, kc), exclude_self)
    r_T = r_S = None
    if mode != 0:
        if means is not None:
            r_T, r_S = (np.ascontiguousarray(np.asarray(v, dtype=np.float32).reshape(-1)) for v in means)
            if rows is not None:
                r_T = r_T[np.asarray(rows, dtype=np.int64).reshape(-1)]
        else:
            r_T = _cand_means(fc, kn_r, Q.shape[0]) if fc is not None else np.zeros(Q.shape[0], np.float32)
            r_S = _cand_means(rc, kn_c, m) if rc is not None else np.zeros(m, np.float32)
    nq = Q.shape[0]
    if fc is None or kr == 0:
        out = TopK(torch.full((nq, kr), -math.inf), torch.full((nq, kr), -1, dtype=torch.int64))
    else:
        out = TopK(*map(torch.from_numpy, _approx_select(fc, fi, kr, mode, r_T, r_S)))
    if both:
        if rc is None or kc == 0:
            bv, bi = torch.full((m, kc), -math.inf), torch.full((m, kc), -1, dtype=torch.int64)
        else:
            bv, bi = map(torch.from_numpy, _approx_select(rc, ri, kc, mode, r_S, r_T))
        out = out._replace(rev_scores=bv, rev_indices=bi)
    return out


# --------------------------------------------------------------------------- small dense batches
def csls_dense(sim: torch.Tensor, knn: int, row_mask=None, col_mask=None) -> torch.Tensor:
    """CSLS for a batch of small similarity matrices sim [B, n, m] (e.g. one sentence pair each).

    The neighbourhood of a row is the unmasked columns of its own matrix and vice versa; knn is clipped
    to each matrix's true lengths. Masks are bool [B, n] / [B, m] (True = real token). Padded entries of
    the result are −inf. Differentiable; plain torch, no tiling (the matrices are tiny)."""
    if sim.dim() == 2:
        return csls_dense(sim[None], knn,
                          None if row_mask is None else row_mask[None],
                          None if col_mask is None else col_mask[None])[0]
    B, n, m = sim.shape
    row_mask = torch.ones(B, n, dtype=torch.bool, device=sim.device) if row_mask is None else row_mask.bool()
    col_mask = torch.ones(B, m, dtype=torch.bool, device=sim.device) if col_mask is None else col_mask.bool()
    valid = row_mask[:, :, None] & col_mask[:, None, :]
    neg = torch.finfo(sim.dtype).min
    masked = sim.masked_fill(~valid, neg)
    n_true, m_true = row_mask.sum(1), col_mask.sum(1)  # [B]

    def mean_topk(S, lengths, dim):
        # top-K along `dim` with K = min(knn, true length) per batch element: sort once, average a prefix
        size = S.shape[dim]
        kk = min(knn, size)
        if kk == 0:
            return torch.zeros(S.shape[0], S.shape[3 - dim], dtype=S.dtype, device=S.device)
        top = S.topk(kk, dim=dim).values  # [B, kk, m] or [B, n, kk]
        k_eff = lengths.clamp(max=knn).clamp(min=1)
        take = torch.arange(kk, device=S.device)[None, :] < k_eff[:, None]  # [B, kk]
        take = take[:, :, None] if dim == 1 else take[:, None, :]
        total = torch.where(take, top, torch.zeros_like(top)).sum(dim)
        return total / k_eff[:, None].to(S.dtype)

    r_T = mean_topk(masked, m_true, 2)  # [B, n]
    r_S = mean_topk(masked, n_true, 1)  # [B, m]
    out = 2 * sim - r_T[:, :, None] - r_S[:, None, :]
    return out.masked_fill(~valid, -math.inf)


# ------------------------------------------------------------------------------------- backends
class _NumpyTiler:
    """OpenBLAS GEMM (through numpy) into one reused buffer: faster than torch.mm on this CPU."""

    def __init__(self, bx, by, dim):
        self.buf = np.empty(bx * by, dtype=np.float32)

    def product(self, Xb, Yb):
        out = self.buf[: Xb.shape[0] * Yb.shape[0]].reshape(Xb.shape[0], Yb.shape[0])
        np.matmul(Xb, Yb.T, out=out)
        return out


class _TorchBackend:
    """torch.mm + torch.topk merges: portable fallback, same streaming scheme."""

    name = "torch"

    class _Tiler:
        def __init__(self, bx, by, dim):
            self.buf = torch.empty(bx * by, dtype=torch.float32)

        def product(self, Xb, Yb):
            out = self.buf[: Xb.shape[0] * Yb.shape[0]].view(Xb.shape[0], Yb.shape[0])
            torch.mm(torch.from_numpy(Xb), torch.from_numpy(Yb).T, out=out)
            return out.numpy()

    def tiler(self, bx, by, dim):
        return self._Tiler(bx, by, dim)

    @staticmethod
    def _scores(S, i0, j0, mode, rterm, cterm, exclude_self):
        S = torch.from_numpy(S)
        nb, mb = S.shape
        if mode == 1:
            rt = torch.from_numpy(rterm[i0 : i0 + nb])[:, None]
            ct = torch.from_numpy(cterm[j0 : j0 + mb])[None, :]
            S = 2 * S - rt - ct
        elif mode == 2:
            rt = torch.from_numpy(rterm[i0 : i0 + nb])[:, None]
            ct = torch.from_numpy(cterm[j0 : j0 + mb])[None, :]
            S = 2 * S / (rt + ct).clamp_min(MARGIN_EPS)
        if exclude_self:
            lo, hi = max(i0, j0), min(i0 + nb, j0 + mb)
            if lo < hi:
                S = S.clone() if mode == 0 else S
                d = torch.arange(lo, hi)
                S[d - i0, d - j0] = -math.inf
        return S

    def update(self, S, i0, j0, rvals, ridx, cvals, cidx, mode, rterm, cterm, exclude_self):
        if S.dtype == np.uint16:
            S = _bf16_bits_to_f32(S)
        T = self._scores(S, i0, j0, mode, rterm, cterm, exclude_self)
        nb, mb = T.shape
        if rvals.shape[0]:
            k = rvals.shape[1]
            v = torch.from_numpy(rvals[i0 : i0 + nb])
            ix = torch.from_numpy(ridx[i0 : i0 + nb])
            cand_i = torch.arange(j0, j0 + mb).expand(nb, mb)
            # running buffer first: ties keep the earlier (smaller) index, as in the compiled backends
            top = torch.cat([v, T], 1).topk(k, dim=1, sorted=True)
            v.copy_(top.values)
            ix.copy_(torch.cat([ix, cand_i], 1).gather(1, top.indices))
        if cvals.shape[0]:
            k = cvals.shape[1]
            v = torch.from_numpy(cvals[j0 : j0 + mb])
            ix = torch.from_numpy(cidx[j0 : j0 + mb])
            cand_i = torch.arange(i0, i0 + nb).expand(mb, nb)
            top = torch.cat([v, T.T], 1).topk(k, dim=1, sorted=True)
            v.copy_(top.values)
            ix.copy_(torch.cat([ix, cand_i], 1).gather(1, top.indices))


def _bf16_bits_to_f32(S: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16) → float32, exactly (the bits are the high half of the float32)."""
    return (S.astype(np.uint32) << 16).view(np.float32)


class _CompiledSelection:
    """Numpy/OpenBLAS tile product + compiled parallel selection kernels (numba or C++): rows only, or
    rows and columns together from one read of the tile (`fused`)."""

    def __init__(self, name, rows_fn, cols_fn, fused_fn=None, rescore_fn=None, bf16_tiles=False, warmup=None):
        self.name = name
        self._rows, self._cols, self._fused = rows_fn, cols_fn, fused_fn
        self.rescore = rescore_fn
        self.bf16_tiles = bf16_tiles  # the kernels read bf16 tiles directly (else they are widened first)
        if warmup:
            warmup()

    def tiler(self, bx, by, dim):
        return _NumpyTiler(bx, by, dim)

    def update(self, S, i0, j0, rvals, ridx, cvals, cidx, mode, rterm, cterm, exclude_self):
        if S.dtype == np.uint16 and not self.bf16_tiles:
            S = _bf16_bits_to_f32(S)
        if rvals.shape[0] and cvals.shape[0] and self._fused is not None:
            self._fused(S, i0, j0, rvals, ridx, cvals, cidx, mode, rterm, cterm, exclude_self)
            return
        if rvals.shape[0]:
            self._rows(S, i0, j0, rvals, ridx, mode, rterm, cterm, exclude_self)
        if cvals.shape[0]:
            self._cols(S, i0, j0, cvals, cidx, mode, rterm, cterm, exclude_self)


def _load_numba():
    from xlfast.kernels import csls_numba as nb

    def warm():
        nb.warmup()
        nb.warmup_fused()

    return _CompiledSelection("numba", nb.rows_update, nb.cols_update, nb.fused_update, nb.rescore, warmup=warm)


def _load_cpp():
    from xlfast import _csls_cpu as cpp  # built from csrc/cpu/csls.cpp by setup.py

    return _CompiledSelection("cpp", cpp.rows_update, cpp.cols_update, cpp.fused_update, cpp.rescore,
                              bf16_tiles=True)


def _load_triton():
    from xlfast.kernels.triton import csls as triton_csls

    return triton_csls.load()


def _load_cuda():
    from xlfast.kernels import csls_cuda

    return csls_cuda.load()


# Ranks from `xlfast bench csls` on this 2-core machine (see the closing note of issue 5).
registry.register("cpp", _load_cpp, devices=("cpu",), rank=10)
registry.register("numba", _load_numba, devices=("cpu",), rank=20)
registry.register("torch", lambda: _TorchBackend(), devices=("cpu", "cuda"), rank=90)
registry.register("triton", _load_triton, devices=("cuda", "cpu"), rank=95)
# csrc/cuda/csls.cu via nvcc + ctypes, only where a GPU is visible; unmeasured (no GPU here), so ranked last
registry.register("cuda", _load_cuda, devices=("cuda", "cpu"), rank=99)
