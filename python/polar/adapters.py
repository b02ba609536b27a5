"""Per-architecture adapters: how the executor reaches a Hugging Face model's parts.

The executor never patches a model: it reads the embedding, decoder layers, final norm, LM
head and rotary embedding through a :class:`ModelAdapter` and calls them itself. Supported:
the Llama family (Llama, Mistral, Qwen2, Qwen3 with q/k norms, Qwen2-MoE, Qwen3-MoE).
"""
from __future__ import annotations

from dataclasses import dataclass

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
    )
