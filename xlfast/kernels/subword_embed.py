"""Subword-aware embeddings, fused: `out[w] = E[w] + mean_{p in pieces(w)} Z[p]` (SWave, METHOD.md §1, §8.6).

Weight tying means every training step needs this for the whole target vocabulary, forward and backward,
so it is a hot path. The pieces of each word are a CSR (`PieceLayout`, built once per vocabulary); the
mean is a *true* mean over the word's pieces (the authors' code divides a padded sum, a bug).

Backends (ranked by measurement, see `xlfast bench embed`): Numba CPU (always there), C++/OpenMP when
built (column sums blocked in registers; on par with Numba here), Triton on GPUs (CUDA source in csrc/cuda), and the plain-torch
reference (`embedding_bag(mode="mean")` + add), which every other backend is tested against. The CPU
backward partitions the piece table between threads: no atomics, no private copies, deterministic.

Dropout (METHOD.md §8.5, one mask per table per call) is fused: `piece_dropout` / `word_dropout` masks
are a counter-based hash of the element index, recomputed in the backward, never a stored Bernoulli draw
(torch's `F.dropout` on a 50k x 500 table alone took ~525 ms here).

Memory: the kernel is memory-bound, and a fresh 100 MB output costs more than the kernel itself (page
faults), so outputs and piece gradients come from a small pool that hands a buffer out again only once
nobody else holds it. With `ids=None` the gradient for `E` *is* the incoming gradient: no copy at all.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from xlfast.errors import XlfastError
from xlfast.kernels.dispatch import KernelRegistry

__all__ = ["PieceLayout", "subword_embed", "reference_subword_embed", "registry"]


class PieceLayout:
    """The SentencePiece pieces of every word as a CSR: word `w` uses `pieces[offsets[w]:offsets[w+1]]`.

    A word may repeat a piece (it then counts twice in the mean); every word has at least one piece.
    """

    def __init__(self, offsets: torch.Tensor, pieces: torch.Tensor, num_pieces: int, *, check: bool = True):
        self.offsets = torch.as_tensor(offsets, dtype=torch.int64).contiguous()
        self.pieces = torch.as_tensor(pieces, dtype=torch.int64, device=self.offsets.device).contiguous()
        self.num_pieces = int(num_pieces)
        if check:
            self._check()
        self._padded: tuple[torch.Tensor, torch.Tensor] | None = None

    def _check(self) -> None:
        off, pcs = self.offsets, self.pieces
        if off.dim() != 1 or off.numel() < 1 or int(off[0]) != 0 or int(off[-1]) != pcs.numel():
            raise XlfastError("piece layout: offsets must start at 0 and end at the number of pieces")
        if off.numel() > 1 and bool((off[1:] - off[:-1] <= 0).any()):
            bad = int(torch.nonzero(off[1:] - off[:-1] <= 0)[0])
            raise XlfastError(f"piece layout: word {bad} has no pieces (every word needs at least one)")
        if pcs.numel() and (int(pcs.min()) < 0 or int(pcs.max()) >= self.num_pieces):
            raise XlfastError(f"piece layout: piece ids must lie in [0, {self.num_pieces})")

    @classmethod
    def from_lists(cls, pieces_per_word: list[list[int]], num_pieces: int) -> "PieceLayout":
        counts = [len(p) for p in pieces_per_word]
        offsets = torch.zeros(len(counts) + 1, dtype=torch.int64)
        if counts:
            offsets[1:] = torch.cumsum(torch.tensor(counts, dtype=torch.int64), 0)
        flat = [p for word in pieces_per_word for p in word]
        return cls(offsets, torch.tensor(flat, dtype=torch.int64), num_pieces)

    @property
    def num_words(self) -> int:
        return self.offsets.numel() - 1

    @property
    def counts(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    @property
    def device(self) -> torch.device:
        return self.offsets.device

    def to(self, device) -> "PieceLayout":
        device = torch.device(device)
        if device == self.device:
            return self
        return PieceLayout(self.offsets.to(device), self.pieces.to(device), self.num_pieces, check=False)

    def padded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`[V, Lmax]` piece ids (padding 0) and the bool mask of real slots, for the SWcnn torch path."""
        if self._padded is None:
            counts = self.counts
            width = int(counts.max()) if counts.numel() else 0
            slot = torch.arange(width, device=self.device)
            mask = slot[None, :] < counts[:, None]
            ids = torch.zeros(self.num_words, width, dtype=torch.int64, device=self.device)
            ids[mask] = self.pieces
            self._padded = (ids, mask)
        return self._padded

    def all_rows(self) -> torch.Tensor:
        """`arange(V)`, kept: kernels take an explicit row list, and ids=None means every word."""
        if getattr(self, "_all_rows", None) is None or self._all_rows.device != self.device:
            self._all_rows = torch.arange(self.num_words, device=self.device)
        return self._all_rows

    def inv_counts(self, dtype: torch.dtype) -> torch.Tensor:
        """1 / pieces per word, in the tables' dtype (kernels multiply by it without promoting)."""
        cache = self.__dict__.setdefault("_inv_counts", {})
        if dtype not in cache:
            cache[dtype] = (1.0 / self.counts.to(torch.float64)).to(dtype)
        return cache[dtype]

    def gather(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The CSR (offsets, pieces) of the rows `ids` (repeats allowed), in that order."""
        starts = self.offsets[ids]
        counts = self.offsets[ids + 1] - starts
        new_offsets = torch.zeros(ids.numel() + 1, dtype=torch.int64, device=self.device)
        torch.cumsum(counts, 0, out=new_offsets[1:])
        nnz = int(new_offsets[-1])
        within = torch.arange(nnz, device=self.device) - torch.repeat_interleave(new_offsets[:-1], counts)
        return new_offsets, self.pieces[torch.repeat_interleave(starts, counts) + within]


def reference_subword_embed(E: torch.Tensor, Z: torch.Tensor, layout: PieceLayout,
                            ids: torch.Tensor | None = None) -> torch.Tensor:
    """The plain-torch definition every backend is tested against (autograd does the backward)."""
    if ids is None:
        offsets, pieces, rows = layout.offsets, layout.pieces, E
    else:
        offsets, pieces = layout.gather(ids)
        rows = E.index_select(0, ids)
    return rows + F.embedding_bag(pieces, Z, offsets, mode="mean", include_last_offset=True)


def _mix32(h: torch.Tensor) -> torch.Tensor:
    m = 0xFFFFFFFF
    h = h ^ (h >> 16)
    h = (h * 0x7FEB352D) & m
    h = h ^ (h >> 15)
    h = (h * 0x846CA68B) & m  # may wrap past 2**63: the low 32 bits stay right
    return h ^ (h >> 16)


def dropout_keep(shape: tuple[int, int], drop: tuple[int, int, float], device=None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The dropout mask as numbers (`scale` where kept, 0 where dropped) for `drop = (key, threshold, scale)`.

    Element (r, j) of a [rows, d] table is kept iff mix32((r*d + j) ^ key) >= threshold: a counter-based
    hash, so every backend (and the backward) recomputes the same mask without storing it, and one mask
    covers the whole table for one call. Over calls, the random 32-bit key makes each element's fate
    uniform; one mixing round suffices for that and is half the cost of two.
    """
    key, threshold, scale = drop
    rows, d = shape
    x = torch.arange(rows * d, dtype=torch.int64, device=device).view(rows, d) & 0xFFFFFFFF
    return (_mix32(x ^ key) >= threshold).to(dtype) * scale


def _drop_spec(p: float, generator: torch.Generator | None, what: str) -> tuple[int, int, float] | None:
    if p == 0.0:
        return None
    if not 0.0 <= p < 1.0:
        raise XlfastError(f"{what} must lie in [0, 1), got {p}")
    key = int(torch.randint(0, 2**32, (1,), generator=generator, dtype=torch.int64))
    return key, min(int(round(p * 2**32)), 2**32 - 1), 1.0 / (1.0 - p)


# The storage use count is a private torch API (present in 2.1-2.13); without it, no pooling.
_CAN_POOL = hasattr(torch._C, "_storage_Use_Count")


class BufferPool:
    """Reuses large buffers whose previous user has let go (a fresh 100 MB tensor costs ~29 ms here).

    A handed-out tensor is a new view of a pooled storage; the storage's use count tells whether any
    earlier output (or a graph that saved it) is still alive, in which case another buffer is used. A
    few buffers per shape: the forward output is still alive while the backward wants grad_E.
    """

    def __init__(self, min_bytes: int = 1 << 20, per_shape: int = 4):
        self.min_bytes = min_bytes
        self.per_shape = per_shape
        self._buffers: dict[tuple, list[tuple[torch.Tensor, int]]] = {}

    @staticmethod
    def _uses(t: torch.Tensor) -> int:
        return torch._C._storage_Use_Count(t.untyped_storage()._cdata)

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        numel = 1
        for s in shape:
            numel *= s
        if numel * torch.empty((), dtype=dtype).element_size() < self.min_bytes or not _CAN_POOL:
            return torch.empty(shape, dtype=dtype, device=device)
        held = self._buffers.setdefault((tuple(shape), dtype, torch.device(device)), [])
        buf = next((b for b, idle in held if self._uses(b) == idle), None)
        if buf is None:
            buf = torch.empty(shape, dtype=dtype, device=device)
            held.append((buf, self._uses(buf)))
            if len(held) > self.per_shape:
                held.pop(0)  # still in use by someone: let them keep it, stop tracking it
        return torch.empty(0, dtype=dtype, device=device).set_(buf.untyped_storage(), 0, buf.shape, buf.stride())

    def clear(self) -> None:
        self._buffers.clear()


_pool = BufferPool()


class FusedBackend:
    """A backend that writes the forward into a given buffer and the piece gradient into another.

    Subclasses implement `forward_into(E, Z, layout, ids, out)` and `grad_pieces_into(g, layout, ids,
    grad_Z)` (every row of grad_Z written); inputs are contiguous and on the backend's device.
    `dropout_into(X, drop, out)` applies the piece-dropout mask (`dropout_keep`); this default runs in
    torch, backends override it with a kernel.
    """

    name = "fused"

    def dropout_into(self, X, drop, out):
        torch.mul(X, dropout_keep(tuple(X.shape), drop, X.device, X.dtype), out=out)

    def forward_into(self, E, Z, layout, ids, out):  # pragma: no cover - interface
        raise NotImplementedError

    def grad_pieces_into(self, g, layout, ids, grad_Z):  # pragma: no cover - interface
        raise NotImplementedError

    def __call__(self, E, Z, layout, ids, drop=None, drop_words=None, drop_out=None):
        return _SubwordEmbed.apply(E, Z, layout, ids, self, drop, drop_words, drop_out)


class _SubwordEmbed(torch.autograd.Function):
    @staticmethod
    def forward(ctx, E, Z, layout, ids, impl, drop, drop_words, drop_out):
        rows = E.shape[0] if ids is None else ids.numel()
        out = _pool.empty((rows, E.shape[1]), E.dtype, E.device)
        Z, E = Z.contiguous(), E.contiguous()
        # Dropped-out tables are only needed during this forward; the backward recomputes the masks.
        if drop is not None:
            dropped = _pool.empty(tuple(Z.shape), Z.dtype, Z.device)
            impl.dropout_into(Z, drop, dropped)
            Z = dropped
        if drop_words is not None and hasattr(impl, "forward_word_dropout_into"):
            impl.forward_word_dropout_into(E, Z, layout, ids, out, drop_words)  # mask fused in the kernel
        else:
            if drop_words is not None:
                dropped_words = _pool.empty(tuple(E.shape), E.dtype, E.device)
                impl.dropout_into(E, drop_words, dropped_words)
                E = dropped_words
            impl.forward_into(E, Z, layout, ids, out)
        if drop_out is not None:
            impl.dropout_into(out, drop_out, out)
        ctx.layout, ctx.ids, ctx.impl, ctx.drop, ctx.drop_words = layout, ids, impl, drop, drop_words
        ctx.drop_out = drop_out
        ctx.shapes = (E.shape, Z.shape, E.dtype)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        g = g.contiguous()
        e_shape, z_shape, dtype = ctx.shapes
        if ctx.drop_out is not None:
            masked = _pool.empty(tuple(g.shape), g.dtype, g.device)
            ctx.impl.dropout_into(g, ctx.drop_out, masked)
            g = masked
        grad_E = grad_Z = None
        if ctx.needs_input_grad[0]:
            if ctx.ids is None and ctx.drop_words is None:
                grad_E = g  # d out / d E is the identity: the incoming gradient is the answer
            elif ctx.ids is None:
                grad_E = _pool.empty(tuple(e_shape), dtype, g.device)
                ctx.impl.dropout_into(g, ctx.drop_words, grad_E)
            else:
                grad_E = torch.zeros(e_shape, dtype=dtype, device=g.device).index_add_(0, ctx.ids, g)
                if ctx.drop_words is not None:
                    ctx.impl.dropout_into(grad_E, ctx.drop_words, grad_E)
        if ctx.needs_input_grad[1]:
            grad_Z = _pool.empty(tuple(z_shape), dtype, g.device)
            ctx.impl.grad_pieces_into(g, ctx.layout, ctx.ids, grad_Z)
            if ctx.drop is not None:
                ctx.impl.dropout_into(grad_Z, ctx.drop, grad_Z)
        return grad_E, grad_Z, None, None, None, None, None, None


class _TableDropout(torch.autograd.Function):
    """Dropout of a whole [rows, d] table with the hashed mask: nothing stored, the backward recomputes it."""

    @staticmethod
    def forward(ctx, X, impl, drop):
        X = X.contiguous()
        out = torch.empty_like(X)
        impl.dropout_into(X, drop, out)
        ctx.impl, ctx.drop = impl, drop
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        grad = torch.empty_like(g)
        ctx.impl.dropout_into(g.contiguous(), ctx.drop, grad)
        return grad, None, None


def table_dropout(X: torch.Tensor, p: float, *, backend: str | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """`F.dropout(X, p)` for a 2-D table with the same hashed masks as the fused lookup (one mask per
    call; the word-level model's embedding matrix and the SWcnn output use it): ~10x cheaper than
    torch's Bernoulli draw at 50k x 500 here."""
    drop = _drop_spec(float(p), generator, "dropout")
    if drop is None:
        return X
    if X.dim() != 2:
        raise XlfastError(f"table_dropout: expected a [rows, d] table, got shape {tuple(X.shape)}")
    _, impl = registry.choose(X.device.type, backend)
    if not isinstance(impl, FusedBackend):
        return X * dropout_keep(tuple(X.shape), drop, X.device, X.dtype)
    return _TableDropout.apply(X, impl, drop)


class _Reference:
    name = "torch"

    def __call__(self, E, Z, layout, ids, drop=None, drop_words=None, drop_out=None):
        if drop is not None:
            Z = Z * dropout_keep(tuple(Z.shape), drop, Z.device, Z.dtype)
        if drop_words is not None:
            E = E * dropout_keep(tuple(E.shape), drop_words, E.device, E.dtype)
        out = reference_subword_embed(E, Z, layout, ids)
        if drop_out is not None:
            out = out * dropout_keep(tuple(out.shape), drop_out, out.device, out.dtype)
        return out


registry = KernelRegistry("subword_embed")


def _load_numba():
    from xlfast.kernels.subword_embed_numba import NumbaSubwordEmbed

    return NumbaSubwordEmbed()


def _load_cpp():
    from xlfast.kernels.subword_embed_cpp import CppSubwordEmbed

    return CppSubwordEmbed()


def _load_triton():
    from xlfast.kernels.triton.subword_embed import TritonSubwordEmbed

    return TritonSubwordEmbed()


# Ranks follow `xlfast bench embed` on the 2-core CPU this was built on (V=50k, d=500, P=8k, 3 pieces/word,
# fwd+bwd): Numba 60 ms, C++ 63 ms, torch 664 ms; with dropout 0.5 Numba 153 ms, C++ 156 ms, torch 1382 ms.
# C++ is not faster overall (faster backward, slower forward), so Numba, always installed, goes first.
registry.register("numba", _load_numba, devices=("cpu",), rank=10)
registry.register("cpp", _load_cpp, devices=("cpu",), rank=20)
registry.register("triton", _load_triton, devices=("cuda",), rank=10)
registry.register("torch", _Reference, devices=("cpu", "cuda"), rank=90)


def subword_embed(E: torch.Tensor, Z: torch.Tensor, layout: PieceLayout, ids: torch.Tensor | None = None,
                  *, backend: str | None = None, piece_dropout: float = 0.0, word_dropout: float = 0.0,
                  output_dropout: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """`E[w] + mean(Z[pieces(w)])` for every word (`ids=None`, shape [V, d]) or for `ids` ([len(ids), d]).

    Differentiable in `E` and `Z`. `backend` forces one ('torch', 'numba', 'cpp', 'triton'); a forced
    backend that cannot run raises instead of falling back. `piece_dropout` > 0 drops elements of the
    piece table (one mask per call, scaled by 1/(1-p), METHOD.md §8.5) inside the kernel; its seeds come
    from `generator` (torch's default generator when None). `word_dropout` does the same for the word
    table `E` (the whole matrix, once per call), ~14x faster here than `F.dropout(E)` (36 vs 525 ms at
    50k x 500) because the mask is a hash, not a stored Bernoulli draw. `output_dropout` drops elements
    of the result table instead (a drop-in for `F.dropout(subword_embed(...), p)`; needs `ids=None`, as
    the mask belongs to the word type). Pass 0 at evaluation time.
    """
    _check_inputs(E, Z, layout, ids)
    if ids is not None:
        ids = ids.reshape(-1).to(device=E.device, dtype=torch.int64)
    if layout.device != E.device:
        layout = layout.to(E.device)
    drop = _drop_spec(float(piece_dropout), generator, "piece_dropout")
    drop_words = _drop_spec(float(word_dropout), generator, "word_dropout")
    drop_out = _drop_spec(float(output_dropout), generator, "output_dropout")
    if drop_out is not None and ids is not None:
        raise XlfastError("subword_embed: output_dropout needs ids=None (one mask per word type); index the "
                          "full table, or use word_dropout/piece_dropout")
    _, impl = registry.choose(E.device.type, backend)
    return impl(E, Z, layout, ids, drop, drop_words, drop_out)


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


def describe_backends(device: str = "cpu") -> dict[str, Any]:
    """Which backends run here, for `xlfast bench embed` and `xlfast show`."""
    return {name: registry.backends[name].available() for name in registry.names()
            if device in registry.backends[name].devices}
