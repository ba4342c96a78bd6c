"""xlfast.search: every split of a search (source blocks, target shards over ranks, both at once) must give
exactly the one-process answer — the same best index for every row both ways, and the same scores.

The grid algorithm (per-cell top-K, merged r_T / r_S, merged top-1) is checked for every metric and odd
sizes with ranks run as threads over an in-memory all_gather (fast); one test runs the real thing: two
spawned processes joining a gloo group on 127.0.0.1 the way torchrun ranks do."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.distributed as dist

from xlfast import search
from xlfast.kernels.csls import neighbourhood_means, normalize, topk
from xlfast.kernels.csls.reference import reference_topk


@pytest.fixture(autouse=True)
def torch_backend(monkeypatch):
    """The plain-torch kernel backend in the parent and in spawned workers: a fresh process would otherwise
    spend seconds compiling the numba selection kernels (the equality holds for every backend)."""
    monkeypatch.setenv("XLFAST_CSLS_BACKEND", "torch")


def clustered(n, dim, centres, rng):
    """Rows near a few shared centres: neighbourhoods are dense, so r_T/r_S really matter for CSLS."""
    return (centres[rng.integers(0, len(centres), n)] + 0.5 * rng.normal(size=(n, dim))).astype(np.float32)


def reference_part(block, offset, k):
    order = np.argsort(-block, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(block, order, 1), order + offset


def assert_same(got, want):
    np.testing.assert_array_equal(got.fwd_indices, want.fwd_indices)
    np.testing.assert_array_equal(got.bwd_indices, want.bwd_indices)
    # r_T is merged from the shards' top-K lists, the kernel's from one list: the same K values summed in
    # float64 and rounded once, so the scores agree to the last bit or one float32 ulp.
    np.testing.assert_allclose(got.fwd_scores, want.fwd_scores, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got.bwd_scores, want.bwd_scores, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------- small pieces
def test_merge_topk_known_answer():
    s1, i1 = np.array([[0.9, 0.5], [0.2, 0.1]]), np.array([[3, 1], [0, 2]])
    s2, i2 = np.array([[0.7, 0.5], [0.8, 0.2]]), np.array([[5, 4], [6, 7]])
    s, i = search.merge_topk([s1, s2], [i1, i2], 3)
    np.testing.assert_array_equal(i, [[3, 5, 1], [6, 0, 7]])  # ties go to the lower index (1 before 4, 0 before 7)
    np.testing.assert_allclose(s, [[0.9, 0.7, 0.5], [0.8, 0.2, 0.2]])
    # against a brute-force sort of the concatenation
    rng = np.random.default_rng(0)
    full = rng.normal(size=(7, 40)).astype(np.float32)
    parts = [reference_part(full[:, lo:hi], lo, 4) for lo, hi in search.shard_bounds(40, 3)]
    s, i = search.merge_topk([p[0] for p in parts], [p[1] for p in parts], 4)
    np.testing.assert_array_equal(i, np.argsort(-full, axis=1, kind="stable")[:, :4])


def test_shard_bounds_cover_everything():
    assert search.shard_bounds(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert search.shard_bounds(1, 2) == [(0, 0), (0, 1)]


def test_merged_means_are_the_kernels_means():
    """r_T from top-K lists over 3 target shards and r_S from lists over 4 source blocks, merged, are the
    kernel's neighbourhood means of the whole matrix (up to one ulp: a GEMM of another shape rounds
    some cosines differently)."""
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(5, 8))
    X, Y = normalize(clustered(37, 8, centres, rng)), normalize(clustered(29, 8, centres, rng))
    r_T, r_S = neighbourhood_means(X, Y, 6, normalized=True)
    over_shards = [topk(X, Y[lo:hi], 6, metric="cos", normalized=True).scores.numpy()
                   for lo, hi in search.shard_bounds(len(Y), 3)]
    over_blocks = [topk(X[lo:hi], Y, 6, metric="cos", both=True, normalized=True).rev_scores.numpy()
                   for lo, hi in search.shard_bounds(len(X), 4)]
    np.testing.assert_allclose(search._merged_means(over_shards, 6), r_T.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(search._merged_means(over_blocks, 6), r_S.numpy(), rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------- one process
def test_search_is_the_kernel_result():
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(40, 8)).astype(np.float32), rng.normal(size=(33, 8)).astype(np.float32)
    for metric in ("cos", "csls", "margin"):
        best = search.search(X, Y, metric, knn=5)
        ref = reference_topk(torch.from_numpy(X), torch.from_numpy(Y), 1, metric=metric, knn=5, both=True)
        np.testing.assert_array_equal(best.fwd_indices, ref.indices.numpy()[:, 0])
        np.testing.assert_array_equal(best.bwd_indices, ref.rev_indices.numpy()[:, 0])
        np.testing.assert_allclose(best.fwd_scores, ref.scores.numpy()[:, 0], atol=1e-5)


@pytest.mark.parametrize("metric", ["cos", "csls", "margin"])
def test_source_streamed_in_blocks_equals_one_block(metric, tmp_path):
    """The source side read from a float16 memmap in blocks of 7 rows (r_S merged over blocks) gives the
    same answer as one kernel call over everything."""
    rng = np.random.default_rng(8)
    centres = rng.normal(size=(6, 12))
    X = (centres[rng.integers(0, 6, 45)] + 0.6 * rng.normal(size=(45, 12))).astype(np.float16)
    Y = (centres[rng.integers(0, 6, 31)] + 0.6 * rng.normal(size=(31, 12))).astype(np.float32)
    stored = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float16, shape=X.shape)
    stored[:] = X
    w = np.linalg.qr(rng.normal(size=(12, 12)))[0].astype(np.float32)
    rows = np.array([40, 3, 5, 9, 11, 12, 20, 21, 22, 30, 31, 32, 33, 34, 35, 44, 0])
    for source, dense in [(search.Rows(stored), X.astype(np.float32)),
                          (search.Rows(stored, rows, w), X[rows].astype(np.float32) @ w.T)]:
        want = search.search(dense, Y, metric, knn=5)
        got = search.search(source, Y, metric, knn=5, block_rows=7)
        np.testing.assert_array_equal(got.fwd_indices, want.fwd_indices)
        np.testing.assert_array_equal(got.bwd_indices, want.bwd_indices)
        np.testing.assert_allclose(got.fwd_scores, want.fwd_scores, atol=1e-6)
        np.testing.assert_allclose(got.bwd_scores, want.bwd_scores, atol=1e-6)


def test_bad_arguments_are_one_line():
    from xlfast.errors import XlfastError

    X = np.eye(3, dtype=np.float32)
    with pytest.raises(XlfastError, match="unknown metric 'dot'"):
        search.search(X, X, "dot")
    with pytest.raises(XlfastError, match="--nproc must be at least 1"):
        search.search(X, X, "cos", nproc=0)


# ---------------------------------------------------------------------------------- ranks
def threaded_ranks(X, Y, metric, knn, world, block_rows=None):
    """`_grid_search` for every rank at once in threads, with an all_gather through shared slots."""
    slots, barrier, results = [None] * world, threading.Barrier(world), [None] * world

    def make_gather(rank):
        def all_gather(array):
            slots[rank] = array
            barrier.wait()
            out = list(slots)
            barrier.wait()  # nobody overwrites a slot before everyone has read it
            return out
        return all_gather

    def run(rank):
        results[rank] = search._grid_search(rank, world, search.Rows(X), search.Rows(Y), metric, knn, None,
                                            block_rows, make_gather(rank))

    threads = [threading.Thread(target=run, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.mark.parametrize("metric", ["csls", "margin", "cos"])
@pytest.mark.parametrize("world,n,m,knn,block_rows", [(2, 301, 257, 10, None), (3, 50, 7, 5, None),
                                                      (4, 40, 3, 10, None), (3, 61, 47, 6, 13)])
def test_sharded_search_equals_one_process(metric, world, n, m, knn, block_rows):
    """Target shards over 2-4 ranks (some empty when m < world), and shards x source blocks at once."""
    rng = np.random.default_rng(n + m)
    centres = rng.normal(size=(12, 16))
    X, Y = clustered(n, 16, centres, rng), clustered(m, 16, centres, rng)
    want = search.search(X, Y, metric, knn=knn)
    for got in threaded_ranks(X, Y, metric, knn, world, block_rows):  # every rank ends with the whole answer
        assert_same(got, want)


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no torch.distributed gloo")
def test_two_processes_gloo_equal_one(tmp_path):
    """Spawned ranks join through torchrun's environment (env://), read the source through a map and
    sub-rows as the mining loop does, and match one process."""
    rng = np.random.default_rng(11)
    centres = rng.normal(size=(12, 16))
    X, Y = clustered(301, 16, centres, rng), clustered(257, 16, centres, rng)
    w = np.linalg.qr(rng.normal(size=(16, 16)))[0].astype(np.float32)
    source = search.Rows(X, np.arange(300, 0, -2), w)
    want = search.search(source, Y, "csls", knn=10)
    got = search.search(source, Y, "csls", knn=10, nproc=2, work_dir=tmp_path)
    assert_same(got, want)
