"""`xlfast bench linear-ce`: the fused output layer (projection + summed cross-entropy, forward and
backward) beside `F.linear` + `F.cross_entropy`, alternated A B A B in one run.

Per provider: the median step time with its 20/80 % quantiles, the kernel (system) time and the page
faults of a step, and the peak extra resident memory of one step — the high-water mark of the process
(reset through /proc/self/clear_refs) above what was resident before it, with the fused path's reused
logits buffer released first so that it is counted. Correctness is checked against the reference on the
same inputs before anything is timed.

`bf16=True` measures what training runs under bf16 autocast: bf16 rows (the decoder's output) against the
float32 tied table, both providers called inside `torch.autocast`; the error column is then each
provider's distance from the float32 result on the same (bf16-rounded) rows.
"""
from __future__ import annotations

import ctypes
import resource
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from xlfast.allocator import keep_freed_memory
from xlfast.errors import XlfastError
from xlfast.kernels.linear_ce import base, bf16_gemm, linear_cross_entropy, registry


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise XlfastError(f"/proc/self/status has no {field}")


def peak_extra_mb(step) -> float | None:
    """Resident memory a call adds at its peak (MB), or None where the peak cannot be reset. Free heap
    memory is handed back to the system first (malloc_trim), so that memory the call allocates counts even
    where the allocator would have reused pages already resident."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident size
    except OSError:
        return None
    before = _status_kb("VmRSS")
    step()
    return (_status_kb("VmHWM") - before) / 1024


def _quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def run_bench(rows: int, vocab: int, dim: int, repeats: int, backends: list[str] | None = None,
              chunk_mb: list[float] | None = None, ignored: float = 0.0, seed: int = 0,
              progress: Callable[[int, int, str], None] | None = None, bf16: bool = False,
              training: bool = False) -> dict:
    """Median step ms, kernel time, page faults and peak extra memory per provider: 'torch' (materialised
    logits) and every fused backend (at each chunk size of `chunk_mb`, default the built-in one); with
    `bf16`, bf16 rows under autocast, as training runs where the CPU has bf16 arithmetic; with `training`,
    in a process that keeps freed memory as `xlfast train` does (`keep_freed_memory`, for the rest of the
    process), so that a step's large blocks come from the heap instead of fresh pages."""
    from xlfast.bench.csls import cpu_state_probe

    heap_keeps_freed = training and keep_freed_memory()
    names = backends or [n for n in registry.available("cpu") if n != "torch"]
    for n in names:
        registry.choose("cpu", n)  # a backend asked for by name that cannot run fails here, loudly
    sizes = chunk_mb or [base.CHUNK_BYTES / 2**20]
    providers = ["torch"] + [f"{n}@{mb:g}MB" for n in names for mb in sizes]
    state = cpu_state_probe()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, dim, generator=gen) * 0.5
    x = (x.bfloat16() if bf16 else x).requires_grad_()
    W = (torch.randn(vocab, dim, generator=gen) * 0.1).requires_grad_()
    target = torch.randint(0, vocab, (rows,), generator=gen)
    target[torch.rand(rows, generator=gen) < ignored] = -1

    def step(provider: str, rows: torch.Tensor = x, autocast: bool = bf16) -> torch.Tensor:
        rows.grad = W.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            if provider == "torch":
                loss = F.cross_entropy(F.linear(rows, W), target, ignore_index=-1, reduction="sum")
            else:
                name, mb = provider.split("@")
                loss = linear_cross_entropy(rows, W, target, ignore_index=-1, backend=name,
                                            chunk_bytes=int(float(mb[:-2]) * 2**20))
        loss.backward()
        return loss.detach().float()

    try:
        x32 = x.detach().float().requires_grad_() if bf16 else x  # the float32 reference on the same rows
        ref = step("torch", x32, autocast=False)
        ref_grads = (x32.grad.clone(), W.grad.clone())
        del x32
        errors = {}
        for p in providers[1:] if not bf16 else providers:
            loss = step(p)
            errors[p] = max(abs(float(loss - ref)) / max(abs(float(ref)), 1.0),
                            *(float((a.float() - b).abs().max()) for a, b in zip((x.grad, W.grad), ref_grads)))
        del ref_grads
        memory = {}
        for p in providers:
            base.release_workspace()
            memory[p] = peak_extra_mb(lambda: step(p))
        samples = {p: [] for p in providers}
        for r in range(repeats):  # A B A B: the CPU's speed drifts
            for p in providers:
                ru0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
                step(p)
                t1, ru1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
                samples[p].append((t1 - t0, ru1.ru_stime - ru0.ru_stime, ru1.ru_minflt - ru0.ru_minflt))
            if progress:
                progress(r + 1, repeats, "linear-ce rounds")
    finally:
        base.release_workspace()
    ref_ms = statistics.median(s[0] for s in samples["torch"]) * 1e3
    results = []
    for p in providers:
        wall = [s[0] * 1e3 for s in samples[p]]
        ms = statistics.median(wall)
        results.append({
            "provider": p, "ms": ms, "q20_ms": _quantile(wall, 0.2), "q80_ms": _quantile(wall, 0.8),
            "speedup": ref_ms / ms, "sys_ms": statistics.median(s[1] for s in samples[p]) * 1e3,
            "page_faults": statistics.median(s[2] for s in samples[p]), "peak_extra_mb": memory[p],
            "gflops": 3 * 2 * rows * vocab * dim / (ms / 1e3) / 1e9, "max_err": errors.get(p, 0.0),
        })
    ref_mb = memory["torch"]
    for r in results:
        r["memory_ratio"] = r["peak_extra_mb"] / ref_mb if ref_mb and r["peak_extra_mb"] is not None else None
    return {"rows": rows, "vocab": vocab, "dim": dim, "ignored": ignored, "repeats": repeats, "bf16": bf16,
            "training": training, "heap_keeps_freed": heap_keeps_freed, "mkl_bf16_gemm": bf16_gemm.available(),
            "threads": torch.get_num_threads(), "cpu_state": state, "results": results}


def report(res: dict) -> dict:
    """The table of a `run_bench` result (same shape as `xlfast.bench.csls.report`)."""
    s = res["cpu_state"]
    summary = (f"CPU state: {s['state']} (GEMM {s['threads']}-thread/1-thread ×{s['speedup']:.2f}); N={res['rows']} "
               f"rows × V={res['vocab']} × d={res['dim']}, {100 * res['ignored']:.0f}% rows ignored, median of "
               f"{res['repeats']} alternated rounds")
    columns = [("provider", "{provider}"), ("ms/step", "{ms:.4g}"), ("q20–q80", "{q20_ms:.0f}–{q80_ms:.0f}"),
               ("×torch", "{speedup:.3g}"), ("GFLOP/s (3 GEMMs)", "{gflops:.4g}"), ("sys ms", "{sys_ms:.3g}"),
               ("page faults", "{page_faults:.0f}"), ("peak extra MB", "{peak_extra_mb:.0f}"),
               ("of torch's", "{memory_ratio:.3f}"), ("max err", "{max_err:.1e}")]
    notes = ("torch: F.linear + F.cross_entropy (logits materialised). name@size: the fused kernel with that logits "
             "chunk. peak extra MB: resident high-water mark of one step above the resident size before it (the "
             "fused path's reused chunk buffer released first, so it counts).")
    if res.get("bf16"):
        notes += " bf16: bf16 rows against the float32 table under autocast; max err: against float32 on the same rows."
        notes += (" Gradient GEMMs: MKL's bf16→float32 (dW summed in float32)." if res.get("mkl_bf16_gemm") else
                  " Gradient GEMMs: torch's bf16 (this torch has no MKL bf16→float32 GEMM).")
    title = "output layer forward+backward, " + ("bf16 rows (autocast)" if res.get("bf16") else "fp32")
    if res.get("heap_keeps_freed"):
        title += ", freed memory kept (as in training)"
    return {"summary": summary, "title": title, "columns": columns,
            "rows": res["results"], "notes": notes}
