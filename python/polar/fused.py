"""Decomposed decoder-layer runner around ``polar_kernels`` (DESIGN.md section 4, CUDA path).

Instead of gathering a wave's rows, calling the layer and scattering the result, this runner
calls the layer's parts on the full hidden-state buffer ``[B, Q, d]``::

    x = gathered_rmsnorm(hidden, rows, input_layernorm)      # reads rows in place
    hidden[rows] += self_attn(x)                              # residual_scatter_add_
    x = gathered_rmsnorm(hidden, rows, post_attention_layernorm)
    hidden[rows] += mlp(x)

In decode (one new column per row) attention can bypass Hugging Face's attention function:
q/k/v projections (with the family's biases and q/k norms) and RoPE come from the model's own
modules, the new key/value is written to the row's step slot, and ``slot_decode_attention``
reads the cache by slot index. Kernels dispatch to Triton on CUDA and to their torch
references on CPU, so this path is tested on CPU too.
"""
from __future__ import annotations

import sys

import torch

from polar_kernels import gathered_rmsnorm, residual_scatter_add_, slot_decode_attention

from .cache import StepKVCache, WaveCacheView


def _eps(norm) -> float:
    eps = getattr(norm, "variance_epsilon", None)
    return float(eps if eps is not None else norm.eps)


def check_layer_structure(layer) -> None:
    """Raise ``TypeError`` if ``layer`` lacks the pre-norm Llama layout this runner relies on."""
    for part in ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp"):
        if not hasattr(layer, part):
            raise TypeError(f"{type(layer).__name__} has no '{part}'; use backend='hf'")


def slot_attention_decode(attn, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: StepKVCache,
                          slots: torch.Tensor, col: int, key_mask: torch.Tensor) -> torch.Tensor:
    """Attention for one new token per row, reading keys/values from step slots.

    ``x`` ``[n, 1, d]`` (normed), ``cos``/``sin`` ``[n, 1, hd]``, ``slots`` ``[n]``, ``key_mask``
    ``[n, col+1]`` bool. Writes this column's key/value into ``slots`` and returns ``[n, 1, d]``.
    """
    n, hd = x.shape[0], attn.head_dim
    q = attn.q_proj(x).view(n, 1, -1, hd)
    k = attn.k_proj(x).view(n, 1, -1, hd)
    v = attn.v_proj(x).view(n, 1, -1, hd)
    if getattr(attn, "q_norm", None) is not None:  # Qwen3
        q, k = attn.q_norm(q), attn.k_norm(k)
    apply_rotary = sys.modules[type(attn).__module__].apply_rotary_pos_emb
    q, k = apply_rotary(q.transpose(1, 2), k.transpose(1, 2), cos, sin)  # [n, H, 1, hd]
    cache.keys[slots, :, col] = k[:, :, 0]
    cache.values[slots, :, col] = v[:, 0]
    o = slot_decode_attention(q[:, :, 0], cache.keys, cache.values, slots, key_mask, attn.scaling)
    return attn.o_proj(o.reshape(n, 1, -1))


def run_layer_fused(layer, hidden: torch.Tensor, rows: torch.Tensor, bias: torch.Tensor, position_ids: torch.Tensor,
                    cos: torch.Tensor, sin: torch.Tensor, view: WaveCacheView | None,
                    key_mask: torch.Tensor | None = None) -> None:
    """Apply ``layer`` to ``hidden[rows]`` in place. With ``key_mask`` (decode) attention reads
    the cache by slot; otherwise Hugging Face's attention runs with ``view`` as its cache."""
    attn = layer.self_attn
    x = gathered_rmsnorm(hidden, rows, layer.input_layernorm.weight, _eps(layer.input_layernorm))
    if key_mask is not None:
        a = slot_attention_decode(attn, x, cos, sin, view.cache, view.slots, view.start, key_mask)
    else:
        a = attn(hidden_states=x, position_embeddings=(cos, sin), attention_mask=bias, position_ids=position_ids,
                 past_key_values=view)[0]
    residual_scatter_add_(hidden, rows, a)
    x = gathered_rmsnorm(hidden, rows, layer.post_attention_layernorm.weight, _eps(layer.post_attention_layernorm))
    m = layer.mlp(x)
    residual_scatter_add_(hidden, rows, m[0] if isinstance(m, tuple) else m)
