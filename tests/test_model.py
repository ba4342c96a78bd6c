"""The encoder-decoder: exactness of the batched computation, weight tying, gradients, SWcnn closed form."""
import pytest
import torch
import torch.nn.functional as F

from xlfast.model import BOS, EOS, PAD, SPECIALS, CrossLingualModel, ModelConfig, PairBatch, reverse_index

torch.manual_seed(0)


def tiny_model(subword="ave", dim=16, enc_layers=1, dropout=0.5):
    V = {"aa": 12, "bb": 10}
    # Pieces: word w of "aa" uses pieces {w % 7, 7 + w % 3}; "bb" uses {w % 7} and a private piece 10 + w % 2.
    pieces = {
        "aa": [[w % 7, 7 + w % 3] for w in range(V["aa"])],
        "bb": [[w % 7, 10 + w % 2, w % 7] for w in range(V["bb"])],
    }
    cfg = ModelConfig(["aa", "bb"], V, num_pieces=12, dim=dim, enc_layers=enc_layers, subword=subword, dropout=dropout)
    return CrossLingualModel(cfg, pieces if subword != "none" else None)


def batch_of(s_sents, t_sents):
    return PairBatch.build(("aa", "bb"), s_sents, t_sents)


S = [[4, 5, 6, 7], [8, 9], [10, 4, 11]]
T = [[4, 5], [6, 7, 8, 9, 5], [9]]


@pytest.mark.parametrize("subword", ["none", "ave", "cnn"])
def test_batched_loss_equals_sum_of_single_pair_losses(subword):
    """Padding, the exact bi-LSTM and the shared decoder states must not change any pair's loss."""
    model = tiny_model(subword, enc_layers=2).eval()
    with torch.no_grad():
        full, _ = model.loss(batch_of(S, T))
        singles = [model.loss(batch_of([s], [t]))[0] for s, t in zip(S, T)]
    assert torch.allclose(full * len(S), torch.stack(singles).sum(), rtol=1e-5, atol=1e-4)


def test_encoder_states_do_not_depend_on_padding():
    model = tiny_model().eval()
    table = model.static_table("aa")
    ids = torch.tensor([[4, 5, 6, 7, 8], [9, 10, PAD, PAD, PAD]])
    u = model.contextual("aa", ids, torch.tensor([5, 2]), table)
    alone = model.contextual("aa", torch.tensor([[9, 10]]), torch.tensor([2]), table)
    assert u.shape == (2, 5, 16)
    assert torch.allclose(u[1, :2], alone[0], atol=1e-6)


def test_reverse_index_is_an_involution_that_keeps_padding():
    rev = reverse_index(torch.tensor([3, 1, 0]), 4)
    assert rev.tolist() == [[2, 1, 0, 3], [0, 1, 2, 3], [0, 1, 2, 3]]
    x = torch.arange(12.0).reshape(3, 4)
    assert torch.equal(x.gather(1, rev).gather(1, rev), x)


def test_decoder_inputs_and_targets_follow_the_authors_layout():
    b = PairBatch.build(("aa", "bb"), [[4, 5, 6]], [[7]])
    assert b.dec_in[0]["fwd"].tolist() == [[BOS, 4, 5, 6]]
    assert b.dec_out[0]["fwd"].tolist() == [[4, 5, 6, EOS]]
    assert b.dec_in[0]["bwd"].tolist() == [[EOS, 6, 5, 4]]
    assert b.dec_out[0]["bwd"].tolist() == [[6, 5, 4, BOS]]
    # both sides' sources share one padded width so the encoder runs once over both languages
    assert b.src_ids[1].tolist() == [[7, PAD, PAD]]


def test_output_layer_is_the_subword_aware_embedding():
    """Recompute the loss by hand with Ẽ as the output matrix: it must match the model's loss."""
    model = tiny_model("ave").eval()
    b = batch_of(S[:1], T[:1])
    with torch.no_grad():
        loss, parts = model.loss(b)
        tab = {lang: model.embed.table(lang) for lang in ("aa", "bb")}
        src = torch.cat([F.embedding(b.src_ids[0], tab["aa"]), F.embedding(b.src_ids[1], tab["bb"])])
        lengths = torch.cat(b.src_lens)
        u = model.encode(src, lengths)
        mask = torch.arange(u.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
        total = 0.0
        for side, lang in enumerate(("aa", "bb")):
            for d in ("fwd", "bwd"):
                h, _ = model.decoders[f"{lang}_{d}"](F.embedding(b.dec_in[side][d], tab[lang]))
                for k in range(2):  # source = own language (k=0) and the other one (k=1)
                    sc = (h[0] @ u[k].t()).masked_fill(~mask[k], float("-inf"))
                    a = sc.softmax(-1)
                    o = model.W(a @ (u[k] + src[k]) + h[0])
                    logits = o @ tab[lang][1:].t()
                    total += F.cross_entropy(logits, b.dec_out[side][d][0] - 1, reduction="sum")
    assert torch.allclose(loss, total, rtol=1e-5)


def test_gradients_reach_the_shared_piece_table_from_both_languages():
    model = tiny_model("ave").train()
    loss, _ = model.loss(batch_of(S, T))
    loss.backward()
    g = model.embed.Z.grad.abs().sum(1)
    assert g[7:10].sum() > 0  # pieces only language "aa" uses
    assert g[10:12].sum() > 0  # pieces only language "bb" uses
    assert g[:7].sum() > 0  # shared pieces
    for lang in ("aa", "bb"):
        assert model.embed.E[lang].grad.abs().sum() > 0


def test_cnn_closed_form_matches_an_explicit_convolution_over_pieces():
    model = tiny_model("cnn").eval()
    lay = model.embed.layout("bb")
    padded, mask = lay.padded()
    with torch.no_grad():
        z = model.embed.Z[padded] * mask.unsqueeze(-1)  # [V, L, d], padded slots zeroed
        y = model.embed.conv(z.transpose(1, 2)).transpose(1, 2)  # [V, L, d]
        f = (y * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        expected = model.embed.E["bb"] + f
        got = model.embed.table("bb")
    assert torch.allclose(got, expected, atol=1e-5)


def test_cnn_table_under_bf16_autocast_rounds_only_the_piece_products():
    model = tiny_model("cnn").eval()
    with torch.no_grad():
        want = model.embed.table("bb")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model.embed.table("bb")
        w = model.embed.conv.weight
        d = w.shape[0]
        taps = w.permute(1, 2, 0).reshape(d, 3 * d)  # W0ᵀ | W1ᵀ | W2ᵀ
        scale = float((model.embed.Z.abs() @ taps.abs()).max())
    assert got.dtype == torch.float32  # the tied output layer and the lookups read an fp32 table
    # Z and the taps are rounded to bf16 (relative error 2^-8 each) and so is each product: an entry of
    # W_k·z is off by at most 3·2^-8 of |Z|·|W_k|. A word's entry is the mean over its pieces of the three
    # taps' sum (≤ 9·2^-8·scale) less two ends divided by n ≥ 1 (≤ 6·2^-8·scale).
    err = (got - want).abs().max()
    assert 0 < err <= (9 + 6) * 2**-8 * scale


def test_oov_words_get_unk_plus_their_pieces():
    model = tiny_model("ave").eval()
    with torch.no_grad():
        v = model.embed.lookup_oov("aa", [[3, 8], []])
        E, Z = model.embed.E["aa"], model.embed.Z
        assert torch.allclose(v[0], E[1] + (Z[3] + Z[8]) / 2, atol=1e-6)
        assert torch.allclose(v[1], E[1])


def test_every_parameter_starts_uniform_in_the_init_range():
    model = tiny_model("cnn")
    for p in model.parameters():
        assert p.abs().max() <= 0.1


def test_specials_come_first():
    assert SPECIALS[PAD] == "<pad>" and SPECIALS[BOS] == "<bos>" and SPECIALS[EOS] == "<eos>"
