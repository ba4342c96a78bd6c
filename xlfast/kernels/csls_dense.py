"""CSLS of small padded batches (Conneau et al. 2018 (MUSE), §2.3), for word alignment: each sentence pair's
similarity matrix is its own neighbourhood. Plain torch, differentiable, no tiling (the matrices are tiny);
`xlfast.kernels.csls` is the retrieval over whole vocabularies."""
from __future__ import annotations

import math

import torch


def csls_dense(sim: torch.Tensor, knn: int, row_mask=None, col_mask=None) -> torch.Tensor:
    """CSLS for a batch of small similarity matrices sim [B, n, m] (e.g. one sentence pair each).

    The neighbourhood of a row is the unmasked columns of its own matrix and vice versa; knn is clipped
    to each matrix's true lengths. Masks are bool [B, n] / [B, m] (True = real token). Padded entries of
    the result are −inf."""
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
