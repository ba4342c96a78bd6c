"""The Triton row pass of the fused linear cross-entropy, driven by the shared chunked driver, against the
fp64 reference, run by Triton's CPU interpreter (TRITON_INTERPRET must be set before triton is imported,
so the check runs in a fresh interpreter)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")

SCRIPT = textwrap.dedent("""
    import torch
    from xlfast.kernels.linear_ce import reference_linear_cross_entropy
    from xlfast.kernels.linear_ce.base import fused_forward
    from xlfast.kernels.linear_ce.triton import TritonRows

    gen = torch.Generator().manual_seed(0)
    # (N, V, d): V below, across and far above the 4,096-wide block; ragged last chunks of 16 rows
    for N, V, d in ((37, 5, 8), (70, 300, 16), (5, 5000, 8), (3, 1, 4)):
        x = torch.randn(N, d, generator=gen)
        W = torch.randn(V + 1, d, generator=gen)
        t = torch.randint(0, V, (N,), generator=gen)
        t[::3] = -1
        for b in (None, torch.randn(V, generator=gen)):
            got = fused_forward(TritonRows(), x, W, t, b, -1, 1, True, True, b is not None, chunk_bytes=16 * V * 4)
            grads = []
            for dtype in (torch.float64, torch.float32):
                xr, Wr = x.to(dtype, copy=True).requires_grad_(), W.to(dtype, copy=True).requires_grad_()
                br = None if b is None else b.to(dtype, copy=True).requires_grad_()
                loss = reference_linear_cross_entropy(xr, Wr, t, br, ignore_index=-1, first_class=1)
                loss.backward()
                grads.append([loss.detach().double()] + [v.grad.double() for v in (xr, Wr, br) if v is not None])
            exact, fp32 = grads
            mine = [got.loss.double(), got.grad_x.double(), got.grad_weight.double()]
            mine += [] if b is None else [got.grad_bias.double()]
            for a, r, e in zip(mine, fp32, exact):
                floor = 8 * torch.finfo(torch.float32).eps * max(float(e.abs().max()), 1.0)
                assert float((a - e).abs().max()) <= 2 * float((r - e).abs().max()) + floor, (N, V, d)
            assert float(got.grad_weight[0].abs().max()) == 0.0
    print("TRITON_OK")
""")


def test_triton_row_pass_matches_reference_in_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "TRITON_OK" in proc.stdout, proc.stderr[-3000:]
