"""Approximate search: faiss inverted-file indexes instead of the exact scan, as in Hangya et al. (2022,
Appendix C).

Y (and X, for csls/margin or both=True) go into a faiss IndexIVFFlat (inner product on the unit rows;
'ivfpq': IndexIVFPQ, d/4 sub-quantizers of 8 bits, when d/4 divides d) with `nlist` k-means lists (default
≈4·√rows, at least 39 training rows per list) of which `nprobe` are scanned per query (default
`APPROX_NPROBE`, chosen for recall@10 ≥ 0.95 against exact on clustered data, see
benchmarks/bench_csls_approx.py). Each query gets max(knn, k + extra) candidates (extra default 16, 'ivfpq'
48), re-scored exactly (float32 vectors, float64 sums); csls/margin take r_T / r_S from the same candidates,
so the neighbourhood means are approximate too, and the csls/margin top-k is the best of the candidates
nearest by cosine: a CSLS neighbour outside the cosine top-(k + extra) is missed (recall@10 measured at the
defaults: clustered 100k×20k×300 cos and csls 0.995; real 64-d shp→es embeddings cos 0.991 but csls 0.79 —
raise nprobe / extra there). Indexes are built per call. Memory: faiss's indexes are the cost — IVFFlat holds
a copy of the vectors, rows·(4d + 8) bytes (8: the id), IVF-PQ rows·(d/4 + 8) bytes, plus nlist·d·4 for the
centroids, per indexed side — and the candidate lists, queries·(k + extra)·12 bytes; there are no tiles.
A neighbour missed by the index lowers a mean slightly (a true neighbour is replaced by a worse one, never by
a better one).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from xlfast.errors import XlfastError
from xlfast.kernels.csls.base import (Mode, TiledBackend, TopK, clip_k, metric_scores, prepare, ranked, rescored,
                                      take, without_self)

KINDS = ("ivf", "ivfpq")
APPROX_NPROBE = {"ivf": 32, "ivfpq": 32}  # measured: see benchmarks/bench_csls_approx.py
APPROX_EXTRA = {"ivf": 16, "ivfpq": 48}
MIN_PER_LIST = 39  # faiss's own minimum of training rows per k-means centroid


def _positive(name: str, v) -> None:
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
        raise XlfastError(f"{name} must be a positive integer, got {v!r}")


@dataclass(frozen=True)
class Approx:
    """Approximate search with a faiss index: `kind` 'ivf' or 'ivfpq'; `nlist` inverted lists (None:
    ≈4·√rows), `nprobe` of them scanned per query (None: APPROX_NPROBE), `extra` candidates beyond k
    re-scored exactly (None: APPROX_EXTRA). No memory budget: the indexes are the cost."""

    kind: str
    nlist: int | None = None
    nprobe: int | None = None
    extra: int | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise XlfastError(f"unknown approx '{self.kind}' (choose from {', '.join(KINDS)}, or an exact strategy)")
        _positive("nlist", self.nlist)
        _positive("nprobe", self.nprobe)
        if self.extra is not None and (isinstance(self.extra, bool) or not isinstance(self.extra, (int, np.integer))
                                       or self.extra < 0):
            raise XlfastError(f"extra must be an integer ≥ 0, got {self.extra!r}")

    @property
    def probes(self) -> int:
        return APPROX_NPROBE[self.kind] if self.nprobe is None else int(self.nprobe)

    @property
    def candidates_beyond_k(self) -> int:
        return APPROX_EXTRA[self.kind] if self.extra is None else int(self.extra)

    def width(self, *ks: int) -> int:
        """Candidates searched per query: the largest k needed plus `extra` (re-ranked exactly)."""
        k = max(ks)
        return k + self.candidates_beyond_k if k else 0


def faiss_module(kind: str = "ivf"):
    try:
        import faiss
    except ImportError:
        raise XlfastError(f"Approx('{kind}') needs faiss: pip install faiss-cpu") from None
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

    def __init__(self, opts: Approx, D: np.ndarray):
        faiss = faiss_module(opts.kind)
        rows, d = D.shape
        self.nlist = approx_nlist(rows, opts.nlist)
        self.quantizer = faiss.IndexFlatIP(d)  # kept referenced: the IVF index points into it
        if opts.kind == "ivfpq":
            self.pq = _pq_shape(d, rows)
            self.index = faiss.IndexIVFPQ(self.quantizer, d, self.nlist, self.pq[0], self.pq[1],
                                          faiss.METRIC_INNER_PRODUCT)
            self.index.pq.cp.niter = 10  # vs faiss's 25: same recall here, 2.4× faster training
        else:
            self.pq = None
            self.index = faiss.IndexIVFFlat(self.quantizer, d, self.nlist, faiss.METRIC_INNER_PRODUCT)
        self.index.train(D)
        self.index.add(D)
        self.index.nprobe = min(opts.probes, self.nlist)

    def stats(self, d: int) -> dict:
        rows = self.index.ntotal
        code = d * 4 if self.pq is None else (self.pq[0] * self.pq[1] + 7) // 8
        return {"kind": "ivfpq" if self.pq else "ivf", "nlist": self.nlist, "nprobe": int(self.index.nprobe),
                "pq": self.pq, "bytes": rows * (code + 8) + self.nlist * d * 4}

    def search(self, backend: TiledBackend, Q: np.ndarray, D: np.ndarray, width: int, exclude_self: bool):
        """Candidates [nq, width] (index −1 = none found) with EXACT cosines, sorted (cos desc, index asc);
        exclude_self drops each query's own index (one more is searched for)."""
        nq = Q.shape[0]
        if width == 0 or nq == 0:
            return np.zeros((nq, 0), np.float32), np.zeros((nq, 0), np.int64)
        w = min(width + (1 if exclude_self else 0), D.shape[0])
        _, idx = self.index.search(Q, w)
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        if exclude_self:
            (idx,) = without_self(np.arange(nq), idx)
        return ranked(rescored(backend, Q, D, idx), idx)


def _cand_means(cos: np.ndarray, k: int, size: int) -> np.ndarray:
    """Mean of the k best exact cosines (missing candidates, −inf, count as absent)."""
    if k == 0 or cos.shape[1] == 0:
        return np.zeros(size, np.float32)
    top = cos[:, :k].astype(np.float64)
    ok = np.isfinite(top)
    cnt = ok.sum(1)
    return np.where(cnt > 0, np.where(ok, top, 0).sum(1) / np.maximum(cnt, 1), 0).astype(np.float32)


def _select(cos, idx, k, mode, qterm, dterm):
    """The metric's top-k among exactly re-scored cosine candidates (score desc, index asc)."""
    s = np.where(idx >= 0, metric_scores(cos, mode, qterm, dterm, idx), np.float32(-np.inf)).astype(np.float32)
    vals = np.full((idx.shape[0], k), -np.inf, np.float32)
    out_i = np.full((idx.shape[0], k), -1, np.int64)
    top_v, top_i = ranked(s, idx, k)
    vals[:, : top_v.shape[1]], out_i[:, : top_i.shape[1]] = top_v, top_i
    return vals, out_i


def means(backend: TiledBackend, opts: Approx, X, Y, k, normalized, exclude_self, st):
    """Approximate (r_T, r_S) from an index over Y and one over X."""
    faiss_module(opts.kind)  # one clear line when faiss is missing, whatever the sizes
    Xn, Yn = prepare(X, Y, normalized)
    n, m = Xn.shape[0], Yn.shape[0]
    kr, kc = clip_k(k, m, exclude_self), clip_k(k, n, exclude_self)
    r_T, r_S = np.zeros(n, np.float32), np.zeros(m, np.float32)
    if kr and n:
        iy = _IvfIndex(opts, Yn)
        r_T = _cand_means(iy.search(backend, Xn, Yn, opts.width(kr), exclude_self)[0], kr, n)
        st["index_Y"] = iy.stats(Yn.shape[1])
    if kc and m:
        ix = _IvfIndex(opts, Xn)
        r_S = _cand_means(ix.search(backend, Yn, Xn, opts.width(kc), exclude_self)[0], kc, m)
        st["index_X"] = ix.stats(Xn.shape[1])
    return r_T, r_S


def topk(backend: TiledBackend, opts: Approx, X, Y, k, mode: Mode, knn, both, rows, exclude_self, normalized,
         given_means, st) -> TopK:
    faiss_module(opts.kind)
    Xn, Yn = prepare(X, Y, normalized)
    n, m = Xn.shape[0], Yn.shape[0]
    kr = clip_k(k, m, exclude_self)
    kc = clip_k(k, n, exclude_self) if both else 0
    need_means = mode != Mode.COS and given_means is None
    kn_r, kn_c = (clip_k(knn, m, exclude_self), clip_k(knn, n, exclude_self)) if need_means else (0, 0)
    st.update({"approx": opts.kind, "extra": opts.candidates_beyond_k})
    # forward: candidates of every row of X (all rows when r_T is needed for them, else only `rows`)
    Q = Xn if rows is None else take(Xn, rows)
    fc = fi = None
    if n and m and (kr or kn_r):
        iy = _IvfIndex(opts, Yn)
        st["index_Y"] = iy.stats(Yn.shape[1])
        fc, fi = iy.search(backend, Q, Yn, opts.width(kn_r, kr), exclude_self)
    # reverse: candidates of every row of Y (r_S always needs all of X)
    rc = ri = None
    if n and m and (kc or kn_c):
        ix = _IvfIndex(opts, Xn)
        st["index_X"] = ix.stats(Xn.shape[1])
        rc, ri = ix.search(backend, Yn, Xn, opts.width(kn_c, kc), exclude_self)
    r_T = r_S = None
    if mode != Mode.COS:
        if given_means is not None:
            r_T, r_S = (np.ascontiguousarray(torch.as_tensor(v).to(torch.float32).reshape(-1).numpy())
                        for v in given_means)
            r_T = r_T if rows is None else take(r_T, rows)
        else:
            r_T = _cand_means(fc, kn_r, Q.shape[0]) if fc is not None else np.zeros(Q.shape[0], np.float32)
            r_S = _cand_means(rc, kn_c, m) if rc is not None else np.zeros(m, np.float32)
    nq = Q.shape[0]
    if fc is None or kr == 0:
        out = TopK(torch.full((nq, kr), -math.inf), torch.full((nq, kr), -1, dtype=torch.int64))
    else:
        out = TopK(*map(torch.from_numpy, _select(fc, fi, kr, mode, r_T, r_S)))
    if both:
        if rc is None or kc == 0:
            bv, bi = torch.full((m, kc), -math.inf), torch.full((m, kc), -1, dtype=torch.int64)
        else:
            bv, bi = map(torch.from_numpy, _select(rc, ri, kc, mode, r_S, r_T))
        out = out._replace(rev_scores=bv, rev_indices=bi)
    return out
