"""Fused output layer: the projection against the tied table and the summed cross-entropy, without the
[N × V] logits (Wada et al. 2021, §3: p(y_i) = softmax(Ẽ h'_i), weight tying with the subword-aware table).

`linear_cross_entropy(x, weight, target)` equals
`F.cross_entropy(F.linear(x, weight[first_class:], bias), target, ignore_index=…, reduction="sum")`
and its gradients for `x`, `weight` and `bias`. The rows are processed in chunks whose logits live in one
reused buffer; forward and backward happen in one pass over each chunk (`base.fused_forward`), so the
backward only scales the gradients the forward formed. Padding rows (`ignore_index`) are skipped.

Backends (`registry`; ranked by `xlfast bench linear-ce`): the row pass in C++ (vectorised exp) or Numba
on the CPU, in Triton on GPUs; the GEMMs in BLAS. `torch` is the plain reference (logits materialised).
The CPU backends compute in float32 on CPUs without AVX512-BF16/AMX, where bf16 GEMMs are emulated (measured
8 against 65-80 GFLOP/s for fp32 on an AVX2 EPYC), so inputs of another dtype are converted; where the CPU
has them, bf16 rows (autocast) keep bf16 GEMMs against the float32 table and a float32 row pass, the two
gradient GEMMs in MKL's bf16→float32 GEMM where torch carries it (`bf16_gemm`: dW summed in float32).

`sampled_cross_entropy` with a `UnigramSampler` turns it into a sampled softmax for training (candidates: the batch's targets plus words
drawn from unigram^0.75, with the log-Q correction).
"""
from __future__ import annotations

import torch

from xlfast.errors import XlfastError
from xlfast.kernels.dispatch import KernelRegistry, bf16_native
from xlfast.kernels.linear_ce.base import RowKernel, fused_forward
from xlfast.kernels.linear_ce.reference import reference_linear_cross_entropy
from xlfast.kernels.linear_ce.sampled import UnigramSampler

__all__ = ["linear_cross_entropy", "reference_linear_cross_entropy", "sampled_cross_entropy", "UnigramSampler",
           "registry"]


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, target, bias, kernel, ignore_index, first_class, chunk_bytes):
        need_x, need_w, _, need_b = ctx.needs_input_grad[:4]
        res = fused_forward(kernel, x, weight, target, bias, ignore_index, first_class, need_x, need_w, need_b,
                            chunk_bytes)
        ctx.grads = (res.grad_x, res.grad_weight, res.grad_bias)
        return res.loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        if ctx.grads is None:
            raise RuntimeError("linear_cross_entropy: the gradients were formed in the forward and already used; "
                               "run the forward again to backpropagate a second time")
        grads, ctx.grads = ctx.grads, None
        if not bool(g == 1):  # reduction "sum": every gradient scales by the incoming scalar, in place
            grads = tuple(None if t is None else t.mul_(g.to(t.dtype)) for t in grads)
        dx, dw, db = grads
        return dx, dw, None, db, None, None, None, None


class _Reference:
    name = "torch"


registry = KernelRegistry("linear_ce")


def _load_cpp() -> RowKernel:
    from xlfast.kernels.linear_ce.cpp import CppRows

    return CppRows()


def _load_numba() -> RowKernel:
    from xlfast.kernels.linear_ce.numba import NumbaRows

    return NumbaRows()


def _load_triton() -> RowKernel:
    from xlfast.kernels.linear_ce.triton import TritonRows

    return TritonRows()


# Ranks from `xlfast bench linear-ce` on a 2-core AVX2 EPYC: the C++ row pass (vector exp) is faster than
# Numba's (scalar libm exp); both run the same GEMMs.
registry.register("cpp", _load_cpp, devices=("cpu",), rank=10)
registry.register("numba", _load_numba, devices=("cpu",), rank=20)
registry.register("triton", _load_triton, devices=("cuda",), rank=10)
registry.register("torch", _Reference, devices=("cpu", "cuda"), rank=90)


def linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, target: torch.Tensor,
                         bias: torch.Tensor | None = None, *, ignore_index: int = -100, first_class: int = 0,
                         backend: str | None = None, chunk_bytes: int | None = None) -> torch.Tensor:
    """Summed cross-entropy of the logits `x @ weight[first_class:].T (+ bias)` against `target`.

    x: [N, d] rows; weight: [first_class + V, d] (the rows before `first_class`, e.g. a tied table's
    <pad>, are not classes and get a zero gradient); target: [N] class indices in [0, V) or
    `ignore_index`; bias: [V] or None. Returns a float32 scalar, differentiable in x, weight and bias.
    `backend` forces one ('cpp', 'numba', 'triton', 'torch'); a forced backend that cannot run raises.
    `chunk_bytes`: the size of the reused logits chunk (as many rows as fit, at least one); None: the
    built-in `base.CHUNK_BYTES`, read at each call.
    """
    _check(x, weight, target, bias, first_class)
    name, kernel = registry.choose(x.device.type, backend)
    if name == "torch":
        return reference_linear_cross_entropy(x, weight, target, bias, ignore_index=ignore_index,
                                              first_class=first_class).float()
    if x.device.type == "cpu" and x.dtype == torch.bfloat16 and bf16_native("cpu"):
        x, weight = x.contiguous(), weight.float().contiguous()  # bf16 GEMMs, float32 rows (base.fused_forward)
    else:
        dtype = torch.float32 if x.device.type == "cpu" else torch.promote_types(x.dtype, weight.dtype)
        x, weight = x.to(dtype).contiguous(), weight.to(dtype).contiguous()
    bias = None if bias is None else bias.to(torch.float32 if x.device.type == "cpu" else dtype).contiguous()
    target = target.to(torch.int64).contiguous()
    with torch.autocast(x.device.type, enabled=False):
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
            return _LinearCrossEntropy.apply(x, weight, target, bias, kernel, ignore_index, first_class,
                                             chunk_bytes)
        return fused_forward(kernel, x, weight, target, bias, ignore_index, first_class, False, False, False,
                             chunk_bytes).loss


def sampled_cross_entropy(sampler: UnigramSampler, x: torch.Tensor, weight: torch.Tensor, target: torch.Tensor,
                          lang: str, bias: torch.Tensor | None = None, *, ignore_index: int = -100,
                          first_class: int = 0, backend: str | None = None,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """Sampled counterpart of `linear_cross_entropy(x, weight, target, bias, ...)` for one language: over
    the candidates `sampler` draws for this batch, with their log-Q corrections as the bias."""
    cand, correction, mapped = sampler.candidates(lang, target, ignore_index, generator)
    W = weight.index_select(0, cand + first_class)
    b = correction if bias is None else bias.index_select(0, cand) + correction
    return linear_cross_entropy(x, W, mapped, b, ignore_index=ignore_index, backend=backend)


def _check(x, weight, target, bias, first_class) -> None:
    if x.dim() != 2 or weight.dim() != 2 or x.shape[1] != weight.shape[1]:
        raise XlfastError(f"linear_cross_entropy: x {tuple(x.shape)} and weight {tuple(weight.shape)} must be "
                          "[N, d] and [V, d]")
    if not 0 <= first_class < weight.shape[0]:
        raise XlfastError(f"linear_cross_entropy: first_class {first_class} leaves no class in {weight.shape[0]} rows")
    if target.shape != (x.shape[0],):
        raise XlfastError(f"linear_cross_entropy: target {tuple(target.shape)} must be [N] for x {tuple(x.shape)}")
    if bias is not None and bias.shape != (weight.shape[0] - first_class,):
        raise XlfastError(f"linear_cross_entropy: bias {tuple(bias.shape)} must have one entry per class "
                          f"({weight.shape[0] - first_class})")
