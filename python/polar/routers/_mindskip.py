"""MindSkip (router-tuning, He et al. 2024; CASE-Lab-UMD/Router-Tuning-Mixture-of-Depths): attention gates.

For each gated layer ``l`` (default: the last 16 layers but the final one)::

    s = sigmoid(w_l . mean_t rmsnorm_l(h)[t])      # over the prompt's real tokens; w_l: Linear(d, 1, bias=False)
    g = 1[s >= threshold]                           # straight-through in training: d g / d s = 1
    h = h + g * attn_l(rmsnorm_l(h))                # then the layer's MLP as usual

``rmsnorm_l`` is layer ``l``'s own input norm (its weight copied into the router as a buffer, so a
checkpoint is self-contained and :func:`polar.routers.load_router` can check it belongs to the
model). The decision is taken once per row over the prompt and reused while decoding (the engine
does that with :class:`polar.LayerGates`'s ``attention`` field). Only the gate vectors are trained,
with the LM loss; the base model is frozen. Every layer always runs (``decide`` is 1).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..runtime.adapters import ModelAdapter
from ..runtime.routing import LayerGates
from ._config import MindSkipConfig


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm of ``x`` ``[..., d]`` in float32 with ``weight`` ``[d]`` (the Llama-family formula)."""
    x = x.float()
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def norm_eps(norm: nn.Module) -> float:
    """The epsilon of a Hugging Face RMSNorm module."""
    eps = getattr(norm, "variance_epsilon", None)
    return float(eps if eps is not None else norm.eps)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` ``[B, T, d]`` over the columns where ``mask`` ``[B, T]`` is set: ``[B, d]``."""
    m = mask.to(x.dtype)[..., None]                                             # [B, T, 1]
    return (x * m).sum(1) / m.sum(1).clamp(min=1)


class MindSkipRouter(nn.Module):
    """MindSkip's gates for a ``D``-layer model; a :class:`polar.Router` with ``gates``.

    Parameters: ``gate`` ``[L, d]`` (one vector per gated layer). Buffers: ``norm_weight`` ``[L, d]``
    (the gated layers' input-norm weights, frozen).
    """

    kind = "mindskip"

    def __init__(self, config: MindSkipConfig, metadata: dict[str, Any] | None = None):
        super().__init__()
        self.config = config
        self.metadata: dict[str, Any] = dict(metadata or {})
        L, d = len(config.layers), config.hidden_size
        self.gate = nn.Parameter(torch.empty(L, d))
        nn.init.kaiming_uniform_(self.gate, a=5 ** 0.5)                         # nn.Linear(d, 1)'s init, per row
        self.register_buffer("norm_weight", torch.ones(L, d))
        self._index = {layer: i for i, layer in enumerate(config.layers)}

    @classmethod
    def for_model(cls, adapter: ModelAdapter, config: MindSkipConfig, seed: int = 0,
                  metadata: dict[str, Any] | None = None) -> "MindSkipRouter":
        """A fresh router (gate vectors seeded by ``seed``) holding ``adapter``'s input-norm weights."""
        torch.manual_seed(seed)
        router = cls(config, metadata)
        with torch.no_grad():
            for i, layer in enumerate(config.layers):
                router.norm_weight[i] = adapter.layers[layer].input_layernorm.weight.float()
        return router

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    def gated(self, layer: int) -> bool:
        return layer in self._index

    def scores(self, layer: int, hidden: torch.Tensor, pool_mask: torch.Tensor) -> torch.Tensor:
        """``sigmoid`` of gate ``layer`` for ``hidden`` ``[B, T, d]`` pooled where ``pool_mask`` ``[B, T]``: ``[B]``."""
        i = self._index[layer]
        x = rms_norm(hidden.to(self.gate.device), self.norm_weight[i], self.config.norm_eps)  # [B, T, d]
        pooled = masked_mean(x, pool_mask.to(x.device))                         # [B, d]
        return torch.sigmoid(pooled @ self.gate[i])                             # [B]

    def train_gate(self, layer: int, hidden: torch.Tensor, pool_mask: torch.Tensor) -> torch.Tensor:
        """The hard gate ``[B]`` with the straight-through gradient of its score (training)."""
        s = self.scores(layer, hidden, pool_mask)
        return (s >= self.config.threshold).to(s.dtype) + s - s.detach()

    def forward(self, layer: int, hidden: torch.Tensor, pool_mask: torch.Tensor) -> torch.Tensor:
        return self.train_gate(layer, hidden, pool_mask)

    def decide(self, layer: int, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Every layer runs once: ``ones [B]``."""
        return torch.ones(hidden.shape[0], dtype=torch.long, device=hidden.device)

    @torch.no_grad()
    def gates(self, layer: int, hidden: torch.Tensor, attention_mask: torch.Tensor) -> LayerGates | None:
        """The attention gates ``[B]`` (0.0 or 1.0) of a gated layer, ``None`` for the others."""
        if not self.gated(layer):
            return None
        s = self.scores(layer, hidden, attention_mask)
        return LayerGates(attention=(s >= self.config.threshold).float().to(hidden.device))
