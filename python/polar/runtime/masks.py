"""Masks and positions (docs/architecture.md section 2): RoPE positions count real tokens only.

:class:`PassContext` holds what every wave of one pass shares: the attention pattern per
sliding-window size (bool and additive), and the rotary ``cos``/``sin`` of the queries.
"""
from __future__ import annotations

import torch

from .adapters import ModelAdapter


def token_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """RoPE positions counting real tokens only: ``[B, T]`` (pads get the position before them, or 0)."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def attention_allowed(key_valid: torch.Tensor, key_pos: torch.Tensor, query_cols: torch.Tensor,
                      query_pos: torch.Tensor, window: int | None) -> torch.Tensor:
    """Which keys each query attends to: bool ``[B, Q, K]``.

    ``key_valid`` ``[B, K]`` bool: real-token columns; ``key_pos`` ``[B, K]`` and ``query_pos``
    ``[B, Q]``: token positions; ``query_cols`` ``[Q]`` (or ``[B, Q]``, one per row): the column
    of each query. A query sees valid keys at columns ``<= its own``, within ``window`` positions
    if given. Each query also sees its own column, so pad queries never have an empty softmax
    (their outputs are unused).
    """
    cols = torch.arange(key_valid.shape[1], device=key_valid.device)
    qcols = query_cols[..., None]                                     # [Q, 1] or [B, Q, 1]
    allowed = key_valid[:, None, :] & (cols <= qcols)                 # [B, Q, K]
    if window is not None:
        allowed &= (query_pos[:, :, None] - key_pos[:, None, :]) < window
    allowed |= cols == qcols
    return allowed


def additive_bias(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool ``[B, Q, K]`` -> additive mask ``[B, 1, Q, K]`` (0 where allowed, dtype min elsewhere)."""
    bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    bias.masked_fill_(~allowed, torch.finfo(dtype).min)
    return bias[:, None]


class PassContext:
    """Per-pass tensors shared by all waves: attention biases per window size, rotary cos/sin.

    Its rows are the rows of the pass (or, with shared prefixes, the prompt-tree nodes of one
    level, :mod:`.units`); ``query_cols`` is ``[Q]`` or ``[B, Q]`` (see :func:`attention_allowed`).
    """

    def __init__(self, adapter: ModelAdapter, hidden: torch.Tensor, key_valid: torch.Tensor,
                 key_pos: torch.Tensor, query_cols: torch.Tensor, query_pos: torch.Tensor):
        self.adapter = adapter
        self.key_valid, self.key_pos = key_valid, key_pos
        self.query_cols, self.query_pos = query_cols, query_pos
        self.cos, self.sin = adapter.rotary(hidden, query_pos)
        self._allowed: dict[int | None, torch.Tensor] = {}
        self._bias: dict[int | None, torch.Tensor] = {}
        self.dtype = hidden.dtype

    def allowed(self, layer: int) -> torch.Tensor:
        """Bool ``[B, Q, K]`` attention pattern of ``layer`` (depends on its sliding window)."""
        window = self.adapter.sliding_windows[layer]
        if window not in self._allowed:
            self._allowed[window] = attention_allowed(self.key_valid, self.key_pos, self.query_cols,
                                                      self.query_pos, window)
        return self._allowed[window]

    def bias(self, layer: int) -> torch.Tensor:
        """Additive mask ``[B, 1, Q, K]`` of ``layer``."""
        window = self.adapter.sliding_windows[layer]
        if window not in self._bias:
            self._bias[window] = additive_bias(self.allowed(layer), self.dtype)
        return self._bias[window]


def last_token_states(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``hidden`` ``[B, T, d]`` at each row's last real token (left or right padding): ``[B, d]``."""
    cols = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = torch.where(attention_mask.bool(), cols, -1).max(-1).values
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
