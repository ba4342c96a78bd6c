"""What the device backends of `xlfast.kernels.csls` (Triton, CUDA) share: given a kernel `_rows` that
returns the top-k of every row of A against B in one launch, both directions and the neighbourhood
means follow. The CPU backends stream tiles instead (`csls._stream`)."""
from __future__ import annotations

import numpy as np


class RowTopkBackend:
    """Subclasses set `name` and implement `_rows(A, B, k, mode, rterm, cterm, exclude_self)` →
    (values [n, k], indices [n, k]) as CPU tensors."""

    name = "device"

    def _rows(self, A, B, k, mode, rterm, cterm, exclude_self):
        raise NotImplementedError

    def neighbourhood_means(self, Xn, Yn, k_rows, k_cols, mem, exclude_self):
        rv, _ = self._rows(Xn, Yn, k_rows, 0, None, None, exclude_self)
        cv, _ = self._rows(Yn, Xn, k_cols, 0, None, None, exclude_self)
        r_T = rv.double().mean(1).float().numpy() if k_rows else np.zeros(Xn.shape[0], np.float32)
        r_S = cv.double().mean(1).float().numpy() if k_cols else np.zeros(Yn.shape[0], np.float32)
        return r_T, r_S

    def topk(self, Xn, Yn, k_rows, k_cols, mode, r_T, r_S, mem, exclude_self, both):
        from xlfast.kernels.csls import TopK

        v, i = self._rows(Xn, Yn, k_rows, mode, r_T, r_S, exclude_self)
        if not both:
            return TopK(v, i)
        rv, ri = self._rows(Yn, Xn, k_cols, mode, r_S, r_T, exclude_self)
        return TopK(v, i, rv, ri)
