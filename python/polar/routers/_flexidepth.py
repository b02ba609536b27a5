"""FlexiDepth (Luo et al. 2025, "Adaptive Layer-skipping in Pre-trained LLMs"): per-token layer gates.

For each gated layer ``l`` (default: the later half of the layers) and every token ``t``::

    g = sigmoid(W_up tanh(W_down rmsnorm_r(x_t)))           # bottleneck d / 16
    g >= threshold:  y_t = x_t + g * (layer_l(x)_t - x_t)     # the full layer, its update scaled by g
    g <  threshold:  y_t = x_t + (1 - g) * adapter(x_t)       # attention query and MLP skipped

``adapter(x) = W_o (silu(W_g n) * W_i n)``, ``n = rmsnorm_a(x)``, a SwiGLU of width
``intermediate_size / 16``. A skipped token's keys and values are still computed, so later tokens
attend to it as usual and the KV cache stays complete. The engine (:mod:`polar.runtime.gated`)
computes gated layers densely (every token through the layer and the adapter, the mask selects):
no compute is saved, as in FlexiDepth's own code; what counts is the executed layers per token.

Gradients reach the router through ``g`` (both branches are scaled by it); the hard selection has
none. Training adds ``alpha * mean_t (sum_l g_lt)^2`` to the LM loss (:func:`usage_penalty`).
The router's output bias starts at ``init_gate_logit`` (gates open), the adapter's output
projection at zero (a skipped token starts as the identity), the norms as copies of the layer's
input / post-attention norm weights.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime.adapters import ModelAdapter
from ..runtime.routing import LayerGates
from ._config import FlexiDepthConfig
from ._mindskip import rms_norm


class _LayerRouter(nn.Module):
    """The gate and the adapter of one layer."""

    def __init__(self, config: FlexiDepthConfig):
        super().__init__()
        d, r, a = config.hidden_size, config.router_dim, config.adapter_dim
        self.eps = config.norm_eps
        self.router_norm = nn.Parameter(torch.ones(d))
        self.down = nn.Linear(d, r, bias=False)
        self.up = nn.Linear(r, 1)
        self.adapter_norm = nn.Parameter(torch.ones(d))
        self.adapter_gate = nn.Linear(d, a, bias=False)
        self.adapter_in = nn.Linear(d, a, bias=False)
        self.adapter_out = nn.Linear(a, d, bias=False)
        with torch.no_grad():
            self.up.bias.fill_(config.init_gate_logit)
            self.adapter_out.weight.zero_()

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[n, T, d]`` -> ``g`` ``[n, T]`` float32."""
        z = rms_norm(x, self.router_norm, self.eps)                             # [n, T, d]
        return torch.sigmoid(self.up(torch.tanh(self.down(z)))).squeeze(-1)    # [n, T]

    def adapter(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[n, T, d]`` -> the adapter's update ``[n, T, d]`` float32."""
        z = rms_norm(x, self.adapter_norm, self.eps)                            # [n, T, d]
        return self.adapter_out(F.silu(self.adapter_gate(z)) * self.adapter_in(z))


class FlexiDepthRouter(nn.Module):
    """FlexiDepth's routers and adapters for a ``D``-layer model; a :class:`polar.Router` with ``gates``."""

    kind = "flexidepth"

    def __init__(self, config: FlexiDepthConfig, metadata: dict[str, Any] | None = None):
        super().__init__()
        self.config = config
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.layer_routers = nn.ModuleList(_LayerRouter(config) for _ in config.layers)
        self._index = {layer: i for i, layer in enumerate(config.layers)}

    @classmethod
    def for_model(cls, adapter: ModelAdapter, config: FlexiDepthConfig, seed: int = 0,
                  metadata: dict[str, Any] | None = None) -> "FlexiDepthRouter":
        """A fresh router (seeded by ``seed``), its norms copied from ``adapter``'s layers."""
        torch.manual_seed(seed)
        router = cls(config, metadata)
        with torch.no_grad():
            for m, layer in zip(router.layer_routers, config.layers):
                m.router_norm.copy_(adapter.layers[layer].input_layernorm.weight.float())
                m.adapter_norm.copy_(adapter.layers[layer].post_attention_layernorm.weight.float())
        return router

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    def gated(self, layer: int) -> bool:
        return layer in self._index

    def token_gates(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """``g`` ``[B, T]`` (float32, differentiable) of gated layer ``layer`` for ``hidden`` ``[B, T, d]``."""
        m = self.layer_routers[self._index[layer]]
        return m.gate(hidden.to(m.router_norm.device))

    def _skip_fn(self, layer: int) -> Callable[[torch.Tensor], torch.Tensor]:
        m = self.layer_routers[self._index[layer]]

        def skipped(x: torch.Tensor) -> torch.Tensor:                          # [n, T, d] -> [n, T, d]
            xr = x.to(m.router_norm.device)
            y = xr.float() + (1.0 - m.gate(xr))[..., None] * m.adapter(xr)
            return y.to(x.device, x.dtype)

        return skipped

    def layer_gates(self, layer: int, hidden: torch.Tensor) -> tuple[LayerGates, torch.Tensor]:
        """``(LayerGates, g [B, T])`` of gated layer ``layer``: differentiable in ``g`` (training)."""
        g = self.token_gates(layer, hidden)                                     # [B, T]
        token = (g >= self.config.threshold).to(hidden.device)
        return LayerGates(token=token, token_adapter=self._skip_fn(layer), token_scale=g.to(hidden.device)), g

    def decide(self, layer: int, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Every layer runs once: ``ones [B]`` (tokens skip through :meth:`gates`)."""
        return torch.ones(hidden.shape[0], dtype=torch.long, device=hidden.device)

    def gates(self, layer: int, hidden: torch.Tensor, attention_mask: torch.Tensor) -> LayerGates | None:
        """The token gates of a gated layer (``token`` ``[B, T]`` bool, ``token_scale`` ``g``, the
        adapter), ``None`` for the others. Also called by the engine for each new decode column."""
        if not self.gated(layer):
            return None
        with torch.no_grad():
            gates, _ = self.layer_gates(layer, hidden)
        skipped = gates.token_adapter

        def adapter_no_grad(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return skipped(x)

        gates.token_adapter = adapter_no_grad
        gates.token_scale = gates.token_scale.detach()
        return gates


def usage_penalty(gate_values: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """FlexiDepth's layer-usage penalty: ``mean over real tokens of (sum over gated layers of g)^2``;
    ``gate_values``: ``g`` ``[B, T]`` per gated layer, ``mask`` ``[B, T]``."""
    total = torch.stack(gate_values, 0).sum(0)                                  # [B, T]
    m = mask.to(total.dtype)
    return (total.pow(2) * m).sum() / m.sum().clamp(min=1)
