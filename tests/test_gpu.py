"""On a GPU, for real: every backend that runs there against the plain-torch reference, and a training run.

The CPU suite checks the Triton kernels in Triton's interpreter and only compiles the CUDA sources; this file
runs them on the device. Skipped where torch sees no CUDA device.
"""
import json

import pytest
import torch

from xlfast.kernels import csls as C
from xlfast.kernels.csls.reference import reference_scores
from xlfast.kernels.linear_ce import linear_cross_entropy, reference_linear_cross_entropy
from xlfast.kernels.linear_ce import registry as ce_registry
from xlfast.kernels.subword_embed import PieceLayout, subword_embed
from xlfast.kernels.subword_embed import registry as embed_registry
from xlfast.kernels.subword_embed.reference import reference_subword_embed

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def gpu_backends(registry):
    return [n for n in registry.available("cuda") if n != "torch"]


@pytest.mark.parametrize("metric", ["cos", "csls", "margin"])
def test_csls_gpu_backends_return_the_reference_top_k(metric):
    gen = torch.Generator().manual_seed(0)
    X, Y = torch.randn(3000, 96, generator=gen), torch.randn(2500, 96, generator=gen)
    full = reference_scores(X.double(), Y.double(), metric=metric, knn=10)
    best = full.topk(10, dim=1).values
    assert gpu_backends(C.registry), "no csls backend loads on this GPU"
    for backend in gpu_backends(C.registry):
        got = C.topk(X.cuda(), Y.cuda(), 10, metric=metric, knn=10, backend=backend, both=True)
        # Near-ties may swap places between fp32 and fp64: the scores of what was returned must be the best.
        torch.testing.assert_close(got.scores.double(), best, atol=2e-5, rtol=0, msg=lambda m, b=backend: f"{b}: {m}")
        torch.testing.assert_close(full.gather(1, got.indices.long()), best, atol=2e-5, rtol=0, msg=lambda m, b=backend: f"{b}: {m}")
        rev_best = full.T.topk(10, dim=1).values
        torch.testing.assert_close(got.rev_scores.double(), rev_best, atol=2e-5, rtol=0, msg=lambda m, b=backend: f"{b}: {m}")


def _layout(words: int, pieces: int, gen: torch.Generator) -> PieceLayout:
    counts = torch.randint(1, 6, (words,), generator=gen)
    offsets = torch.zeros(words + 1, dtype=torch.int64)
    offsets[1:] = counts.cumsum(0)
    flat = torch.randint(0, pieces, (int(offsets[-1]),), generator=gen)
    return PieceLayout(offsets, flat, pieces)


@pytest.mark.parametrize("with_ids", [False, True])
def test_subword_embed_gpu_backends_match_the_reference(with_ids):
    gen = torch.Generator().manual_seed(1)
    V, P, d = 5000, 700, 200
    layout = _layout(V, P, gen)
    E, Z = torch.randn(V, d, generator=gen), torch.randn(P, d, generator=gen)
    ids = torch.randint(0, V, (900,), generator=gen) if with_ids else None
    Er, Zr = E.double().requires_grad_(), Z.double().requires_grad_()
    ref = reference_subword_embed(Er, Zr, layout, ids)
    g = torch.randn(ref.shape, generator=gen)
    ref.backward(g.double())
    assert gpu_backends(embed_registry), "no subword_embed backend loads on this GPU"
    for backend in gpu_backends(embed_registry):
        Eg, Zg = E.to("cuda", copy=True).requires_grad_(), Z.to("cuda", copy=True).requires_grad_()
        out = subword_embed(Eg, Zg, layout, None if ids is None else ids.cuda(), backend=backend)
        out.backward(g.cuda())
        torch.testing.assert_close(out.double().cpu(), ref.detach(), atol=1e-5, rtol=1e-5, msg=lambda m, b=backend: f"{b}: {m}")
        torch.testing.assert_close(Eg.grad.double().cpu(), Er.grad, atol=1e-5, rtol=1e-5, msg=lambda m, b=backend: f"{b}: {m}")
        torch.testing.assert_close(Zg.grad.double().cpu(), Zr.grad, atol=1e-4, rtol=1e-5, msg=lambda m, b=backend: f"{b}: {m}")


def test_subword_embed_dropout_masks_are_the_same_on_every_gpu_backend():
    gen = torch.Generator().manual_seed(2)
    layout = _layout(3000, 500, gen)
    E, Z = torch.randn(3000, 64, generator=gen).cuda(), torch.randn(500, 64, generator=gen).cuda()
    outs = {}
    for backend in embed_registry.available("cuda"):
        outs[backend] = subword_embed(E, Z, layout, backend=backend, piece_dropout=0.3, word_dropout=0.5,
                                      generator=torch.Generator().manual_seed(7))
    for backend, out in outs.items():
        torch.testing.assert_close(out, outs["torch"], atol=1e-5, rtol=1e-5, msg=lambda m, b=backend: f"{b}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_linear_cross_entropy_gpu_backends_match_the_reference(dtype):
    gen = torch.Generator().manual_seed(3)
    N, V, d = 1000, 9000, 128
    x, W = torch.randn(N, d, generator=gen) / 4, torch.randn(V + 1, d, generator=gen) / 4
    t = torch.randint(0, V, (N,), generator=gen)
    t[::7] = -1
    xr, Wr = x.double().requires_grad_(), W.double().requires_grad_()
    ref = reference_linear_cross_entropy(xr, Wr, t, None, ignore_index=-1, first_class=1)
    ref.backward()
    # bf16 inputs are rounded before the product: the tolerance is bf16's 2^-8 relative on each term.
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=3e-2, rtol=3e-2)
    assert gpu_backends(ce_registry), "no linear_ce backend loads on this GPU"
    for backend in gpu_backends(ce_registry):
        xg = x.to("cuda", dtype, copy=True).requires_grad_()
        Wg = W.to("cuda", dtype, copy=True).requires_grad_()
        loss = linear_cross_entropy(xg, Wg, t.cuda(), ignore_index=-1, first_class=1, backend=backend)
        loss.backward()
        assert abs(float(loss) - float(ref)) <= tol["rtol"] * abs(float(ref)), (backend, float(loss), float(ref))
        torch.testing.assert_close(xg.grad.double().cpu(), xr.grad, **tol, msg=lambda m, b=backend: f"{b}: {m}")
        torch.testing.assert_close(Wg.grad.double().cpu(), Wr.grad, **tol, msg=lambda m, b=backend: f"{b}: {m}")
        assert float(Wg.grad[0].abs().max()) == 0.0


def test_training_on_the_gpu_learns_the_synthetic_pair(tmp_path):
    from xlfast.corpora import CorpusSpec
    from xlfast.synthetic import make_pair
    from xlfast.tokenize import TokenizerSpec
    from xlfast.train import TrainConfig, Trainer

    pair = make_pair(n_sentences=240, vocab=40, seed=3)
    pair.write(tmp_path)
    cfg = TrainConfig(corpora=[CorpusSpec(str(tmp_path / "corpus.tsv"), None, ("src", "tgt"))],
                      out=str(tmp_path / "r"), dim=64, batch_size=16, spm_vocab=200,
                      tokenizer=TokenizerSpec("none"), epochs=30, patience=50, device="cuda")
    trainer = Trainer.new(cfg, log=lambda m: None)
    assert next(trainer.model.parameters()).device.type == "cuda"
    trainer.fit()
    log = [json.loads(x) for x in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < 0.6 * log[0]["loss"]
    # Measured on the CPU: the pseudo-dictionary P@1 of this pair goes from ~0 to ~0.98 in 30 epochs.
    assert max(r["dict_p1"] for r in log) > log[0]["dict_p1"] + 0.5
