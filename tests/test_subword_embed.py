"""The fused subword-average lookup: every CPU backend against the torch reference and a plain loop."""
from __future__ import annotations

import pytest
import torch

from xlfast.bench.embed import Consumers
from xlfast.errors import BackendUnavailable, XlfastError
from xlfast.kernels.subword_embed import PieceLayout, registry, subword_embed
from xlfast.kernels.subword_embed.base import pool
from xlfast.kernels.subword_embed.reference import reference_subword_embed

CPU_BACKENDS = registry.names("cpu")
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float64: dict(atol=1e-12, rtol=1e-12)}


def loop_embed(E, Z, pieces_per_word, ids):
    """The definition, one word at a time: E[w] + true mean of its piece vectors (repeats count)."""
    return torch.stack([E[w] + torch.stack([Z[p] for p in pieces_per_word[w]]).mean(0) for w in ids])


def random_words(V, P, max_len, gen):
    words = []
    for w in range(V):
        n = int(torch.randint(1, max_len + 1, (1,), generator=gen))
        words.append(torch.randint(0, P, (n,), generator=gen).tolist())
    return words


def first_mismatch(a, b, **tol):
    bad = ~torch.isclose(a, b, **tol)
    return None if not bad.any() else [tuple(i.tolist()) for i in torch.nonzero(bad)[:5]]


def available(name):
    if not registry.backends[name].available():
        pytest.skip(f"backend {name} not available here")


# Words with one piece, many pieces, a piece repeated inside a word, and a piece shared by many words.
SPECIAL_WORDS = [[3], [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2], [5, 5], [5, 5, 5], [7], [2, 7, 2], [0]]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d", [1, 5, 123])
def test_values_and_grads_match_reference(backend, dtype, d):
    available(backend)
    gen = torch.Generator().manual_seed(d)
    words = SPECIAL_WORDS + random_words(57, 9, 6, gen)
    layout = PieceLayout.from_lists(words, num_pieces=9)
    V, P = len(words), 9
    E0 = torch.randn(V, d, dtype=dtype, generator=gen)
    Z0 = torch.randn(P, d, dtype=dtype, generator=gen)
    for ids in (None, torch.tensor([4, 1, 1, 0, 63, 4, 2, 2, 2])):
        rows = list(range(V)) if ids is None else ids.tolist()
        g = torch.randn(len(rows), d, dtype=dtype, generator=gen)
        results = []
        for how in (backend, "reference"):
            E, Z = E0.clone().requires_grad_(), Z0.clone().requires_grad_()
            if how == "reference":
                out = reference_subword_embed(E, Z, layout, ids)
            else:
                out = subword_embed(E, Z, layout, ids, backend=backend)
            out.backward(g)
            results.append((out.detach().clone(), E.grad, Z.grad))
        (out, gE, gZ), (ref, ref_gE, ref_gZ) = results
        assert out.shape == (len(rows), d)
        assert first_mismatch(ref, loop_embed(E0, Z0, words, rows), **TOL[dtype]) is None
        assert first_mismatch(out, ref, **TOL[dtype]) is None, first_mismatch(out, ref, **TOL[dtype])
        assert first_mismatch(gE, ref_gE, **TOL[dtype]) is None
        assert first_mismatch(gZ, ref_gZ, **TOL[dtype]) is None


def test_piece_gradient_known_answer():
    # word 0 = [1, 1, 2] -> Z[1] gets 2/3 of its gradient, Z[2] 1/3; word 1 = [2] -> Z[2] gets all of it.
    layout = PieceLayout.from_lists([[1, 1, 2], [2]], num_pieces=4)
    for backend in CPU_BACKENDS:
        if not registry.backends[backend].available():
            continue
        E = torch.zeros(2, 2, requires_grad=True)
        Z = torch.tensor([[0.0, 0], [3, 6], [6, 3], [9, 9]], requires_grad=True)
        out = subword_embed(E, Z, layout, backend=backend)
        torch.testing.assert_close(out.detach(), torch.tensor([[4.0, 5], [6, 3]]))
        out.backward(torch.tensor([[3.0, 6], [1, 1]]))
        expected = torch.tensor([[0.0, 0], [2, 4], [2, 3], [0, 0]])  # row 3 is unused: exactly zero
        torch.testing.assert_close(Z.grad, expected, msg=backend)
        torch.testing.assert_close(E.grad, torch.tensor([[3.0, 6], [1, 1]]), msg=backend)


@pytest.mark.parametrize("backend", ["numba", "cpp", "torch"])
def test_gradcheck_float64(backend):
    available(backend)
    gen = torch.Generator().manual_seed(1)
    words = [[0], [1, 2, 1], [3, 0, 0, 2]]
    layout = PieceLayout.from_lists(words, num_pieces=4)
    E = torch.randn(3, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    Z = torch.randn(4, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    ids = torch.tensor([2, 0, 2])
    # gradcheck keeps every output it gets, so the pooled buffer is never handed out twice by mistake.
    assert torch.autograd.gradcheck(lambda e, z: subword_embed(e, z, layout, backend=backend), (E, Z))
    assert torch.autograd.gradcheck(lambda e, z: subword_embed(e, z, layout, ids, backend=backend), (E, Z))


@pytest.mark.parametrize("backend", ["numba", "cpp"])
def test_large_outputs_reuse_buffers_only_when_free(backend):
    available(backend)
    V, d = 3000, 128  # 1.5 MB outputs: above the pool threshold
    layout = PieceLayout(torch.arange(0, 2 * V + 1, 2), torch.arange(2 * V) % 50, 50)
    E, Z = torch.randn(V, d), torch.randn(50, d)
    a = subword_embed(E, Z, layout, backend=backend)
    a_copy = a.clone()
    b = subword_embed(E * 2, Z, layout, backend=backend)
    assert a.data_ptr() != b.data_ptr()  # `a` is alive: its buffer must not be written again
    torch.testing.assert_close(a, a_copy)
    ptr = b.data_ptr()
    del b
    c = subword_embed(E, Z, layout, backend=backend)
    assert c.data_ptr() == ptr  # released, so reused
    torch.testing.assert_close(c, a_copy)


def pooled_words(V, P, gen):
    """A layout of 1-4 pieces per word, tables large enough (>= 1 MB at d=128) for the buffer pool."""
    return PieceLayout.from_lists(random_words(V, P, 4, gen), num_pieces=P)


def reference_step(E, Z, layout, g, p, seed):
    """The torch backend's values and gradients under the same hashed masks."""
    E, Z = E.detach().clone().requires_grad_(), Z.detach().clone().requires_grad_()
    out = subword_embed(E, Z, layout, backend="torch", piece_dropout=p, output_dropout=p,
                        generator=torch.Generator().manual_seed(seed))
    return (out.detach(), *torch.autograd.grad(out, (E, Z), g))


def pooled(shape):
    return len(pool._buffers.get((shape, torch.float32, torch.device("cpu")), []))


@pytest.mark.parametrize("backend", ["numba", "cpp"])
@pytest.mark.parametrize("p", [0.0, 0.5])
def test_training_steps_reuse_buffers_and_hand_over_the_incoming_gradient(backend, p):
    """Steps as Trainer.train_step makes them (forward, zero_grad(set_to_none=True), backward into .grad):
    right values and gradients every step, the table intact after its own backward, no new buffers after
    the first step, and without dropout E.grad *is* the incoming gradient (no copy)."""
    available(backend)
    gen = torch.Generator().manual_seed(21)
    V, P, d = 3000, 2100, 128  # E, Z and their gradients all above the pool's 1 MB threshold
    layout = pooled_words(V, P, gen)
    E = torch.nn.Parameter(torch.randn(V, d, generator=gen))
    Z = torch.nn.Parameter(torch.randn(P, d, generator=gen))
    sizes = []
    for step in range(4):
        g = torch.randn(V, d, generator=gen)
        table = subword_embed(E, Z, layout, backend=backend, piece_dropout=p, output_dropout=p,
                              generator=torch.Generator().manual_seed(step))
        E.grad = Z.grad = None  # zero_grad(set_to_none=True): after the forward, as in train_step
        Consumers.apply(table, g).backward()
        ref, ref_gE, ref_gZ = reference_step(E, Z, layout, g, p, step)
        torch.testing.assert_close(table.detach(), ref, atol=1e-5, rtol=1e-5)  # not overwritten by the backward
        torch.testing.assert_close(E.grad, ref_gE, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(Z.grad, ref_gZ, atol=1e-5, rtol=1e-5)
        if p == 0:
            assert E.grad.data_ptr() == g.data_ptr()  # handed over, not copied
        sizes.append((pooled((V, d)), pooled((P, d))))
        del table
    assert sizes[1] == sizes[2] == sizes[3] and min(sizes[1]) > 0  # steady state: the same pooled buffers


@pytest.mark.parametrize("backend", ["numba", "cpp"])
@pytest.mark.parametrize("p", [0.0, 0.5])
def test_two_forwards_before_one_backward_keep_their_buffers(backend, p):
    available(backend)
    gen = torch.Generator().manual_seed(22)
    V, P, d = 3000, 2100, 128
    layout = pooled_words(V, P, gen)
    E1 = torch.randn(V, d, generator=gen, requires_grad=True)
    E2 = torch.randn(V, d, generator=gen, requires_grad=True)
    Z = torch.randn(P, d, generator=gen, requires_grad=True)
    g1, g2 = torch.randn(V, d, generator=gen), torch.randn(V, d, generator=gen)
    a = subword_embed(E1, Z, layout, backend=backend, piece_dropout=p, output_dropout=p,
                      generator=torch.Generator().manual_seed(1))
    b = subword_embed(E2, Z, layout, backend=backend, piece_dropout=p, output_dropout=p,
                      generator=torch.Generator().manual_seed(2))
    grads_b = torch.autograd.grad(b, (E2, Z), g2)  # b's backward first, its gradients kept
    del b
    grads_a = torch.autograd.grad(a, (E1, Z), g1)  # a's buffers, then a's gradients, must be untouched by it
    ref_a, *ref_grads_a = reference_step(E1, Z, layout, g1, p, 1)
    _, *ref_grads_b = reference_step(E2, Z, layout, g2, p, 2)
    torch.testing.assert_close(a.detach(), ref_a, atol=1e-5, rtol=1e-5)
    for got, want in zip([*grads_a, *grads_b], [*ref_grads_a, *ref_grads_b]):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["numba", "cpp"])
def test_evaluation_under_no_grad_while_a_training_graph_is_alive(backend):
    available(backend)
    gen = torch.Generator().manual_seed(23)
    V, P, d = 3000, 2100, 128
    layout = pooled_words(V, P, gen)
    E = torch.nn.Parameter(torch.randn(V, d, generator=gen))
    Z = torch.nn.Parameter(torch.randn(P, d, generator=gen))
    g = torch.randn(V, d, generator=gen)
    train = subword_embed(E, Z, layout, backend=backend, piece_dropout=0.5, output_dropout=0.5,
                          generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        evaluation = subword_embed(E, Z, layout, backend=backend)
    Consumers.apply(train, g).backward()
    again = subword_embed(E, Z, layout, backend=backend)  # after the backward, while both are alive
    ref_train, ref_gE, ref_gZ = reference_step(E, Z, layout, g, 0.5, 5)
    ref_eval = reference_subword_embed(E.detach(), Z.detach(), layout)
    torch.testing.assert_close(train.detach(), ref_train, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(evaluation, ref_eval, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again.detach(), ref_eval, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(E.grad, ref_gE, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(Z.grad, ref_gZ, atol=1e-5, rtol=1e-5)


def test_pool_keeps_only_the_shapes_used_last():
    gen = torch.Generator().manual_seed(24)
    layout = pooled_words(3000, 50, gen)
    E, Z = torch.randn(3000, 128, generator=gen), torch.randn(50, 128, generator=gen)
    for n in range(2100, 2100 + 3 * pool.max_shapes):  # batches of words: a new 1 MB+ output shape each time
        out = subword_embed(E, Z, layout, torch.arange(n), backend="numba")
        assert len(pool._buffers) <= pool.max_shapes
    torch.testing.assert_close(out, reference_subword_embed(E, Z, layout, torch.arange(n)), atol=1e-5, rtol=1e-5)


def test_layout_padded_and_checks():
    layout = PieceLayout.from_lists([[4], [1, 2, 3], [2, 2]], num_pieces=5)
    ids, mask = layout.padded()
    assert ids.tolist() == [[4, 0, 0], [1, 2, 3], [2, 2, 0]]
    assert mask.tolist() == [[True, False, False], [True, True, True], [True, True, False]]
    assert layout.counts.tolist() == [1, 3, 2]
    off, pcs = layout.gather(torch.tensor([2, 0, 2]))
    assert off.tolist() == [0, 2, 3, 5] and pcs.tolist() == [2, 2, 4, 2, 2]
    with pytest.raises(XlfastError, match="word 1 has no pieces"):
        PieceLayout.from_lists([[1], [], [2]], num_pieces=3)
    with pytest.raises(XlfastError, match="piece ids"):
        PieceLayout.from_lists([[1], [3]], num_pieces=3)


def test_bad_calls_fail_loudly():
    layout = PieceLayout.from_lists([[0], [1]], num_pieces=2)
    E, Z = torch.randn(2, 3), torch.randn(2, 3)
    with pytest.raises(BackendUnavailable, match="unknown"):
        subword_embed(E, Z, layout, backend="nonsense")
    for gpu_only in ("triton", "cuda"):
        with pytest.raises(BackendUnavailable, match="does not run on cpu"):
            subword_embed(E, Z, layout, backend=gpu_only)
    with pytest.raises(XlfastError, match="word ids"):
        subword_embed(E, Z, layout, torch.tensor([0, 2]))
    with pytest.raises(XlfastError, match="rows but the layout"):
        subword_embed(torch.randn(3, 3), Z, layout)
    with pytest.raises(XlfastError, match="dtype"):
        subword_embed(E, Z.double(), layout)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_piece_dropout_statistics_and_agreement(backend):
    available(backend)
    V, P, d, p = 300, 200, 64, 0.3
    gen = torch.Generator().manual_seed(3)
    layout = PieceLayout(torch.arange(V + 1), torch.arange(V) % P, P)  # word w is piece w % P alone
    E = torch.zeros(V, d)
    Z = torch.ones(P, d)
    out = subword_embed(E, Z, layout, backend=backend, piece_dropout=p, generator=torch.Generator().manual_seed(1))
    table = out[:P]  # rows 0..P-1 are exactly the dropped-out piece table
    kept = table[table != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - p)))
    dropped = float((table == 0).float().mean())
    assert abs(dropped - p) < 4 * (p * (1 - p) / table.numel()) ** 0.5  # within 4 sigma of the rate
    torch.testing.assert_close(out[P:], out[: V - P])  # one mask per call: a piece drops alike everywhere
    again = subword_embed(E, Z, layout, backend=backend, piece_dropout=p, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(again, out)  # same generator state, same mask
    other = subword_embed(E, Z, layout, backend=backend, piece_dropout=p, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(other, out)
    # Against the reference under the same seeds, values and gradients, with real data.
    E0, Z0 = torch.randn(V, d, generator=gen), torch.randn(P, d, generator=gen)
    g = torch.randn(V, d, generator=gen)
    grads = []
    for how in (backend, "torch"):
        E1, Z1 = E0.clone().requires_grad_(), Z0.clone().requires_grad_()
        o = subword_embed(E1, Z1, layout, backend=how, piece_dropout=p, generator=torch.Generator().manual_seed(9))
        grads.append((o.detach().clone(), *torch.autograd.grad(o, (E1, Z1), g)))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # A dropped element gets no gradient; a kept one gets it scaled by 1/(1-p).
    mask = subword_embed(E, Z, layout, backend=backend, piece_dropout=p, generator=torch.Generator().manual_seed(9))
    assert torch.equal(grads[0][2] == 0, mask[:P] == 0)


@pytest.mark.parametrize("backend", ["numba", "cpp", "torch"])
def test_piece_dropout_gradcheck(backend):
    available(backend)
    layout = PieceLayout.from_lists([[0], [1, 2, 1], [3, 0, 0, 2]], num_pieces=4)
    gen = torch.Generator().manual_seed(4)
    E = torch.randn(3, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    Z = torch.randn(4, 6, dtype=torch.float64, generator=gen, requires_grad=True)

    def fn(e, z):  # a fixed seed per call: the same mask every time gradcheck evaluates
        return subword_embed(e, z, layout, backend=backend, piece_dropout=0.5,
                             generator=torch.Generator().manual_seed(11))

    assert torch.autograd.gradcheck(fn, (E, Z))
    with pytest.raises(XlfastError, match="piece_dropout"):
        subword_embed(E, Z, layout, backend=backend, piece_dropout=1.0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_word_dropout_matches_reference_and_gradcheck(backend):
    available(backend)
    gen = torch.Generator().manual_seed(6)
    words = SPECIAL_WORDS + random_words(40, 9, 4, gen)
    layout = PieceLayout.from_lists(words, num_pieces=9)
    E0, Z0 = torch.randn(len(words), 33, generator=gen), torch.randn(9, 33, generator=gen)
    for ids in (None, torch.tensor([5, 5, 0, 30])):
        g = torch.randn(len(words) if ids is None else 4, 33, generator=gen)
        results = []
        for how in (backend, "torch"):
            E, Z = E0.clone().requires_grad_(), Z0.clone().requires_grad_()
            o = subword_embed(E, Z, layout, ids, backend=how, word_dropout=0.4, piece_dropout=0.2,
                              generator=torch.Generator().manual_seed(3))
            results.append((o.detach().clone(), *torch.autograd.grad(o, (E, Z), g)))
        for a, b in zip(*results):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # Statistics: with Z = 0 the output is the dropped-out word table itself.
    one_piece = PieceLayout(torch.arange(2001), torch.arange(2000) % 9, 9)
    out = subword_embed(torch.ones(2000, 50), torch.zeros(9, 50), one_piece, backend=backend, word_dropout=0.5,
                        generator=torch.Generator().manual_seed(0))
    assert set(torch.unique(out).tolist()) == {0.0, 2.0}
    assert abs(float((out == 0).float().mean()) - 0.5) < 4 * (0.25 / out.numel()) ** 0.5
    E = torch.randn(4, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    Z = torch.randn(3, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    small = PieceLayout.from_lists([[0], [1, 2], [2, 2, 0], [1]], num_pieces=3)
    assert torch.autograd.gradcheck(
        lambda e, z: subword_embed(e, z, small, backend=backend, word_dropout=0.5, piece_dropout=0.3,
                                   generator=torch.Generator().manual_seed(1)), (E, Z))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_output_dropout_matches_reference(backend):
    available(backend)
    gen = torch.Generator().manual_seed(8)
    words = SPECIAL_WORDS + random_words(30, 9, 4, gen)
    layout = PieceLayout.from_lists(words, num_pieces=9)
    E0, Z0 = torch.randn(len(words), 21, generator=gen), torch.randn(9, 21, generator=gen)
    g = torch.randn(len(words), 21, generator=gen)
    results = []
    for how in (backend, "torch"):
        E, Z = E0.clone().requires_grad_(), Z0.clone().requires_grad_()
        o = subword_embed(E, Z, layout, backend=how, output_dropout=0.5, piece_dropout=0.5,
                          generator=torch.Generator().manual_seed(2))
        results.append((o.detach().clone(), *torch.autograd.grad(o, (E, Z), g)))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    out, grad_E = results[0][0], results[0][1]
    plain = subword_embed(E0, Z0, layout, backend=backend, piece_dropout=0.5, generator=torch.Generator().manual_seed(2))
    kept = out != 0
    assert 0.35 < float(kept.float().mean()) < 0.65
    torch.testing.assert_close(out[kept], 2 * plain[kept])  # survivors scaled by 1/(1-p)
    torch.testing.assert_close(grad_E, torch.where(kept, 2 * g, torch.zeros_like(g)))
    with pytest.raises(XlfastError, match="output_dropout needs ids=None"):
        subword_embed(E0, Z0, layout, torch.tensor([1]), backend=backend, output_dropout=0.5)


def test_bench_embed_cli_runs_small_and_rejects_bad_input(tmp_path):
    import json

    from typer.testing import CliRunner

    from xlfast.cli.main import app

    out = tmp_path / "embed.json"
    res = CliRunner().invoke(app, ["bench", "embed", "--vocab", "300", "--dim", "16", "--num-pieces", "40",
                                   "--repeats", "1", "--dropout", "0.5", "--json", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    rows = {r["backend"]: r for r in data["results"]}
    assert "torch" in rows and "numba" in rows and rows["torch"]["speedup"] == 1.0
    assert all(r["max_abs_err"] < 1e-4 for r in rows.values())  # checked against the reference first
    res = CliRunner().invoke(app, ["bench", "embed", "--vocab", "300", "--dim", "16", "--num-pieces", "40",
                                   "--repeats", "1", "--training", "--backend", "numba", "--json", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["training"] and [r["backend"] for r in data["results"]] == ["torch", "numba", "numba-simple"]
    assert all(r["max_abs_err"] < 1e-4 and r["faults"] >= 0 and r["sys_ms"] >= 0 for r in data["results"])
    bad = CliRunner().invoke(app, ["bench", "embed", "--vocab", "10,20", "--dim", "8,9,10"])
    assert bad.exit_code == 1 and "same number of values" in bad.output


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_table_dropout_matches_its_mask_and_gradient(backend):
    from xlfast.kernels.subword_embed import table_dropout
    from xlfast.kernels.subword_embed.base import drop_spec, dropout_keep

    available(backend)
    X = torch.randn(37, 11, requires_grad=True)
    Y = table_dropout(X, 0.5, backend=backend, generator=torch.Generator().manual_seed(5))
    drop = drop_spec(0.5, torch.Generator().manual_seed(5), "dropout")
    assert torch.equal(Y, X * dropout_keep((37, 11), drop))  # the very mask every backend hashes
    kept = Y != 0
    assert 0.35 < kept.float().mean() < 0.65
    assert torch.allclose(Y[kept], 2 * X[kept])
    Y.backward(torch.ones_like(Y))
    assert torch.allclose(X.grad, kept.float() * 2)
    assert table_dropout(X, 0.0) is X


@pytest.mark.parametrize("p", [0.5, 0.1])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_table_dropout_of_bf16_activations_keeps_bf16_and_the_same_mask(backend, p):
    """bf16 activations (autocast) through the hashed dropout, as the models' activation dropout uses it:
    the float32 mask, the value scaled in float32 and rounded once to bf16 (exact for p = 0.5)."""
    from xlfast.kernels.subword_embed import table_dropout
    from xlfast.kernels.subword_embed.base import drop_spec, dropout_keep
    from xlfast.model import activation_dropout

    available(backend)
    X = torch.randn(3, 5, 24).bfloat16().requires_grad_()
    Y = table_dropout(X.view(15, 24), p, backend=backend, generator=torch.Generator().manual_seed(9))
    keep = dropout_keep((15, 24), drop_spec(p, torch.Generator().manual_seed(9), "dropout"))
    assert Y.dtype == torch.bfloat16
    want = (X.detach().view(15, 24).float() * keep).bfloat16()
    assert torch.equal(Y, want) if p == 0.5 else torch.allclose(Y.float(), want.float(), rtol=2**-7, atol=0)
    Y.backward(torch.ones_like(Y))
    assert torch.allclose(X.grad.view(15, 24).float(), keep, rtol=2**-7)
    torch.manual_seed(4)
    Z = activation_dropout(X, p, training=True)
    assert Z.shape == X.shape and 0 < float((Z == 0).float().mean()) < 2 * p + 0.2
    assert activation_dropout(X, p, training=False) is X


def test_cuda_backend_is_registered_but_loads_only_where_a_gpu_is():
    assert registry.names("cuda")[-1] == "torch"  # on an H200 both kernels beat embedding_bag + add
    if not torch.cuda.is_available():
        assert not registry.backends["cuda"].available()
        with pytest.raises(BackendUnavailable, match="backend 'cuda' is not available here"):
            registry.choose("cuda", "cuda")
