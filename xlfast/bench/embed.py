"""`xlfast bench embed`: the fused subword-average lookup, forward and backward, every backend beside the
torch reference, alternated in one run, with the bytes each pass must move and the GB/s it reaches
against a plain copy measured in the same run (the kernel is memory-bound: that ratio says how close to
the limit it is). Two ways to time it: the kernels through `torch.autograd.grad`, or (`training`) whole
steps as `Trainer.train_step` makes them, with what autograd, `.grad` and the allocator add, and the page
faults and system time of a step.

Pure measurement: `run_bench` returns the results (JSON-ready), `report` the table a command renders.
"""
from __future__ import annotations

import os
import resource
import statistics
import time
from typing import Callable

import numba
import torch

from xlfast.allocator import keep_freed_memory
from xlfast.errors import XlfastError
from xlfast.kernels.subword_embed import FusedBackend, PieceLayout, registry, subword_embed
from xlfast.kernels.subword_embed.reference import reference_subword_embed


@numba.njit(parallel=True, fastmath=True, boundscheck=False, cache=True)
def _simple_forward(E, Z, offsets, pieces, out):
    V, d = out.shape
    for w in numba.prange(V):
        start, stop = offsets[w], offsets[w + 1]
        for j in range(d):
            out[w, j] = 0.0
        for k in range(start, stop):
            p = pieces[k]
            for j in range(d):
                out[w, j] += Z[p, j]
        inv = 1.0 / (stop - start)
        for j in range(d):
            out[w, j] = E[w, j] + out[w, j] * inv


@numba.njit(parallel=True, fastmath=True, boundscheck=False, cache=True)
def _simple_grad_pieces(g, t_offsets, t_words, t_weights, grad_Z):
    P, d = grad_Z.shape
    for p in numba.prange(P):
        for j in range(d):
            grad_Z[p, j] = 0.0
        for k in range(t_offsets[p], t_offsets[p + 1]):
            w, a = t_words[k], t_weights[k]
            for j in range(d):
                grad_Z[p, j] += g[w, j] * a


class SimpleNumba(FusedBackend):
    """The baseline, a simple parallel Numba forward+backward: a row sum then a finishing pass, and a
    backward over a transposed CSR (for each piece, the words that use it). Whole vocabulary only."""

    name = "numba-simple"

    def __init__(self, layout: PieceLayout):
        pieces = layout.pieces
        order = torch.argsort(pieces, stable=True)
        words = torch.repeat_interleave(torch.arange(layout.num_words), layout.counts)
        self.t_words = words[order].numpy()
        self.t_weights = (1.0 / layout.counts.double())[words[order]].float().numpy()
        self.t_offsets = torch.zeros(layout.num_pieces + 1, dtype=torch.int64)
        torch.cumsum(torch.bincount(pieces, minlength=layout.num_pieces), 0, out=self.t_offsets[1:])
        self.t_offsets = self.t_offsets.numpy()

    def forward_into(self, E, Z, layout, ids, out):
        _simple_forward(E.detach().numpy(), Z.detach().numpy(), layout.offsets.numpy(), layout.pieces.numpy(),
                        out.numpy())

    def grad_pieces_into(self, g, layout, ids, grad_Z):
        _simple_grad_pieces(g.numpy(), self.t_offsets, self.t_words, self.t_weights, grad_Z.numpy())


def random_layout(V: int, P: int, per_word: int, gen: torch.Generator) -> PieceLayout:
    offsets = torch.arange(0, per_word * V + 1, per_word, dtype=torch.int64)
    return PieceLayout(offsets, torch.randint(0, P, (per_word * V,), generator=gen), P)


def pass_bytes(V: int, P: int, d: int, nnz: int, elem: int, dropout: bool = False) -> dict[str, int]:
    """The least each pass must move: every row read or written once, the piece table once, the CSR. Without
    dropout grad_E is g itself; with it, grad_E = mask ⊙ g is a table of its own, written once."""
    index = (V + 1) * 8 + nnz * 8 + V * 8
    return {"fwd": 2 * V * d * elem + P * d * elem + index,  # read E, write out, read Z
            "bwd": (2 if dropout else 1) * V * d * elem + P * d * elem + index}  # read g, write grad_Z (+ grad_E)


def _one(fn, inner: int = 1) -> float:
    """Seconds per call, `inner` calls back to back (small sizes would otherwise time the scheduler)."""
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - start) / inner


def sizes_of(vocab: list[int], dim: list[int], grid: bool = False) -> list[tuple[int, int]]:
    """(V, d) pairs: vocab and dim paired in order, or every combination with `grid` (or when one of them
    has a single value)."""
    if grid or len(vocab) == 1 or len(dim) == 1:
        return [(v, d) for v in vocab for d in dim]
    if len(vocab) != len(dim):
        raise XlfastError("--vocab and --dim need the same number of values (or one of them a single value), "
                          "or --grid")
    return list(zip(vocab, dim))


def _lookup(name: str, E, Z, layout: PieceLayout, dropout: float, baseline: SimpleNumba | None,
            seed: int | None = None) -> torch.Tensor:
    """One lookup as the model makes it. With dropout, the model's torch path (xlfast/model.py) for the
    reference: F.dropout on Z before the lookup and on the result table after it; the fused backends do both
    inside (hash masks). `seed`: the hash masks from this seed, for every backend (the correctness check)."""
    if dropout and seed is not None:
        return subword_embed(E, Z, layout, backend=name, piece_dropout=dropout, output_dropout=dropout,
                             generator=torch.Generator().manual_seed(seed))
    if name == "torch":
        if dropout:
            drop = torch.nn.functional.dropout
            return drop(reference_subword_embed(E, drop(Z, dropout), layout), dropout)
        return reference_subword_embed(E, Z, layout)
    if name == "numba-simple":
        return baseline(E, Z, layout, None)
    return subword_embed(E, Z, layout, backend=name, piece_dropout=dropout, output_dropout=dropout)


class Consumers(torch.autograd.Function):
    """What a training step does with the table (embedding lookups, the tied output layer), reduced to its
    gradient: the backward hands the table `grad`'s values as a tensor only the autograd engine holds, as
    the model's consumers do (their fresh gradient), so that what the lookup's backward returns may be
    stolen into `.grad` exactly as in training. A new view of a kept buffer: the consumers' own allocation
    is theirs, not the lookup's, and is not timed."""

    @staticmethod
    def forward(ctx, table, grad):
        ctx.grad = grad
        return table.new_zeros(())

    @staticmethod
    def backward(ctx, _):
        g = ctx.grad
        return torch.empty(0, dtype=g.dtype, device=g.device).set_(g.untyped_storage(), 0, g.shape, g.stride()), None


def _usage() -> tuple[float, int]:
    """System seconds and minor page faults of this process so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_stime, ru.ru_minflt


def _training_round(lookup: Callable[[], torch.Tensor], params: list[torch.Tensor], g: torch.Tensor,
                    steps: int) -> dict:
    """Per step, `steps` steps as `Trainer.train_step` makes them: forward, `zero_grad(set_to_none=True)`
    (after the forward, as there: last step's gradients are alive during it), backward into `.grad` through
    the autograd engine. Seconds of forward, backward and system time, and page faults."""
    fwd = bwd = 0.0
    sys0, faults0 = _usage()
    for _ in range(steps):
        start = time.perf_counter()
        table = lookup()
        mid = time.perf_counter()
        for p in params:
            p.grad = None
        Consumers.apply(table, g).backward()
        del table
        fwd, bwd = fwd + mid - start, bwd + time.perf_counter() - mid
    sys1, faults1 = _usage()
    return {"fwd": fwd / steps, "bwd": bwd / steps, "sys": (sys1 - sys0) / steps, "faults": (faults1 - faults0) / steps}


def run_bench(sizes: list[tuple[int, int]], num_pieces: int = 8000, per_word: int = 3, repeats: int = 5,
              backends: list[str] | None = None, simple: bool = True, dropout: float = 0.0,
              progress: Callable[[int, int, str], None] | None = None, training: bool = False) -> dict:
    """Median fwd/bwd ms per backend and size. With `dropout` > 0 the reference is the model's torch path
    (`F.dropout` on Z, the lookup, `F.dropout` on the table) and the fused backends drop inside.
    `training`: each sample is one step as `Trainer.train_step` makes it (`_training_round`: gradients land in
    `.grad` of parameters, the incoming gradient is the engine's own), with its page faults and system time,
    in a process that keeps freed memory as training does (`keep_freed_memory`, for the rest of the process);
    otherwise the kernels through `torch.autograd.grad`, several calls per sample at small sizes.
    `progress(done, total, what)` is called before each alternated round."""
    if not 0.0 <= dropout < 1.0:
        raise XlfastError(f"--dropout must lie in [0, 1), got {dropout}")
    if num_pieces < 1 or per_word < 1 or repeats < 1:
        raise XlfastError("--pieces, --num-pieces and --repeats must be positive")
    from xlfast.bench.csls import cpu_state_probe

    names = backends or [n for n in registry.available("cpu") if n != "torch"]
    for n in names:
        registry.choose("cpu", n)  # a backend asked for by name that cannot run fails here, loudly
    simple = simple and dropout == 0.0
    names = ["torch"] + [n for n in names if n != "torch"] + (["numba-simple"] if simple else [])
    state = cpu_state_probe()
    heap_keeps_freed = training and keep_freed_memory()
    load_before = os.getloadavg()
    gen = torch.Generator().manual_seed(0)
    results = []
    done, total = 0, len(sizes) * repeats
    for V, d in sizes:
        layout = random_layout(V, num_pieces, per_word, gen)
        E = torch.nn.Parameter(torch.randn(V, d, generator=gen))
        Z = torch.nn.Parameter(torch.randn(num_pieces, d, generator=gen))
        g = torch.randn(V, d, generator=gen)
        copy_dst = torch.empty(V, d)
        baseline = SimpleNumba(layout) if simple else None

        def call(name, seed=None):
            return _lookup(name, E, Z, layout, dropout, baseline, seed)

        errors = _errors(call, names, E, Z, g)
        times = {n: {"fwd": [], "bwd": [], "sys": [], "faults": []} for n in names}
        copies = []
        # Enough back-to-back calls per sample that one sample lasts ~20 ms even at V=1k.
        inner = max(1, min(200, int(0.02 / max(_one(lambda: call("torch")), 1e-6))))
        for rnd in range(repeats):  # A B A B: every backend once per round, the copy too
            if progress:
                progress(done, total, f"{V}×{d} round {rnd + 1}")
            done += 1
            if inner > 1:  # small sizes: wake this thread pool first (torch's OpenMP and Numba's compete)
                copy_dst.copy_(g)
            # Several single copies when one is long: a lone copy stalls on a descheduled thread of its pool.
            copies += [_one(lambda: copy_dst.copy_(g), inner) for _ in range(1 if inner > 1 else 5)]
            for name in names:
                if training:
                    _training_round(lambda: call(name), [E, Z], g, 1)  # wake the pools, settle the buffer pool
                    sample = _training_round(lambda: call(name), [E, Z], g, inner)
                else:
                    sample = _kernel_round(lambda: call(name), E, Z, g, inner)
                for key, value in sample.items():
                    times[name][key].append(value)
        E.grad = Z.grad = None
        elem = E.element_size()
        moved = pass_bytes(V, num_pieces, d, layout.pieces.numel(), elem, dropout > 0)
        copy_gbs = 2 * V * d * elem / statistics.median(copies) / 1e9  # read + write of grad_out's size
        ref_total = _median_total(times["torch"])
        for name in names:
            fwd, bwd = statistics.median(times[name]["fwd"]), statistics.median(times[name]["bwd"])
            fwd_gbs, bwd_gbs = moved["fwd"] / fwd / 1e9, moved["bwd"] / bwd / 1e9
            total_s = _median_total(times[name])
            row = {
                "vocab": V, "dim": d, "backend": name, "fwd_ms": fwd * 1e3, "bwd_ms": bwd * 1e3,
                "total_ms": total_s * 1e3, "speedup": ref_total / total_s,
                "fwd_q20_ms": _quantile(times[name]["fwd"], 0.2) * 1e3,
                "fwd_q80_ms": _quantile(times[name]["fwd"], 0.8) * 1e3,
                "fwd_gbs": fwd_gbs, "bwd_gbs": bwd_gbs, "copy_gbs": copy_gbs,
                "fwd_of_copy": fwd_gbs / copy_gbs, "bwd_of_copy": bwd_gbs / copy_gbs,
                "max_abs_err": errors.get(name, 0.0), "fwd_mb": moved["fwd"] / 1e6, "bwd_mb": moved["bwd"] / 1e6,
            }
            if training:
                row["sys_ms"] = statistics.median(times[name]["sys"]) * 1e3
                row["faults"] = statistics.median(times[name]["faults"])
            results.append(row)
        del E, Z, g, copy_dst, layout, baseline
    return {"num_pieces": num_pieces, "pieces_per_word": per_word, "repeats": repeats, "dropout": dropout,
            "training": training, "heap_keeps_freed": heap_keeps_freed, "cpu_state": state, "load_avg": [load_before[0], os.getloadavg()[0]],
            "threads": torch.get_num_threads(), "results": results}


def _errors(call, names: list[str], E, Z, g) -> dict[str, float]:
    """Correctness before timing: every backend's values and gradients against the reference's, this size."""
    ref = call("torch", seed=0)
    ref_grads = torch.autograd.grad(ref, (E, Z), g)
    errors = {}
    for name in names[1:]:
        out = call(name, seed=0)
        grads = torch.autograd.grad(out, (E, Z), g)
        errors[name] = max(float((out - ref).detach().abs().max()),
                           *(float((a - b).abs().max()) for a, b in zip(grads, ref_grads)))
    return errors


def _kernel_round(lookup, E, Z, g, inner: int) -> dict:
    """Seconds per forward and per backward (`torch.autograd.grad`, the graph kept), `inner` calls each."""
    torch.autograd.grad(lookup(), (E, Z), g)  # wake the pools (small sizes) and settle the buffer pool
    outs = []
    fwd = _one(lambda: outs.append(lookup()) if not outs else lookup(), inner)
    bwd = _one(lambda: torch.autograd.grad(outs[0], (E, Z), g, retain_graph=True), inner)
    return {"fwd": fwd, "bwd": bwd}


def _median_total(times: dict) -> float:
    return statistics.median(f + b for f, b in zip(times["fwd"], times["bwd"]))


def _quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def report(res: dict) -> dict:
    """The table of a `run_bench` result (same shape as `xlfast.bench.csls.report`)."""
    s = res["cpu_state"]
    training = res.get("training", False)
    summary = (f"CPU state: {s['state']} (GEMM 2-thread/1-thread ×{s['speedup']:.2f}), load average "
               f"{res['load_avg'][0]:.2f} → {res['load_avg'][1]:.2f}, {res['threads']} threads; P={res['num_pieces']} "
               f"pieces, {res['pieces_per_word']} per word, dropout {res['dropout']}, median of {res['repeats']} "
               f"alternated rounds; "
               + (f"as train_step calls it (freed memory kept: {res['heap_keeps_freed']})" if training
                  else "kernels through autograd.grad"))
    columns = [("V×d", "{vocab}×{dim}"), ("backend", "{backend}"), ("fwd ms", "{fwd_ms:.4g}"),
               ("bwd ms", "{bwd_ms:.4g}"), ("×torch", "{speedup:.4g}"),
               ("fwd GB/s (of copy)", "{fwd_gbs:.1f} ({fwd_of_copy:.0%})"),
               ("bwd GB/s (of copy)", "{bwd_gbs:.1f} ({bwd_of_copy:.0%})"), ("copy GB/s", "{copy_gbs:.4g}")]
    if training:
        columns += [("sys ms", "{sys_ms:.3g}"), ("faults", "{faults:.0f}")]
    columns.append(("max|err|", "{max_abs_err:.1e}"))
    notes = ("numba-simple: a simple parallel Numba forward+backward (row sum + finishing pass; transposed-CSR "
             "backward). ×torch: reference fwd+bwd time ÷ this one. GB/s: the least bytes the pass must move (rows "
             "read/written once, piece table once) per second; copy GB/s: a copy of the gradient's size into a "
             "reused buffer (read+write) in the same rounds.")
    if training:
        notes += (" Each sample is one step as train_step makes it: forward, zero_grad(set_to_none=True), backward "
                  "into .grad (AccumulateGrad included); sys ms and page faults per step from getrusage.")
    return {"summary": summary, "title": "subword-average lookup, fp32", "columns": columns,
            "rows": res["results"], "notes": notes}
