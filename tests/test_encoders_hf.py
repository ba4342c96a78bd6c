"""The transformer encoder (`--hf-model PATH`) on a TINY BertModel that this test builds and saves itself:
no hub access, the vector of each word is the last sub-token's state, long sentences are windowed."""
from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from xlfast.encoders import HFEncoder  # noqa: E402

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "dog", "sat", "on", "mat", "un", "##believ",
         "##able", "##s", "house", "ghar", "बिरालो", "."]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-bert")
    (path / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    # from_pretrained on a folder holding vocab.txt builds the WordPiece tokenizer in transformers 4 and 5
    tok = transformers.BertTokenizerFast.from_pretrained(str(path), do_lower_case=True, local_files_only=True)
    assert len(tok) == len(VOCAB)
    tok.save_pretrained(str(path))
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=12)
    transformers.BertModel(cfg).eval().save_pretrained(str(path))
    return path


def direct_word_vectors(path, words):
    """Reference: the fast tokenizer's word_ids() picks each word's last sub-token in one forward pass."""
    tok = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = transformers.AutoModel.from_pretrained(str(path), local_files_only=True).eval()
    enc = tok(words, is_split_into_words=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**enc).last_hidden_state[0].numpy()
    last = {}
    for pos, w in enumerate(enc.word_ids()):
        if w is not None:
            last[w] = pos
    return np.stack([hidden[last[i]] for i in range(len(words))])


def test_last_subtoken_vector_per_word(tiny_bert, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = HFEncoder(tiny_bert)
    assert enc.dim == 16 and enc.max_len == 12
    words = ["The", "cats", "sat", "unbelievable", "ghar", "zzz"]
    assert enc.word_pieces("unbelievable") == [VOCAB.index("un"), VOCAB.index("##believ"), VOCAB.index("##able")]
    assert enc.word_pieces("zzz") == [VOCAB.index("[UNK]")]
    got = enc.embed("src", [words, ["dog"]])
    assert [g.shape for g in got] == [(6, 16), (1, 16)]
    np.testing.assert_allclose(got[0], direct_word_vectors(tiny_bert, words), atol=1e-5)
    np.testing.assert_allclose(got[1], direct_word_vectors(tiny_bert, ["dog"]), atol=1e-5)


def test_long_sentences_are_windowed(tiny_bert):
    enc = HFEncoder(tiny_bert)
    words = ["the", "cat", "sat", "on", "the", "mat", "."] * 3 + ["unbelievable"]  # 24 pieces > 10 per window
    windows = list(enc._windows(words))
    assert windows[0][0] == 0 and windows[-1][1] == len(words)
    assert all(sum(len(enc.word_pieces(w)) for w in words[a:b]) <= 10 for a, b in windows)
    got = enc.embed("tgt", [words])[0]
    for a, b in windows:
        np.testing.assert_allclose(got[a:b], direct_word_vectors(tiny_bert, words[a:b]), atol=1e-5)


def test_missing_directory_is_a_clear_error(tmp_path):
    from xlfast.errors import XlfastError

    with pytest.raises(XlfastError, match="not a directory"):
        HFEncoder(tmp_path / "nope")
    with pytest.raises(XlfastError, match="cannot load a transformer"):
        HFEncoder(tmp_path)  # exists but holds no model: never falls back to the hub


def test_cli_mines_identical_corpora_to_the_identity(tiny_bert, tmp_path):
    """With K=1 every sentence's neighbourhood mean is its own copy (cos 1), so the margin is the cosine
    and only identical sentences reach 1: the known answer is the identity, whatever the random weights."""
    from typer.testing import CliRunner

    from xlfast.cli.main import app

    lines = ["the cat sat on the mat .", "the dog sat", "unbelievable cats", "ghar house", "the mat", "dogs sat on"]
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "s.tsv"
    res = CliRunner().invoke(app, ["mine", "--src", str(corpus), "--tgt", str(corpus), "--hf-model", str(tiny_bert),
                                   "-o", str(out), "--level", "sentence", "--threshold", "0.999", "--knn", "1",
                                   "--word-weight", "0"])  # one stage: the margin alone
    assert res.exit_code == 0, res.output
    got = [line.split("\t") for line in out.read_text(encoding="utf-8").splitlines()[1:]]
    assert sorted((s, t) for *_, s, t in got) == sorted((l, l) for l in lines)
    assert all(i == j for _, i, j, _, _ in got)
