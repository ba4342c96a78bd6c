"""The only cosine / CSLS / margin top-k retrieval in xlfast: memory-bounded, several backends.

    normalize(X)                          unit rows (zero rows stay zero), float32, contiguous
    neighbourhood_means(X, Y, k)          (r_T [N], r_S [M]) from ONE pass over X·Yᵀ
    topk(X, Y, k, metric=..., knn=...)    TopK(scores, indices[, rev_scores, rev_indices])

Scores (Mode): cos; csls 2·cos(x, y) − r_T(x) − r_S(y) (Conneau et al. 2018 (MUSE), §2.3); margin
cos(x, y) / ((r_T(x) + r_S(y)) / 2), the ratio margin of Artetxe & Schwenk (2019), denominator ≥ MARGIN_EPS.
r_T(x) is the mean cosine of x to its knn nearest rows of Y, r_S(y) that of y to its knn nearest rows of X.

How a call runs is its strategy — one option object, so that only options that combine can be given:
  Exact(mem=)                  the exact scan (stream.py): tiles of X·Yᵀ within `mem` bytes on the CPU, or
                               the whole search on a GPU backend (device.py)
  Bf16(mem=, extra=, certify=) bf16 tiles, candidates re-scored exactly and certified (bf16.py; CPU)
  Approx(kind, nlist=, nprobe=, extra=)  faiss IVF / IVF-PQ indexes, approximate (approx.py; CPU)
  None (default)               automatic: Bf16 on large inputs where a compiled CPU backend runs and bf16 is
                               native, else Exact; `mem=` is its tile budget
`mem=` belongs to the automatic choice: with a strategy object the budget is the object's field, and
giving `mem=` too is an error (it would be ignored by Approx, and ambiguous for Exact / Bf16).

Backends (`registry`, ranked per device by measurement, see `xlfast bench csls`; `devices_for` says where a
call runs: the GPU that holds its tensors, else a visible GPU, then the CPU): on the CPU cpp (csrc/cpu/csls.cpp)
and numba (numba.py), both an OpenBLAS GEMM into a reused buffer + a parallel selection kernel, then torch
(torch.mm + torch.topk merges, the always-available fallback; cpu.py); on a GPU blocked (cuBLAS blocks of rows +
torch.topk; blocked.py; the same search written in plain torch was the fastest there), triton (fused tile
product + running top-k; also on the CPU under TRITON_INTERPRET=1, for tests) and cuda (csrc/cuda/csls.cu
through nvcc + ctypes; k ≤ 10; slowest). The full-matrix references for tests are in reference.py.
"""
from __future__ import annotations

import numpy as np
import torch

from xlfast.errors import XlfastError
from xlfast.kernels.csls import approx
from xlfast.kernels.csls.approx import Approx
from xlfast.kernels.csls.base import (METRICS, DeviceBackend, Mode, Search, TiledBackend, TopK, clip_k, normalize,
                                      parse_mem, prepare)
from xlfast.kernels.csls.bf16 import Bf16, Bf16Search, pays, runs_here
from xlfast.kernels.csls.cpu import CompiledSelection, TorchBackend
from xlfast.kernels.csls.device import DeviceSearch
from xlfast.kernels.csls.stream import Exact, ExactSearch
from xlfast.kernels.dispatch import KernelRegistry, devices_for, load_from

__all__ = ["topk", "neighbourhood_means", "normalize", "TopK", "Exact", "Bf16", "Approx", "METRICS", "registry"]

registry = KernelRegistry("csls")


def _load_numba():
    from xlfast.kernels.csls import numba as kernels

    kernels.warmup()
    return CompiledSelection("numba", kernels.rows_update, kernels.cols_update, kernels.fused_update,
                             kernels.rescore)


def _load_cpp():
    from xlfast import _csls_cpu as ext  # built from csrc/cpu/csls.cpp by setup.py

    return CompiledSelection("cpp", ext.rows_update, ext.cols_update, ext.fused_update, ext.rescore,
                             bf16_tiles=True)


# CPU ranks from `xlfast bench csls` on the 2-core machine this was built on (cpp ahead of numba, torch far
# behind). GPU ranks from benchmarks/bench_gpu.py on an H200 (20k × 20k × 300, top-10 CSLS): cuBLAS blocks
# + torch.topk ('blocked', 38 ms for the MUSE-style equivalent) ahead of the Triton kernel (230 ms) and the
# CUDA one (1.9 s). Triton (interpreted) and 'blocked' also run on the CPU, last there (tests).
registry.register("cpp", _load_cpp, devices={"cpu": 10})
registry.register("numba", _load_numba, devices={"cpu": 20})
registry.register("torch", TorchBackend, devices={"cpu": 90})
registry.register("triton", load_from("xlfast.kernels.csls.triton", "load"), devices={"cuda": 10, "cpu": 95})
registry.register("cuda", load_from("xlfast.kernels.csls.cuda", "load"), devices={"cuda": 20})
registry.register("blocked", load_from("xlfast.kernels.csls.blocked", "load"), devices={"cuda": 5, "cpu": 96})


def _check_strategy(strategy, mem) -> None:
    if strategy is not None and not isinstance(strategy, (Exact, Bf16, Approx)):
        raise XlfastError(f"strategy must be Exact(...), Bf16(...), Approx(...) or None, got {strategy!r}")
    if strategy is not None and mem is not None:
        where = "Approx has no tile budget" if isinstance(strategy, Approx) else \
            f"give it as {type(strategy).__name__}(mem=...)"
        raise XlfastError(f"mem= is the automatic choice's tile budget; with strategy={strategy!r}: {where}")
    parse_mem(mem if strategy is None or isinstance(strategy, Approx) else strategy.mem)  # one clear line now


def _backend(backend, strategy, X, Y, k: int):
    """The backend for this call: device-aware for exact searches; Bf16 and Approx run on the CPU."""
    devices = devices_for(X, Y) if strategy is None or isinstance(strategy, Exact) else ("cpu",)
    fits = lambda impl: not isinstance(impl, DeviceBackend) or impl.max_k is None or k <= impl.max_k  # noqa: E731
    impl = registry.choose(devices, backend, fits=fits)[1]
    if strategy is not None and not isinstance(strategy, Exact) and not isinstance(impl, TiledBackend):
        raise XlfastError(f"{type(strategy).__name__} runs on the CPU backends, not on '{impl.name}'")
    return impl


def _search(impl, strategy, mem, X, Y, normalized, stats, queries: int | None = None) -> Search:
    """The search that runs this call. `queries`: rows of X in its largest pass (None: all); the automatic
    choice takes the bf16 path when that pass is large enough."""
    if isinstance(impl, DeviceBackend):
        return DeviceSearch(impl, X, Y, normalized)
    Xn, Yn = prepare(X, Y, normalized)
    if strategy is None:
        pairs = (Xn.shape[0] if queries is None else queries) * Yn.shape[0]
        strategy = Bf16(mem=mem) if pays(impl, pairs) else Exact(mem=mem)
    if isinstance(strategy, Bf16) and runs_here():
        return Bf16Search(impl, strategy, Xn, Yn, stats)
    return ExactSearch(impl, strategy.mem, Xn, Yn)


def neighbourhood_means(X, Y, k=10, *, normalized=False, mem=None, exclude_self=False, backend=None,
                        strategy=None, stats=None):
    """r_T[i] = mean cosine of X[i] to its k nearest rows of Y; r_S[j] = mean cosine of Y[j] to its k
    nearest rows of X — both from the same single pass over X·Yᵀ, as float32 CPU tensors. k is clipped to
    the number of candidates; with no candidates the mean is 0. `strategy`, `mem`, `backend`, `stats`: as
    in `topk`."""
    _check_strategy(strategy, mem)
    st = {} if stats is None else stats
    impl = _backend(backend, strategy, X, Y, k)
    if isinstance(strategy, Approx):
        r_T, r_S = approx.means(impl, strategy, X, Y, k, normalized, exclude_self, st)
    else:
        r_T, r_S = _search(impl, strategy, mem, X, Y, normalized, st).means(k, exclude_self)
    return torch.as_tensor(r_T).cpu(), torch.as_tensor(r_S).cpu()


def topk(X, Y, k, *, metric="cos", knn=10, both=False, rows=None, exclude_self=False, normalized=False,
         means=None, mem=None, backend=None, stats=None, strategy=None) -> TopK:
    """The k best rows of Y for every row of X under `metric` ('cos', 'csls' or 'margin', the last two
    with neighbourhood size `knn`), scores descending, ties to the smaller index; with both=True also the
    k best rows of X for every row of Y. k larger than the number of candidates is clipped to it (M, or
    M−1 with exclude_self, which drops the pair (i, i) — for X and Y being the same set); empty inputs give
    empty results. X and Y: numpy arrays or tensors (rows are normalised once unless `normalized`).
    Results are CPU tensors.

    Memory (exact and bf16 on the CPU): one similarity tile of at most `mem` bytes (default 128 MiB, '256M'
    works) plus the k-sized result buffers; the N×M matrix is never stored. `means=(r_T, r_S)` supplies
    precomputed neighbourhood means for csls/margin (e.g. merged over shards) and skips pass 1. `rows`
    (indices into X) ranks only those queries — r_S still comes from every row of X, so a BLI query set
    gets the same CSLS scores as a full retrieval, for a fraction of the second pass; it cannot be combined
    with both=True or exclude_self. `strategy`: Exact(...), Bf16(...), Approx(...) or None (automatic), see
    the module's docstring; `stats` (a dict) receives the bf16 certificates or the approximate index
    parameters. `backend` forces one ('cpp', 'numba', 'torch', 'blocked', 'triton', 'cuda'); a forced backend that
    cannot run raises BackendUnavailable."""
    mode = Mode.of(metric)
    if rows is not None and (both or exclude_self):
        raise XlfastError("topk: rows= cannot be combined with both=True or exclude_self")
    _check_strategy(strategy, mem)
    st = {} if stats is None else stats
    impl = _backend(backend, strategy, X, Y, max(k, knn if mode != Mode.COS else 0))
    rows = None if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
    if isinstance(strategy, Approx):
        return approx.topk(impl, strategy, X, Y, k, mode, knn, both, rows, exclude_self, normalized, means, st)
    # the largest pass decides the automatic strategy: pass 1 covers every row of X even when `rows` ranks few
    full_pass = mode != Mode.COS and means is None or rows is None
    search = _search(impl, strategy, mem, X, Y, normalized, st, None if full_pass else len(rows))
    r_T = r_S = None
    if mode != Mode.COS:
        r_T, r_S = search.given(means) if means is not None else search.means(knn, exclude_self)
    kr = clip_k(k, search.m, exclude_self)
    kc = clip_k(k, search.n, exclude_self) if both else 0
    return search.topk(rows, kr, kc, mode, r_T, r_S, exclude_self, both)
