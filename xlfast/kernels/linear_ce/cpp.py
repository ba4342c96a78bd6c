"""C++/OpenMP row pass (csrc/cpu/linear_ce.cpp, built as xlfast._linear_ce_cpu where a compiler is there):
a vectorised polynomial exp, one row per thread, compiled per instruction set; reads bf16 logits too."""
from __future__ import annotations

import torch

from xlfast import _linear_ce_cpu as _ext  # ImportError when not built: the backend is unavailable
from xlfast.kernels.linear_ce.base import RowKernel


class CppRows(RowKernel):
    name = "cpp"
    takes_bf16 = True

    def rows_(self, logits, target, bias, loss, grad):
        b = None if bias is None else bias.detach().numpy()
        # numpy has no bf16: the bits travel as int16
        x = logits.view(torch.int16) if logits.dtype == torch.bfloat16 else logits
        _ext.rows_(x.numpy(), target.numpy(), b, loss.numpy(), grad, torch.get_num_threads())
