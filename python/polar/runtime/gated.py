"""Gated decoder layers (docs/architecture.md section 15): a layer computed from its parts with a
router's :class:`.routing.LayerGates` (MindSkip attention gates, FlexiDepth token gates).

For the wave's rows ``x`` ``[n, Q, d]`` (gathered), with ``g`` the attention gate ``[n]``, ``m``
the token mask ``[n, Q]``, ``s`` the token scale ``[n, Q]`` and ``A`` the token adapter::

    h = x + g * attn(input_layernorm(x))          # attention output gated per row
    y = h + mlp(post_attention_layernorm(h))
    y = x + s * (y - x)                            # scaled update (FlexiDepth), when s is given
    y = where(m, y, A(x))                          # skipped tokens take the adapter's output

Computed densely: attention (so every token's keys/values reach the cache), MLP and adapter run
for all of the wave's tokens and the mask selects, so token gates save no compute. With every gate
open (``g = 1``, ``m`` all true, no ``s``) this is exactly the Hugging Face layer (same operations
in the same order).
"""
from __future__ import annotations

import torch

from ..errors import UserError
from .adapters import ModelAdapter


def run_layer_gated(adapter: ModelAdapter, layer_idx: int, x: torch.Tensor, bias: torch.Tensor | None,
                    position_ids: torch.Tensor, position_embeddings, cache,
                    attention: torch.Tensor | None = None, token: torch.Tensor | None = None,
                    token_adapter=None, token_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Layer ``layer_idx`` on ``x`` ``[n, Q, d]`` with gates (each ``None`` = open); returns ``[n, Q, d]``.

    ``bias`` ``[n, 1, Q, K]``, ``position_ids`` ``[n, Q]``, ``position_embeddings`` ``(cos, sin)``
    ``[n, Q, hd]`` each and ``cache`` (a wave cache view or ``None``) are what the layer's attention
    takes; ``attention`` ``[n]`` float, ``token`` ``[n, Q]`` bool, ``token_scale`` ``[n, Q]`` float,
    ``token_adapter``: ``[n, Q, d] -> [n, Q, d]`` (see the module docstring).
    """
    layer = adapter.layers[layer_idx]
    a = adapter.call_attention(layer_idx, layer.input_layernorm(x), bias, position_ids, position_embeddings,
                               cache)                                          # [n, Q, d]
    if attention is not None:
        a = a * attention.to(a.dtype)[:, None, None]                            # [n, Q, d]
    h = x + a                                                                   # [n, Q, d]
    m = layer.mlp(layer.post_attention_layernorm(h))
    y = h + (m[0] if isinstance(m, tuple) else m)                               # [n, Q, d]
    if token_scale is not None:
        y = x + token_scale.to(y.dtype)[..., None] * (y - x)                    # [n, Q, d]
    if token is not None and not bool(token.all()):
        skipped = token_adapter(x)                                              # [n, Q, d]
        if not isinstance(skipped, torch.Tensor) or skipped.shape != x.shape:
            got = tuple(skipped.shape) if isinstance(skipped, torch.Tensor) else type(skipped).__name__
            raise UserError(f"layer {layer_idx}: token_adapter returned {got}; expected shape {list(x.shape)}")
        y = torch.where(token[..., None], y, skipped.to(y.dtype))               # [n, Q, d]
    return y
