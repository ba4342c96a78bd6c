"""`xlfast bench csls`: every csls backend beside faiss IndexFlatIP and a MUSE-style torch baseline.

One process, one data set, methods alternated A B C … A B C … (the machine's speed drifts; only
figures from the same run compare). Before timing, every method's top-k is checked against the
first xlfast backend (agreement of the top-1 index and of the whole top-k list). Reported per method: median seconds, GFLOP/s of
the GEMM work it performs (passes × 2·N·M·d), that as a fraction of the best GEMM rate measured in
this run, peak extra resident memory (VmHWM reset through /proc/self/clear_refs, minus the resident
size before the call — numpy/torch buffers included), and time ratios to faiss and to MUSE-style.
A CPU-state probe times one GEMM at 1 and at 2 threads ("full": 2 threads ≈1.9×; "degraded": ≈1×).

Pure measurement: `run_bench` returns the results (JSON-ready), `report` the table a command renders.
"""
from __future__ import annotations

import os
import statistics
import time
from typing import Callable

import numpy as np
import torch

from xlfast.errors import XlfastError
from xlfast.kernels import csls as C
from xlfast.kernels.csls.approx import APPROX_NPROBE, KINDS, faiss_module
from xlfast.kernels.csls.base import TiledBackend, parse_mem, tile_shape
from xlfast.kernels.dispatch import bf16_native


# ------------------------------------------------------------------------------- measurement
def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current RSS (Linux ≥ 4.0)
        return True
    except OSError:
        return False


def measure(fn: Callable[[], object]) -> tuple[float, float | None, object]:
    """(seconds, peak extra MiB or None where /proc is unavailable, result)."""
    can_track = _reset_peak()
    base = _status_kib("VmRSS")
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    peak = _status_kib("VmHWM")
    extra = (peak - base) / 1024 if can_track and peak is not None and base is not None else None
    return seconds, extra, out


def gemm_peak(dim: int, repeats: int = 3) -> dict:
    """Best fp32 GEMM rate of numpy/OpenBLAS and torch on (4096×d)·(d×8192), into a reused buffer."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((4096, dim), dtype=np.float32)
    B = rng.standard_normal((8192, dim), dtype=np.float32)
    out = np.empty((4096, 8192), np.float32)
    flop = 2 * 4096 * 8192 * dim
    At, Bt, outt = torch.from_numpy(A), torch.from_numpy(B), torch.from_numpy(out)
    rates = {"numpy": 0.0, "torch": 0.0}
    np.matmul(A, B.T, out=out)
    torch.mm(At, Bt.T, out=outt)
    for _ in range(repeats):
        t = time.perf_counter()
        np.matmul(A, B.T, out=out)
        rates["numpy"] = max(rates["numpy"], flop / (time.perf_counter() - t) / 1e9)
        t = time.perf_counter()
        torch.mm(At, Bt.T, out=outt)
        rates["torch"] = max(rates["torch"], flop / (time.perf_counter() - t) / 1e9)
    return rates


def cpu_state_probe(dim: int = 512) -> dict:
    """torch GEMM at 1 thread and at all threads, alternated; the ratio says which state the CPU is in."""
    A = torch.randn(2048, dim)
    B = torch.randn(4096, dim)
    flop = 2 * 2048 * 4096 * dim
    threads = torch.get_num_threads()
    best = {1: 0.0, threads: 0.0}
    try:
        for _ in range(3):
            for t in best:
                torch.set_num_threads(t)
                start = time.perf_counter()
                A @ B.T
                best[t] = max(best[t], flop / (time.perf_counter() - start) / 1e9)
    finally:
        torch.set_num_threads(threads)
    speedup = best[threads] / best[1] if best[1] else float("nan")
    state = "full" if threads > 1 and speedup > 1.5 else ("single-thread" if threads == 1 else "degraded")
    return {"threads": threads, "gflops_1": best[1], f"gflops_{threads}": best[threads],
            "speedup": speedup, "state": state}


# ------------------------------------------------------------------------------------- peers
def faiss_flat_ip(X: np.ndarray, Y: np.ndarray, k: int):
    import faiss

    index = faiss.IndexFlatIP(Y.shape[1])
    index.add(Y)
    scores, idx = index.search(X, k)
    return torch.from_numpy(scores), torch.from_numpy(idx)


def muse_topk(X: torch.Tensor, Y: torch.Tensor, k: int, batch: int = 1024):
    """MUSE-style: for each batch of 1024 queries, the full batch×M product with torch.mm, then topk."""
    scores, idx = [], []
    for i in range(0, X.shape[0], batch):
        top = (X[i : i + batch] @ Y.T).topk(k, dim=1)
        scores.append(top.values)
        idx.append(top.indices)
    return torch.cat(scores), torch.cat(idx)


def muse_csls(X: torch.Tensor, Y: torch.Tensor, k: int, knn: int, batch: int = 1024):
    """MUSE-style CSLS (get_nn_avg_dist twice, then scores): three passes over the product."""
    def avg_dist(Q, D):
        return torch.cat([(Q[i : i + batch] @ D.T).topk(knn, dim=1).values.mean(1)
                          for i in range(0, Q.shape[0], batch)])

    r_S = avg_dist(Y, X)
    r_T = avg_dist(X, Y)
    scores, idx = [], []
    for i in range(0, X.shape[0], batch):
        s = 2 * (X[i : i + batch] @ Y.T) - r_T[i : i + batch, None] - r_S[None, :]
        top = s.topk(k, dim=1)
        scores.append(top.values)
        idx.append(top.indices)
    return torch.cat(scores), torch.cat(idx)


# ----------------------------------------------------------------------------------- the run
def clustered(n: int, m: int, dim: int, seed: int = 0, clusters: int = 1000, spread: float = 1.0):
    """X [n, dim], Y [m, dim]: unit rows around shared random centres (cosine ≈ 1/(1+spread²) ≈ 0.5 within a
    cluster, nearest neighbours at ≈0.55) — the structure inverted-file indexes rely on."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)

    def draw(rows):
        out = centres[rng.integers(0, clusters, rows)]
        out += spread * rng.standard_normal((rows, dim), dtype=np.float32)
        return C.normalize(out).numpy()

    return draw(n), draw(m)


def approx_methods(X, Y, k, knn, kinds=KINDS) -> list[tuple[str, str, int, Callable]]:
    """faiss IVF / IVF-PQ through `topk(strategy=Approx(kind))` at its defaults (index build included in the
    time)."""
    out = []
    for kind in kinds:
        for metric, passes in (("cos", 1), ("csls", 2)):
            out.append((f"approx-{kind}", metric, passes,
                        lambda kind=kind, metric=metric: C.topk(X, Y, k, metric=metric, knn=knn, normalized=True,
                                                                strategy=C.Approx(kind))))
    return out


def run_bench(n=20000, m=None, dim=300, k=10, knn=10, mem=None, repeats=2, backends=None,
              peers=True, progress: Callable[[int, int, str], None] | None = None, seed=0, approx=False,
              data="gaussian", X=None, Y=None) -> dict:
    """`approx`: add faiss IVF / IVF-PQ rows (needs faiss). `data`: 'gaussian' or 'clustered' (see
    `clustered`); or pass unit-row matrices X, Y (e.g. real embeddings) and n, m, dim follow them.
    `progress(done, total, what)` is called before each timed call."""
    if X is None or Y is None:
        m = n if m is None else m
        rng = np.random.default_rng(seed)
        if data == "clustered":
            X, Y = clustered(n, m, dim, seed)
        elif data == "gaussian":
            # Gaussian vectors, normalised once outside every timed call (all methods get unit rows)
            X = C.normalize(rng.standard_normal((n, dim), dtype=np.float32)).numpy()
            Y = C.normalize(rng.standard_normal((m, dim), dtype=np.float32)).numpy()
        else:
            raise XlfastError(f"unknown data '{data}' (gaussian or clustered)")
    else:
        data = "given"
        X, Y = C.normalize(X).numpy(), C.normalize(Y).numpy()
        n, m, dim = X.shape[0], Y.shape[0], X.shape[1]
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    # the torch backend is the portable fallback, not a contender: timed only when asked for by name
    names = backends or [b for b in C.registry.available("cpu") if b != "torch"]
    methods: list[tuple[str, str, int, Callable]] = []  # (method, metric, passes, fn)
    for b in names:
        C.registry.choose("cpu", b)  # forced: fails loudly if asked for and missing
        methods.append((b, "cos", 1,
                        lambda b=b: C.topk(X, Y, k, normalized=True, backend=b, strategy=C.Exact(mem=mem))))
        methods.append((b, "csls", 2,
                        lambda b=b: C.topk(X, Y, k, metric="csls", knn=knn, normalized=True, backend=b,
                                           strategy=C.Exact(mem=mem))))
    # bf16 tiles + exact re-scoring (certified; uncertified rows recomputed in fp32), on the backends whose
    # kernels read bf16 tiles directly, where the CPU has native bf16
    bf16_stats: dict[str, dict] = {}
    if bf16_native():
        for b in names:
            impl = C.registry.choose("cpu", b)[1]
            if isinstance(impl, TiledBackend) and impl.bf16_tiles:
                for metric, passes in (("cos", 1), ("csls", 2)):
                    st = bf16_stats.setdefault(f"{b}+bf16 {metric}", {})
                    methods.append((f"{b}+bf16", metric, passes,
                                    lambda b=b, metric=metric, st=st: C.topk(
                                        X, Y, k, metric=metric, knn=knn, normalized=True, backend=b,
                                        strategy=C.Bf16(mem=mem), stats=st)))
    if approx:
        faiss_module()  # one clear line when faiss is missing
        methods += approx_methods(X, Y, k, knn)
    if peers:
        try:
            import faiss  # noqa: F401

            methods.append(("faiss-flat", "cos", 1, lambda: faiss_flat_ip(X, Y, k)))
        except ImportError:
            pass
        methods.append(("muse", "cos", 1, lambda: muse_topk(Xt, Yt, k)))
        methods.append(("muse", "csls", 3, lambda: muse_csls(Xt, Yt, k, knn)))

    env = {v: os.environ.get(v, "(unset)") for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS")}
    probe = cpu_state_probe()
    peak = gemm_peak(dim)

    # correctness before timing: top-1 agreement with the first xlfast backend, per metric
    reference: dict[str, torch.Tensor] = {}
    agree: dict[tuple[str, str], float] = {}
    agree_k: dict[tuple[str, str], float] = {}
    recall: dict[tuple[str, str], float] = {}
    times: dict[tuple[str, str], list[float]] = {(mm, me): [] for mm, me, _, _ in methods}
    extra: dict[tuple[str, str], float] = {}
    done, total = 0, len(methods) * repeats
    for rep in range(repeats):
        for method, metric, _, fn in methods:
            if progress:
                progress(done, total, f"{method} {metric} (round {rep + 1})")
            sec, mib, out = measure(fn)
            times[(method, metric)].append(sec)
            if mib is not None:
                extra[(method, metric)] = max(extra.get((method, metric), 0.0), mib)
            if rep == 0:
                idx = out.indices if isinstance(out, C.TopK) else out[1]
                idx = idx.to(torch.int64)
                ref = reference.setdefault(metric, idx)
                agree[(method, metric)] = float((idx[:, 0] == ref[:, 0]).double().mean()) if len(ref) else 1.0
                agree_k[(method, metric)] = float((idx == ref).all(1).double().mean()) if len(ref) else 1.0
                recall[(method, metric)] = recall_at_k(idx, ref)
            del out
            done += 1

    best_gemm = max(peak.values())
    flop = 2.0 * n * m * dim
    rows = []
    med = {key: statistics.median(v) for key, v in times.items()}
    faiss_cos = med.get(("faiss-flat", "cos"))
    for method, metric, passes, _ in methods:
        s = med[(method, metric)]
        gf = passes * flop / s / 1e9
        muse = med.get(("muse", metric))
        rows.append({
            "method": method, "metric": metric, "passes": passes, "seconds": s,
            "seconds_all": times[(method, metric)], "gflops": gf, "frac_peak": gf / best_gemm,
            "extra_mib": extra.get((method, metric)),
            "vs_faiss_cos": (s / faiss_cos) if faiss_cos else None,
            "speedup_vs_muse": (muse / s) if muse else None,
            "top1_agree": agree[(method, metric)],
            "topk_agree": agree_k[(method, metric)],
            "recall": recall[(method, metric)],
        })
    return {"n": n, "m": m, "dim": dim, "k": k, "data": data, "knn": knn, "mem": parse_mem(mem),
            "tile": tile_shape(n, m, dim, mem), "repeats": repeats, "env": env, "cpu_state": probe,
            "gemm_peak_gflops": peak, "bf16_certificates": bf16_stats, "results": rows}


def recall_at_k(idx: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean over rows of |idx row ∩ ref row| / k (order ignored; −1 entries never match)."""
    if idx.numel() == 0 or ref.shape[1] == 0:
        return 1.0
    hit = (idx[:, :, None] == ref[:, None, :]) & (ref[:, None, :] >= 0)
    return float(hit.any(2).sum(1).double().mean() / ref.shape[1])


def report(res: dict) -> dict:
    """The table of a `run_bench` result: summary line, title, columns (header, str.format template over a
    result row; a cell whose fields are None shows '—'), rows, notes."""
    p, env = res["cpu_state"], res["env"]
    summary = (f"CPU state: {p['state']} (torch GEMM {p['gflops_1']:.0f} GFLOP/s at 1 thread, ×{p['speedup']:.2f} at "
               f"{p['threads']}); BLAS: OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']}, "
               f"OPENBLAS_L2_SIZE={env['OPENBLAS_L2_SIZE']}; GEMM peak this run: "
               + ", ".join(f"{k} {v:.0f}" for k, v in res["gemm_peak_gflops"].items()) + " GFLOP/s")
    columns = [("method", "{method}"), ("metric", "{metric}"), ("pass", "{passes}"), ("sec", "{seconds:.4g}"),
               ("GF/s", "{gflops:.4g}"), ("%peak", "{frac_peak:.0%}"), ("+MiB", "{extra_mib:.0f}"),
               ("/faiss", "{vs_faiss_cos:.2f}"), ("xMUSE", "{speedup_vs_muse:.2f}"), ("top1=", "{top1_agree:.1%}"),
               ("topk=", "{topk_agree:.1%}")]
    show_recall = any(r["method"].startswith("approx-") for r in res["results"])
    if show_recall:
        columns.append((f"rec@{res['k']}", "{recall:.4f}"))
    tile = res["tile"]
    title = (f"top-{res['k']} retrieval, {res['n']:,}×{res['m']:,}×{res['dim']} (K={res['knn']}, "
             f"tile {tile[0]}×{tile[1]}, median of {res['repeats']} alternated rounds)")
    notes = ("sec: median seconds; GF/s: GEMM work done (passes × 2NMd) per second; %peak: of the best GEMM rate "
             "above; +MiB: peak extra resident memory; /faiss: time ÷ faiss plain kNN time; xMUSE: speed-up over "
             "MUSE-style, same metric; top1= / topk=: rows whose top-1 / whole top-k index list equals the first "
             "backend's (fp32); +bf16: bf16 tiles, exact re-scoring, certified (uncertified rows recomputed in fp32)."
             + (f" rec@k: recall@k of the index lists vs the first backend (fp32, exact); approx-*: faiss IVF / "
                f"IVF-PQ (index build included; nprobe {APPROX_NPROBE['ivf']})." if show_recall else ""))
    return {"summary": summary, "title": title, "columns": columns, "rows": res["results"], "notes": notes}
