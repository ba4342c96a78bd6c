"""The csls 'cuda' backend: csrc/cuda/csls.cu through its extern "C" entry point `xlfast_csls_topk_rows`,
built and loaded by `xlfast.kernels.nvcc` (nvcc at first use, ctypes).

Available only where a GPU is visible and nvcc builds the source; otherwise the loader raises, so the
registry reports the backend as unavailable (and a forced backend='cuda' is BackendUnavailable). Correct on
an H200 (tests/test_gpu.py) but slow there: 1.9 s for a 20k × 20k × 300 top-10 CSLS, against 0.23 s for
Triton and 38 ms for cuBLAS blocks; hence it ranks last. X and Y live whole on the GPU ((N + M)·d·4 bytes), one thread
block per query row; column statistics relaunch with X and Y swapped.
"""
from __future__ import annotations

import ctypes

import torch

from xlfast.errors import XlfastError
from xlfast.kernels import nvcc
from xlfast.kernels.csls.base import MARGIN_EPS
from xlfast.kernels.csls.device import RowTopkBackend

MAX_K = 10  # the kernel's k ≤ 32 instantiation needs more than the default 48 KiB of shared memory


def library() -> ctypes.CDLL:
    so = nvcc.build("csls")
    fn = so.xlfast_csls_topk_rows
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int, ctypes.c_int,
                   ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_float, ctypes.c_int, ctypes.c_void_p,
                   ctypes.c_void_p, ctypes.c_void_p]
    return so


class CudaBackend(RowTopkBackend):
    name = "cuda"
    max_k = MAX_K

    def __init__(self, so: ctypes.CDLL):
        self._fn = so.xlfast_csls_topk_rows
        self.device = torch.device("cuda")

    def _launch(self, A, B, vals, idx, rterm, cterm, k, mode, exclude_self):
        n, m, d = A.shape[0], B.shape[0], A.shape[1]
        err = self._fn(A.data_ptr(), B.data_ptr(), n, m, d, k, mode, rterm.data_ptr(), cterm.data_ptr(), MARGIN_EPS,
                       int(bool(exclude_self)), vals.data_ptr(), idx.data_ptr(), nvcc.stream_handle(self.device))
        if err != 0:
            raise XlfastError(f"csls backend 'cuda': kernel launch failed (cudaError {err})")


def load() -> CudaBackend:
    nvcc.require_gpu()
    return CudaBackend(library())
