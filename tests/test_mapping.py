"""`xlfast map`: Procrustes orientation, rotation recovery with known answers, normalisation, CLI errors.

Known answer: a target space built as a random rotation of the source (plus small noise, in a permuted
word order) must be mapped back with W ≈ the true rotation and BLI P@1 = 1.0.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xlfast import mapping
from xlfast.errors import XlfastError

# ------------------------------------------------------------------------------------------------
# synthetic spaces with a known rotation


def _random_rotation(dim: int, rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return (q * np.sign(np.diag(r))).astype(np.float32)  # sign fix: a proper random orthogonal matrix


def _rotated_pair(n=300, dim=24, noise=0.01, seed=0):
    """src words w0..w(n-1); tgt words t_w{i} = R·src_i + noise, rows in a permuted order."""
    rng = np.random.default_rng(seed)
    src = rng.standard_normal((n, dim)).astype(np.float32)
    R = _random_rotation(dim, rng)
    perm = rng.permutation(n)
    tgt = (src @ R.T + noise * rng.standard_normal((n, dim)).astype(np.float32))[perm]
    src_words = [f"w{i}" for i in range(n)]
    tgt_words = [f"t_w{i}" for i in perm]
    return src_words, src, tgt_words, tgt, R


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _write_vec(path: Path, words, vecs):
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(f"{len(words)} {vecs.shape[1]}\n")
        for w, v in zip(words, vecs):
            fh.write(w + " " + " ".join(f"{x:.7f}" for x in v) + "\n")


def _read_vec(path: Path):
    lines = path.read_text(encoding="utf-8").splitlines()
    words = [ln.split(" ", 1)[0] for ln in lines[1:]]
    return words, np.array([[float(x) for x in ln.split(" ")[1:]] for ln in lines[1:]], dtype=np.float32)


# ------------------------------------------------------------------------------------------------
# Procrustes


def test_procrustes_orientation_recovers_rotation_exactly():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((50, 7)).astype(np.float32)
    R = _random_rotation(7, rng)
    Y = X @ R.T  # y_i = R x_i
    W = mapping.procrustes(X, Y)
    np.testing.assert_allclose(W, R, atol=1e-5)
    # the transpose would be the wrong orientation: it must not also fit
    assert np.abs(X @ R - Y).max() > 0.1
    np.testing.assert_allclose(W @ W.T, np.eye(7), atol=1e-5)


def test_procrustes_matches_brute_force_objective():
    """With noise the solution must beat every other orthogonal matrix tried (incl. perturbations of it)."""
    rng = np.random.default_rng(2)
    X = rng.standard_normal((40, 5))
    Y = X @ _random_rotation(5, rng).T + 0.3 * rng.standard_normal((40, 5))
    W = mapping.procrustes(X, Y).astype(np.float64)
    best = np.linalg.norm(X @ W.T - Y)
    for _ in range(200):
        Q = _random_rotation(5, rng).astype(np.float64)
        assert np.linalg.norm(X @ Q.T - Y) >= best - 1e-6
        A = rng.standard_normal((5, 5)) * 0.01  # nearby orthogonal matrix: W·expm(skew)
        K = A - A.T
        near = W @ (np.eye(5) + K + K @ K / 2)
        u, _, vt = np.linalg.svd(near)
        assert np.linalg.norm(X @ (u @ vt).T - Y) >= best - 1e-6


# ------------------------------------------------------------------------------------------------
# normalisation


def test_normalization_steps():
    rng = np.random.default_rng(3)
    X = (rng.standard_normal((100, 6)) * 5 + 3).astype(np.float32)
    X[7] = 0.0
    unit = mapping.apply_normalization(X, ["unit"])
    norms = np.linalg.norm(unit, axis=1)
    np.testing.assert_allclose(np.delete(norms, 7), 1.0, atol=1e-5)
    assert norms[7] == 0.0  # a zero vector stays zero, no NaN
    centered = mapping.apply_normalization(X, ["center"])
    np.testing.assert_allclose(centered.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(centered, X - X.mean(0), atol=1e-4)
    ucu = mapping.apply_normalization(X, mapping.parse_normalization("unit,center,unit"))
    ref = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    ref = ref - ref.mean(0)
    ref = ref / np.maximum(np.linalg.norm(ref, axis=1, keepdims=True), 1e-12)
    np.testing.assert_allclose(ucu, ref, atol=1e-5)
    assert mapping.apply_normalization(X, mapping.parse_normalization("none")) is not X
    np.testing.assert_array_equal(mapping.apply_normalization(X, ()), X)


def test_parse_normalization():
    assert mapping.parse_normalization("unit, center,UNIT") == ("unit", "center", "unit")
    assert mapping.parse_normalization("none") == ()
    assert mapping.parse_normalization("") == ()
    with pytest.raises(XlfastError, match="unknown normalisation step 'length'"):
        mapping.parse_normalization("unit,length")


# ------------------------------------------------------------------------------------------------
# seeds and the refinement loop


def test_seeds_from_dictionary_and_identical_strings():
    src = ["a", "b", "c", "a", "x"]
    tgt = ["B", "a", "x", "C"]
    seed = mapping.seed_from_dictionary(src, tgt, [("a", "B"), ("b", "B"), ("c", "C"), ("zz", "a"), ("a", "B")])
    assert list(zip(seed.src.tolist(), seed.tgt.tolist())) == [(0, 0), (1, 0), (2, 3)]
    assert (seed.requested, seed.covered) == (5, 3)
    ident = mapping.seed_from_identical(src, tgt)
    assert list(zip(ident.src.tolist(), ident.tgt.tolist())) == [(0, 1), (4, 2)]


def _dense_csls(x, y, knn):
    sims = _unit(x) @ _unit(y).T
    r_x = np.sort(sims, axis=1)[:, -knn:].mean(1)
    r_y = np.sort(sims, axis=0)[-knn:, :].mean(0)
    return 2 * sims - r_x[:, None] - r_y[None, :], sims


def test_induced_dictionary_is_mutual_csls_among_frequent_words():
    """Unrelated random spaces: many forward neighbours are not mutual; compare with a dense reference."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((70, 6)).astype(np.float32)
    y = rng.standard_normal((90, 6)).astype(np.float32)
    induced = mapping.induce_dictionary(x, y, max_vocab=60, knn=5)
    scores, cos = _dense_csls(x[:60], y[:60], 5)
    fwd, rev = scores.argmax(1), scores.argmax(0)
    expected = [(i, int(fwd[i])) for i in range(60) if rev[fwd[i]] == i]
    assert 5 < len(expected) < 50  # the case really separates mutual from one-way neighbours
    assert list(zip(induced.src.tolist(), induced.tgt.tolist())) == expected
    assert induced.criterion == pytest.approx(cos[np.arange(60), fwd].mean(), abs=1e-5)


def test_rotation_recovered_from_small_seed_with_refinement():
    src_words, src, tgt_words, tgt, R = _rotated_pair(n=300, dim=24, noise=0.01)
    # 30 seed pairs for 24 dims, with 6 wrong pairs: refinement must clean them out
    pairs = [(f"w{i}", f"t_w{i}") for i in range(24)] + [(f"w{i}", f"t_w{i + 100}") for i in range(24, 30)]
    seed = mapping.seed_from_dictionary(src_words, tgt_words, pairs)
    first = mapping.procrustes(src[seed.src], tgt[seed.tgt])
    assert np.abs(first - R).max() > 0.02  # the noisy seed alone is off ...
    result = mapping.map_embeddings(src, tgt, seed, iterations=5, max_vocab=300, knn=10)
    assert np.abs(result.W - R).max() < 0.01  # ... refinement recovers the rotation
    steps = result.history
    assert steps[0].step == "seed" and steps[0].dictionary_size == 30
    assert steps[result.selected].criterion == max(s.criterion for s in steps)
    assert steps[-1].induced_size >= 295  # almost every word is its own mutual CSLS neighbour
    assert result.converged  # the induced dictionary stopped changing before 5 iterations
    mapped = result.apply(src)
    inv = {w: j for j, w in enumerate(tgt_words)}
    nearest = np.argmax(_unit(mapped) @ _unit(tgt).T, axis=1)
    assert all(nearest[i] == inv[f"t_w{i}"] for i in range(300))


def test_identity_start_refines_nearly_aligned_spaces():
    """The combined framework: spaces already roughly shared (small rotation) and no seed at all."""
    rng = np.random.default_rng(5)
    n, dim = 200, 16
    src = rng.standard_normal((n, dim)).astype(np.float32)
    A = rng.standard_normal((dim, dim)) * 0.08
    u, _, vt = np.linalg.svd(np.eye(dim) + A - A.T)
    R = (u @ vt).astype(np.float32)  # a rotation near the identity
    tgt = src @ R.T + 0.01 * rng.standard_normal((n, dim)).astype(np.float32)
    result = mapping.map_embeddings(src, tgt, mapping.identity_start(), iterations=4, max_vocab=n)
    assert result.history[0].step == "identity" and result.history[0].dictionary_size == 0
    assert np.abs(result.W - R).max() < 0.01
    assert result.history[result.selected].criterion > result.history[0].criterion


def test_select_last_and_iteration_zero():
    src_words, src, tgt_words, tgt, R = _rotated_pair(n=120, dim=8, noise=0.0, seed=7)
    seed = mapping.seed_from_dictionary(src_words, tgt_words, [(f"w{i}", f"t_w{i}") for i in range(40)])
    only_seed = mapping.map_embeddings(src, tgt, seed, iterations=0, max_vocab=120)
    assert len(only_seed.history) == 1 and only_seed.selected == 0
    np.testing.assert_allclose(only_seed.W, R, atol=1e-4)
    last = mapping.map_embeddings(src, tgt, seed, iterations=3, max_vocab=120, select="last")
    assert last.selected == len(last.history) - 1


def test_keep_seed_solves_on_seed_plus_new_induced_pairs():
    src_words, src, tgt_words, tgt, R = _rotated_pair(n=150, dim=10, noise=0.01, seed=9)
    # a seed whose last 5 pairs are wrong: kept, they stay in every refinement dictionary
    pairs = [(f"w{i}", f"t_w{i}") for i in range(20)] + [(f"w{i}", f"t_w{i + 50}") for i in range(20, 25)]
    seed = mapping.seed_from_dictionary(src_words, tgt_words, pairs)
    kept = mapping.map_embeddings(src, tgt, seed, iterations=1, max_vocab=150, keep_seed=True, select="last")
    plain = mapping.map_embeddings(src, tgt, seed, iterations=1, max_vocab=150, select="last")
    # the reference: seed pairs first, then induced pairs for source words the seed does not cover
    induced = mapping.induce_dictionary(src @ mapping.procrustes(src[seed.src], tgt[seed.tgt]).T, tgt, 150)
    fresh = [(i, j) for i, j in zip(induced.src.tolist(), induced.tgt.tolist()) if i >= 25]
    assert len(fresh) > 100
    rows_s = np.concatenate([seed.src, [i for i, _ in fresh]])
    rows_t = np.concatenate([seed.tgt, [j for _, j in fresh]])
    assert kept.history[1].dictionary_size == 25 + len(fresh)
    np.testing.assert_allclose(kept.W, mapping.procrustes(src[rows_s], tgt[rows_t]), atol=1e-6)
    assert plain.history[1].dictionary_size == len(induced.src)
    np.testing.assert_allclose(plain.W, mapping.procrustes(src[induced.src], tgt[induced.tgt]), atol=1e-6)
    # the wrong seed pairs keep pulling the kept-seed map away from R; MUSE-style replacement drops them
    assert np.abs(plain.W - R).max() < np.abs(kept.W - R).max()


def test_empty_seed_and_dimension_mismatch_are_user_errors():
    src = np.ones((5, 4), np.float32)
    with pytest.raises(XlfastError, match="no pair"):
        mapping.map_embeddings(src, src, mapping.seed_from_dictionary(["a"], ["b"], [("a", "c")]))
    with pytest.raises(XlfastError, match="one dimension"):
        mapping.map_embeddings(src, np.ones((5, 3), np.float32), mapping.identity_start())


# ------------------------------------------------------------------------------------------------
# CLI


@pytest.fixture()
def cli():
    from typer.testing import CliRunner

    from xlfast.cli.main import app

    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


def _one_line_error(result, fragment: str, code: int = 1):
    """One line on standard error; exit 1 for a problem with the data, 2 for a wrong command line."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    text = result.output.strip()
    assert "Traceback" not in text
    assert fragment in text, text


@pytest.fixture()
def rotated_files(tmp_path):
    src_words, src, tgt_words, tgt, R = _rotated_pair(n=250, dim=20, noise=0.01, seed=11)
    # shared "identical strings": give 40 target words the same spelling as their source
    tgt_words = [w[2:] if w.startswith("t_w") and int(w[3:]) < 40 else w for w in tgt_words]
    _write_vec(tmp_path / "src.vec", src_words, src)
    _write_vec(tmp_path / "tgt.vec", tgt_words, tgt)
    (tmp_path / "seed.txt").write_text("".join(f"w{i} t_w{i}\n" for i in range(40, 70)), encoding="utf-8")
    gold = {w: w if w in set(tgt_words) else "t_" + w for w in src_words}
    (tmp_path / "gold.txt").write_text("".join(f"{s} {t}\n" for s, t in gold.items()), encoding="utf-8")
    return tmp_path, R


@pytest.mark.parametrize("seed_args", [("--dict", "seed.txt"), ("--identical",)])
def test_cli_recovers_rotation(cli, rotated_files, seed_args):
    d, R = rotated_files
    args = [a if a.startswith("--") else d / a for a in seed_args]
    out = d / "out"
    res = cli("map", d / "src.vec", d / "tgt.vec", "-o", out, *args, "--normalize", "none",
              "--eval-dict", d / "gold.txt", "--json", d / "summary.json")
    assert res.exit_code == 0, res.output
    summary = json.loads((d / "summary.json").read_text())
    assert summary == json.loads((out / "map.json").read_text())
    kept = summary["history"][[s["step"] for s in summary["history"]].index(summary["selected_step"])]
    assert kept["evaluation"]["p@1"] == 100.0  # percent, as the field reports P@k
    assert kept["evaluation"]["coverage"] == 100.0
    np.testing.assert_allclose(np.load(out / "W.npy"), R, atol=0.01)
    words, mapped = _read_vec(out / "src.vec")
    _, src = _read_vec(d / "src.vec")
    np.testing.assert_allclose(mapped, src @ np.load(out / "W.npy").T, atol=1e-4)
    assert "P@1" in res.output


def test_cli_normalises_target_the_same_way(cli, rotated_files):
    d, _ = rotated_files
    res = cli("map", d / "src.vec", d / "tgt.vec", "-o", d / "o", "--identical", "--iterations", "1")
    assert res.exit_code == 0, res.output
    _, tgt = _read_vec(d / "tgt.vec")
    _, written = _read_vec(d / "o" / "tgt.vec")
    np.testing.assert_allclose(written, mapping.apply_normalization(tgt, ("unit", "center", "unit")), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(written, axis=1), 1.0, atol=1e-4)
    assert json.loads((d / "o" / "map.json").read_text())["normalize"] == ["unit", "center", "unit"]


def test_cli_run_directory_identity_start(cli, tmp_path):
    rng = np.random.default_rng(13)
    n, dim = 150, 12
    src = rng.standard_normal((n, dim)).astype(np.float32)
    A = rng.standard_normal((dim, dim)) * 0.05
    u, _, vt = np.linalg.svd(np.eye(dim) + A - A.T)
    tgt = src @ (u @ vt).T.astype(np.float32)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"langs": ["grk", "it"]}))
    _write_vec(run / "emb.grk.vec", [f"g{i}" for i in range(n)], src)
    _write_vec(run / "emb.it.vec", [f"i{i}" for i in range(n)], tgt)
    (run / "emb.xx.vec").write_text("1 12\n")  # not one of the run's languages: ignored
    res = cli("map", run, "--normalize", "none", "--iterations", "3")
    assert res.exit_code == 0, res.output
    summary = json.loads((run / "mapped" / "map.json").read_text())
    assert summary["mode"] == "run" and summary["seed"]["kind"] == "identity"
    assert summary["history"][0]["step"] == "identity"
    assert (run / "mapped" / "emb.grk.vec").is_file() and (run / "mapped" / "emb.it.vec").is_file()
    np.testing.assert_allclose(np.load(run / "mapped" / "W.npy"), u @ vt, atol=1e-3)
    # --langs picks the direction
    res = cli("map", run, "--langs", "it,grk", "-o", tmp_path / "rev", "--normalize", "none", "--iterations", "1")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "rev" / "map.json").read_text())["source"].endswith("emb.it.vec")


def test_cli_errors_are_one_line(cli, rotated_files, tmp_path):
    d, _ = rotated_files
    src, tgt = d / "src.vec", d / "tgt.vec"
    _one_line_error(cli("map", src, tgt, "-o", d / "o"), "need a seed", code=2)
    _one_line_error(cli("map", src, tgt, "-o", d / "o", "--identical", "--dict", d / "seed.txt"), "choose one seed",
                    code=2)
    _one_line_error(cli("map", src, d / "missing.vec", "-o", d / "o", "--identical"), "missing.vec: no such file")
    _one_line_error(cli("map", src, tgt, "--identical"), "-o OUT_DIR", code=2)
    _one_line_error(cli("map", src, tgt, "-o", d / "o", "--identical", "--normalize", "unit,l2"),
                    "unknown normalisation", code=2)
    (d / "nothing.txt").write_text("zzz qqq\n")
    _one_line_error(cli("map", src, tgt, "-o", d / "o", "--dict", d / "nothing.txt"), "no pair")
    small = d / "small.vec"
    small.write_text("2 3\na 1 0 0\nb 0 1 0\n")
    _one_line_error(cli("map", src, small, "-o", d / "o", "--identical"), "dimensions")
    broken = d / "broken.vec"
    broken.write_text("2 20\na 1 0 0\n")
    _one_line_error(cli("map", src, broken, "-o", d / "o", "--identical"), "broken.vec")
    empty_run = tmp_path / "emptyrun"
    empty_run.mkdir()
    _one_line_error(cli("map", empty_run), "not an xlfast run directory")
    _one_line_error(cli("map", empty_run, "--langs", "a"), "exactly two", code=2)
    three = tmp_path / "three"
    three.mkdir()
    (three / "config.json").write_text(json.dumps({"langs": ["a", "b", "c"]}))
    _one_line_error(cli("map", three), "pick two languages with --langs", code=2)
