"""What the device backends of `xlfast.kernels.csls` (Triton, CUDA) share, and the search that runs on them.

A backend supplies `_launch`: one kernel launch that fills the top-k of every row of A against B. Both
directions and the neighbourhood means follow from it (column statistics launch it with A and B swapped).
`DeviceSearch` keeps X and Y on the device for the whole call: they are normalised there, and only the
k-sized results come back.
"""
from __future__ import annotations

from abc import abstractmethod

import torch

from xlfast.errors import XlfastError
from xlfast.kernels.csls.base import DeviceBackend, Mode, Search, TopK, clip_k, prepare_on, take


class RowTopkBackend(DeviceBackend):
    """Subclasses set `name` and `device` and implement `_launch(A, B, vals, idx, rterm, cterm, k, mode,
    exclude_self)`: fill vals/idx [n, k] (device tensors, preset to −inf / −1) with the top-k of every
    row of A against B."""

    @abstractmethod
    def _launch(self, A, B, vals, idx, rterm, cterm, k: int, mode: int, exclude_self: bool) -> None:
        ...

    def _rows(self, A: torch.Tensor, B: torch.Tensor, k: int, mode: int, rterm, cterm, exclude_self: bool):
        """(values [n, k], indices [n, k]) on the device."""
        n, m = A.shape[0], B.shape[0]
        if self.max_k is not None and k > self.max_k:
            raise XlfastError(f"csls backend '{self.name}' supports k ≤ {self.max_k} (got {k}); use another backend")
        vals = torch.full((n, k), float("-inf"), dtype=torch.float32, device=self.device)
        idx = torch.full((n, k), -1, dtype=torch.int64, device=self.device)
        if n == 0 or m == 0 or k == 0:
            return vals, idx
        rt = rterm if rterm is not None else torch.zeros(n, dtype=torch.float32, device=self.device)
        ct = cterm if cterm is not None else torch.zeros(m, dtype=torch.float32, device=self.device)
        self._launch(A, B, vals, idx, rt.contiguous(), ct.contiguous(), k, int(mode), exclude_self)
        return vals, idx

    def neighbourhood_means(self, Xn, Yn, k_rows, k_cols, exclude_self):
        rv, _ = self._rows(Xn, Yn, k_rows, Mode.COS, None, None, exclude_self)
        cv, _ = self._rows(Yn, Xn, k_cols, Mode.COS, None, None, exclude_self)
        zeros = lambda size: torch.zeros(size, dtype=torch.float32, device=self.device)  # noqa: E731
        r_T = rv.double().mean(1).float() if k_rows else zeros(Xn.shape[0])
        r_S = cv.double().mean(1).float() if k_cols else zeros(Yn.shape[0])
        return r_T, r_S

    def topk(self, Xn, Yn, k_rows, k_cols, mode, r_T, r_S, exclude_self, both):
        v, i = self._rows(Xn, Yn, k_rows, mode, r_T, r_S, exclude_self)
        if not both:
            return TopK(v.cpu(), i.cpu())
        rv, ri = self._rows(Yn, Xn, k_cols, mode, r_S, r_T, exclude_self)
        return TopK(v.cpu(), i.cpu(), rv.cpu(), ri.cpu())


class DeviceSearch(Search):
    """A search run by a device backend on X and Y held on its device."""

    def __init__(self, backend: DeviceBackend, X, Y, normalized: bool):
        self.backend = backend
        self.X, self.Y = prepare_on(X, Y, normalized, backend.device)

    def means(self, k, exclude_self):
        return self.backend.neighbourhood_means(self.X, self.Y, clip_k(k, self.m, exclude_self),
                                                clip_k(k, self.n, exclude_self), exclude_self)

    def topk(self, rows, kr, kc, mode, r_T, r_S, exclude_self, both) -> TopK:
        X = self.X if rows is None else take(self.X, rows)
        r_T = r_T if rows is None or r_T is None else take(r_T, rows)
        return self.backend.topk(X, self.Y, kr, kc, mode, r_T, r_S, exclude_self, both)
