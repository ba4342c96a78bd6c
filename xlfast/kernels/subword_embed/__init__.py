"""Subword-aware embeddings, fused: `out[w] = E[w] + mean_{p in pieces(w)} Z[p]` (SWave, Wada et al. 2021, §3.1).

Weight tying means every training step needs this for the whole target vocabulary, forward and backward,
so it is a hot path. The pieces of each word are a CSR (`PieceLayout`, built once per vocabulary); the
mean is a *true* mean over the word's pieces (the authors' released code divides a padded sum, a bug).

Backends (`registry`, ranked per device by measurement, see `xlfast bench embed`; a call runs on the device
of its tensors): on the CPU C++/OpenMP when built (cpp.py; its dropout masks vectorised, so first with
dropout) and Numba (numba.py, always there), both partitioning the piece table between threads in the
backward (no atomics, no private copies, deterministic); on a GPU Triton (triton.py); the plain-torch
reference (`embedding_bag(mode="mean")` + add, reference.py) on any device, which every other backend is
tested against; and csrc/cuda/subword_embed.cu (cuda.py), behind Triton on a GPU.

Dropout (one mask per table per call, as in the authors' released code) is fused: `piece_dropout` /
`word_dropout` masks are a counter-based hash of the element index, recomputed in the backward, never a
stored Bernoulli draw (torch's `F.dropout` on a 50k x 500 table alone took ~525 ms here).

Memory: the kernel is memory-bound, and a fresh 100 MB output costs more than the kernel itself (page
faults), so outputs and piece gradients come from a small pool that hands a buffer out again only once
nobody else holds it. With `ids=None` the gradient for `E` *is* the incoming gradient: no copy at all.
"""
from __future__ import annotations

import torch

from xlfast.errors import XlfastError
from xlfast.kernels.dispatch import KernelRegistry, load_from
from xlfast.kernels.subword_embed.base import FusedBackend, PieceLayout, drop_spec
from xlfast.kernels.subword_embed.reference import TorchReference

__all__ = ["PieceLayout", "subword_embed", "table_dropout", "FusedBackend", "registry"]

registry = KernelRegistry("subword_embed")


# Ranks follow `xlfast bench embed --training` on the 2-core CPU this was built on (V=50k, d=500, P=8k, 3 pieces
# per word, fwd+bwd as a training step, one loaded run, load average ~7): with dropout 0.5 (training's
# default) C++ 249 ms, Numba 320 ms, torch 2784 ms at 2 threads, 193 / 294 / 2225 ms at 1 thread (the C++
# masks hash in 32-bit lanes); without dropout the two are level (forward and backward within noise). So
# C++ goes first where it is built, Numba (always installed) next.
registry.register("cpp", load_from("xlfast.kernels.subword_embed.cpp", "CppSubwordEmbed"), devices={"cpu": 10})
registry.register("numba", load_from("xlfast.kernels.subword_embed.numba", "NumbaSubwordEmbed"), devices={"cpu": 20})
registry.register("triton", load_from("xlfast.kernels.subword_embed.triton", "TritonSubwordEmbed"),
                  devices={"cuda": 10})
# On a GPU (benchmarks/bench_gpu.py on an H200, V=50k, d=500, forward + backward): the CUDA kernel 0.54 ms,
# Triton 0.60 ms, embedding_bag + add 0.97 ms. Triton goes first all the same: the CUDA kernel is built with
# nvcc at first use (seconds, and only where nvcc is installed) for a 10% gain on a sub-millisecond kernel.
registry.register("torch", TorchReference, devices={"cpu": 90, "cuda": 90})
registry.register("cuda", load_from("xlfast.kernels.subword_embed.cuda", "load"), devices={"cuda": 20})


def subword_embed(E: torch.Tensor, Z: torch.Tensor, layout: PieceLayout, ids: torch.Tensor | None = None,
                  *, backend: str | None = None, piece_dropout: float = 0.0, word_dropout: float = 0.0,
                  output_dropout: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """`E[w] + mean(Z[pieces(w)])` for every word (`ids=None`, shape [V, d]) or for `ids` ([len(ids), d]).

    Differentiable in `E` and `Z`. `backend` forces one ('torch', 'numba', 'cpp', 'triton', 'cuda'); a
    forced backend that cannot run raises instead of falling back. `piece_dropout` > 0 drops elements of
    the piece table (one mask per call, scaled by 1/(1-p)) inside the kernel; its seeds come from
    `generator` (torch's default generator when None). `word_dropout` does the same for the word table `E`
    (the whole matrix, once per call), ~14x faster here than `F.dropout(E)` (36 vs 525 ms at 50k x 500)
    because the mask is a hash, not a stored Bernoulli draw. `output_dropout` drops elements of the result
    table instead (a drop-in for `F.dropout(subword_embed(...), p)`; needs `ids=None`, as the mask belongs
    to the word type). Pass 0 at evaluation time.
    """
    _check_inputs(E, Z, layout, ids)
    if ids is not None:
        ids = ids.reshape(-1).to(device=E.device, dtype=torch.int64)
    if layout.device != E.device:
        layout = layout.to(E.device)
    drop = drop_spec(float(piece_dropout), generator, "piece_dropout")
    drop_words = drop_spec(float(word_dropout), generator, "word_dropout")
    drop_out = drop_spec(float(output_dropout), generator, "output_dropout")
    if drop_out is not None and ids is not None:
        raise XlfastError("subword_embed: output_dropout needs ids=None (one mask per word type); index the "
                          "full table, or use word_dropout/piece_dropout")
    _, impl = registry.choose(E.device.type, backend)
    return impl(E, Z, layout, ids, drop, drop_words, drop_out)


def table_dropout(X: torch.Tensor, p: float, *, backend: str | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """`F.dropout(X, p)` for a 2-D table with the same hashed masks as the fused lookup (one mask per
    call; the word-level model's embedding matrix and the SWcnn output use it): ~10x cheaper than
    torch's Bernoulli draw at 50k x 500 here."""
    drop = drop_spec(float(p), generator, "dropout")
    if drop is None:
        return X
    if X.dim() != 2:
        raise XlfastError(f"table_dropout: expected a [rows, d] table, got shape {tuple(X.shape)}")
    _, impl = registry.choose(X.device.type, backend)
    return impl.table_dropout(X, drop)


def _check_inputs(E: torch.Tensor, Z: torch.Tensor, layout: PieceLayout, ids: torch.Tensor | None) -> None:
    if E.dim() != 2 or Z.dim() != 2 or E.shape[1] != Z.shape[1]:
        raise XlfastError(f"subword_embed: E {tuple(E.shape)} and Z {tuple(Z.shape)} must be [V, d] and [P, d]")
    if E.dtype != Z.dtype or E.device != Z.device:
        raise XlfastError(f"subword_embed: E and Z differ in dtype or device ({E.dtype}/{Z.dtype}, "
                          f"{E.device}/{Z.device})")
    if E.shape[0] != layout.num_words:
        raise XlfastError(f"subword_embed: E has {E.shape[0]} rows but the layout {layout.num_words} words")
    if Z.shape[0] < layout.num_pieces:
        raise XlfastError(f"subword_embed: Z has {Z.shape[0]} rows but the layout uses {layout.num_pieces} pieces")
    if ids is not None and ids.numel():
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= layout.num_words:
            raise XlfastError(f"subword_embed: word ids must lie in [0, {layout.num_words}), got [{lo}, {hi}]")
