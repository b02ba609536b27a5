"""Per-architecture adapters: how the executor reaches a Hugging Face model's parts.

The executor never patches a model: it reads the embedding, decoder layers, final norm, LM
head and rotary embedding through a :class:`ModelAdapter` and calls them itself. Supported:
the Llama family (Llama, Mistral, Qwen2, Qwen3 with q/k norms, Qwen2-MoE, Qwen3-MoE).
"""
from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

#: ``config.model_type`` values whose decoder stack has the Llama layout
#: ``model.model.{embed_tokens, layers, norm, rotary_emb}`` and ``model.lm_head``.
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "qwen2_moe", "qwen3_moe")


class UnsupportedModelError(TypeError):
    """The model's class is not one of the supported architecture families."""


def layer_sliding_window(config, layer_idx: int) -> int | None:
    """The sliding attention window of layer ``layer_idx`` (``None``: full causal attention)."""
    window = getattr(config, "sliding_window", None)
    if window is None:
        return None
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        return int(window) if layer_types[layer_idx] == "sliding_attention" else None
    if getattr(config, "use_sliding_window", True) is False:
        return None
    return int(window)


@dataclass
class ModelAdapter:
    """The parts of a decoder-only causal LM that the executor calls."""

    model: nn.Module
    embed_tokens: nn.Module
    layers: nn.ModuleList
    norm: nn.Module
    lm_head: nn.Module
    rotary_emb: nn.Module
    num_layers: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    sliding_windows: tuple[int | None, ...]
    #: keyword under which this Transformers version's decoder layers/attention take the cache
    #: (``cache`` since 5.x; ``past_key_values`` / ``past_key_value`` before).
    cache_kwarg: str
    attn_cache_kwarg: str
    #: the family's RoPE function ``(q, k, cos, sin) -> (q, k)`` (``[n, H, T, hd]`` each).
    apply_rotary_fn: Callable

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` token ids -> ``[B, T, d]`` hidden states."""
        return self.embed_tokens(input_ids)

    def rotary(self, hidden: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cos, sin)``, each ``[B, T, head_dim]``, for ``position_ids`` ``[B, T]``."""
        return self.rotary_emb(hidden, position_ids)

    def qkv(self, attn: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Projected, q/k-normed (Qwen3) and rotated-ready ``q, k, v`` of normed ``x`` ``[n, T, d]``:
        ``q`` ``[n, H, T, hd]``, ``k``/``v`` ``[n, H_kv, T, hd]`` (RoPE not yet applied)."""
        n, T, hd = x.shape[0], x.shape[1], self.head_dim
        q = attn.q_proj(x).view(n, T, -1, hd)                         # [n, T, H, hd]
        k = attn.k_proj(x).view(n, T, -1, hd)                         # [n, T, H_kv, hd]
        v = attn.v_proj(x).view(n, T, -1, hd)                         # [n, T, H_kv, hd]
        if getattr(attn, "q_norm", None) is not None:                 # Qwen3: per-head RMSNorm on q, k
            q, k = attn.q_norm(q), attn.k_norm(k)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def rope(self, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """Apply the family's rotary embedding to ``q``/``k`` ``[n, H, T, hd]``."""
        return self.apply_rotary_fn(q, k, cos, sin)

    def call_layer(self, layer_idx: int, hidden: torch.Tensor, bias: torch.Tensor | None,
                   position_ids: torch.Tensor, position_embeddings, cache) -> torch.Tensor:
        """Hugging Face decoder layer ``layer_idx`` on ``hidden`` ``[n, T, d]`` with our mask, positions
        and cache object (or ``None``); returns ``[n, T, d]``."""
        out = self.layers[layer_idx](hidden, attention_mask=bias, position_ids=position_ids,
                                     use_cache=cache is not None, position_embeddings=position_embeddings,
                                     **{self.cache_kwarg: cache})
        return out[0] if isinstance(out, tuple) else out

    def call_attention(self, layer_idx: int, x: torch.Tensor, bias: torch.Tensor | None, position_ids: torch.Tensor,
                       position_embeddings, cache) -> torch.Tensor:
        """Hugging Face attention of layer ``layer_idx`` on normed ``x`` ``[n, T, d]``; returns ``[n, T, d]``."""
        return self.layers[layer_idx].self_attn(hidden_states=x, position_embeddings=position_embeddings,
                                                attention_mask=bias, position_ids=position_ids,
                                                **{self.attn_cache_kwarg: cache})[0]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm and LM head: ``[..., d]`` -> ``[..., V]``."""
        return self.lm_head(self.norm(hidden))


def get_adapter(model: nn.Module) -> ModelAdapter:
    """Build the adapter for ``model`` or raise :class:`UnsupportedModelError` naming its class."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES or not hasattr(model, "lm_head") or not hasattr(model, "model"):
        raise UnsupportedModelError(
            f"polar does not support {type(model).__name__} (model_type={model_type!r}); supported causal LMs: "
            + ", ".join(SUPPORTED_MODEL_TYPES)
        )
    base = model.model
    layers = base.layers
    num_layers = len(layers)
    attn_cls = type(layers[0].self_attn)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return ModelAdapter(
        model=model,
        embed_tokens=base.embed_tokens,
        layers=layers,
        norm=base.norm,
        lm_head=model.lm_head,
        rotary_emb=base.rotary_emb,
        num_layers=num_layers,
        num_kv_heads=config.num_key_value_heads,
        head_dim=head_dim,
        vocab_size=model.lm_head.out_features,
        sliding_windows=tuple(layer_sliding_window(config, i) for i in range(num_layers)),
        cache_kwarg=_cache_kwarg(type(layers[0])),
        attn_cache_kwarg=_cache_kwarg(attn_cls),
        apply_rotary_fn=sys.modules[attn_cls.__module__].apply_rotary_pos_emb,
    )


def _cache_kwarg(module_cls: type) -> str:
    params = inspect.signature(module_cls.forward).parameters
    for name in ("cache", "past_key_values", "past_key_value"):
        if name in params:
            return name
    raise UnsupportedModelError(f"{module_cls.__name__}.forward takes no cache argument this version of polar knows")
