"""KV caches indexed by program step (docs/architecture.md sections 2, 6 and 9).

:class:`StepKVCache` (no sharing): step ``k`` of row ``r`` owns slot ``offsets[r] + k``: a layer
that runs twice in one program owns two entries. Storage is slot-major: ``keys``/``values``
``[S, H_kv, L, head_dim]`` with ``S = sum of program lengths`` and ``L`` the longest sequence
(prompt + new tokens).

:class:`PooledKVCache` (shared prefixes): one flat pool of key/value columns ``[P, H_kv,
head_dim]``; a shared state's columns are stored once and every row that shares them reads them
through an index table (:mod:`.units`), like paged attention with one-token pages.
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

    def view(self, wave, start: int) -> "WaveCacheView":
        """The cache object of a planned wave (a ``runners.WaveStep``): its ``slots`` from ``start``."""
        return WaveCacheView(self, wave.slots, start)

    @property
    def entries(self) -> int:
        """Key (= value) columns held: slots x length."""
        return self.keys.shape[0] * self.keys.shape[2]


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


#: The pool entry that pad query columns write and masked-out keys read (never a real column).
SCRATCH_ENTRY = 0


class PooledKVCache:
    """Key/value columns in one pool: ``keys``/``values`` ``[P, H_kv, head_dim]``.

    Entry :data:`SCRATCH_ENTRY` is scratch: pad columns write it and masked keys read it (it
    only ever holds finite values, so a masked read cannot turn an output into NaN). The pool
    grows on demand (:meth:`reserve`) so decode allocates only the columns it computes.
    """

    def __init__(self, num_entries: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype, device: torch.device,
                 max_entries: int | None = None):
        shape = (max(num_entries, 1), num_kv_heads, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.max_entries = max_entries

    @property
    def entries(self) -> int:
        return self.keys.shape[0]

    def reserve(self, num_entries: int) -> None:
        """Make room for entries ``[0, num_entries)``: grows by doubling, never past ``max_entries``
        (when given), keeping existing entries."""
        if num_entries <= self.entries:
            return
        size = max(num_entries, 2 * self.entries)
        if self.max_entries is not None:
            size = max(num_entries, min(size, self.max_entries))
        for name in ("keys", "values"):
            old = getattr(self, name)
            new = torch.empty((size, *old.shape[1:]), dtype=old.dtype, device=old.device)
            new[: old.shape[0]] = old
            new[old.shape[0]:].zero_()                                     # unused entries stay finite
            setattr(self, name, new)

    def view(self, wave, start: int = 0) -> "PoolView":
        """The cache object of a planned wave: its ``write_index`` and ``read_index``."""
        return PoolView(self, wave.write_index, wave.read_index)


class PoolView:
    """What a Hugging Face attention module sees as its cache during one wave over shared units.

    ``update(key, value, layer_idx)`` ignores ``layer_idx``: it writes ``key``/``value``
    (``[n, H_kv, Q, hd]``, column ``j`` of unit ``i`` to pool entry ``write_index[i * Q + j]``)
    and returns the keys/values the wave's queries attend to: the pool entries
    ``read_index`` ``[n, K]`` (as ``[n, H_kv, K, hd]``), or the new keys/values themselves when
    ``read_index`` is ``None`` (units with no earlier columns).
    """

    def __init__(self, cache: PooledKVCache, write_index: torch.Tensor, read_index: torch.Tensor | None):
        self.cache = cache
        self.write_index = write_index
        self.read_index = read_index

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        n, H, Q, hd = key_states.shape
        keys, values = self.cache.keys, self.cache.values
        keys.index_copy_(0, self.write_index, key_states.transpose(1, 2).reshape(n * Q, H, hd))
        values.index_copy_(0, self.write_index, value_states.transpose(1, 2).reshape(n * Q, H, hd))
        if self.read_index is None:
            return key_states, value_states
        # index_select on the flat index: the same values as keys[read_index], about 7x faster on CPU
        flat = self.read_index.reshape(-1)
        shape = (*self.read_index.shape, H, hd)                            # [n, K, H, hd]
        return (keys.index_select(0, flat).view(shape).transpose(1, 2),
                values.index_select(0, flat).view(shape).transpose(1, 2))  # [n, H, K, hd]

    def get_seq_length(self, *args, **kwargs) -> int:  # for HF code that asks
        return 0
