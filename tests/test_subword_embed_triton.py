"""The Triton subword-average kernels against the torch reference, run by Triton's CPU interpreter.

TRITON_INTERPRET must be set before triton is imported, so the check runs in a fresh interpreter.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")

SCRIPT = textwrap.dedent("""
    import torch
    from xlfast.kernels.subword_embed import PieceLayout
    from xlfast.kernels.subword_embed.reference import reference_subword_embed
    from xlfast.kernels.subword_embed.triton import TritonSubwordEmbed

    gen = torch.Generator().manual_seed(0)
    words = [[3], [0, 1, 2, 3, 4, 5, 0, 1, 1, 1, 1, 2], [5, 5], [2, 4, 2]]
    words += [torch.randint(0, 6, (int(torch.randint(1, 5, (1,), generator=gen)),), generator=gen).tolist()
              for _ in range(9)]
    layout = PieceLayout.from_lists(words, num_pieces=6)
    kernel = TritonSubwordEmbed()
    for d in (1, 37, 130):  # odd widths: the column masks of a power-of-two block
        E, Z = torch.randn(len(words), d, generator=gen), torch.randn(7, d, generator=gen)  # row 6 unused
        for ids in (None, torch.tensor([3, 1, 1, 12, 0])):
            n = len(words) if ids is None else ids.numel()
            g = torch.randn(n, d, generator=gen)
            Er, Zr = E.clone().requires_grad_(), Z.clone().requires_grad_()
            ref = reference_subword_embed(Er, Zr, layout, ids)
            ref.backward(g)
            out = torch.empty(n, d)
            kernel.forward_into(E, Z, layout, ids, out)
            grad_Z = torch.full_like(Z, float("nan"))  # the kernel must overwrite every row
            kernel.grad_pieces_into(g, layout, ids, grad_Z)
            torch.testing.assert_close(out, ref.detach(), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(grad_Z, Zr.grad, atol=1e-5, rtol=1e-5)
            assert float(grad_Z[6].abs().max()) == 0.0
    print("TRITON_OK")
""")


def test_triton_kernels_match_reference_in_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "TRITON_OK" in proc.stdout, proc.stderr[-3000:]
