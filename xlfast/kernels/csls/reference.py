"""Full-matrix float64 references of `xlfast.kernels.csls`, the ground truth of its tests: plain torch on
the whole N×M matrix (small inputs only)."""
from __future__ import annotations

import math

import torch

from xlfast.kernels.csls.base import MARGIN_EPS, Mode, TopK, clip_k, prepare


def reference_cos(X, Y, normalized=False) -> torch.Tensor:
    Xn, Yn = prepare(X, Y, normalized)
    return torch.from_numpy(Xn).double() @ torch.from_numpy(Yn).double().T


def _no_self(S: torch.Tensor) -> torch.Tensor:
    d = min(S.shape)
    S[torch.arange(d), torch.arange(d)] = -math.inf
    return S


def reference_means(X, Y, k=10, normalized=False, exclude_self=False):
    """(r_T [n], r_S [m]): each row's mean cosine to its k nearest rows of the other side."""
    S = reference_cos(X, Y, normalized)
    n, m = S.shape
    if exclude_self and n and m:
        S = _no_self(S)
    kr, kc = clip_k(k, m, exclude_self), clip_k(k, n, exclude_self)
    r_T = S.topk(kr, dim=1).values.mean(1) if kr else torch.zeros(n, dtype=S.dtype)
    r_S = S.topk(kc, dim=0).values.mean(0) if kc else torch.zeros(m, dtype=S.dtype)
    return r_T, r_S


def reference_scores(X, Y, metric="csls", knn=10, normalized=False, exclude_self=False) -> torch.Tensor:
    """The whole score matrix [n, m] of `metric` (−inf on the diagonal with exclude_self)."""
    mode = Mode.of(metric)
    S = reference_cos(X, Y, normalized)
    n, m = S.shape
    if mode != Mode.COS:
        r_T, r_S = reference_means(X, Y, knn, normalized, exclude_self)
        if mode == Mode.CSLS:
            S = 2 * S - r_T[:, None] - r_S[None, :]
        else:
            S = 2 * S / (r_T[:, None] + r_S[None, :]).clamp_min(MARGIN_EPS)
    if exclude_self and n and m:
        S = _no_self(S)
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
