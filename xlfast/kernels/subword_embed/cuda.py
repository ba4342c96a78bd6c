"""The subword_embed 'cuda' backend: csrc/cuda/subword_embed.cu through its extern "C" launchers, built and
loaded by `xlfast.kernels.nvcc` (nvcc at first use, ctypes), float32 only.

Available only where a GPU is visible and nvcc builds the source. On an H200 (V=50k, d=500, forward +
backward) 0.54 ms against Triton's 0.60 and `embedding_bag` + add's 0.97: it ranks behind Triton, which needs
no compiler at first use, and ahead of the torch reference (XLFAST_SUBWORD_EMBED_BACKEND=cuda forces it).
"""
from __future__ import annotations

import ctypes

import torch

from xlfast.errors import XlfastError
from xlfast.kernels import nvcc
from xlfast.kernels.subword_embed.base import FusedBackend


def library() -> ctypes.CDLL:
    so = nvcc.build("subword_embed")
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    so.xlfast_subword_embed_forward_f32.argtypes = [p, p, p, p, p, p, i64, i64, p]
    so.xlfast_subword_embed_grad_pieces_f32.argtypes = [p, p, p, p, p, i64, i64, p]
    for fn in (so.xlfast_subword_embed_forward_f32, so.xlfast_subword_embed_grad_pieces_f32):
        fn.restype = ctypes.c_int  # cudaError_t
    return so


class CudaSubwordEmbed(FusedBackend):
    name = "cuda"

    def __init__(self, so: ctypes.CDLL):
        self._forward = so.xlfast_subword_embed_forward_f32
        self._grad_pieces = so.xlfast_subword_embed_grad_pieces_f32

    @staticmethod
    def _check(*tensors: torch.Tensor) -> None:
        if any(t.dtype != torch.float32 or t.device.type != "cuda" for t in tensors):
            raise XlfastError("subword_embed backend 'cuda' takes float32 CUDA tensors; use 'torch' or 'triton'")

    @staticmethod
    def _done(what: str, err: int) -> None:
        if err != 0:
            raise XlfastError(f"subword_embed backend 'cuda': {what} launch failed (cudaError {err})")

    def forward_into(self, E, Z, layout, ids, out):
        self._check(E, Z, out)
        rows = layout.all_rows() if ids is None else ids
        n, d = out.shape
        self._done("forward", self._forward(E.data_ptr(), Z.data_ptr(), layout.offsets.data_ptr(),
                                            layout.pieces.data_ptr(), rows.data_ptr(), out.data_ptr(), n, d,
                                            nvcc.stream_handle(out.device)))

    def grad_pieces_into(self, g, layout, ids, grad_Z):
        self._check(g, grad_Z)
        rows = layout.all_rows() if ids is None else ids
        grad_Z.zero_()  # the kernel adds into it
        n, d = g.shape
        self._done("backward", self._grad_pieces(g.data_ptr(), layout.offsets.data_ptr(), layout.pieces.data_ptr(),
                                                 rows.data_ptr(), grad_Z.data_ptr(), n, d,
                                                 nvcc.stream_handle(g.device)))


def load() -> CudaSubwordEmbed:
    nvcc.require_gpu()
    return CudaSubwordEmbed(library())
