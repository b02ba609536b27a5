"""Tiny models and planted-rule data for the router tests (reached through the ``toy`` fixture,
since the suite runs with ``--import-mode=importlib``).

A plain random tiny model has near-uniform logits and layers whose updates barely move its
residual stream, so no gate choice changes its LM loss much. :func:`sharp_model` scales its
embeddings, attention/MLP output projections and LM head so that one layer's attention matters:
with layer 3's attention dropped, the cross-entropy against the full model's own greedy tokens
rises from about 0.6 to 1.9 nats.
"""
from __future__ import annotations

import sys

import pytest
import torch

from polar.runtime.adapters import get_adapter, layer_sliding_window
from polar.runtime.routing import LayerGates
from polar.testing import tiny_model

torch.set_num_threads(1)

MARK = 3  # the marker token of the planted rules
D = 6  # layers of the tiny models


def sharp_model(arch: str = "llama", num_layers: int = D, seed: int = 0):
    model = tiny_model(arch, seed=seed, num_layers=num_layers)
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(10)
        model.lm_head.weight.mul_(30)
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.mul_(5)
            if hasattr(layer.mlp, "down_proj"):
                layer.mlp.down_proj.weight.mul_(5)
    return model


def marked_prompts(n: int, seed: int, lo: int = 4, hi: int = 8, vocab: tuple[int, int] = (4, 20)):
    """``n`` prompts of ``lo..hi`` tokens from a small vocabulary; every other one (even index)
    holds the marker at a random position. Returns ``[(ids [L], has_marker)]``."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        L = int(torch.randint(lo, hi + 1, (1,), generator=g))
        ids = torch.randint(vocab[0], vocab[1], (L,), generator=g)
        has = i % 2 == 0
        if has:
            ids[int(torch.randint(0, L, (1,), generator=g))] = MARK
        out.append((ids, has))
    return out


def marked_sequences(n: int, seed: int, p: float = 0.25):
    """``n`` sequences of 6..10 tokens from a small vocabulary, each token the marker with probability ``p``."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        L = int(torch.randint(6, 11, (1,), generator=g))
        ids = torch.randint(4, 20, (L,), generator=g)
        ids[torch.rand(L, generator=g) < p] = MARK
        out.append(ids)
    return out


class AttentionTeacher:
    """A router that closes ``layer``'s attention gate for the rows flagged (per-row flags given)."""

    def __init__(self, flags, layer: int):
        self.flags, self.layer = torch.tensor(flags), layer

    def decide(self, layer, hidden, attention_mask):
        return torch.ones(hidden.shape[0], dtype=torch.long)

    def gates(self, layer, hidden, attention_mask):
        return LayerGates(attention=(~self.flags).float()) if layer == self.layer else None


def reference_gated(model, ids: torch.Tensor, closed_attention: set[int]) -> torch.Tensor:
    """Plain loop over the HF layer modules for one unpadded row ``ids`` ``[T]``: the attention
    sub-layer of the layers in ``closed_attention`` is dropped. Logits ``[T, V]``."""
    base = model.model
    x = base.embed_tokens(ids[None])
    T = ids.shape[0]
    pos = torch.arange(T)[None]
    cos_sin = base.rotary_emb(x, pos)
    dist = torch.arange(T)[:, None] - torch.arange(T)[None, :]
    for i, layer in enumerate(base.layers):
        window = layer_sliding_window(model.config, i)
        allowed = (dist >= 0) if window is None else (dist >= 0) & (dist < window)
        mask = torch.zeros(T, T).masked_fill(~allowed, torch.finfo(x.dtype).min)[None, None]
        if i not in closed_attention:
            x = x + layer.self_attn(hidden_states=layer.input_layernorm(x), position_embeddings=cos_sin,
                                    attention_mask=mask, position_ids=pos)[0]
        m = layer.mlp(layer.post_attention_layernorm(x))
        x = x + (m[0] if isinstance(m, tuple) else m)
    return model.lm_head(base.norm(x))[0]


@pytest.fixture
def toy():
    return sys.modules[__name__]


@pytest.fixture(scope="session")
def sharp():
    """The sharp tiny Llama (session-scoped) and its adapter."""
    model = sharp_model()
    return model, get_adapter(model)
