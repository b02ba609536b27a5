"""Decomposed decoder-layer runner around ``polar_kernels`` (docs/architecture.md section 6, CUDA path).

Instead of gathering a wave's rows, calling the layer and scattering the result, this runner
calls the layer's parts on the full hidden-state buffer ``[B, Q, d]``::

    x = gathered_rmsnorm(hidden, rows, input_layernorm)      # reads rows in place
    hidden[rows] += self_attn(x)                              # residual_scatter_add_
    x = gathered_rmsnorm(hidden, rows, post_attention_layernorm)
    hidden[rows] += mlp(x)

In decode (one new column per row) attention can bypass Hugging Face's attention function:
q/k/v projections (with the family's biases and q/k norms) and RoPE come from the adapter, the
new key/value is written to the row's step slot, and ``slot_decode_attention`` reads the cache
by slot index; with shared prefixes the new key/value goes to the pool entry ``write_index`` and
``pool_decode_attention`` reads the pool through the wave's ``read_index`` (cascade: a shared
prefix's keys are read once for the rows that share it). Kernels dispatch to Triton on CUDA and
to their torch references on CPU (Triton under the interpreter inside
``polar_kernels.triton_on_cpu()``), so these paths are tested on CPU too.
"""
from __future__ import annotations

import torch

from polar_kernels import gathered_rmsnorm, pool_decode_attention, residual_scatter_add_, slot_decode_attention

from .adapters import ModelAdapter
from .cache import PoolView, StepKVCache, WaveCacheView


def _eps(norm) -> float:
    eps = getattr(norm, "variance_epsilon", None)
    return float(eps if eps is not None else norm.eps)


def slot_attention_decode(adapter: ModelAdapter, attn, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                          cache: StepKVCache, slots: torch.Tensor, col: int, key_mask: torch.Tensor) -> torch.Tensor:
    """Attention for one new token per row, reading keys/values from step slots.

    ``x`` ``[n, 1, d]`` (normed), ``cos``/``sin`` ``[n, 1, hd]``, ``slots`` ``[n]``, ``key_mask``
    ``[n, col+1]`` bool. Writes this column's key/value into ``slots`` and returns ``[n, 1, d]``.
    """
    n = x.shape[0]
    q, k, v = adapter.qkv(attn, x)                                    # [n, H, 1, hd], [n, H_kv, 1, hd] x2
    q, k = adapter.rope(q, k, cos, sin)
    cache.keys[slots, :, col] = k[:, :, 0]
    cache.values[slots, :, col] = v[:, :, 0]
    o = slot_decode_attention(q[:, :, 0], cache.keys, cache.values, slots, key_mask, attn.scaling)
    return attn.o_proj(o.reshape(n, 1, -1))


def pool_attention_decode(adapter: ModelAdapter, attn, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                          view: PoolView, key_mask: torch.Tensor) -> torch.Tensor:
    """Attention for one new token per row, reading keys/values from the pooled cache.

    ``x`` ``[n, 1, d]`` (normed), ``cos``/``sin`` ``[n, 1, hd]``, ``key_mask`` ``[n, K]`` bool over the
    columns of ``view.read_index`` ``[n, K]``. Writes the new key/value to pool entries
    ``view.write_index`` ``[n]`` (which ``read_index`` lists) and returns ``[n, 1, d]``."""
    n = x.shape[0]
    q, k, v = adapter.qkv(attn, x)                                    # [n, H, 1, hd], [n, H_kv, 1, hd] x2
    q, k = adapter.rope(q, k, cos, sin)
    pool = view.cache
    pool.keys.index_copy_(0, view.write_index, k[:, :, 0].to(pool.keys.dtype))
    pool.values.index_copy_(0, view.write_index, v[:, :, 0].to(pool.values.dtype))
    o = pool_decode_attention(q[:, :, 0], pool.keys, pool.values, view.read_index, key_mask, attn.scaling)
    return attn.o_proj(o.reshape(n, 1, -1))


def run_layer_fused(adapter: ModelAdapter, layer_idx: int, hidden: torch.Tensor, rows: torch.Tensor,
                    bias: torch.Tensor | None, position_ids: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                    view: WaveCacheView | PoolView | None, key_mask: torch.Tensor | None = None) -> None:
    """Apply ``layer`` to ``hidden[rows]`` in place. With ``key_mask`` (decode) attention reads
    the cache by slot (a :class:`WaveCacheView`) or through the pool's index table (a
    :class:`PoolView`); otherwise Hugging Face's attention runs with ``view`` as its cache."""
    layer = adapter.layers[layer_idx]
    attn = layer.self_attn
    x = gathered_rmsnorm(hidden, rows, layer.input_layernorm.weight, _eps(layer.input_layernorm))
    if key_mask is not None and isinstance(view, PoolView):
        a = pool_attention_decode(adapter, attn, x, cos, sin, view, key_mask)
    elif key_mask is not None:
        a = slot_attention_decode(adapter, attn, x, cos, sin, view.cache, view.slots, view.start, key_mask)
    else:
        a = adapter.call_attention(layer_idx, x, bias, position_ids, (cos, sin), view)
    residual_scatter_add_(hidden, rows, a)
    x = gathered_rmsnorm(hidden, rows, layer.post_attention_layernorm.weight, _eps(layer.post_attention_layernorm))
    m = layer.mlp(x)
    residual_scatter_add_(hidden, rows, m[0] if isinstance(m, tuple) else m)
