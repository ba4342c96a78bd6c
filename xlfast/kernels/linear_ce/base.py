"""The chunked driver every fused backend shares: the GEMMs in BLAS into reused buffers, the row pass
(log-sum-exp, loss, logit gradient in place) in the backend's kernel.

For each chunk of rows X_c (targets t_c):
    L_c = X_c · Wᵀ (+ b)                      one GEMM into a reused [chunk, V] buffer
    loss_c, L_c ← softmax(L_c) − onehot(t_c)  the backend's row pass, in place (fp32 log-sum-exp)
    dX_c = L_c · W                            straight into the rows of dX
    dW  += L_cᵀ · X_c                         accumulated in place (the first chunk writes, β = 0)
so the [N, V] logits never exist and each chunk's logits are read by the two gradient GEMMs while still
in cache. Everything is done in the forward (as Liger-Kernel's fused linear cross-entropy does); the
backward only scales the stored gradients by the incoming one.

Rows whose target is `ignore_index` (padding) are dropped before the first GEMM: they cost nothing.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

import xlfast.kernels.linear_ce.bf16_gemm as bf16_gemm
from xlfast.errors import XlfastError

try:  # the tiled transpose of the table (csrc/cpu/linear_ce.cpp); torch's strided copy where not built
    from xlfast import _linear_ce_cpu as _ext
except ImportError:  # pragma: no cover - depends on the build
    _ext = None

# Bytes of the reused logits chunk; rows per chunk = this / (V · bytes held per logit), at least
# MIN_CHUNK_ROWS. The three GEMMs of a chunk have the chunk's rows as one dimension (dW's accumulation has
# them as K, and reads and writes all of dW per chunk): below ~256 rows MKL ran them at half speed on the
# 2-core EPYC. On the 2-core AMX CPU, N = 4096, V = 20k, d = 500, bf16 (`xlfast bench linear-ce --training
# --chunk-mb 32,128,160,256`, 7 alternated rounds): 589 / 520 / 538 / 522 ms a step, and 32 / 64 / 160 MB
# 587 / 557 / 537 and 638 / 603 / 577 ms in two more runs; float32 rows 1,233 / 1,163 ms at 32 / 128 MB.
# 128 MB (≈1,700 float32 or ≈3,400 bf16 rows at V = 20k) takes 155 MB at its peak against 1,495 MB for
# the materialised logits.
CHUNK_BYTES = 128 << 20
MIN_CHUNK_ROWS = 128


class RowKernel:
    """A backend's row pass. `rows_(logits, target, bias, loss, grad)`: for every row r of `logits`
    ([C, V], contiguous, modified in place), loss[r] = logsumexp(x_r) − x_r[target[r]] with x_r =
    logits[r] (+ bias), computed in fp32; with `grad`, logits[r] becomes softmax(x_r) − onehot(target[r]).
    Targets lie in [0, V). `takes_bf16`: `logits` may also be bf16 (computed in fp32 all the same, the
    gradient rounded back to bf16)."""

    name = "base"
    takes_bf16 = False

    def rows_(self, logits, target, bias, loss, grad: bool) -> None:  # pragma: no cover - interface
        raise NotImplementedError


def chunk_rows(n: int, num_classes: int, elem_size: int, chunk_bytes: int | None = None) -> int:
    """Rows per chunk for `n` rows against `num_classes` classes. `chunk_bytes` given: as many rows as fit
    in it (at least one); None: CHUNK_BYTES, read at call time, with at least MIN_CHUNK_ROWS rows."""
    row_bytes = max(num_classes * elem_size, 1)
    if chunk_bytes is None:
        rows = max(MIN_CHUNK_ROWS, CHUNK_BYTES // row_bytes)
    elif chunk_bytes < 1:
        raise XlfastError(f"linear_cross_entropy: chunk_bytes must be positive, got {chunk_bytes}")
    else:
        rows = chunk_bytes // row_bytes
    return max(1, min(n, rows))


_workspace = threading.local()


def logits_buffer(rows: int, cols: int, dtype: torch.dtype, device: torch.device, slot: str = "logits") -> torch.Tensor:
    """A [rows, cols] view of a per-thread buffer that only grows: a fresh buffer every call would be
    faulted in page by page (the point of chunking is that these logits never cost memory traffic).
    `slot` names a buffer of its own (the bf16 path also keeps the cast table and a chunk's dW)."""
    key = (slot, dtype, torch.device(device))
    pool = getattr(_workspace, "buffers", None)
    if pool is None:
        pool = _workspace.buffers = {}
    buf = pool.get(key)
    if buf is None or buf.numel() < rows * cols:
        buf = pool[key] = torch.empty(rows * cols, dtype=dtype, device=device)
    return buf[: rows * cols].view(rows, cols)


def release_workspace() -> None:
    """Free this thread's logits buffers (they are kept between calls on purpose)."""
    _workspace.buffers = {}


def transposed_bf16(table: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out [d, V] (bf16) = table [V, d] (float32) transposed and rounded, for the bf16 forward GEMM.

    oneDNN's bf16 GEMM ran X · Wᵀ 1.4-2.3x faster against a contiguous [d, V] table than against the
    transposed view of a [V, d] one (2-core AMX CPU, d = 500: 3,400 × 20k rows 57 → 25 ms, 1,300 × 4k 3.6 →
    2.6 ms, 512 × 3k 1.0 → 0.6 ms), and MKL reads the same [d, V] buffer for the input gradient as fast as
    a [V, d] one. The C++ tiled transpose costs 3-6 ms at 20k × 500 where torch's strided copy costs 13-16.
    """
    if _ext is not None and table.is_contiguous() and table.dtype == torch.float32 and table.device.type == "cpu":
        _ext.transpose_to_bf16(table.detach().numpy(), out.view(torch.int16).numpy(), torch.get_num_threads())
        return out
    return out.copy_(table.t())


# oneDNN compiles a bf16 GEMM kernel for every new row count it meets (7-10 ms each, against 0.3 ms for the
# product itself at 190 × 692 × 500 on the 2-core AMX CPU), and a training step's row count (its non-padding
# targets) is new most steps: the forward GEMM runs on a multiple of ROW_BUCKET rows, zero rows appended.
ROW_BUCKET = 64


def forward_bf16(Xc: torch.Tensor, Wt: torch.Tensor) -> torch.Tensor:
    """Xc [m, d] · Wt [d, V] into the reused logits buffer, as a [m, V] view, with the GEMM run on
    `m` rounded up to ROW_BUCKET rows (the rows beyond `m` are zeros in a reused input buffer)."""
    m, d = Xc.shape
    padded = -(-m // ROW_BUCKET) * ROW_BUCKET
    L = logits_buffer(padded, Wt.shape[1], Xc.dtype, Xc.device)
    if padded != m:
        Xp = logits_buffer(padded, d, Xc.dtype, Xc.device, "rows")
        Xp[:m].copy_(Xc)
        Xp[m:].zero_()
        Xc = Xp
    torch.mm(Xc, Wt, out=L)
    return L[:m]


@dataclass
class Result:
    """Loss (fp32 scalar) and the gradients of the summed loss, formed in the forward."""

    loss: torch.Tensor
    grad_x: torch.Tensor | None
    grad_weight: torch.Tensor | None
    grad_bias: torch.Tensor | None


def fused_forward(kernel: RowKernel, x: torch.Tensor, weight: torch.Tensor, target: torch.Tensor,
                  bias: torch.Tensor | None, ignore_index: int, first_class: int, need_x: bool, need_weight: bool,
                  need_bias: bool, chunk_bytes: int | None = None) -> Result:
    """Summed cross-entropy of `x @ weight[first_class:].T (+ bias)` against `target`, and (as asked) its
    gradients with respect to x, the whole `weight` (rows before `first_class` get zeros) and `bias`."""
    N, d = x.shape
    # bf16 rows on a CPU (x bf16, weight float32): bf16 GEMMs (AMX / AVX512-BF16), while the row pass
    # (log-sum-exp, softmax gradient) reads and writes float32 logits. Torch's CPU GEMMs cannot write
    # float32 from bf16 inputs, hence a bf16 copy of each chunk's logits and of its gradient. The weight
    # gradient sums the chunks in float32: inside MKL's bf16→float32 GEMM (β = 1) where torch has it
    # (`bf16_gemm`), which also writes the input gradient in float32, else a bf16 product per chunk added.
    bf16_rows = x.dtype == torch.bfloat16 and x.device.type == "cpu" and weight.dtype == torch.float32
    mkl = bf16_rows and bf16_gemm.available()
    V = weight.shape[0] - first_class
    if bf16_rows:
        Wt = transposed_bf16(weight[first_class:], logits_buffer(d, V, x.dtype, x.device, "table"))
        W = Wt.t()
    else:
        W = weight[first_class:].to(x.dtype)
        Wt = W.t()
    keep = target != ignore_index
    rows = torch.nonzero(keep).squeeze(1)
    n = rows.numel()
    dense = n == N
    X = x if dense else x.index_select(0, rows)
    T = target if dense else target.index_select(0, rows)
    if n:
        low, high = torch.aminmax(T)
        if int(low) < 0 or int(high) >= V:
            raise XlfastError(f"linear_cross_entropy: targets must lie in [0, {V}) or be the ignore_index "
                              f"{ignore_index}; got {int(low)}..{int(high)}")
    losses = torch.empty(n, dtype=torch.float32, device=x.device)
    grad = need_x or need_weight or need_bias
    dX = torch.empty(n, d, dtype=torch.float32 if mkl else x.dtype, device=x.device) if need_x else None
    dW_full = torch.empty_like(weight) if need_weight else None
    dW = dW_full[first_class:] if need_weight else None
    db = torch.zeros(V, dtype=torch.float32, device=x.device) if need_bias else None
    # bytes per logit held: the GEMM's buffer, plus a float32 copy where the row pass cannot read bf16
    held = x.element_size() + (4 if bf16_rows and not kernel.takes_bf16 else 0)
    step = chunk_rows(n, V, held, chunk_bytes)
    for start in range(0, n, step):
        stop = min(start + step, n)
        Xc = X[start:stop]
        if bf16_rows:
            Lg = forward_bf16(Xc, Wt)  # bf16 logits, then the bf16 gradient
            # the row pass computes in fp32: on the bf16 chunk itself where the backend reads bf16, else on a copy
            Lc = Lg if kernel.takes_bf16 else logits_buffer(stop - start, V, torch.float32, x.device).copy_(Lg)
        else:
            Lg = Lc = logits_buffer(stop - start, V, x.dtype, x.device)
            torch.mm(Xc, Wt, out=Lc)
        kernel.rows_(Lc, T[start:stop], bias, losses[start:stop], grad)
        if Lg is not Lc and (need_x or need_weight):
            Lg.copy_(Lc)
        if need_x:
            if mkl:
                bf16_gemm.mm_into(Lg, W, dX[start:stop])
            else:
                torch.mm(Lg, W, out=dX[start:stop])
        if need_weight:
            if mkl:
                bf16_gemm.mm_into(Lg.t(), Xc, dW, accumulate=start > 0)
            elif bf16_rows:  # a bf16 product per chunk, summed in float32
                part = torch.mm(Lg.t(), Xc, out=logits_buffer(V, d, x.dtype, x.device, "grad_weight"))
                dW.copy_(part) if start == 0 else dW.add_(part)
            elif start == 0:
                torch.mm(Lg.t(), Xc, out=dW)
            else:
                dW.addmm_(Lg.t(), Xc)
        if need_bias:
            db += Lc.sum(0, dtype=torch.float32)
    if need_weight:
        dW_full[:first_class].zero_()
        if n == 0:
            dW.zero_()
    if need_x and mkl:
        dX = dX.to(x.dtype)
    if need_x and not dense:
        dX = torch.zeros_like(x).index_copy_(0, rows, dX)
    if need_bias:
        db = db.to(bias.dtype)
    return Result(losses.sum(dtype=torch.float64).to(torch.float32), dX, dW_full, db)
