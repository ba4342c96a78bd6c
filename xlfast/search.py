"""Exact best matches both ways between two sets of vectors, in one process or split over several.

    from xlfast.search import search
    best = search(src, tgt, metric="csls", knn=10)          # arrays, or `Rows` streamed from a memmap
    best.fwd_indices[i]   # the best target of source row i; best.bwd_indices[j]: the best source of target j

Scores come from `xlfast.kernels.csls.topk`, the project's only cosine / CSLS / margin code: cosine,
CSLS (Conneau et al. 2018, §2.3) or the ratio margin (Artetxe & Schwenk 2019, "Margin-based scoring").

One code path splits the work, and the split never changes the answer (tests compare every split with
one kernel call): the source side streams in blocks of `block_rows` rows, so a memmap larger than
memory works; the target side is sharded over processes, either `nproc` local ones spawned here
(torch.distributed, gloo on 127.0.0.1) or the ranks of a torchrun launch (every rank runs the same
command and gets the whole answer). A search is thus a grid of (source block x target shard) cells.

CSLS and margin need neighbourhood means: r_T(x), the mean of x's K best cosines over *all* targets,
and r_S(y), likewise over all sources. With more than one cell, a first pass takes each cell's top-K
cosines both ways from the kernel, `_split_means` merges them (x's lists over the shards, y's over the
blocks) and the scoring pass hands them to the kernel as `means=(r_T, r_S)`.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from xlfast import threads
from xlfast.errors import XlfastError
from xlfast.kernels.csls import normalize, parse_mem, topk

METRICS = ("cos", "csls", "margin")
SOURCE_BLOCK_BYTES = 256 << 20  # float32 source rows held at once per process

AllGather = Callable[[np.ndarray], list]  # every rank's array in rank order (first dimensions may differ)


@dataclass
class BestMatches:
    """Top-1 both ways: for each source row its best target (fwd_*), for each target its best source."""

    fwd_scores: np.ndarray
    fwd_indices: np.ndarray
    bwd_scores: np.ndarray
    bwd_indices: np.ndarray


class Rows:
    """Rows of a matrix (e.g. a float16 token memmap), optionally a subset and a linear map, read block by
    block as unit float32 rows, so the source side of a search never has to sit in memory at once.
    `normalized=True`: the stored rows already are unit rows with any map applied; they are read as they are."""

    def __init__(self, vectors, rows: np.ndarray | None = None, w: np.ndarray | None = None,
                 normalized: bool = False):
        self.vectors, self.rows, self.w, self.normalized = vectors, rows, w, normalized

    def __len__(self) -> int:
        return len(self.rows) if self.rows is not None else len(self.vectors)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def _unit(self, v) -> np.ndarray:
        if self.normalized:
            return np.array(v, dtype=np.float32)
        v = normalize(v).numpy()
        return v if self.w is None else normalize(v @ self.w.T).numpy()

    def block(self, lo: int, hi: int) -> np.ndarray:
        return self._unit(self.vectors[self.rows[lo:hi]] if self.rows is not None else self.vectors[lo:hi])

    def all(self) -> np.ndarray:
        return self.block(0, len(self))

    def take(self, positions: np.ndarray) -> np.ndarray:
        """The unit rows at these positions, in their order (repeats allowed)."""
        rows = positions if self.rows is None else self.rows[positions]
        return self._unit(self.vectors[np.sort(rows)])[np.argsort(np.argsort(rows))]  # memmaps read fastest in order


def as_rows(x) -> Rows:
    return x if isinstance(x, Rows) else Rows(x)


def search(src, tgt, metric: str = "csls", knn: int = 10, *, nproc: int = 1, mem=None, work_dir=None,
           block_rows: int | None = None) -> BestMatches:
    """Best matches both ways (module docstring): in this process, in `nproc` spawned local processes
    (their inputs go through `work_dir`, default a temporary directory), or over the ranks of a torchrun
    launch, which takes precedence. `block_rows`: source rows per kernel call (default 256 MiB of
    float32 rows); `mem`: the kernel's tile budget."""
    validate(metric, nproc, mem)
    src, tgt = as_rows(src), as_rows(tgt)
    group = launched_group()
    if group is not None and group[1] > 1:
        return _grid_search(*group, src, tgt, metric, knn, mem, block_rows, _gloo_all_gather)
    if nproc > 1:
        return _spawned_search(src, tgt, metric, knn, nproc, mem, block_rows, work_dir)
    return _grid_search(0, 1, src, tgt, metric, knn, mem, block_rows, lambda array: [array])


def validate(metric: str, nproc: int = 1, mem=None) -> None:
    """The checks `search` makes, for callers that want them before hours of encoding."""
    parse_mem(mem)
    if metric not in METRICS:
        raise XlfastError(f"unknown metric '{metric}' (choose {', '.join(METRICS)})")
    if nproc < 1:
        raise XlfastError("--nproc must be at least 1")


def shard_bounds(n: int, world: int) -> list[tuple[int, int]]:
    """Contiguous, nearly equal shards [lo, hi) of n rows."""
    cuts = [n * r // world for r in range(world + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


def merge_topk(scores: Sequence[np.ndarray], indices: Sequence[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-part top-k lists (rows aligned, global indices) into the global top-k per row.
    Higher score first; equal scores go to the lower global index (part order is index order)."""
    s = np.concatenate(scores, axis=1)
    i = np.concatenate(indices, axis=1)
    order = np.lexsort((i, -s), axis=1)[:, :k] if s.shape[1] else np.zeros((len(s), 0), dtype=np.int64)
    return np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)


def _np(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _source_blocks(n: int, dim: int, block_rows: int | None) -> list[tuple[int, int]]:
    block = block_rows or max(1, SOURCE_BLOCK_BYTES // (4 * max(dim, 1)))
    return [(lo, min(lo + block, n)) for lo in range(0, n, block)]


def _grid_search(rank: int, world: int, src: Rows, tgt: Rows, metric: str, knn: int, mem, block_rows,
                 all_gather: AllGather) -> BestMatches:
    """This rank's cells: every source block against its target shard. Every rank returns the whole answer."""
    n, m = len(src), len(tgt)
    if n == 0 or m == 0:
        return BestMatches(np.full(n, -np.inf, np.float32), np.zeros(n, np.int64),
                           np.full(m, -np.inf, np.float32), np.zeros(m, np.int64))
    knn = max(1, min(knn, n, m))
    lo, hi = shard_bounds(m, world)[rank]
    shard = tgt.block(lo, hi)  # a private float32 copy, even of a memmap
    blocks = _source_blocks(n, src.dim, block_rows)
    # A single cell (one process, one block) is one plain kernel call: the kernel takes its own means.
    split = world > 1 or len(blocks) > 1
    means = _split_means(src, shard, blocks, knn, mem, all_gather) if metric != "cos" and split else None
    fwd_s, fwd_i = np.full(n, -np.inf, np.float32), np.full(n, np.iinfo(np.int64).max, np.int64)
    bwd_s, bwd_i = np.full(hi - lo, -np.inf, np.float32), np.zeros(hi - lo, np.int64)
    for b0, b1 in blocks if hi > lo else []:  # with more ranks than targets a shard can be empty
        given = {} if means is None else {"means": (means[0][b0:b1], means[1])}
        res = topk(torch.from_numpy(src.block(b0, b1)), torch.from_numpy(shard), 1, metric=metric, knn=knn,
                   both=True, normalized=True, mem=mem, **given)
        fwd_s[b0:b1], fwd_i[b0:b1] = _np(res.scores)[:, 0], _np(res.indices)[:, 0] + lo
        rs, ri = _np(res.rev_scores)[:, 0], _np(res.rev_indices)[:, 0] + b0
        better = rs > bwd_s  # equal scores stay with the earlier block: the lower source index
        bwd_s[better], bwd_i[better] = rs[better], ri[better]
    # Forward: every shard's best per source row, merged; backward: each shard's rows, in shard order.
    best_s, best_i = merge_topk([a[:, None] for a in all_gather(fwd_s)], [a[:, None] for a in all_gather(fwd_i)], 1)
    return BestMatches(best_s[:, 0], best_i[:, 0], np.concatenate(all_gather(bwd_s)),
                       np.concatenate(all_gather(bwd_i)))


def _split_means(src: Rows, shard: np.ndarray, blocks, knn: int, mem, all_gather: AllGather):
    """(r_T, r_S) of a split search from one kernel pass per cell (top-K cosines both ways): r_T(x) of
    every source row from its lists over all shards (all ranks), r_S(y) of this shard's rows from their
    lists over all source blocks (this rank)."""
    if len(shard):
        row_tops, col_tops = [], []
        for b0, b1 in blocks:
            res = topk(torch.from_numpy(src.block(b0, b1)), torch.from_numpy(shard), knn, metric="cos", both=True,
                       normalized=True, mem=mem)
            row_tops.append(_np(res.scores))
            col_tops.append(_np(res.rev_scores))
        rows_here = np.concatenate(row_tops, axis=0)
    else:  # more ranks than targets: an empty shard only takes part in the gather
        rows_here, col_tops = np.zeros((len(src), 0), np.float32), [np.zeros((0, knn), np.float32)]
    gathered = all_gather(np.ascontiguousarray(rows_here.T))  # transposed: ranks differ in list length
    return _merged_means([a.T for a in gathered], knn), _merged_means(col_tops, knn)


def _merged_means(parts: Sequence[np.ndarray], knn: int) -> np.ndarray:
    """Neighbourhood means (Conneau et al. 2018, §2.3) over a split candidate set: each part holds a
    row's best cosines within one part of the candidates, so the knn best of their union are its knn
    best overall. Averaged as the kernel averages its own (descending, summed in float64)."""
    best = -np.sort(-np.concatenate(parts, axis=1), axis=1)[:, :knn]
    return best.mean(axis=1, dtype=np.float64).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# processes: spawned locally, or launched by torchrun


def launched_group() -> tuple[int, int] | None:
    """(rank, world size) when this process runs under torchrun (or already joined a process group)."""
    import torch.distributed as dist

    if not dist.is_available():
        return None
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ and "MASTER_ADDR" in os.environ:
        dist.init_process_group("gloo", init_method="env://")
        return dist.get_rank(), dist.get_world_size()
    return None


def is_primary() -> bool:
    """False on every torchrun rank but the first: those search with the others but write nothing."""
    group = launched_group()
    return group is None or group[0] == 0


@contextmanager
def scratch_dir(work_dir=None):
    """`work_dir` (created, kept), or a temporary directory removed afterwards."""
    if work_dir is not None:
        path = Path(work_dir)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix="xlfast-mine-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _gloo_all_gather(array: np.ndarray) -> list[np.ndarray]:
    """all_gather for arrays whose first dimension differs between ranks (padded, then trimmed)."""
    import torch.distributed as dist

    world = dist.get_world_size()
    rows = torch.tensor([array.shape[0]], dtype=torch.long)
    sizes = [torch.zeros_like(rows) for _ in range(world)]
    dist.all_gather(sizes, rows)
    most = int(max(int(s) for s in sizes))
    padded = torch.zeros((most,) + array.shape[1:], dtype=torch.from_numpy(array[:0]).dtype)
    padded[: array.shape[0]] = torch.from_numpy(array)
    out = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(out, padded)
    return [o[: int(n)].numpy() for o, n in zip(out, sizes)]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _save_unit_rows(rows: Rows, path: Path) -> None:
    """The unit rows (map applied) as a float32 .npy, written block by block."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(rows), rows.dim))
    for lo, hi in _source_blocks(len(rows), rows.dim, None):
        out[lo:hi] = rows.block(lo, hi)
    out.flush()


def _worker(rank: int, world: int, port: int, work: str, metric: str, knn: int, mem, block_rows,
            n_threads: int) -> None:
    """One of `nproc` local processes: it joins the group as a torchrun rank would, then runs `search`."""
    import torch.distributed as dist

    threads.configure(n_threads)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    try:
        src, tgt = (Rows(np.load(os.path.join(work, f"search.{side}.npy"), mmap_mode="r"), normalized=True)
                    for side in ("src", "tgt"))
        best = search(src, tgt, metric, knn, mem=mem, block_rows=block_rows)
        if rank == 0:
            np.savez(os.path.join(work, "search.result.npz"), fwd_s=best.fwd_scores, fwd_i=best.fwd_indices,
                     bwd_s=best.bwd_scores, bwd_i=best.bwd_indices)
    finally:
        dist.destroy_process_group()


def _spawned_search(src: Rows, tgt: Rows, metric: str, knn: int, nproc: int, mem, block_rows,
                    work_dir) -> BestMatches:
    import torch.multiprocessing as mp

    with scratch_dir(work_dir) as work:
        _save_unit_rows(src, work / "search.src.npy")
        _save_unit_rows(tgt, work / "search.tgt.npy")
        # the parent's budget (its --threads, else the CPUs it may use), shared out between the ranks
        per_rank = max(1, (threads.active()["threads"] or threads.default_threads()) // nproc)
        mp.start_processes(_worker, args=(nproc, _free_port(), str(work), metric, knn, mem, block_rows, per_rank),
                           nprocs=nproc, join=True, start_method="spawn")
        with np.load(work / "search.result.npz") as r:
            return BestMatches(r["fwd_s"], r["fwd_i"], r["bwd_s"], r["bwd_i"])
