"""KV cache indexed by program step (DESIGN.md sections 1 and 4).

Step ``k`` of row ``r`` owns slot ``offsets[r] + k``: a layer that runs twice in one program
owns two entries. Storage is slot-major: ``keys``/``values`` ``[S, H_kv, L, head_dim]`` with
``S = sum of program lengths`` and ``L`` the longest sequence (prompt + new tokens).
"""
from __future__ import annotations

import torch


class StepKVCache:
    """Keys and values of every ``(row, step)``; column ``c`` is token column ``c`` of the batch."""

    def __init__(self, num_slots: int, num_kv_heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device):
        shape = (num_slots, num_kv_heads, max_len, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)

    @property
    def max_len(self) -> int:
        return self.keys.shape[2]

    def wave_view(self, slots: torch.Tensor, start: int) -> "WaveCacheView":
        """A cache object for one wave: writes new columns from ``start`` into ``slots``."""
        return WaveCacheView(self, slots, start)


class WaveCacheView:
    """What a Hugging Face attention module sees as ``past_key_values`` during one wave.

    ``update(key, value, layer_idx)`` ignores ``layer_idx``: it writes ``key``/``value``
    (``[n, H_kv, q, hd]``) into columns ``start .. start+q`` of the wave's slots and returns
    the keys/values of columns ``0 .. start+q`` of those slots.
    """

    def __init__(self, cache: StepKVCache, slots: torch.Tensor, start: int):
        self.cache = cache
        self.slots = slots
        self.start = start

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self.start + key_states.shape[2]
        if end > self.cache.max_len:
            raise RuntimeError(f"KV cache overflow: column {end} > {self.cache.max_len}")
        keys, values = self.cache.keys, self.cache.values
        if self.start == 0:
            keys[self.slots, :, :end] = key_states
            values[self.slots, :, :end] = value_states
            return key_states, value_states
        keys[self.slots, :, self.start:end] = key_states
        values[self.slots, :, self.start:end] = value_states
        return keys[:, :, :end].index_select(0, self.slots), values[:, :, :end].index_select(0, self.slots)

    def get_seq_length(self, *args, **kwargs) -> int:  # for HF code that asks
        return self.start
