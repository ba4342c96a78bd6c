"""C++/OpenMP row pass (csrc/cpu/linear_ce.cpp, built as xlfast._linear_ce_cpu where a compiler is there):
a vectorised polynomial exp, one row per thread."""
from __future__ import annotations

import torch

from xlfast import _linear_ce_cpu as _ext  # ImportError when not built: the backend is unavailable
from xlfast.kernels.linear_ce.base import RowKernel


class CppRows(RowKernel):
    name = "cpp"

    def rows_(self, logits, target, bias, loss, grad):
        b = None if bias is None else bias.detach().numpy()
        _ext.rows_(logits.numpy(), target.numpy(), b, loss.numpy(), grad, torch.get_num_threads())
