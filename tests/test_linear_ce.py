"""The fused linear cross-entropy against the materialised-logits reference, its sampled-softmax variant,
and the models that use it."""
from __future__ import annotations

import math

import pytest
import torch

from xlfast.errors import BackendUnavailable, XlfastError
from xlfast.kernels.dispatch import bf16_native
from xlfast.kernels.linear_ce import (UnigramSampler, linear_cross_entropy, reference_linear_cross_entropy, registry,
                                     sampled_cross_entropy)
from xlfast.kernels.linear_ce import base, bf16_gemm

CPU_BACKENDS = [n for n in registry.available("cpu") if n != "torch"]


def problem(N, V, d, *, first_class=0, bias=False, ignore_every=0, seed=0, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N, d, generator=gen) * scale
    W = torch.randn(first_class + V, d, generator=gen) * scale
    b = torch.randn(V, generator=gen) if bias else None
    t = torch.randint(0, V, (N,), generator=gen)
    if ignore_every:
        t[::ignore_every] = -1
    return x, W, t, b


def loss_and_grads(fn, x, W, t, b, dtype, **kw):
    xs = x.to(dtype, copy=True).requires_grad_()
    Ws = W.to(dtype, copy=True).requires_grad_()
    bs = None if b is None else b.to(dtype, copy=True).requires_grad_()
    loss = fn(xs, Ws, t, bs, ignore_index=-1, **kw)
    loss.backward()
    return [loss.detach().double()] + [v.grad.double() for v in (xs, Ws, bs) if v is not None]


def assert_within_derived_tolerance(got, fp32, exact, what):
    """Each output's error against fp64 at most twice the plain fp32 torch error (plus a few ulps of the
    output's scale, for outputs the fp32 reference happens to get exactly)."""
    names = ["loss", "grad x", "grad weight", "grad bias"]
    for name, a, r, e in zip(names, got, fp32, exact):
        err = float((a - e).abs().max())
        ref_err = float((r - e).abs().max())
        floor = 8 * torch.finfo(torch.float32).eps * max(float(e.abs().max()), 1.0)
        assert err <= 2 * ref_err + floor, f"{what} {name}: error {err:.3g}, torch fp32 {ref_err:.3g}"


SHAPES = [
    # (N, V, d, rows per chunk): N not a multiple of the chunk, tiny V, one row, wide vocabulary
    (123, 1000, 37, 16),
    (50, 2, 8, 7),
    (1, 5, 3, 64),
    (64, 5000, 16, 64),
]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("N,V,d,chunk", SHAPES)
@pytest.mark.parametrize("bias", [False, True])
def test_values_and_gradients_match_the_reference(backend, N, V, d, chunk, bias):
    x, W, t, b = problem(N, V, d, first_class=1, bias=bias, ignore_every=5)
    kw = dict(first_class=1)
    exact = loss_and_grads(reference_linear_cross_entropy, x, W, t, b, torch.float64, **kw)
    fp32 = loss_and_grads(reference_linear_cross_entropy, x, W, t, b, torch.float32, **kw)
    # chunks of `chunk` fp32 rows: small shapes run through several chunks and a ragged last one
    got = loss_and_grads(linear_cross_entropy, x, W, t, b, torch.float32, backend=backend,
                         chunk_bytes=chunk * V * 4, **kw)
    assert_within_derived_tolerance(got, fp32, exact, f"{backend} {N}x{V}x{d}")
    # <pad>, the row before the first class, is no class: no gradient
    assert float(got[2][0].abs().max()) == 0.0


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_large_logits_keep_an_exact_log_sum_exp(backend):
    """Logits in the hundreds: exp overflows without the max shift; the result must stay finite and right."""
    x, W, t, b = problem(40, 300, 8, scale=6.0, seed=1)
    exact = loss_and_grads(reference_linear_cross_entropy, x, W, t, b, torch.float64)
    fp32 = loss_and_grads(reference_linear_cross_entropy, x, W, t, b, torch.float32)
    got = loss_and_grads(linear_cross_entropy, x, W, t, b, torch.float32, backend=backend)
    assert all(bool(torch.isfinite(g).all()) for g in got)
    assert_within_derived_tolerance(got, fp32, exact, backend)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_all_rows_ignored_gives_zero_loss_and_zero_gradients(backend):
    x, W, _, b = problem(9, 6, 4, bias=True)
    t = torch.full((9,), -1)
    loss, gx, gw, gb = loss_and_grads(linear_cross_entropy, x, W, t, b, torch.float32, backend=backend)
    assert float(loss) == 0.0
    assert all(float(g.abs().max()) == 0.0 for g in (gx, gw, gb))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradients_scale_with_the_incoming_gradient_and_are_used_once(backend):
    x, W, t, _ = problem(30, 20, 6, ignore_every=4)
    xs, Ws = x.clone().requires_grad_(), W.clone().requires_grad_()
    loss = linear_cross_entropy(xs, Ws, t, ignore_index=-1, backend=backend)
    (0.25 * loss).backward(retain_graph=True)
    xr, Wr = x.clone().requires_grad_(), W.clone().requires_grad_()
    (0.25 * reference_linear_cross_entropy(xr, Wr, t, ignore_index=-1)).backward()
    torch.testing.assert_close(xs.grad, xr.grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(Ws.grad, Wr.grad, atol=1e-6, rtol=1e-5)
    with pytest.raises(RuntimeError, match="already used"):
        loss.backward()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_loss_without_gradients_and_under_bf16_autocast(backend):
    x, W, t, b = problem(70, 40, 12, bias=True, ignore_every=3)
    expected = reference_linear_cross_entropy(x.double(), W.double(), t, b.double(), ignore_index=-1)
    with torch.no_grad():
        got = linear_cross_entropy(x, W, t, b, ignore_index=-1, backend=backend)
    assert got.dtype == torch.float32
    assert math.isclose(float(got), float(expected), rel_tol=1e-5)
    # bf16 rows (a model under CPU autocast) against the fp32 table: in fp32 where the CPU emulates bf16;
    # with bf16 GEMMs (logits rounded to bf16, 2^-8 relative) where it has them natively
    native = bf16_native("cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        xb = x.bfloat16().requires_grad_()
        got = linear_cross_entropy(xb, W, t, b, ignore_index=-1, backend=backend)
    got.backward()
    want = reference_linear_cross_entropy(x.bfloat16().double(), W.double(), t, b.double(), ignore_index=-1)
    assert math.isclose(float(got.detach()), float(want), rel_tol=2.0**-8 if native else 1e-5)
    assert xb.grad.dtype == torch.bfloat16


def test_chunk_rows_come_from_the_argument_or_the_built_in_size_read_at_call_time(monkeypatch):
    # given bytes: as many rows as fit, at least one, never more than the rows there are
    assert base.chunk_rows(1000, 100, 4, chunk_bytes=7 * 400 + 399) == 7
    assert base.chunk_rows(1000, 100, 4, chunk_bytes=10) == 1
    assert base.chunk_rows(5, 100, 4, chunk_bytes=1 << 20) == 5
    # the built-in size, changed after import, is what the next call uses; MIN_CHUNK_ROWS bounds it below
    monkeypatch.setattr(base, "CHUNK_BYTES", 300 * 400)
    assert base.chunk_rows(1000, 100, 4) == 300
    monkeypatch.setattr(base, "CHUNK_BYTES", 400)
    assert base.chunk_rows(1000, 100, 4) == base.MIN_CHUNK_ROWS
    with pytest.raises(XlfastError, match="chunk_bytes must be positive"):
        base.chunk_rows(10, 100, 4, chunk_bytes=0)


def test_the_chunk_size_changes_how_many_chunks_run_not_the_result():
    class CountingRows(base.RowKernel):
        def __init__(self, inner):
            self.inner, self.calls = inner, 0

        def rows_(self, logits, target, bias, loss, grad):
            self.calls += 1
            self.inner.rows_(logits, target, bias, loss, grad)

    x, W, t, _ = problem(100, 50, 8)
    counted = CountingRows(registry.choose("cpu", CPU_BACKENDS[0])[1])
    whole = base.fused_forward(counted, x, W, t, None, -1, 0, True, True, False)
    assert counted.calls == 1
    counted.calls = 0
    chunked = base.fused_forward(counted, x, W, t, None, -1, 0, True, True, False, chunk_bytes=30 * 50 * 4)
    assert counted.calls == 4  # 30 + 30 + 30 + 10 rows
    torch.testing.assert_close(chunked.loss, whole.loss)
    torch.testing.assert_close(chunked.grad_x, whole.grad_x)
    torch.testing.assert_close(chunked.grad_weight, whole.grad_weight)


def test_bad_arguments_are_one_line_errors():
    x, W, t, _ = problem(4, 5, 3)
    with pytest.raises(XlfastError, match="targets must lie in"):
        linear_cross_entropy(x, W, torch.tensor([0, 1, 5, 2]))
    with pytest.raises(XlfastError, match="bias"):
        linear_cross_entropy(x, W, t, torch.zeros(4))
    with pytest.raises(XlfastError, match="target"):
        linear_cross_entropy(x, W, t[:3])
    with pytest.raises(BackendUnavailable):
        linear_cross_entropy(x, W, t, backend="triton")  # a GPU backend asked for on the CPU fails loudly


# ---------------------------------------------------------------------------------------------------
# Sampled softmax


def test_candidates_hold_every_target_uncorrected_and_map_targets_to_their_class():
    counts = torch.tensor([50.0, 0.0, 30.0, 20.0, 10.0, 5.0, 1.0, 1.0, 0.0, 3.0])
    sampler = UnigramSampler({"xx": counts}, draws=4)
    target = torch.tensor([8, -1, 1, 8, 6])  # classes never drawn (count 0) are candidates as targets
    cand, corr, mapped = sampler.candidates("xx", target, -1, torch.Generator().manual_seed(0))
    assert torch.equal(cand, cand.sort().values)
    assert {1, 6, 8} <= set(cand.tolist())
    assert mapped[1] == -1
    assert [int(cand[m]) for m in mapped[[0, 2, 3, 4]]] == [8, 1, 8, 6]
    is_target = torch.isin(cand, torch.tensor([1, 6, 8]))
    assert float(corr[is_target].abs().max()) == 0.0
    # drawn-only classes: −log π ≥ 0, larger for rarer words
    q = counts ** 0.75 / (counts ** 0.75).sum()
    expect = -torch.log(1 - (1 - q[cand[~is_target]].double()) ** 4)
    torch.testing.assert_close(corr[~is_target].double(), expect, rtol=1e-5, atol=1e-6)


def test_log_q_correction_makes_the_partition_estimate_unbiased():
    """E[Σ_targets e^s + Σ_drawn-only e^(s − log π)] = Σ_all e^s (Horvitz–Thompson)."""
    gen = torch.Generator().manual_seed(0)
    V = 30
    counts = torch.rand(V, generator=gen) * 100 + 1
    scores = torch.randn(V, generator=gen)
    sampler = UnigramSampler({"xx": counts}, draws=6)
    target = torch.tensor([2, 7])
    trials = 4000
    total = 0.0
    for _ in range(trials):
        cand, corr, _ = sampler.candidates("xx", target, -1, gen)
        total += float(torch.exp(scores[cand] + corr).sum())
    assert math.isclose(total / trials, float(torch.exp(scores).sum()), rel_tol=0.02)


def test_sampled_loss_equals_the_full_loss_when_every_class_is_drawn():
    x, W, t, b = problem(20, 8, 5, first_class=1, bias=True, ignore_every=3)
    sampler = UnigramSampler({"xx": torch.ones(8)}, draws=2000)  # P(some class never drawn) ~ 1e-115
    got = sampled_cross_entropy(sampler, x, W, t, "xx", b, ignore_index=-1, first_class=1,
                                generator=torch.Generator().manual_seed(1))
    full = reference_linear_cross_entropy(x, W, t, b, ignore_index=-1, first_class=1)
    # every class is in with π = 1 − (7/8)^2000 = 1 in float64: the correction vanishes
    assert math.isclose(float(got), float(full), rel_tol=1e-5)


# ---------------------------------------------------------------------------------------------------
# The models


def _grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", ["parallel", "mono"])
def test_models_give_the_same_loss_and_gradients_fused_and_materialised(kind):
    from test_model import S, T, batch_of, tiny_model
    from test_mono import SENTS, tiny_lm
    from xlfast.model import LMBatch

    model = (tiny_model("ave", dropout=0.3) if kind == "parallel" else tiny_lm("ave", dropout=0.3)).train()
    batch = batch_of(S, T) if kind == "parallel" else LMBatch.build("aa", SENTS)
    results = {}
    for output_backend in ("torch", None):
        torch.manual_seed(5)  # the same dropout masks for both
        loss, parts = model.loss(batch, output_backend=output_backend)
        results[output_backend] = (loss, parts, _grads(model, loss))
    (l0, p0, g0), (l1, p1, g1) = results["torch"], results[None]
    assert math.isclose(float(l0), float(l1), rel_tol=1e-5)
    assert p0.keys() == p1.keys() and all(math.isclose(p0[k], p1[k], rel_tol=1e-5) for k in p0)
    assert g0.keys() == g1.keys()
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], atol=1e-5, rtol=1e-4, msg=name)


def test_the_sampled_model_trains_on_candidates_and_evaluates_on_the_full_vocabulary():
    from test_model import S, T, batch_of, tiny_model

    model = tiny_model("ave", dropout=0.0)
    model.cfg.softmax = "sampled"
    batch = batch_of(S, T)
    with pytest.raises(ValueError, match="sampler"):
        model.train().loss(batch)
    # every class drawn every time: the sampled training loss is the full one
    model.sampler = UnigramSampler({"aa": torch.ones(11), "bb": torch.ones(9)}, draws=3000)
    sampled, _ = model.train().loss(batch)
    full, _ = model.eval().loss(batch)
    assert math.isclose(float(sampled), float(full), rel_tol=1e-5)
    # one draw: training sees only a few classes, evaluation still the full softmax
    model.sampler = UnigramSampler({"aa": torch.ones(11), "bb": torch.ones(9)}, draws=1)
    torch.manual_seed(0)
    sampled, _ = model.train().loss(batch)
    assert not math.isclose(float(sampled), float(full), rel_tol=1e-3)
    assert math.isclose(float(model.eval().loss(batch)[0]), float(full), rel_tol=1e-6)


# ---------------------------------------------------------------------------------------------------
# Training


@pytest.fixture(scope="module")
def synth_corpus(tmp_path_factory):
    from xlfast.synthetic import make_pair

    d = tmp_path_factory.mktemp("synth")
    make_pair(n_sentences=120, vocab=40, seed=3).write(d)
    return d / "corpus.tsv"


def _train(corpus, out, **kw):
    from xlfast.tokenize import TokenizerSpec
    from xlfast.corpora import CorpusSpec
    from xlfast.train import TrainConfig, Trainer

    cfg = TrainConfig(corpora=[CorpusSpec(str(corpus), None, ("src", "tgt"))], out=str(out), dim=32, batch_size=16,
                      spm_vocab=200, tokenizer=TokenizerSpec("none"), epochs=3, patience=10, **kw)
    trainer = Trainer.new(cfg, log=lambda m: None)
    trainer.fit()
    import json

    return trainer, [json.loads(x)["loss"] for x in (out / "log.jsonl").read_text().splitlines()]


def test_a_short_training_run_gives_the_same_loss_curve_fused_and_materialised(synth_corpus, tmp_path, monkeypatch):
    import xlfast.kernels.linear_ce as lce

    calls = []
    fused = lce.fused_forward
    monkeypatch.setattr(lce, "fused_forward", lambda *a, **k: calls.append(1) or fused(*a, **k))
    curves, fused_calls = {}, {}
    for backend in ("torch", "auto"):  # torch: the user's fallback, XLFAST_LINEAR_CE_BACKEND=torch
        monkeypatch.setenv("XLFAST_LINEAR_CE_BACKEND", backend)
        calls.clear()
        _, curves[backend] = _train(synth_corpus, tmp_path / backend)
        fused_calls[backend] = len(calls)
    assert fused_calls["torch"] == 0 and fused_calls["auto"] > 0
    assert len(curves["torch"]) == 3
    for a, b in zip(curves["torch"], curves["auto"]):
        assert math.isclose(a, b, rel_tol=1e-4), curves


def test_sampled_softmax_trains_from_the_corpus_counts(synth_corpus, tmp_path):
    from xlfast.model import BOS, EOS

    trainer, curve = _train(synth_corpus, tmp_path / "s", softmax="sampled")
    assert trainer.model.cfg.softmax == "sampled"
    assert curve[-1] < curve[0]
    prep, q = trainer.prep, trainer.model.sampler.q
    for lang, sents in (("src", prep.datasets[0].src), ("tgt", prep.datasets[0].tgt)):
        counts = torch.zeros(len(prep.vocabs[lang]) - 1, dtype=torch.float64)
        for s in sents:
            for w in s:
                counts[w - 1] += 1
        counts[BOS - 1] += len(sents)
        counts[EOS - 1] += len(sents)
        torch.testing.assert_close(q[lang], counts ** 0.75 / (counts ** 0.75).sum())


def test_train_cli_passes_the_softmax_choice_to_the_model(synth_corpus, tmp_path):
    import json

    from typer.testing import CliRunner

    from xlfast.cli.main import app

    out = tmp_path / "r"
    r = CliRunner().invoke(app, ["train", str(synth_corpus), "--langs", "src,tgt", "-o", str(out), "--epochs", "1",
                                 "--dim", "16", "--tokenize", "none", "--softmax", "sampled"])
    assert r.exit_code == 0, r.output
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["softmax"] == "sampled" and config["model"]["softmax"] == "sampled"
    r = CliRunner().invoke(app, ["train", str(synth_corpus), "-o", str(tmp_path / "x"), "--softmax", "some"])
    assert r.exit_code != 0


def test_bench_checks_every_backend_and_measures_the_materialised_logits():
    from xlfast.bench.linear_ce import run_bench

    res = run_bench(rows=1000, vocab=4000, dim=16, repeats=1, chunk_mb=[0.5], ignored=0.1)
    by = {r["provider"]: r for r in res["results"]}
    assert set(by) == {"torch"} | {f"{n}@0.5MB" for n in CPU_BACKENDS}
    for name, r in by.items():
        assert r["max_err"] < 1e-4, name
        if name != "torch" and r["peak_extra_mb"] is not None:
            # 16 MB of logits (and as much again for their gradient) against one 0.5 MB chunk
            assert r["peak_extra_mb"] < 0.5 * by["torch"]["peak_extra_mb"], (name, r["peak_extra_mb"])


def test_bench_in_bf16_measures_each_provider_against_float32_on_the_same_rows():
    """`xlfast bench linear-ce --bf16`: both providers run under autocast on bf16 rows, and the error column
    is each one's distance from float32, so the fused path's is comparable to torch's (not zero)."""
    from xlfast.bench.linear_ce import run_bench

    res = run_bench(rows=512, vocab=3000, dim=32, repeats=1, chunk_mb=[0.25], bf16=True)
    by = {r["provider"]: r for r in res["results"]}
    assert res["bf16"] and set(by) == {"torch"} | {f"{n}@0.25MB" for n in CPU_BACKENDS}
    assert 0 < by["torch"]["max_err"] < 0.05
    for name, r in by.items():
        assert r["max_err"] <= 2 * by["torch"]["max_err"] + 1e-3, (name, r["max_err"], by["torch"]["max_err"])


@pytest.mark.skipif(not bf16_gemm.works(), reason="this torch has no MKL bf16→float32 GEMM")
def test_mkl_bf16_gemm_matches_torch_in_every_layout_and_accumulates_in_float32():
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(70, 130, generator=gen).bfloat16()
    b = torch.randn(130, 45, generator=gen).bfloat16()
    want = a.double() @ b.double()
    for A in (a, a.t().contiguous().t()):
        for B in (b, b.t().contiguous().t()):
            out = torch.empty(70, 45)
            bf16_gemm.mm_into(A, B, out)
            assert torch.allclose(out.double(), want, atol=1e-4, rtol=1e-5)
    # β = 1 adds into float32: 1e4 + a small product keeps the small product's bits a bf16 output would lose
    out = torch.full((70, 45), 1e4)
    bf16_gemm.mm_into(a, b, out, accumulate=True)
    assert torch.allclose(out.double() - 1e4, want, atol=2e-3)
    with pytest.raises(ValueError):
        bf16_gemm.mm_into(a, b, torch.empty(70, 45, dtype=torch.bfloat16))


@pytest.mark.parametrize("mkl", [True, False], ids=["mkl-bf16-gemm", "torch-bf16-gemm"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("N,V,d,chunk", [(123, 1000, 37, 16), (64, 5000, 16, 64)])
def test_bf16_rows_take_bf16_gemms_and_stay_within_autocasts_error(backend, N, V, d, chunk, mkl, monkeypatch):
    """The CPU path for bf16 rows against a float32 table (what CPUs with AMX / AVX512-BF16 run under
    autocast): bf16 GEMMs, float32 row pass, the gradient GEMMs in MKL's bf16→float32 GEMM where torch
    has it, else torch's bf16 ones. Run here on any CPU (bf16 GEMMs are only slower where emulated). Its
    error against fp64 on the same bf16 rows must stay within twice that of F.linear + F.cross_entropy
    under bf16 autocast, which also rounds the logits to bf16."""
    if mkl and not bf16_gemm.works():
        pytest.skip("this torch has no MKL bf16→float32 GEMM")
    monkeypatch.setattr(bf16_gemm, "available", lambda: mkl)
    x, W, t, b = problem(N, V, d, first_class=1, bias=True, ignore_every=5, scale=0.5)
    xb = x.bfloat16()
    _, kernel = registry.choose("cpu", backend)
    res = base.fused_forward(kernel, xb, W, t, b, -1, 1, True, True, True, chunk_bytes=chunk * V * 4)
    assert res.grad_x.dtype == torch.bfloat16 and res.grad_weight.dtype == torch.float32
    got = [res.loss.double(), res.grad_x.double(), res.grad_weight.double(), res.grad_bias.double()]
    exact = loss_and_grads(reference_linear_cross_entropy, xb.double(), W, t, b, torch.float64, first_class=1)

    def autocast_ref(xs, Ws, t, bs, **kw):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return reference_linear_cross_entropy(xs, Ws, t, bs, **kw).float()

    xs, Ws, bs = xb.clone().requires_grad_(), W.clone().requires_grad_(), b.clone().requires_grad_()
    loss = autocast_ref(xs, Ws, t, bs, ignore_index=-1, first_class=1)
    loss.backward()
    ref = [loss.detach().double(), xs.grad.double(), Ws.grad.double(), bs.grad.double()]
    for name, a, r, e in zip(["loss", "grad x", "grad weight", "grad bias"], got, ref, exact):
        err, ref_err = float((a - e).abs().max()), float((r - e).abs().max())
        floor = 4 * 2.0**-8 * float(e.abs().max()) / math.sqrt(N)  # a few bf16 ulps of the scale, averaged over rows
        assert err <= 2 * ref_err + floor, f"{name}: error {err:.3g}, autocast torch {ref_err:.3g}"


@pytest.mark.parametrize("V,d", [(37, 19), (64, 32), (1000, 70)])
def test_the_transposed_bf16_table_equals_torchs_rounding_with_and_without_the_extension(V, d, monkeypatch):
    """The forward GEMM's [d, V] bf16 table: every element rounded to nearest even as torch rounds, on
    shapes that are not whole tiles, whether the C++ tiled transpose or torch's copy makes it."""
    gen = torch.Generator().manual_seed(V)
    table = torch.randn(V, d, generator=gen) * torch.logspace(-3, 3, d)  # values across many exponents
    table[0, 0] = 1.0 + 2.0**-8  # a tie: rounds to even (down)
    table[-1, -1] = 1.0 + 3 * 2.0**-8  # a tie: rounds to even (up)
    want = table.t().bfloat16()
    paths = [base._ext, None] if base._ext is not None else [None]
    for ext in paths:
        monkeypatch.setattr(base, "_ext", ext)
        out = torch.full((d, V), float("nan"), dtype=torch.bfloat16)
        assert base.transposed_bf16(table, out) is out
        assert torch.equal(out, want), ext
    assert float(want[0, 0]) == 1.0 and float(want[-1, -1]) == 1.0 + 4 * 2.0**-8
