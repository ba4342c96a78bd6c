"""Pre-trained vectors for one language (Wada et al. 2021, §3.7): frozen, a ⊗ E_pre + b, never output classes."""
import gzip
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from xlfast.errors import XlfastError
from xlfast.io import write_vec
from xlfast.model import SPECIALS, CrossLingualModel, ModelConfig, PairBatch
from xlfast.pretrained import PretrainedRows, extend_vocabulary, load, parse_options, problem


def test_vocabulary_takes_corpus_words_then_the_new_ones():
    vocab = list(SPECIALS) + ["casa", "gatto", "cane"]
    words = ["gatto", "<unk>", "mare", "casa", "sole"]
    vecs = np.arange(10, dtype=np.float32).reshape(5, 2)
    full, rows = extend_vocabulary(vocab, words, vecs, SPECIALS)
    assert full == vocab + ["mare", "sole"]
    # corpus words with a vector (by id), then the added words in file order; a special takes none
    assert rows.ids.tolist() == [4, 5, 7, 8]
    assert rows.vectors.tolist() == [vecs[3].tolist(), vecs[0].tolist(), vecs[2].tolist(), vecs[4].tolist()]


def test_load_reads_gzip_caps_and_checks_the_dimension(tmp_path):
    path = tmp_path / "v.vec"
    write_vec(path, ["a", "b", "c"], np.eye(3, dtype=np.float32))
    gz = tmp_path / "v.vec.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    full, rows = load(str(gz), 2, list(SPECIALS), SPECIALS)
    assert full == list(SPECIALS) + ["a", "b"] and rows.vectors.shape == (2, 3)
    assert problem(str(gz), 3) is None
    assert "give --dim 3" in problem(str(path), 4)
    assert "no such file" in problem(str(tmp_path / "nope.vec"), 3)


def test_parse_options():
    assert parse_options(["es=a.vec", "en = b.vec.gz"]) == {"es": "a.vec", "en": "b.vec.gz"}
    for bad in (["es"], ["=x"], ["es=a", "es=b"]):
        with pytest.raises(XlfastError):
            parse_options(bad)


def _model(dropout=0.0):
    torch.manual_seed(0)
    trained = {"aa": 9, "bb": 8}  # specials + corpus words
    pieces = {lang: [[w % 5] for w in range(n)] for lang, n in trained.items()}
    # "bb": word 5 and 6 of the corpus have vectors; two more words only the vectors know (ids 8, 9)
    rows = PretrainedRows(np.array([5, 6, 8, 9]), torch.randn(4, 8).numpy())
    cfg = ModelConfig(["aa", "bb"], trained, num_pieces=5, dim=8, dropout=dropout,
                      pretrained={"bb": {"rows": 4, "added": 2}})
    return CrossLingualModel(cfg, pieces, {"bb": rows}), torch.from_numpy(rows.vectors)


def test_pretrained_rows_are_frozen_affine_and_outside_the_output_layer():
    model, vectors = _model()
    full = model.static_table("bb")
    assert full.shape[0] == 10  # retrieval reaches the added words
    assert torch.allclose(full[[5, 6, 8, 9]], vectors)  # a = 1, b = 0 at the start
    batch = PairBatch.build(("aa", "bb"), [[4, 5, 6], [7, 8]], [[4, 5, 6, 7], [6]])
    model.train()
    assert model.tables(["bb"])["bb"].shape[0] == 8  # classes: the trained vocabulary only
    loss, _ = model.loss(batch)
    loss.backward()
    emb = model.embed
    assert emb.pre_scale["bb"].grad.abs().sum() > 0 and emb.pre_shift["bb"].grad.abs().sum() > 0
    assert all(not b.requires_grad for b in (emb.pre_vectors_bb, emb.pre_ids_bb))
    assert emb.E["bb"].grad[[5, 6]].abs().sum() == 0  # rows taken by the frozen vectors learn nothing
    with torch.no_grad():
        emb.pre_scale["bb"].fill_(2.0)
        emb.pre_shift["bb"].fill_(0.5)
    assert torch.allclose(model.static_table("bb")[[5, 6, 8, 9]], 2 * vectors + 0.5)


def test_pretrained_model_round_trips_through_its_state_without_the_vectors():
    model, vectors = _model()
    with torch.no_grad():
        model.embed.pre_scale["bb"].fill_(2.0)
    state = model.state_dict()
    assert not [k for k in state if "pre_ids" in k or "pre_vectors" in k]  # saved once, beside the checkpoints
    again = CrossLingualModel.from_state(model.cfg, state, {"bb": PretrainedRows(np.array([5, 6, 8, 9]), vectors.numpy())})
    assert torch.equal(again.static_table("bb"), model.static_table("bb"))
    with pytest.raises(ValueError, match="pre-trained vectors for 'bb'"):
        CrossLingualModel.from_state(model.cfg, state)


# ---------------------------------------------------------------------------------------------------
# End to end: a word the parallel corpus never shows retrieves its translation through the vectors


def ppmi_svd_vectors(sentences: list[list[str]], dim: int, window: int = 2) -> tuple[list[str], np.ndarray]:
    """Count-based word vectors (PPMI of a ±window co-occurrence matrix, truncated SVD): small
    pre-trained vectors made from text, without a fastText install."""
    words = sorted({w for s in sentences for w in s})
    index = {w: i for i, w in enumerate(words)}
    co = np.zeros((len(words), len(words)))
    for s in sentences:
        ids = [index[w] for w in s]
        for i, a in enumerate(ids):
            for b in ids[max(0, i - window) : i] + ids[i + 1 : i + 1 + window]:
                co[a, b] += 1
    np.fill_diagonal(co, 0)  # a word is not its own context
    total = co.sum()
    expected = np.outer(co.sum(1), co.sum(0)) / total
    with np.errstate(divide="ignore", invalid="ignore"):
        ppmi = np.nan_to_num(np.maximum(np.log(co / expected), 0.0))
    u, s, _ = np.linalg.svd(ppmi)
    return words, (u[:, :dim] * np.sqrt(s[:dim])).astype(np.float32)


@pytest.fixture(scope="module")
def with_synonym(tmp_path_factory):
    """A synthetic parallel corpus, and target-language vectors in which a synonym the corpus never shows
    appears in the contexts of a frequent target word (each sentence once with the word and once with the
    synonym: equal pre-trained vectors)."""
    from collections import Counter

    from xlfast.synthetic import make_pair

    d = tmp_path_factory.mktemp("pretrained")
    pair = make_pair(n_sentences=320, vocab=16, seed=2)
    corpus = d / "corpus.tsv"
    corpus.write_text("".join(f"{' '.join(s)}\t{' '.join(t)}\n" for s, t in zip(pair.src_sents, pair.tgt_sents)))
    # the most frequent target word with a single translation, and that translation
    translations: dict[str, set[str]] = {}
    for s, t in pair.lexicon:
        translations.setdefault(t, set()).add(s)
    counts = Counter(w for t in pair.tgt_sents for w in t)
    target = next(w for w, _ in counts.most_common() if len(translations.get(w, ())) == 1)
    (source,) = translations[target]
    synonym = "zzqa"
    mono = pair.tgt_sents + [[synonym if w == target else w for w in t] for t in pair.tgt_sents]
    words, vectors = ppmi_svd_vectors(mono, dim=32)
    vec = d / "tgt.vec"
    write_vec(vec, words, vectors)
    return SimpleNamespace(corpus=corpus, vec=vec, counts=counts, target=target, source=source, synonym=synonym)


def _config(data, out, **changes):
    from xlfast.corpora import CorpusSpec
    from xlfast.tokenize import TokenizerSpec
    from xlfast.train import TrainConfig

    # SWave, as when the retrieval below was calibrated (--subword auto takes SWcnn for a corpus this small)
    settings = dict(dim=32, epochs=6, patience=6, spm_vocab=100, threads=1, subword="ave", pretrained={"tgt": str(data.vec)})
    return TrainConfig(corpora=[CorpusSpec(str(data.corpus), None, ("src", "tgt"))], out=str(out),
                       tokenizer=TokenizerSpec("none"), **dict(settings, **changes))


def test_an_out_of_corpus_word_retrieves_its_translation(with_synonym, tmp_path):
    from xlfast.kernels.csls import topk
    from xlfast.run import Run
    from xlfast.train import Trainer

    data = with_synonym
    Trainer.new(_config(data, tmp_path / "run"), log=lambda m: None).fit()
    run = Run.load(tmp_path / "run")
    tgt_words, tgt_table = run.word_vectors("tgt")
    src_words, src_table = run.word_vectors("src")
    assert data.synonym in tgt_words and data.synonym not in data.counts
    assert run.model.cfg.vocab_sizes["tgt"] == len(SPECIALS) + len(data.counts)  # not an output class
    best = topk(tgt_table.float(), src_table.float(), 3, metric="csls", knn=10,
                rows=[tgt_words.index(data.synonym), tgt_words.index(data.target)])
    via_vectors, in_corpus = ([src_words[j] for j in row] for row in best.indices.tolist())
    # the unseen word ranks the source words as its in-corpus twin does, its translation among the first
    # three (after six epochs the source determiners, aligned to nothing, can still rank above it)
    assert via_vectors == in_corpus and data.source in via_vectors


def test_the_vectors_are_saved_once_and_a_resumed_run_continues_exactly(with_synonym, straight_and_resumed):
    """The frozen vectors live in the run directory, memory-mapped, never in checkpoint.pt or model.pt; a
    run resumed from its checkpoint ends exactly where an uninterrupted one does."""
    from xlfast.io import read_vec
    from xlfast.pretrained import normalise

    data = with_synonym
    straight, resumed = straight_and_resumed(lambda out, epochs: _config(data, out, epochs=epochs, patience=9), 2)
    for (k, p), (_, q) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(p, q), k
    run = resumed.rundir
    saved = run.read_pretrained(run.model_config())["tgt"]
    assert isinstance(saved.vectors, np.memmap)
    words, vectors = read_vec(data.vec)
    vocab = run.read_vocab("tgt")
    assert np.array_equal(saved.vectors, normalise(vectors)[[words.index(vocab[i]) for i in saved.ids]])
    for name in ("checkpoint.pt", "model.pt"):
        state = run.load_state(name)["model"]
        assert not [k for k in state if "pre_vectors" in k or "pre_ids" in k], name
        assert set(state) == set(resumed.model.state_dict())
    assert torch.equal(resumed.model.embed.pre_vectors_tgt, torch.from_numpy(np.asarray(saved.vectors)))


def test_normalise_centres_and_scales_to_unit_length():
    """Vectors that share one dominant direction (as fastText's do on little text) come out centred and of
    unit length, their differences kept."""
    from xlfast.pretrained import normalise

    rng = np.random.default_rng(0)
    vectors = 5.0 + rng.normal(size=(200, 16))  # every pair's cosine near 0.96
    out = normalise(vectors)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert abs(np.mean(out @ out.T) ) < 0.05  # mean pairwise cosine: about 0 instead of 0.96
    # the same operation as by hand: unit length, minus the mean, unit length
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    centred = unit - unit.mean(axis=0)
    assert np.allclose(out, centred / np.linalg.norm(centred, axis=1, keepdims=True), atol=1e-5)
