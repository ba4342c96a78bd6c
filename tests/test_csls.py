"""Every CPU backend of xlfast.kernels.csls against the float64 full-matrix torch reference; the strategy
options; device-aware dispatch."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from xlfast.errors import BackendUnavailable, XlfastError
from xlfast.kernels import csls as C
from xlfast.kernels.csls import approx, bf16, stream
from xlfast.kernels.csls.base import DEFAULT_MEM, MARGIN_EPS, Mode, clip_k, parse_mem, tile_shape
from xlfast.kernels.csls.reference import reference_cos, reference_means, reference_scores, reference_topk
from xlfast.kernels.csls_dense import csls_dense

CPU_BACKENDS = [b for b in ("torch", "numba", "cpp", "blocked") if b in C.registry.available("cpu")]
TILED = [b for b in CPU_BACKENDS if b != "blocked"]  # the CPU strategies (bf16 tiles) run on these
EPS32 = float(np.finfo(np.float32).eps)


def unit_rows(n, d, seed, dup_of=None):
    X = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    if dup_of is not None:  # duplicate rows: exact ties that any order may break
        X[dup_of[1]] = X[dup_of[0]]
    return C.normalize(X).numpy()


def tolerance(metric, d, ref_means=None):
    """A float32 dot of two unit d-vectors is within about d·eps of the exact value (the GEMM may sum in
    any order); CSLS adds 2cos and two means of such cosines; margin divides by their mean."""
    cos_tol = 2 * d * EPS32
    if metric == "cos":
        return cos_tol
    if metric == "csls":
        return 4 * cos_tol
    r_T, r_S = ref_means
    den = (r_T.min() + r_S.min()).clamp_min(MARGIN_EPS).item()
    return 8 * cos_tol / den**2


def assert_topk_matches(scores, indices, ref_full, k, tol, label=""):
    """scores/indices [n, k] against the full reference score matrix [n, m] (float64)."""
    n, m = ref_full.shape
    assert scores.shape == (n, k) and indices.shape == (n, k), label
    assert scores.dtype == torch.float32 and indices.dtype == torch.int64, label
    if n == 0 or k == 0:
        return
    ref_top = ref_full.topk(k, dim=1)
    # the k best values agree, whatever way ties were broken
    np.testing.assert_allclose(scores.double(), ref_top.values, atol=tol, rtol=0, err_msg=label)
    # each returned index really has the returned score, and no index repeats within a row
    assert (indices >= 0).all() and (indices < m).all(), label
    np.testing.assert_allclose(ref_full.gather(1, indices), scores.double(), atol=tol, rtol=0, err_msg=label)
    assert all(len(set(r.tolist())) == k for r in indices), label
    # where the reference scores are separated by more than 2·tol the indices must be identical
    ext = torch.cat([ref_full.topk(min(k + 1, m), dim=1).values, torch.full((n, 1), -np.inf, dtype=torch.float64)], 1)
    gaps = torch.minimum(ext[:, :k] - ext[:, 1 : k + 1], torch.cat([torch.full((n, 1), np.inf, dtype=torch.float64),
                                                                     ext[:, : k - 1] - ext[:, 1:k]], 1))
    clear = gaps > 2 * tol
    bad = (indices != ref_top.indices) & clear
    assert not bad.any(), f"{label}: first differing (row, rank) {bad.nonzero()[:5].tolist()}"


SHAPES = [(1, 1, 3), (5, 123, 16), (123, 5, 16), (1000, 1234, 24)]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("metric", C.METRICS)
@pytest.mark.parametrize("n,m,d", SHAPES)
def test_topk_matches_reference(backend, metric, n, m, d):
    X, Y = unit_rows(n, d, 1), unit_rows(m, d, 2)
    k = 7
    # a tiny budget forces many tiles, so the running buffers are merged across tiles and edges
    got = C.topk(X, Y, k, metric=metric, knn=4, both=True, normalized=True, backend=backend, mem=64 << 10)
    ref = reference_scores(X, Y, metric, knn=4, normalized=True)
    means = reference_means(X, Y, 4, normalized=True)
    tol = tolerance(metric, d, means)
    assert_topk_matches(got.scores, got.indices, ref, min(k, m), tol, f"{backend} {metric} fwd")
    assert_topk_matches(got.rev_scores, got.rev_indices, ref.T, min(k, n), tol, f"{backend} {metric} rev")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("metric", C.METRICS)
def test_exclude_self_and_duplicates(backend, metric):
    X = unit_rows(300, 12, 3, dup_of=([0, 1, 2], [10, 11, 12]))
    got = C.topk(X, X, 5, metric=metric, knn=3, both=True, normalized=True, backend=backend,
                 exclude_self=True, mem="100K")
    ref = reference_scores(X, X, metric, knn=3, normalized=True, exclude_self=True)
    tol = tolerance(metric, 12, reference_means(X, X, 3, normalized=True, exclude_self=True))
    assert_topk_matches(got.scores, got.indices, ref, 5, tol, f"{backend} {metric}")
    assert (got.indices != torch.arange(300)[:, None]).all()
    assert got.indices[10, 0] == 0 and got.indices[0, 0] == 10  # a duplicate is its twin's best match
    assert_topk_matches(got.rev_scores, got.rev_indices, ref.T, 5, tol, f"{backend} {metric} rev")


@pytest.mark.parametrize("metric", C.METRICS)
def test_blocked_backend_across_blocks(metric, monkeypatch):
    from xlfast.kernels.csls import blocked

    Y = unit_rows(50, 6, 11, dup_of=([5] * 10, list(range(20, 30))))
    X = np.concatenate([Y[:8], unit_rows(13, 6, 12)])
    monkeypatch.setattr(blocked, "BLOCK_BYTES", 4 * len(Y) * 3)  # three rows a block: seven blocks
    got = C.topk(X, Y, 4, metric=metric, knn=3, both=True, normalized=True, backend="blocked")
    ref = reference_scores(X, Y, metric, knn=3, normalized=True)
    tol = tolerance(metric, 6, reference_means(X, Y, 3, normalized=True))
    assert_topk_matches(got.scores, got.indices, ref, 4, tol, metric)
    assert_topk_matches(got.rev_scores, got.rev_indices, ref.T, 4, tol, f"{metric} rev")


def test_blocked_backend_gives_a_shared_kth_score_to_the_smallest_indices():
    from xlfast.kernels.csls.blocked import _ties_to_smaller_index

    S = torch.tensor([[0.1, 0.9, 0.5, 0.9, 0.5, 0.5, 0.2, 0.5],    # 0.5 four times, two slots left for it
                      [0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]])   # all tied
    v, i = S.topk(4, dim=1)
    i = torch.stack([i[0], torch.tensor([7, 3, 5, 1])])  # an order torch.topk is free to return
    v, i = _ties_to_smaller_index(S, v, i)
    assert i.tolist() == [[1, 3, 2, 4], [0, 1, 2, 3]]
    assert torch.equal(v, S.gather(1, i))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_neighbourhood_means_one_pass(backend):
    X, Y = unit_rows(777, 20, 4), unit_rows(1301, 20, 5)
    r_T, r_S = C.neighbourhood_means(X, Y, 10, normalized=True, backend=backend, mem="200K")
    ref_T, ref_S = reference_means(X, Y, 10, normalized=True)
    tol = tolerance("cos", 20)
    np.testing.assert_allclose(r_T.double(), ref_T, atol=tol, rtol=0)
    np.testing.assert_allclose(r_S.double(), ref_S, atol=tol, rtol=0)
    # k above the number of candidates averages all of them
    r_T, r_S = C.neighbourhood_means(X[:3], Y[:2], 10, normalized=True, backend=backend)
    np.testing.assert_allclose(r_T.double(), (reference_cos(X[:3], Y[:2], True)).mean(1), atol=tol)
    np.testing.assert_allclose(r_S.double(), (reference_cos(X[:3], Y[:2], True)).mean(0), atol=tol)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_k_above_m_empty_inputs_and_unnormalised(backend):
    X, Y = unit_rows(9, 8, 6), unit_rows(4, 8, 7)
    got = C.topk(X, Y, 50, both=True, normalized=True, backend=backend)
    assert got.scores.shape == (9, 4) and got.rev_scores.shape == (4, 9)
    assert (got.indices.sort(1).values == torch.arange(4)).all()
    for n, m in [(0, 5), (5, 0), (0, 0)]:
        got = C.topk(np.zeros((n, 8), np.float32), np.zeros((m, 8), np.float32), 3, metric="csls",
                     both=True, backend=backend)
        assert got.scores.shape == (n, min(3, m)) and got.rev_indices.shape == (m, min(3, n))
    # unnormalised input (with a zero row) is normalised once; the zero row scores 0 everywhere
    raw = np.random.default_rng(8).standard_normal((30, 8)).astype(np.float32) * 7
    raw[3] = 0
    got = C.topk(torch.from_numpy(raw), raw[:20] * 0.5, 3, backend=backend)
    ref = reference_scores(raw, raw[:20] * 0.5, "cos")
    assert_topk_matches(got.scores, got.indices, ref, 3, tolerance("cos", 8))
    assert torch.all(got.scores[3] == 0)


def test_normalize_and_parse_mem():
    X = np.array([[3.0, 4.0], [0.0, 0.0]])
    N = C.normalize(X)
    assert N.dtype == torch.float32 and N.is_contiguous()
    assert torch.allclose(N, torch.tensor([[0.6, 0.8], [0.0, 0.0]]))
    assert parse_mem("256M") == 256 << 20 and parse_mem("1G") == 1 << 30 and parse_mem(5000) == 5000
    assert parse_mem("1.5GiB") == int(1.5 * (1 << 30)) and parse_mem(None) == DEFAULT_MEM
    with pytest.raises(XlfastError):
        parse_mem("lots")
    # the tile follows the budget and never exceeds it
    for mem in ("64K", "1M", "256M"):
        bx, by = tile_shape(100_000, 100_000, 512, mem)
        assert bx * by * 4 <= parse_mem(mem)
    assert tile_shape(100_000, 100_000, 512, "1M") != tile_shape(100_000, 100_000, 512, "256M")


def test_errors_are_one_line_not_tracebacks():
    X = unit_rows(4, 8, 9)
    with pytest.raises(BackendUnavailable):
        C.topk(X, X, 2, backend="no-such-backend")
    with pytest.raises(XlfastError):
        C.topk(X, X, 2, metric="euclid")
    with pytest.raises(XlfastError):
        C.topk(X, unit_rows(4, 9, 9), 2)
    if "cuda" in C.registry.backends and not torch.cuda.is_available():
        with pytest.raises(BackendUnavailable):
            C.topk(X, X, 2, backend="cuda")


def _dense_reference(sim, knn):
    """One matrix, no padding: CSLS with the neighbourhood being the other side, K clipped."""
    n, m = sim.shape
    r_T = sim.topk(min(knn, m), dim=1).values.mean(1)
    r_S = sim.topk(min(knn, n), dim=0).values.mean(0)
    return 2 * sim - r_T[:, None] - r_S[None, :]


def test_csls_dense_masks_and_clipping():
    torch.manual_seed(0)
    lengths = [(3, 5), (7, 2), (1, 1), (6, 6)]
    B, n, m = len(lengths), 7, 6
    sim = torch.rand(B, n, m) * 2 - 1
    row_mask = torch.zeros(B, n, dtype=torch.bool)
    col_mask = torch.zeros(B, m, dtype=torch.bool)
    for b, (ln, lm) in enumerate(lengths):
        row_mask[b, :ln] = True
        col_mask[b, :lm] = True
    out = csls_dense(sim, 3, row_mask, col_mask)
    for b, (ln, lm) in enumerate(lengths):
        ref = _dense_reference(sim[b, :ln, :lm].double(), 3)
        torch.testing.assert_close(out[b, :ln, :lm].double(), ref, atol=1e-6, rtol=0)
        assert torch.isneginf(out[b, ln:, :]).all() and torch.isneginf(out[b, :, lm:]).all()
    # 2-D input, no masks, gradients flow
    s = sim[3].clone().requires_grad_(True)
    out2 = csls_dense(s, 3)
    torch.testing.assert_close(out2.double(), _dense_reference(sim[3].double(), 3), atol=1e-6, rtol=0)
    out2.sum().backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()


def test_bench_runs_and_every_method_agrees():
    from xlfast.bench.csls import run_bench

    res = run_bench(n=400, m=300, dim=16, k=5, knn=5, repeats=1)
    methods = {(r["method"], r["metric"]) for r in res["results"]}
    assert ("muse", "csls") in methods and all((b, "csls") in methods for b in CPU_BACKENDS if b not in ("torch", "blocked"))
    for r in res["results"]:  # faiss, MUSE-style and every backend find the same nearest neighbour
        assert r["top1_agree"] == 1.0, r
        assert r["seconds"] > 0 and r["gflops"] > 0
    assert res["cpu_state"]["state"] in {"full", "degraded", "single-thread"}


def test_bench_csls_cli_renders_the_report_and_writes_json(tmp_path):
    import json

    from typer.testing import CliRunner

    from xlfast.cli.main import app

    out = tmp_path / "csls.json"
    res = CliRunner().invoke(app, ["bench", "csls", "--n", "300", "--dim", "8", "--k", "3", "--repeats", "1",
                                   "--backend", "numba", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "top-3 retrieval, 300×300×8" in res.output and "GF/s" in res.output  # the rendered report
    data = json.loads(out.read_text())
    assert {(r["method"], r["metric"]) for r in data["results"]} >= {("numba", "cos"), ("numba", "csls")}
    bad = CliRunner().invoke(app, ["bench", "csls", "--n", "10", "--data", "uniform"])
    assert bad.exit_code == 1 and "unknown data 'uniform'" in bad.output


def test_rows_ranks_only_the_queries_with_full_neighbourhoods():
    """rows= must give exactly the full retrieval's rows: r_S still sees every source word."""
    g = torch.Generator().manual_seed(7)
    X, Y = torch.randn(300, 24, generator=g), torch.randn(200, 24, generator=g)
    rows = [5, 0, 299, 17, 17]
    for metric in ("cos", "csls", "margin"):
        full = C.topk(X, Y, 4, metric=metric, knn=10)
        part = C.topk(X, Y, 4, metric=metric, knn=10, rows=rows)
        assert torch.equal(part.indices, full.indices[rows]), metric
        assert torch.allclose(part.scores, full.scores[rows], atol=1e-6), metric


# ------------------------------------------------------------------ fused pass 1 (rows + columns at once)
def _exact_ties_data(n, m, d, seed):
    """Vectors with entries in {-2..2}/4 and duplicated rows: every dot product is exact in float32 (any
    summation order), so exact ties abound and the tie rule (earlier index first) is checkable."""
    rng = np.random.default_rng(seed)
    X = (rng.integers(-2, 3, (n, d)) / 4).astype(np.float32)
    Y = (rng.integers(-2, 3, (m, d)) / 4).astype(np.float32)
    if n > 6:
        X[n // 2] = X[1]
    if m > 6:
        Y[m - 1] = Y[2]
        Y[m // 3] = Y[2]
    return X, Y


def _lexsort_topk(S, k):
    """Top-k per row by (score descending, index ascending): the kernels' exact semantics."""
    order = np.lexsort((np.broadcast_to(np.arange(S.shape[1]), S.shape), -S), axis=-1)[:, :k]
    return np.take_along_axis(S, order, 1), order


FUSED = [b for b in ("numba", "cpp") if b in C.registry.available("cpu")]


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("n,m,k,stripes,mem", [(37, 53, 5, 3, 4096), (64, 9, 12, 2, 8192),
                                                (200, 333, 10, 1, 20000), (150, 150, 4, 5, 1 << 20)])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_fused_kernel_exact_ties(backend, n, m, k, stripes, mem, exclude_self):
    if exclude_self:
        m = n
    X, Y = _exact_ties_data(n, m, 7, seed=n + m)
    impl = C.registry.choose("cpu", backend)[1]
    fused = impl._fused
    impl._fused = functools.partial(fused, stripes=stripes)  # several stripes even on one thread: the merge is tested
    try:
        kr, kc = clip_k(k, m, exclude_self), clip_k(k, n, exclude_self)
        rows, cols = stream.stream(impl, X, Y, k_rows=kr, k_cols=kc, mode=Mode.COS, r_T=None, r_S=None, mem=mem,
                                   exclude_self=exclude_self)
    finally:
        impl._fused = fused
    S = X.astype(np.float64) @ Y.astype(np.float64).T
    if exclude_self:
        np.fill_diagonal(S, -np.inf)
    _, cols_alone = stream.stream(impl, X, Y, k_rows=0, k_cols=kc, mode=Mode.COS, r_T=None, r_S=None, mem=mem,
                                  exclude_self=exclude_self)
    for got, ref_S, kk, label in ((rows, S, kr, "rows"), (cols, S.T, kc, "cols"), (cols_alone, S.T, kc, "cols alone")):
        vals, idx = _lexsort_topk(ref_S, kk)
        np.testing.assert_array_equal(got.vals, vals.astype(np.float32), err_msg=label)
        np.testing.assert_array_equal(got.idx, idx, err_msg=label)


# ------------------------------------------------------- bf16 tiles with exact fp32 re-scoring
@pytest.fixture
def bf16_path(monkeypatch):
    """The bf16 search on any CPU: where bf16 is not native the automatic choice never takes it, but it
    runs all the same (oneDNN emulates the bf16 GEMM), so its answers are checked everywhere."""
    monkeypatch.setattr(bf16, "bf16_native", lambda device_type="cpu": True)


def _clustered(n, d, seed, centers=20, noise=0.05):
    rng = np.random.default_rng(seed)
    C0 = rng.standard_normal((centers, d))
    X = C0[rng.integers(0, centers, n)] + noise * rng.standard_normal((n, d))
    return C.normalize(X.astype(np.float32)).numpy()


@pytest.mark.parametrize("backend", TILED)
@pytest.mark.parametrize("metric", C.METRICS)
@pytest.mark.parametrize("data", ["random", "clustered"])
def test_bf16_rescored_matches_reference(backend, metric, data, bf16_path):
    if data == "random":
        X, Y = unit_rows(700, 48, 11), unit_rows(555, 48, 12)
    else:
        X, Y = _clustered(700, 48, 11), _clustered(555, 48, 12)
    st = {}
    got = C.topk(X, Y, 6, metric=metric, knn=5, both=True, normalized=True, backend=backend,
                 strategy=C.Bf16(mem="300K"), stats=st)
    ref = reference_scores(X, Y, metric, knn=5, normalized=True)
    tol = tolerance(metric, 48, reference_means(X, Y, 5, normalized=True))
    assert_topk_matches(got.scores, got.indices, ref, 6, tol, f"bf16 {backend} {metric} fwd")
    assert_topk_matches(got.rev_scores, got.rev_indices, ref.T, 6, tol, f"bf16 {backend} {metric} rev")
    assert st["precision"] == "bf16" and st["rows"]["rows"] == 700 and st["cols"]["rows"] == 555
    # without the fp32 fallback the re-scored candidates alone must already be right here
    st2 = {}
    raw = C.topk(X, Y, 6, metric=metric, knn=5, normalized=True, backend=backend,
                 strategy=C.Bf16(certify=False, extra=40), stats=st2)
    assert_topk_matches(raw.scores, raw.indices, ref, 6, tol, f"bf16 raw {backend} {metric}")
    assert st2["rows"]["recomputed"] == 0


@pytest.mark.parametrize("backend", FUSED)
def test_bf16_exclude_self_ties_and_clipping(backend, bf16_path):
    X = unit_rows(300, 12, 3, dup_of=([0, 1, 2], [10, 11, 12]))
    for metric in C.METRICS:
        st = {}
        got = C.topk(X, X, 5, metric=metric, knn=3, both=True, normalized=True, backend=backend,
                     exclude_self=True, strategy=C.Bf16(mem="100K", extra=0), stats=st)
        ref = reference_scores(X, X, metric, knn=3, normalized=True, exclude_self=True)
        tol = tolerance(metric, 12, reference_means(X, X, 3, normalized=True, exclude_self=True))
        assert_topk_matches(got.scores, got.indices, ref, 5, tol, f"bf16 {backend} {metric}")
        assert (got.indices != torch.arange(300)[:, None]).all()
        assert got.indices[10, 0] == 0 and got.indices[0, 0] == 10
    # k above the number of candidates; means alone
    Xs, Ys = unit_rows(9, 8, 6), unit_rows(4, 8, 7)
    got = C.topk(Xs, Ys, 50, both=True, normalized=True, backend=backend, strategy=C.Bf16())
    assert got.scores.shape == (9, 4) and (got.indices.sort(1).values == torch.arange(4)).all()
    r_T, r_S = C.neighbourhood_means(Xs, Ys, 10, normalized=True, backend=backend, strategy=C.Bf16())
    np.testing.assert_allclose(r_T.double(), reference_cos(Xs, Ys, True).mean(1), atol=1e-5)
    np.testing.assert_allclose(r_S.double(), reference_cos(Xs, Ys, True).mean(0), atol=1e-5)
    with pytest.raises(XlfastError):
        C.Bf16(extra=-1)


def test_bf16_error_bound_holds():
    """The per-row bound used by the certificate covers the real bf16 GEMM error."""
    X, Y = unit_rows(400, 300, 21), _clustered(500, 300, 22)
    eps_in, cmax = bf16.error_bound(X, Y)
    rounded = (torch.from_numpy(X).bfloat16() @ torch.from_numpy(Y).bfloat16().T).double().numpy()
    exact = X.astype(np.float64) @ Y.astype(np.float64).T
    bound = bf16.BF16_U * np.abs(rounded) / (1 - bf16.BF16_U) + eps_in[:, None]
    assert (np.abs(rounded - exact) <= bound).all()
    assert (np.abs(exact) <= cmax[:, None]).all()


# ------------------------------------------------------------------ approximate search (faiss)
def clustered_rows(n, d, seed, centres, spread=1.0):
    """Rows around shared random centres (cosine ≈ 0.5 within a cluster): the data IVF is made for."""
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(centres), n)
    return C.normalize(centres[pick] + spread * rng.standard_normal((n, d)).astype(np.float32)).numpy()


def recall(got, ref):
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(got.tolist(), ref.tolist())]))


# measured on this data (seeded), both directions, every metric, at the defaults: ivf 0.992–0.9995;
# ivfpq 0.950–0.988 (the reverse index holds only 1500 rows: 5-bit PQ codes)
APPROX_RECALL = {"ivf": 0.98, "ivfpq": 0.93}


@pytest.mark.parametrize("kind", approx.KINDS)
@pytest.mark.parametrize("metric", C.METRICS)
def test_approx_recall_against_exact(kind, metric):
    pytest.importorskip("faiss")
    centres = np.random.default_rng(0).standard_normal((100, 32)).astype(np.float32)
    X, Y = clustered_rows(1500, 32, 1, centres), clustered_rows(4000, 32, 2, centres)
    exact = C.topk(X, Y, 10, metric=metric, knn=10, both=True, normalized=True)
    st = {}
    got = C.topk(X, Y, 10, metric=metric, knn=10, both=True, normalized=True, strategy=C.Approx(kind), stats=st)
    assert got.indices.shape == (1500, 10) and got.rev_indices.shape == (4000, 10)
    assert got.scores.dtype == torch.float32 and got.indices.dtype == torch.int64
    assert recall(got.indices, exact.indices) >= APPROX_RECALL[kind], st
    assert recall(got.rev_indices, exact.rev_indices) >= APPROX_RECALL[kind], st
    # returned scores are exact re-scorings of the returned pairs, descending
    ref = reference_scores(X, Y, "cos", normalized=True)
    ok = got.indices >= 0
    if metric == "cos":
        np.testing.assert_allclose(ref.gather(1, got.indices.clamp_min(0))[ok], got.scores.double()[ok], atol=1e-5)
    assert (got.scores[:, :-1] >= got.scores[:, 1:]).all()
    assert st["approx"] == kind and st["index_Y"]["nlist"] == approx.approx_nlist(4000) and st["index_Y"]["bytes"] > 0
    # approximate neighbourhood means are close to the exact ones
    r_T, r_S = C.neighbourhood_means(X, Y, 10, normalized=True, strategy=C.Approx(kind))
    e_T, e_S = C.neighbourhood_means(X, Y, 10, normalized=True)
    assert (r_T - e_T).abs().mean() < 2e-3 and (r_S - e_S).abs().mean() < 2e-3


def test_approx_exclude_self_rows_and_small_inputs():
    pytest.importorskip("faiss")
    centres = np.random.default_rng(3).standard_normal((20, 16)).astype(np.float32)
    X = clustered_rows(800, 16, 4, centres)
    scan_all = C.Approx("ivf", nprobe=1000)
    got = C.topk(X, X, 5, metric="csls", knn=5, normalized=True, exclude_self=True, strategy=scan_all)
    assert not (got.indices == torch.arange(800)[:, None]).any()
    exact = C.topk(X, X, 5, metric="csls", knn=5, normalized=True, exclude_self=True)
    assert recall(got.indices, exact.indices) > 0.99  # nprobe ≥ nlist: every list is scanned
    full = C.topk(X, X[:300], 4, metric="margin", knn=3, normalized=True, strategy=scan_all)
    sub = C.topk(X, X[:300], 4, metric="margin", knn=3, normalized=True, strategy=scan_all, rows=[7, 0, 7])
    assert torch.equal(sub.indices, full.indices[[7, 0, 7]])
    tiny = C.topk(X[:3], X[:2], 5, strategy=C.Approx("ivf"))  # k clipped, one inverted list
    assert tiny.indices.shape == (3, 2) and (tiny.indices >= 0).all()
    assert C.topk(X[:0], X, 3, strategy=C.Approx("ivf")).indices.shape == (0, 3)


def test_approx_bad_arguments():
    X = unit_rows(50, 8, 5)
    with pytest.raises(XlfastError, match="unknown approx"):
        C.Approx("hnsw")
    for bad in ({"nlist": 0}, {"nprobe": -1}, {"nprobe": 2.5}, {"extra": -1}, {"nlist": True}):
        with pytest.raises(XlfastError):
            C.Approx("ivf", **bad)
    try:
        import faiss  # noqa: F401
    except ImportError:
        with pytest.raises(XlfastError, match="needs faiss: pip install faiss-cpu"):
            C.topk(X, X, 2, strategy=C.Approx("ivf"))
        return
    with pytest.raises(XlfastError, match="rows="):
        C.topk(X, X, 2, strategy=C.Approx("ivf"), rows=[0], both=True)


def test_cuda_backend_registered_and_forcing_it_without_a_gpu_fails_loudly():
    assert "cuda" in C.registry.backends
    if not torch.cuda.is_available():
        assert "cuda" not in C.registry.available("cpu") and not C.registry.backends["cuda"].available()
        with pytest.raises(BackendUnavailable, match="backend 'cuda' does not run on cpu"):
            C.topk(unit_rows(4, 8, 1), unit_rows(4, 8, 2), 2, backend="cuda")


def test_bench_approx_rows_have_recall():
    pytest.importorskip("faiss")
    from xlfast.bench.csls import run_bench

    res = run_bench(n=600, m=500, dim=16, k=5, knn=5, repeats=1, progress=False, backends=["torch"], peers=False,
                    approx=True, data="clustered")
    rows = {(r["method"], r["metric"]): r for r in res["results"]}
    assert {("approx-ivf", "cos"), ("approx-ivf", "csls"), ("approx-ivfpq", "csls")} <= set(rows)
    assert rows[("torch", "cos")]["recall"] == 1.0 and rows[("approx-ivf", "cos")]["recall"] > 0.9


@pytest.mark.parametrize("metric", ["cos", "csls"])
def test_auto_precision_takes_the_certified_bf16_path_on_large_inputs_and_stays_exact(monkeypatch, metric, bf16_path):
    rng = np.random.default_rng(5)
    X, Y = rng.standard_normal((300, 24)).astype(np.float32), rng.standard_normal((250, 24)).astype(np.float32)
    small = {}
    C.topk(X, Y, 5, metric=metric, stats=small)
    assert small.get("precision") != "bf16"  # below the threshold: fp32
    monkeypatch.setattr(bf16, "AUTO_BF16_MIN_PAIRS", 1000)
    big = {}
    got = C.topk(X, Y, 5, metric=metric, stats=big)
    assert big["precision"] == "bf16"
    ref = reference_topk(X, Y, 5, metric=metric)
    assert torch.equal(got.indices, ref.indices)
    assert torch.allclose(got.scores, ref.scores, atol=1e-5)
    # where bf16 is emulated, not native, the automatic choice stays in float32 at any size
    monkeypatch.setattr(bf16, "bf16_native", lambda device_type="cpu": False)
    emulated = {}
    C.topk(X, Y, 5, metric=metric, stats=emulated)
    assert emulated.get("precision") != "bf16"


# ------------------------------------------------------------------ strategies and the memory budget
def test_strategy_objects_carry_the_tile_budget_and_mem_is_the_automatic_choices(monkeypatch):
    X, Y = unit_rows(60, 8, 1), unit_rows(70, 8, 2)
    seen = []
    real = stream.tile_shape
    monkeypatch.setattr(stream, "tile_shape", lambda n, m, d, mem: seen.append(mem) or real(n, m, d, mem))
    plain = C.topk(X, Y, 3, metric="csls", knn=4, normalized=True, mem="64K")
    assert seen and set(seen) == {"64K"}  # both passes tiled within the budget given as mem=
    seen.clear()
    same = C.topk(X, Y, 3, metric="csls", knn=4, normalized=True, strategy=C.Exact(mem="64K"))
    assert set(seen) == {"64K"} and torch.equal(plain.indices, same.indices)
    seen.clear()
    C.topk(X, Y, 3, normalized=True, strategy=C.Bf16(mem="96K"))  # bf16, or the exact scan where not native
    assert set(seen) == {"96K"}
    # one budget per call: mem= beside a strategy object is refused, never silently ignored or merged
    for strategy in (C.Exact(), C.Exact(mem="1M"), C.Bf16(), C.Approx("ivf")):
        with pytest.raises(XlfastError, match="mem= is the automatic choice's tile budget"):
            C.topk(X, Y, 3, mem="1M", strategy=strategy)
    with pytest.raises(XlfastError, match="Approx has no tile budget"):
        C.neighbourhood_means(X, Y, 3, mem="1M", strategy=C.Approx("ivf"))
    with pytest.raises(XlfastError, match="strategy must be"):
        C.topk(X, Y, 3, strategy="bf16")
    with pytest.raises(XlfastError, match="cannot read memory budget"):
        C.topk(X, Y, 3, strategy=C.Exact(mem="lots"))



# ------------------------------------------------------------------ the portable C++ build
def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            return next((set(line.split(":", 1)[1].split()) for line in fh if line.startswith("flags")), set())
    except OSError:
        return set()


@pytest.mark.parametrize("module", ["_csls_cpu", "_subword_embed_cpu"])
def test_cpp_kernels_are_built_per_instruction_set_and_the_cpu_picks_its_own(module):
    """No -march=native: generic, AVX2 and AVX-512 variants are all compiled in (x86-64 with GCC), and the
    one this CPU runs is chosen at import — AVX2 on an AVX2 CPU without AVX-512 (this machine: Zen3)."""
    ext = pytest.importorskip(f"xlfast.{module}")
    flags = _cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo")
    assert ext.simd_paths() == ["generic", "avx2", "avx512f"]
    expected = "avx512f" if "avx512f" in flags else "avx2" if {"avx2", "fma"} <= flags else "generic"
    assert ext.simd_path() == expected
