"""What every backend of `xlfast.kernels.subword_embed` shares: the piece layout (CSR), the hashed dropout
masks, the buffer pool, and the backend contracts — `SubwordEmbedBackend` (a callable lookup plus table
dropout) and `FusedBackend` (kernels that write into given buffers, wrapped in one autograd Function).
Backends import this module and nothing else of the package.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict

import torch

from xlfast.errors import XlfastError


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
        self._compact: tuple[torch.Tensor, "PieceLayout"] | None = None
        self._all_rows: torch.Tensor | None = None
        self._inv_counts: dict[torch.dtype, torch.Tensor] = {}
        self._ends: tuple[torch.Tensor, torch.Tensor] | None = None

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

    def compacted(self) -> tuple[torch.Tensor, "PieceLayout"]:
        """(the piece ids in use, ascending [U]; this layout over them renumbered 0..U-1): for work on the
        piece table that only the pieces in use need (one language uses about half of a shared table)."""
        if self._compact is None:
            used, local = torch.unique(self.pieces, return_inverse=True)
            self._compact = (used, PieceLayout(self.offsets, local, used.numel(), check=False))
        return self._compact

    def all_rows(self) -> torch.Tensor:
        """`arange(V)`, kept: kernels take an explicit row list, and ids=None means every word."""
        if self._all_rows is None:
            self._all_rows = torch.arange(self.num_words, device=self.device)
        return self._all_rows

    def inv_counts(self, dtype: torch.dtype) -> torch.Tensor:
        """1 / pieces per word, in the tables' dtype (kernels multiply by it without promoting)."""
        if dtype not in self._inv_counts:
            self._inv_counts[dtype] = (1.0 / self.counts.to(torch.float64)).to(dtype)
        return self._inv_counts[dtype]

    def first_last(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each word's first and last piece id ([V] each, kept): the ends a width-3 convolution pads (SWcnn)."""
        if self._ends is None:
            self._ends = (self.pieces[self.offsets[:-1]], self.pieces[self.offsets[1:] - 1])
        return self._ends

    def gather(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The CSR (offsets, pieces) of the rows `ids` (repeats allowed), in that order."""
        starts = self.offsets[ids]
        counts = self.offsets[ids + 1] - starts
        new_offsets = torch.zeros(ids.numel() + 1, dtype=torch.int64, device=self.device)
        torch.cumsum(counts, 0, out=new_offsets[1:])
        nnz = int(new_offsets[-1])
        within = torch.arange(nnz, device=self.device) - torch.repeat_interleave(new_offsets[:-1], counts)
        return new_offsets, self.pieces[torch.repeat_interleave(starts, counts) + within]


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


def drop_spec(p: float, generator: torch.Generator | None, what: str) -> tuple[int, int, float] | None:
    """The `drop` spec (key, threshold, scale) of dropout rate p with a key drawn from `generator`; None for 0."""
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
    earlier output (or a graph that saved it, or a `.grad` that took it over) is still alive, in which case
    another buffer is used. A few buffers per shape: during a training step the last step's gradients are
    alive while the forward wants its output, and the output while the backward wants grad_E. Only the
    `max_shapes` shapes used last are kept (lookups of batches of words come in many shapes).
    """

    def __init__(self, min_bytes: int = 1 << 20, per_shape: int = 4, max_shapes: int = 8):
        self.min_bytes = min_bytes
        self.per_shape = per_shape
        self.max_shapes = max_shapes
        self._buffers: OrderedDict[tuple, list[tuple[torch.Tensor, int]]] = OrderedDict()

    @staticmethod
    def _uses(t: torch.Tensor) -> int:
        return torch._C._storage_Use_Count(t.untyped_storage()._cdata)

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        numel = 1
        for s in shape:
            numel *= s
        if numel * torch.empty((), dtype=dtype).element_size() < self.min_bytes or not _CAN_POOL:
            return torch.empty(shape, dtype=dtype, device=device)
        key = (tuple(shape), dtype, torch.device(device))
        held = self._buffers.setdefault(key, [])
        self._buffers.move_to_end(key)
        if len(self._buffers) > self.max_shapes:
            self._buffers.popitem(last=False)  # buffers still in use stay with their users
        buf = next((b for b, idle in held if self._uses(b) == idle), None)
        if buf is None:
            buf = torch.empty(shape, dtype=dtype, device=device)
            held.append((buf, self._uses(buf)))
            if len(held) > self.per_shape:
                held.pop(0)  # still in use by someone: let them keep it, stop tracking it
        return torch.empty(0, dtype=dtype, device=device).set_(buf.untyped_storage(), 0, buf.shape, buf.stride())

    def clear(self) -> None:
        self._buffers.clear()


pool = BufferPool()


class SubwordEmbedBackend(ABC):
    """What `subword_embed` and `table_dropout` call: the lookup with its dropouts (each a `drop` spec
    (key, threshold, scale) or None), differentiable in E and Z, and a table dropout with the same masks."""

    name: str

    @abstractmethod
    def __call__(self, E, Z, layout: PieceLayout, ids, drop=None, drop_words=None, drop_out=None) -> torch.Tensor:
        ...

    @abstractmethod
    def table_dropout(self, X: torch.Tensor, drop) -> torch.Tensor:
        ...


class FusedBackend(SubwordEmbedBackend):
    """A backend that writes the forward into a given buffer and the piece gradient into another; one
    autograd Function (`_SubwordEmbed`) turns that into the lookup.

    Subclasses implement `forward_into(E, Z, layout, ids, out)` and `grad_pieces_into(g, layout, ids,
    grad_Z)` (every row of grad_Z written); inputs are contiguous and on the backend's device.
    `dropout_into(X, drop, out)` applies a dropout mask (`dropout_keep`), `forward_word_dropout_into` the
    forward with the word-table mask and `forward_dropout_into` the forward with the word-table and output
    masks; these defaults run in torch or in passes of their own, backends override them with kernels.
    """

    @abstractmethod
    def forward_into(self, E, Z, layout, ids, out) -> None:
        ...

    @abstractmethod
    def grad_pieces_into(self, g, layout, ids, grad_Z) -> None:
        ...

    def dropout_into(self, X, drop, out) -> None:
        torch.mul(X, dropout_keep(tuple(X.shape), drop, X.device, X.dtype), out=out)

    def forward_word_dropout_into(self, E, Z, layout, ids, out, drop) -> None:
        dropped = pool.empty(tuple(E.shape), E.dtype, E.device)
        self.dropout_into(E, drop, dropped)
        self.forward_into(dropped, Z, layout, ids, out)

    def forward_dropout_into(self, E, Z, layout, ids, out, drop_words, drop_out) -> None:
        """The forward under the word-table mask and the output mask (each a `drop` spec or None)."""
        if drop_words is not None:
            self.forward_word_dropout_into(E, Z, layout, ids, out, drop_words)
        else:
            self.forward_into(E, Z, layout, ids, out)
        if drop_out is not None:
            self.dropout_into(out, drop_out, out)

    def __call__(self, E, Z, layout, ids, drop=None, drop_words=None, drop_out=None):
        return _SubwordEmbed.apply(E, Z, layout, ids, self, drop, drop_words, drop_out)

    def table_dropout(self, X, drop):
        return _TableDropout.apply(X, self, drop)


class _SubwordEmbed(torch.autograd.Function):
    @staticmethod
    def forward(ctx, E, Z, layout, ids, impl, drop, drop_words, drop_out):
        rows = E.shape[0] if ids is None else ids.numel()
        out = pool.empty((rows, E.shape[1]), E.dtype, E.device)
        Z, E = Z.contiguous(), E.contiguous()
        # Dropped-out tables are only needed during this forward; the backward recomputes the masks.
        if drop is not None:
            dropped = pool.empty(tuple(Z.shape), Z.dtype, Z.device)
            impl.dropout_into(Z, drop, dropped)
            Z = dropped
        impl.forward_dropout_into(E, Z, layout, ids, out, drop_words, drop_out)
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
            masked = pool.empty(tuple(g.shape), g.dtype, g.device)
            ctx.impl.dropout_into(g, ctx.drop_out, masked)
            g = masked
        grad_E = grad_Z = None
        if ctx.needs_input_grad[0]:
            if ctx.ids is None and ctx.drop_words is None:
                grad_E = g  # d out / d E is the identity: the incoming gradient is the answer
            elif ctx.ids is None:
                grad_E = pool.empty(tuple(e_shape), dtype, g.device)
                ctx.impl.dropout_into(g, ctx.drop_words, grad_E)
            else:
                grad_E = torch.zeros(e_shape, dtype=dtype, device=g.device).index_add_(0, ctx.ids, g)
                if ctx.drop_words is not None:
                    ctx.impl.dropout_into(grad_E, ctx.drop_words, grad_E)
        if ctx.needs_input_grad[1]:
            grad_Z = pool.empty(tuple(z_shape), dtype, g.device)
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
