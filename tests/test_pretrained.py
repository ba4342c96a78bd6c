"""Pre-trained vectors for one language (Wada et al. 2021, §3.7): frozen, a ⊗ E_pre + b, never output classes."""
import gzip

import numpy as np
import pytest
import torch

from xlfast.errors import XlfastError
from xlfast.io import write_vec
from xlfast.model import SPECIALS, CrossLingualModel, ModelConfig, PairBatch
from xlfast.pretrained import extend_vocabulary, load, parse_options


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
    full, rows = load(str(gz), 2, list(SPECIALS), SPECIALS, dim=3)
    assert full == list(SPECIALS) + ["a", "b"] and rows.vectors.shape == (2, 3)
    with pytest.raises(XlfastError, match="give --dim 3"):
        load(str(path), None, list(SPECIALS), SPECIALS, dim=4)


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
    ids = torch.tensor([5, 6, 8, 9])
    vectors = torch.randn(4, 8)
    cfg = ModelConfig(["aa", "bb"], trained, num_pieces=5, dim=8, dropout=dropout,
                      pretrained={"bb": {"rows": 4, "added": 2}})
    return CrossLingualModel(cfg, pieces, {"bb": (ids, vectors)}), vectors


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


def test_pretrained_model_round_trips_through_its_state():
    model, _ = _model()
    again = CrossLingualModel.from_state(model.cfg, model.state_dict())
    assert torch.equal(again.static_table("bb"), model.static_table("bb"))
