"""The network: shapes, padding masks, parameter count, encoders."""
from __future__ import annotations

import pytest
import torch

from polar.predictor import HFEncoder, Predictor, load_encoder
from polar.predictor._encoder import pad_tokens
from polar.predictor._network import PolarNet


def _net(toy, **overrides) -> PolarNet:
    torch.manual_seed(0)
    return PolarNet(toy.tiny_config(encoder_dim=16, **overrides)).eval()


def test_shapes(toy):
    net = _net(toy, n_blocks=2)
    tokens, mask = torch.randn(3, 7, 16), torch.ones(3, 7, dtype=torch.bool)
    seg, ops = net(tokens, mask)
    assert seg.shape == (3, toy.D) and ops.shape == (3, toy.D, 3)
    assert torch.isfinite(seg).all() and torch.isfinite(ops).all()


def test_padding_is_masked_out(toy):
    """A row's logits do not depend on its padding: amount, side, or the pad vectors' values."""
    net = _net(toy)
    g = torch.Generator().manual_seed(1)
    rows = [torch.randn(n, 16, generator=g) for n in (2, 5, 9)]
    alone = [net(r[None], torch.ones(1, len(r), dtype=torch.bool)) for r in rows]
    T = 12
    for side in ("left", "right"):
        tokens = torch.randn(3, T, 16, generator=g) * 100  # garbage in pad positions
        mask = torch.zeros(3, T, dtype=torch.bool)
        for i, r in enumerate(rows):
            sl = slice(T - len(r), T) if side == "left" else slice(0, len(r))
            tokens[i, sl], mask[i, sl] = r, True
        seg, ops = net(tokens, mask)
        for i, (s1, o1) in enumerate(alone):
            torch.testing.assert_close(seg[i], s1[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(ops[i], o1[0], atol=1e-5, rtol=1e-5)
    # Unmasked garbage does change the result (the mask is what protects it).
    tokens[0, : T - len(rows[0])] = 5.0
    seg_nomask, _ = net(tokens, torch.ones(3, T, dtype=torch.bool))
    assert not torch.allclose(seg_nomask[0], alone[0][0][0], atol=1e-3)


def test_bad_inputs_raise(toy):
    net = _net(toy)
    with pytest.raises(ValueError, match="no real tokens"):
        net(torch.randn(2, 3, 16), torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.bool))
    with pytest.raises(ValueError, match="expected tokens"):
        net(torch.randn(2, 3, 8), torch.ones(2, 3, dtype=torch.bool))


def test_parameter_count_excludes_frozen_encoder(toy, tiny_bert_dir):
    enc = load_encoder(str(tiny_bert_dir))
    p = Predictor(toy.tiny_config(encoder=str(tiny_bert_dir)), enc)
    own = sum(t.numel() for t in p.net.parameters())
    assert p.num_parameters() == own == sum(t.numel() for t in p.parameters())
    enc_ids = {id(t) for t in enc.parameters()}
    assert enc_ids and not enc_ids & {id(t) for t in p.parameters()}
    assert not any(k.startswith("encoder") for k in p.state_dict())
    # d=32, e=16, D=6, 1 block: proj + LNs + queries + cross-attention + block + heads.
    d, e, D = 32, 16, toy.D
    attn = 4 * (d * d + d)
    expected = (e * d + d) + 2 * d + D * d + 2 * d + attn + (2 * d + attn + 2 * d + (d * 4 * d + 4 * d) + (4 * d * d + d)) \
        + 2 * d + (d + 1) + (3 * d + 3)
    assert p.num_parameters() == expected


def test_predictor_rejects_mismatched_encoder(toy):
    with pytest.raises(ValueError, match="encoder"):
        Predictor(toy.tiny_config(encoder="minilm"), toy.toy_llm_encoder())
    with pytest.raises(ValueError, match="encoder_dim"):
        Predictor(toy.tiny_config(encoder_dim=99), toy.toy_llm_encoder())


def test_hf_encoder_folder_and_padding(tiny_bert_dir):
    """A transformers folder by path: frozen, and a question's vectors do not depend on the batch."""
    enc = load_encoder(str(tiny_bert_dir))
    assert isinstance(enc, HFEncoder) and enc.dim == 16
    assert not any(t.requires_grad for t in enc.parameters())
    enc.train()
    assert not enc.model.training  # frozen: dropout stays off
    short, long = "apple skip it", "please compute the river and the stone now"
    h1, m1 = enc.encode([short])
    h2, m2 = enc.encode([short, long])
    n = int(m1.sum())
    assert int(m2[0].sum()) == n and m2[0, n:].sum() == 0
    torch.testing.assert_close(h2[0, :n], h1[0, :n], atol=1e-5, rtol=1e-5)


def test_llm_embedding_encoder_leaves_the_module_alone(toy):
    enc = toy.toy_llm_encoder()
    before = [t.requires_grad for t in enc.embedding.parameters()]
    h, m = enc.encode(["skip the apple", "apple"])
    assert h.shape == (2, 3, 16) and m.tolist() == [[True, True, True], [True, False, False]]
    assert [t.requires_grad for t in enc.embedding.parameters()] == before
    assert not h.requires_grad
    torch.testing.assert_close(h[1, 0], h[0, 2])  # a token's vector is its embedding row
    with pytest.raises(ValueError, match="input embeddings and tokenizer"):
        load_encoder("llm")
    with pytest.raises(FileNotFoundError, match="neither"):
        load_encoder("/no/such/folder")


def test_pad_tokens():
    a, b = torch.ones(2, 4), torch.full((3, 4), 2.0)
    x, m = pad_tokens([a, b])
    assert x.shape == (2, 3, 4) and m.tolist() == [[True, True, False], [True, True, True]]
    assert x[0, 2].abs().sum() == 0 and (x[1] == 2).all()


@pytest.mark.parametrize("max_runs", [1, 2, 5])
def test_op_head_has_max_runs_plus_one_classes(toy, max_runs):
    net = _net(toy, max_runs=max_runs)
    assert net.op_head.out_features == max_runs + 1
    seg, ops = net(torch.randn(2, 4, 16), torch.ones(2, 4, dtype=torch.bool))
    assert seg.shape == (2, toy.D) and ops.shape == (2, toy.D, max_runs + 1)
    # Only the op head grows: (d + 1) parameters per extra class.
    assert net.num_parameters() - _net(toy).num_parameters() == (max_runs - 2) * (32 + 1)


def test_predictor_config_max_runs(toy):
    from polar.predictor import PredictorConfig

    assert PredictorConfig(num_layers=6).max_runs == 2
    cfg = toy.tiny_config(max_runs=5)
    assert cfg.to_dict()["max_runs"] == 5 and PredictorConfig.from_dict(cfg.to_dict()) == cfg
    old = cfg.to_dict()
    del old["max_runs"]  # a config.json written before max_runs existed
    assert PredictorConfig.from_dict(old).max_runs == 2
    for bad in (0, -1, 2.5, True, "5"):
        with pytest.raises(ValueError, match="max_runs must be a positive int"):
            toy.tiny_config(max_runs=bad)
