"""Shared-prefix execution (docs/architecture.md section 9): run the plans of :mod:`.units`.

Prefill: one hidden-state buffer ``[lanes, width, d]`` per prompt-tree level, its lanes started
from the level's token embeddings; each planned step applies one layer to some lanes (the
runner gathers them, calls the layer with the pooled cache's view, and scatters them back) and
hands finished states to the lanes that continue from them. Keys/values go to the
:class:`.cache.PooledKVCache` once per unit; a unit's queries read its ancestors' columns
through the plan's index table (the gather happens in :class:`.cache.PoolView`, so Hugging
Face's attention runs unchanged).

Decode (:class:`SharedGeneration`): each step groups the active rows by history (same prompt and
same tokens so far); rows of a group share the steps of their common program prefix, as in
prefill; the new columns are appended to the pool once per unit. Logits are computed once per
distinct final state (lane) and handed to every row that has it.
"""
from __future__ import annotations

import numpy as np
import torch

from .adapters import ModelAdapter
from .cache import PooledKVCache
from .masks import PassContext
from .packing import PackedPrograms
from .runners import WaveRunner
from .prefix_cache import CachedUnit, PrefixCache
from .units import PrefillPlan, build_prompt_tree, plan_decode_step, plan_prefill, prompt_units


def run_prefill(adapter: ModelAdapter, runner: WaveRunner, plan: PrefillPlan, cache: PooledKVCache,
                starts: dict[int, torch.Tensor] | None = None,
                capture: dict[int, torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Run ``plan``; returns each level's buffer ``[lanes, width, d]`` of final states.

    ``starts``: for each lane of ``plan.lane_start``, the done unit's states ``[span, d]`` it starts
    from. ``capture`` (filled in): for each unit whose id is a key, its states ``[span, d]`` right
    after it runs (later units of its lane overwrite them)."""
    buffers, contexts = [], []
    for lv in plan.levels:
        emb = adapter.embed(lv.tokens)                                       # [G_d, width, d]
        buffers.append(emb.index_select(0, lv.lane_node))                   # [lanes, width, d]
        key_pos = torch.arange(lv.key_width, device=emb.device).expand(len(lv.nodes), -1)  # [G_d, K]
        contexts.append(PassContext(adapter, emb, lv.key_valid, key_pos, lv.query_pos, lv.query_pos))
    for lane, states in (starts or {}).items():
        lv = plan.levels[plan.lane_level[lane]]
        buffers[plan.lane_level[lane]][lane - lv.first_lane, : states.shape[0]] = states
    span = plan.tree.span[plan.table.group]                                 # [U]
    for (level, step), units in zip(plan.steps, plan.step_units):
        buffers[level] = runner.run(adapter, buffers[level], [step], contexts[level], cache)
        for u in (units.tolist() if capture is not None else ()):
            if u in capture:
                lane = plan.table.lane[u] - plan.levels[level].first_lane
                capture[u] = buffers[level][lane, : span[u]].clone()         # [span, d]
    return buffers


def lane_last_states(plan: PrefillPlan, buffers: list[torch.Tensor], lanes: np.ndarray) -> torch.Tensor:
    """``[len(lanes), d]``: the state at the last position of each (global) lane's node."""
    span = plan.tree.span
    out = []
    for lane in np.asarray(lanes).tolist():
        lv = plan.levels[plan.lane_level[lane]]
        node = plan.table.lane_group[lane]
        out.append(buffers[plan.lane_level[lane]][lane - lv.first_lane, span[node] - 1])
    return torch.stack(out)


def prefill_logits(adapter: ModelAdapter, plan: PrefillPlan, buffers: list[torch.Tensor]) -> torch.Tensor:
    """``[B, V]`` logits at each row's last real token, computed once per distinct final state."""
    lanes, inverse = np.unique(plan.row_lane, return_inverse=True)
    logits = adapter.logits(lane_last_states(plan, buffers, lanes))        # [distinct, V]
    return logits.index_select(0, torch.from_numpy(inverse.reshape(-1)).to(logits.device))


def prefill_all_states(plan: PrefillPlan, buffers: list[torch.Tensor], attention_mask: torch.Tensor) -> torch.Tensor:
    """``[B, T, d]``: each row's state at each of its real columns (pad columns hold zeros)."""
    B, T = attention_mask.shape
    d = buffers[0].shape[-1]
    out = torch.zeros(B, T, d, dtype=buffers[0].dtype, device=buffers[0].device)
    tree, table = plan.tree, plan.table
    m = 0
    for r in range(B):
        cols = attention_mask[r].nonzero().flatten()                        # real columns of row r
        for node in tree.row_nodes[r]:
            lane = table.member_lane[m]
            lv = plan.levels[plan.lane_level[lane]]
            s, e = tree.start[node], tree.end[node]
            out[r, cols[s:e]] = buffers[plan.lane_level[lane]][lane - lv.first_lane, : e - s]
            m += 1
    return out


class SharedGeneration:
    """Prefill and decode steps with shared prefixes, driven by :func:`polar.generate`'s loop.

    ``prefill()`` -> ``[B, V]`` logits; ``decode(active, tokens, t)`` feeds ``tokens`` ``[n]`` (the
    ``t``-th new token of each active row, batch indices ascending) and returns ``[n, V]``.
    Counters: ``prefill_waves``, ``decode_waves``, ``prefill_work``/``prefill_work_unshared``,
    ``decode_work``/``decode_work_unshared`` (row-layer x columns), ``cache_entries`` (pool
    columns used, scratch included).
    """

    def __init__(self, adapter: ModelAdapter, runner: WaveRunner, input_ids: torch.Tensor,
                 attention_mask: torch.Tensor, packed: PackedPrograms, policy: str, max_new_tokens: int,
                 prefix_cache: PrefixCache | None = None):
        self.adapter, self.runner, self.packed, self.policy = adapter, runner, packed, policy
        self.prefix_cache = prefix_cache if prefix_cache is not None and prefix_cache.max_bytes > 0 else None
        anchors = self.prefix_cache.anchors if self.prefix_cache is not None else ()
        self.tree = build_prompt_tree(input_ids, attention_mask, anchors)
        width = int(self.tree.lengths.max()) + max_new_tokens
        table = prompt_units(self.tree, packed)
        self._depth0_units = np.nonzero(self.tree.depth[table.group] == 0)[0].tolist()  # parents first
        self._cached = self._lookup(table) if self.prefix_cache is not None else {}
        done = np.zeros(table.num_units, dtype=bool)
        done[list(self._cached)] = True
        self.plan = plan_prefill(self.tree, packed, policy, adapter.num_layers, adapter.device, key_width=width,
                                 done=done, table=table)
        most = self.plan.pool_entries + packed.total_steps * (max_new_tokens - 1)  # every decode column unshared
        self.cache = PooledKVCache(min(self.plan.pool_entries + packed.total_steps, most), adapter.num_kv_heads,
                                   adapter.head_dim, adapter.dtype, adapter.device, max_entries=most)
        self.cache_entries = self.plan.pool_entries
        # history id of each row: its prompt's last node, then (previous id, token) pairs
        self.history = np.asarray([nodes[-1] for nodes in self.tree.row_nodes], dtype=np.int64)
        self._ids: dict[tuple[int, int], int] = {}
        self.prefill_waves = self.plan.num_waves
        self.prefill_work, self.prefill_work_unshared = self.plan.work, self.plan.work_unshared
        self.prefill_work_cached = self.plan.done_work
        self.decode_waves = self.decode_work = self.decode_work_unshared = 0

    def _lookup(self, table) -> dict[int, int]:
        """Units of depth-0 nodes found in the prefix cache: unit -> cache node (parents first)."""
        tree, cache = self.tree, self.prefix_cache
        roots = {int(g): cache.root(self._anchor(g)) for g in np.nonzero(tree.depth == 0)[0]}
        found: dict[int, int] = {}
        for u in self._depth0_units:
            p = int(table.parent[u])
            at = roots[int(table.group[u])] if p < 0 else found.get(p)
            node = cache.child(at, int(table.layer[u]))
            if node is not None:
                found[u] = node
        return found

    def _anchor(self, g: int) -> tuple[int, ...]:
        tree = self.tree
        return tuple(tree.tokens[tree.rep_row[g], tree.start[g]:tree.end[g]].tolist())

    def prefill(self) -> torch.Tensor:
        plan, cache = self.plan, self.prefix_cache
        if cache is None:
            return prefill_logits(self.adapter, plan, run_prefill(self.adapter, self.runner, plan, self.cache))
        table, tree = plan.table, self.tree
        span = tree.span[table.group]                                        # [U]

        def entries(u: int) -> slice:  # unit u's pool columns
            return slice(int(plan.unit_base[u]), int(plan.unit_base[u] + span[u]))

        # keys/values of the cached units into their pool entries; lanes that continue them
        for u, node in self._cached.items():
            unit = cache.get(node)
            self.cache.keys[entries(u)] = unit.keys
            self.cache.values[entries(u)] = unit.values
        node_of = dict(self._cached)
        starts = {lane: cache.get(node_of[int(u)]).hidden for lane, u in enumerate(plan.lane_start.tolist()) if u >= 0}
        new = [u for u in self._depth0_units if u not in self._cached]
        capture: dict[int, torch.Tensor] = dict.fromkeys(new)
        buffers = run_prefill(self.adapter, self.runner, plan, self.cache, starts, capture)
        # store the new units (parents first), then mark every unit used, deepest first
        for u in new:
            p = int(table.parent[u])
            parent = cache.root(self._anchor(int(table.group[u])), create=True) if p < 0 else node_of[p]
            node_of[u] = cache.add(parent, int(table.layer[u]), CachedUnit(
                self.cache.keys[entries(u)].clone(), self.cache.values[entries(u)].clone(), capture[u]))
        used = sorted(node_of, key=lambda u: -int(table.step[u]))
        cache.touch(node_of[u] for u in used)
        cache.hits += len(self._cached)
        cache.misses += len(new)
        cache.trim()
        return prefill_logits(self.adapter, plan, buffers)

    def decode(self, active: list[int], tokens: torch.Tensor, t: int) -> torch.Tensor:
        adapter = self.adapter
        rows = np.asarray(active, dtype=np.int64)
        toks = tokens.cpu().numpy().astype(np.int64)
        for r, tok in zip(rows.tolist(), toks.tolist()):
            key = (int(self.history[r]), tok)
            self.history[r] = self._ids.setdefault(key, self.tree.num_nodes + len(self._ids))
        step = plan_decode_step(self.packed, rows, self.history[rows], toks, self.tree.lengths[rows] + t,
                                self.plan.key_index, self.cache_entries, self.policy, adapter.num_layers,
                                adapter.device)
        self.cache_entries += step.work
        self.cache.reserve(self.cache_entries)
        hidden = adapter.embed(step.lane_token[:, None])                     # [lanes, 1, d]
        K = step.key_width
        cols = torch.arange(K, device=hidden.device)
        pos = step.lane_pos[:, None]                                         # [lanes, 1]
        ctx = PassContext(adapter, hidden, cols[None, :] <= pos, cols.expand(pos.shape[0], -1), pos, pos)
        hidden = self.runner.run(adapter, hidden, step.steps, ctx, self.cache)  # [lanes, 1, d]
        logits = adapter.logits(hidden[:, -1])                                # [lanes, V]
        self.decode_waves += step.num_waves
        self.decode_work += step.work
        self.decode_work_unshared += step.work_unshared
        return logits.index_select(0, step.row_lane)
