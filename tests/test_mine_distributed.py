"""`--nproc N`: the target side sharded over processes must give exactly the 1-process result — the same
best index for every row both ways, and the same scores.

The shard algorithm itself (per-shard top-K, all-gathered r_T, merged top-1) is checked for every metric
and odd shard sizes with ranks run as threads over an in-memory all_gather (fast); one test runs the real
thing: two spawned processes talking gloo over 127.0.0.1."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch.distributed as dist

from xlfast import mine


@pytest.fixture(autouse=True)
def torch_backend(monkeypatch):
    """The plain-torch kernel backend in the parent and in spawned workers: a fresh process would otherwise
    spend seconds compiling the numba selection kernels (the equality holds for every backend)."""
    monkeypatch.setenv("XLFAST_CSLS_BACKEND", "torch")


def clustered(n, dim, centres, rng):
    """Rows near a few shared centres: neighbourhoods are dense, so r_T/r_S really matter for CSLS."""
    return (centres[rng.integers(0, len(centres), n)] + 0.5 * rng.normal(size=(n, dim))).astype(np.float32)


def threaded_shards(X, Y, metric, knn, world):
    """Run `_shard_search` for every rank at once in threads, with an all_gather through shared slots."""
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
        results[rank] = mine._shard_search(rank, world, mine._unit(X), mine._unit(Y), metric, knn, None,
                                           make_gather(rank))

    threads = [threading.Thread(target=run, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def assert_same(got, want):
    np.testing.assert_array_equal(got.fwd_indices, want.fwd_indices)
    np.testing.assert_array_equal(got.bwd_indices, want.bwd_indices)
    # r_T is merged from the shards' top-K lists, the kernel's from one list: the same K values summed in
    # float64 and rounded once, so the scores agree to the last bit or one float32 ulp.
    np.testing.assert_allclose(got.fwd_scores, want.fwd_scores, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got.bwd_scores, want.bwd_scores, rtol=0, atol=1e-6)


@pytest.mark.parametrize("metric", ["csls", "margin", "cos"])
@pytest.mark.parametrize("world,n,m,knn", [(2, 301, 257, 10), (3, 50, 7, 5), (4, 40, 3, 10)])
def test_sharded_search_equals_one_process(metric, world, n, m, knn):
    rng = np.random.default_rng(n + m)
    centres = rng.normal(size=(12, 16))
    X, Y = clustered(n, 16, centres, rng), clustered(m, 16, centres, rng)
    want = mine.search_best(X, Y, metric, knn=knn)
    results = threaded_shards(X, Y, metric, mine._knn(knn, len(X), len(Y)), world)
    for got in results:  # every rank ends with the whole answer
        assert_same(got, want)


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no torch.distributed gloo")
def test_two_processes_gloo_equal_one(tmp_path):
    rng = np.random.default_rng(11)
    centres = rng.normal(size=(12, 16))
    X, Y = clustered(301, 16, centres, rng), clustered(257, 16, centres, rng)
    want = mine.search_best(X, Y, "csls", knn=10)
    got = mine.search_best_distributed(X, Y, "csls", knn=10, nproc=2, work_dir=tmp_path)
    assert_same(got, want)
