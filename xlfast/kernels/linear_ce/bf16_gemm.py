"""bf16 × bf16 → float32 GEMMs on the CPU, with float32 accumulation into the output (β = 1).

Torch's CPU `mm` on bf16 inputs writes bf16, so the fused output layer's weight gradient (summed over
row chunks) needed a bf16 product per chunk and a float32 add of it into dW, which promoted into a fresh
40 MB temporary each chunk, and the input gradient came from a oneDNN matmul whose weight layout
([V, d], K = V) ran at half the forward's speed. The MKL inside torch's x86 builds exports
`cblas_gemm_bf16bf16f32` (AMX / AVX512-BF16 where the CPU has them): bf16 operands, float32 result, and
`C = α·op(A)·op(B) + β·C`, so each chunk's dW product is added in float32 inside the GEMM.

`works()` says whether this torch has it and it gives the right answer on a small product (checked
once), `available()` whether the fused layer uses it; callers keep their torch path where it does not.
"""
from __future__ import annotations

import ctypes
import functools
import os

import torch

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


@functools.cache
def _symbol():
    try:
        lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
        fn = lib.cblas_gemm_bf16bf16f32
    except (OSError, AttributeError):
        return None
    i, f, p = ctypes.c_int, ctypes.c_float, ctypes.c_void_p  # MKL_INT is int in torch's LP64 MKL
    fn.argtypes = [i, i, i, i, i, i, f, p, i, p, i, f, p, i]
    fn.restype = None
    return fn


def _operand(t: torch.Tensor) -> tuple[int, int]:
    """(transpose flag, leading dimension) of a row-major matrix or a transposed view of one."""
    if t.dtype != torch.bfloat16 or t.dim() != 2 or t.device.type != "cpu":
        raise ValueError(f"bf16_gemm: operands must be 2-D bf16 CPU matrices, got {t.dtype} {tuple(t.shape)}")
    if t.stride(1) == 1 and t.stride(0) >= max(t.shape[1], 1):
        return _NO_TRANS, t.stride(0)
    if t.stride(0) == 1 and t.stride(1) >= max(t.shape[0], 1):
        return _TRANS, t.stride(1)
    raise ValueError(f"bf16_gemm: operand with strides {t.stride()} is neither row- nor column-major")


def mm_into(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, accumulate: bool = False) -> torch.Tensor:
    """out = a @ b (accumulate=False) or out += a @ b, with a [m, k] and b [k, n] bf16 (row-major or
    transposed views), out [m, n] float32 row-major. Call only where `works()`."""
    m, k = a.shape
    n = b.shape[1]
    if b.shape[0] != k or out.shape != (m, n) or out.dtype != torch.float32 or out.stride(1) != 1:
        raise ValueError(f"bf16_gemm: shapes {tuple(a.shape)} @ {tuple(b.shape)} -> {tuple(out.shape)} {out.dtype}")
    ta, lda = _operand(a)
    tb, ldb = _operand(b)
    if m and n:
        _symbol()(_ROW_MAJOR, ta, tb, m, n, k, 1.0, a.data_ptr(), lda, b.data_ptr(), ldb,
                  1.0 if accumulate else 0.0, out.data_ptr(), out.stride(0))
    return out


def available() -> bool:
    """Whether the fused layer uses `mm_into`: only on CPUs with native bf16 arithmetic (AVX512-BF16 /
    AMX), where training runs bf16 GEMMs at all, and only where it `works()`."""
    from xlfast.kernels.dispatch import bf16_native

    return bf16_native("cpu") and works()


@functools.cache
def works() -> bool:
    """Whether this torch has the GEMM and it agrees with torch on a small product of every layout it is
    used with (checked once, so MKL's bf16 path is never trusted untried; elsewhere than on native-bf16
    CPUs MKL emulates it: slower, the same products)."""
    if _symbol() is None:
        return False
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(37, 19, generator=gen).bfloat16()
    b = torch.randn(23, 19, generator=gen).bfloat16()
    want = a.float() @ b.float().t()
    out = torch.full((37, 23), 1.0)
    try:
        mm_into(a, b.t(), out, accumulate=True)   # transposed B, β = 1
        ok = torch.allclose(out, want + 1.0, atol=1e-3, rtol=1e-3)
        mm_into(a.t().contiguous().t(), b.t().contiguous(), out)  # transposed A, plain B, β = 0
        return ok and torch.allclose(out, want, atol=1e-3, rtol=1e-3)
    except (ValueError, OSError):
        return False
