"""The Triton csls kernel under TRITON_INTERPRET=1 (CPU), against the float64 torch reference.

Triton reads TRITON_INTERPRET when it is imported, so the kernel runs in a child process with the
variable set there only; the child saves its results and this process checks them."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from xlfast.kernels.csls.base import clip_k
from xlfast.kernels.csls.reference import reference_means, reference_scores

pytest.importorskip("triton")
from test_csls import assert_topk_matches, tolerance, unit_rows  # noqa: E402

CASES = [  # (name, n, m, d, k, metric, exclude_self)
    ("odd", 5, 123, 16, 7, "cos", False),
    ("csls", 37, 41, 20, 5, "csls", False),
    ("margin_k_above_m", 19, 3, 8, 6, "margin", False),
    ("self_dups", 33, 33, 12, 4, "csls", True),
    ("empty", 0, 7, 8, 3, "cos", False),
]

CHILD = r"""
import sys, numpy as np, torch
from xlfast.kernels import csls as C
sys.path.insert(0, sys.argv[2])
from test_csls_triton import CASES, inputs
out = {}
for name, n, m, d, k, metric, ex in CASES:
    X, Y = inputs(name, n, m, d)
    r = C.topk(X, Y, k, metric=metric, knn=3, both=True, normalized=True, backend="triton", exclude_self=ex)
    for field, t in zip(("s", "i", "rs", "ri"), r):
        out[f"{name}.{field}"] = t.numpy()
    rT, rS = C.neighbourhood_means(X, Y, 3, normalized=True, backend="triton", exclude_self=ex)
    out[f"{name}.rT"], out[f"{name}.rS"] = rT.numpy(), rS.numpy()
np.savez(sys.argv[1], **out)
"""


def inputs(name, n, m, d):
    X = unit_rows(n, d, 11, dup_of=([0, 1], [5, 6]) if name == "self_dups" else None)
    return (X, X) if name == "self_dups" else (X, unit_rows(m, d, 12))


@pytest.fixture(scope="module")
def triton_results(tmp_path_factory):
    path = tmp_path_factory.mktemp("triton") / "out.npz"
    env = dict(os.environ, TRITON_INTERPRET="1")
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), here], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(np.load(path))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_triton_matches_reference(triton_results, case):
    name, n, m, d, k, metric, ex = case
    X, Y = inputs(name, n, m, d)
    means = reference_means(X, Y, 3, normalized=True, exclude_self=ex)
    ref = reference_scores(X, Y, metric, knn=3, normalized=True, exclude_self=ex)
    tol = tolerance(metric, d, means)
    got = {f: torch.from_numpy(triton_results[f"{name}.{f}"]) for f in ("s", "i", "rs", "ri", "rT", "rS")}
    assert_topk_matches(got["s"], got["i"], ref, clip_k(k, m, ex), tol, f"triton {name}")
    assert_topk_matches(got["rs"], got["ri"], ref.T, clip_k(k, n, ex), tol, f"triton {name} rev")
    np.testing.assert_allclose(got["rT"].double(), means[0], atol=tolerance("cos", d))
    np.testing.assert_allclose(got["rS"].double(), means[1], atol=tolerance("cos", d))
    if ex:
        assert (got["i"] != torch.arange(n)[:, None]).all()
