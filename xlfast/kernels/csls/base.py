"""What every part of `xlfast.kernels.csls` shares: the result type, the metric modes and constants, input
preparation and tile arithmetic, and the contracts of the two kinds of backend (`TiledBackend`: CPU kernels fed
tile by tile by the driver in stream.py; `DeviceBackend`: GPU kernels that run a whole search themselves) and
of a prepared search (`Search`). Backends import this module and nothing else of the package.
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from enum import IntEnum
from typing import NamedTuple

import numpy as np
import torch

from xlfast.errors import XlfastError

DEFAULT_MEM = 128 << 20  # bytes for the similarity tile; keeps total extra memory well under 256 MiB
MARGIN_EPS = 1e-6  # the margin's denominator is clamped here (every kernel receives this one value)


class Mode(IntEnum):
    """The score a top-k ranks by; the kernels receive the int value."""

    COS = 0  # cos(x, y)
    CSLS = 1  # 2·cos(x, y) − r_T(x) − r_S(y)  (Conneau et al. 2018 (MUSE), §2.3)
    MARGIN = 2  # cos(x, y) / ((r_T(x) + r_S(y)) / 2), denominator ≥ MARGIN_EPS  (Artetxe & Schwenk 2019, "ratio")

    @classmethod
    def of(cls, metric: str) -> "Mode":
        try:
            return cls[str(metric).upper()]
        except KeyError:
            raise XlfastError(f"unknown metric '{metric}' (choose from {', '.join(METRICS)})") from None


METRICS = tuple(mode.name.lower() for mode in Mode)


class TopK(NamedTuple):
    """Best k targets per source row (descending); with both=True also the best k sources per target."""

    scores: torch.Tensor
    indices: torch.Tensor
    rev_scores: torch.Tensor | None = None
    rev_indices: torch.Tensor | None = None


# ------------------------------------------------------------------------------------------ inputs
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


def _matrix(A):
    if A.ndim != 2:
        raise XlfastError(f"expected a 2-D matrix of vectors, got shape {tuple(A.shape)}")
    return A


def as_float32(X) -> np.ndarray:
    """A C-contiguous float32 numpy view of X (no copy when X already is one; torch shares memory)."""
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    return _matrix(np.ascontiguousarray(X, dtype=np.float32))


def unit_rows(A: torch.Tensor) -> torch.Tensor:
    """Unit-length rows of a float tensor, on its device; all-zero rows stay zero (never NaN)."""
    norms = torch.linalg.vector_norm(A, dim=1, keepdim=True)
    return (A / torch.where(norms > 0, norms, torch.ones_like(norms))).contiguous()


def normalize(X) -> torch.Tensor:
    """Unit-length rows as a contiguous float32 CPU tensor; all-zero rows stay zero (never NaN)."""
    return unit_rows(torch.as_tensor(as_float32(X)))


def _same_dim(a: tuple, b: tuple) -> None:
    if a[1] != b[1] and a[0] and b[0]:
        raise XlfastError(f"dimension mismatch: X has {a[1]} columns, Y has {b[1]}")


def prepare(X, Y, normalized: bool) -> tuple[np.ndarray, np.ndarray]:
    """X and Y as unit-row float32 numpy matrices (already unit rows when `normalized`)."""
    Xn = as_float32(X) if normalized else normalize(X).numpy()
    Yn = as_float32(Y) if normalized else normalize(Y).numpy()
    _same_dim(Xn.shape, Yn.shape)
    return Xn, Yn


def prepare_on(X, Y, normalized: bool, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """X and Y as unit-row float32 tensors on `device`, normalised there (device tensors never visit the CPU)."""
    def put(A):
        A = _matrix(torch.as_tensor(A).detach().to(device=device, dtype=torch.float32))
        return A.contiguous() if normalized else unit_rows(A)

    Xd, Yd = put(X), put(Y)
    _same_dim(tuple(Xd.shape), tuple(Yd.shape))
    return Xd, Yd


def take(A, rows: np.ndarray):
    """Rows `rows` of a numpy matrix/vector (contiguous copy) or of a tensor (on its device)."""
    if isinstance(A, torch.Tensor):
        return A[torch.as_tensor(rows, device=A.device)]
    return np.ascontiguousarray(A[rows])


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


# ------------------------------------------------------------------------------------ candidates
class Running:
    """Running top-k buffers [rows, k]: values descending, −inf / −1 where not yet filled."""

    def __init__(self, n: int, k: int):
        self.vals = np.full((n, k), -np.inf, dtype=np.float32)
        self.idx = np.full((n, k), -1, dtype=np.int64)


def ranked(scores: np.ndarray, idx: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each row's candidates by (score desc, index asc) — the kernels' order; missing (−1) last; the first k."""
    key = np.where(idx < 0, np.iinfo(np.int64).max, idx)
    order = np.lexsort((key, -scores), axis=-1)[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(idx, order, 1)


def without_self(own: np.ndarray, idx: np.ndarray, *also: np.ndarray) -> tuple[np.ndarray, ...]:
    """Candidate lists searched one wider so that row r may drop its own index own[r]: drops it where
    present, else the last candidate; returns idx and `also` one column narrower."""
    drop = idx == own[:, None]
    drop[~drop.any(1), -1] = True
    shape = (idx.shape[0], idx.shape[1] - 1)
    return tuple(a[~drop].reshape(shape) for a in (idx, *also))


def rescored(backend: TiledBackend, Q, D, idx) -> np.ndarray:
    """Exact cosines Q[r] · D[idx[r, c]] (−inf where idx < 0)."""
    out = np.empty(idx.shape, np.float32)
    if idx.size:
        backend.rescore(Q, D, idx, out)
    return out


def metric_scores(c, mode, qterm, dterm, idx):
    """The metric's score from exact cosines c [nq, w] (float32 arithmetic, as in the kernels)."""
    if mode == Mode.COS:
        return c
    a = qterm[:, None]
    b = dterm[np.maximum(idx, 0)]
    with np.errstate(invalid="ignore"):
        if mode == Mode.CSLS:
            s = np.float32(2.0) * c - a - b
        else:
            s = np.float32(2.0) * c / np.maximum(a + b, np.float32(MARGIN_EPS))
    return np.where(idx >= 0, s, np.float32(-np.inf)).astype(np.float32)


def means_of(top: np.ndarray, size: int) -> np.ndarray:
    """Row means of top-k similarity buffers (float64 sums); zeros for k = 0."""
    if top.shape[1] == 0:
        return np.zeros(size, np.float32)
    return top.mean(axis=1, dtype=np.float64).astype(np.float32)


# -------------------------------------------------------------------------------------- contracts
class TiledBackend(ABC):
    """A CPU backend: the driver (stream.py) computes each tile S of X·Yᵀ and hands it to `update`.

    bf16_tiles: `update` reads bf16 tiles (their uint16 bits) as they are; otherwise they are widened first.
    compiled_rescore: `rescore` is compiled, so the certified bf16 path pays off at large sizes."""

    name: str
    bf16_tiles = False
    compiled_rescore = False

    @abstractmethod
    def tiler(self, bx: int, by: int, dim: int):
        """An object whose `product(Xb, Yb)` returns Xb·Ybᵀ (float32 numpy, a reused buffer)."""

    @abstractmethod
    def update(self, S, i0, j0, rvals, ridx, cvals, cidx, mode: int, rterm, cterm, exclude_self: bool) -> None:
        """Merge tile S (rows i0.., columns j0..) into the running row buffers rvals/ridx [n, kr] and column
        buffers cvals/cidx [m, kc] (either may be empty, shape (0, 1)), scoring with `mode` and the means
        rterm [n] / cterm [m]; exclude_self skips the pairs (i, i). Ties keep the earlier index."""

    @abstractmethod
    def rescore(self, Q: np.ndarray, D: np.ndarray, idx: np.ndarray, out: np.ndarray) -> None:
        """out[r, c] = Q[r] · D[idx[r, c]] with float64 sums; −inf where idx < 0."""


class DeviceBackend(ABC):
    """A GPU backend: whole searches in a few kernel launches; inputs are unit-row float32 tensors on
    `device`, the means tensors there too; results come back as CPU tensors (k-sized)."""

    name: str
    device: torch.device
    max_k: int | None = None  # the largest k its kernel supports (None: any)

    @abstractmethod
    def neighbourhood_means(self, Xn, Yn, k_rows: int, k_cols: int, exclude_self: bool):
        """(r_T [n], r_S [m]) as tensors on the device."""

    @abstractmethod
    def topk(self, Xn, Yn, k_rows: int, k_cols: int, mode: int, r_T, r_S, exclude_self: bool,
             both: bool) -> TopK:
        ...


class Search(ABC):
    """One call's X and Y, prepared for one backend and strategy: neighbourhood means, then the top-k."""

    X: object
    Y: object

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def m(self) -> int:
        return self.Y.shape[0]

    @abstractmethod
    def means(self, k: int, exclude_self: bool):
        """(r_T [n], r_S [m]): mean similarity of each row of X to its k nearest rows of Y, and vice versa."""

    @abstractmethod
    def topk(self, rows: np.ndarray | None, kr: int, kc: int, mode: Mode, r_T, r_S, exclude_self: bool,
             both: bool) -> TopK:
        """The kr best rows of Y for the rows `rows` of X (all when None); with both, the kc best of X per
        row of Y. r_T covers every row of X."""

    def given(self, means) -> tuple:
        """Caller-supplied (r_T, r_S) as this search's arrays."""
        vectors = (torch.as_tensor(v).detach().to(torch.float32).reshape(-1) for v in means)
        if isinstance(self.X, torch.Tensor):
            return tuple(v.to(self.X.device).contiguous() for v in vectors)
        return tuple(np.ascontiguousarray(v.cpu().numpy()) for v in vectors)
