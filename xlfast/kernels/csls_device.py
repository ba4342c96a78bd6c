"""What the device backends of `xlfast.kernels.csls` (Triton, CUDA) share: given a kernel `_rows` that
returns the top-k of every row of A against B in one launch, both directions and the neighbourhood
means follow. The CPU backends stream tiles instead (`csls._stream`)."""
from __future__ import annotations

import numpy as np
import torch


class RowTopkBackend:
    """Subclasses set `name` and `device` and implement `_launch(A, B, vals, idx, rterm, cterm, k, mode,
    exclude_self)`: fill vals/idx [n, k] (device tensors, preset to −inf / −1) with the top-k of every
    row of A against B."""

    name = "device"
    device: torch.device
    max_k: int | None = None

    def _launch(self, A, B, vals, idx, rterm, cterm, k, mode, exclude_self):
        raise NotImplementedError

    def _rows(self, A: np.ndarray, B: np.ndarray, k: int, mode: int, rterm, cterm, exclude_self: bool):
        """(values [n, k], indices [n, k]) as CPU tensors."""
        from xlfast.errors import XlfastError

        n, m = A.shape[0], B.shape[0]
        if self.max_k is not None and k > self.max_k:
            raise XlfastError(f"csls backend '{self.name}' supports k ≤ {self.max_k} (got {k}); use another backend")
        vals = torch.full((n, k), float("-inf"), dtype=torch.float32, device=self.device)
        idx = torch.full((n, k), -1, dtype=torch.int64, device=self.device)
        if n == 0 or m == 0 or k == 0:
            return vals.cpu(), idx.cpu()
        dev = lambda a: torch.from_numpy(a).to(self.device)  # noqa: E731
        rt = dev(rterm if rterm is not None else np.zeros(n, np.float32))
        ct = dev(cterm if cterm is not None else np.zeros(m, np.float32))
        self._launch(dev(A), dev(B), vals, idx, rt, ct, k, mode, exclude_self)
        return vals.cpu(), idx.cpu()

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
