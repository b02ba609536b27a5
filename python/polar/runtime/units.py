"""Shared-prefix planning (docs/architecture.md section 9): which states rows share, where they live, and
the waves that compute each of them once.

The state of token position ``p`` after program step ``k`` depends only on the tokens ``0..p``
and the program prefix ``pi[:k]`` (positions count real tokens, so padding plays no part).
Planning finds every state that several rows share and computes it once:

1. **Prompt tree** (:func:`build_prompt_tree`): a radix tree over the rows' real tokens. Node ``g``
   covers the positions ``[start_g, end_g)`` that all rows under it have in common; a row's
   prompt is the path from a depth-0 node to the node where it ends. Identical prompts end at
   the same node; few-shot prompts share the node of their common shots.
2. **Units** (compiled ``polar._C.build_units``): for each node ``g``, the program trie of the
   rows under ``g``. Unit ``(g, v)`` is the state of ``g``'s positions after the program prefix
   ``v``; every row under ``g`` whose program starts with ``v`` reads it. A *lane* is one
   distinct program of one node's rows: a row of a hidden-state buffer in which that program's
   units run in place (a unit's first child continues its lane; its other children start from a
   copy of it).
3. **Waves** (compiled ``polar._C.plan_unit_waves``): the scheduler's policies over the lanes;
   each unit appears in exactly one wave, after its parent. Unit ``(g, v)`` attends to the keys
   of ``(g', v)`` for the ancestors ``g'`` of ``g``; those have the same layer sequence, so they
   run in the same wave. A wave runs one layer call per *level* (consecutive tree depths of
   similar width, padded to the widest; ancestors' levels first): inside one call the cache
   view writes every unit's new keys before any query reads them, so a unit may share its call
   with its ancestors.
4. **KV layout**: one pool of key/value columns (:class:`.cache.PooledKVCache`); unit ``u``'s
   columns are entries ``base_u .. base_u + span_u``. ``key_index[slot, p]`` is the entry that
   row-step slot ``offsets[r] + k`` reads at position ``p`` (entry 0: scratch). Decode columns
   are appended per decode step (:func:`plan_decode_step`).

Worked example: rows 0-1 share a prompt ``a b c d``, row 2 is ``a b e``; programs ``[0, 1, 2]``,
``[0, 1, 3]``, ``[0, 2]``. The tree has node 0 = ``a b`` (positions 0-1, rows 0-2) with children
node 1 = ``c d`` (rows 0-1) and node 2 = ``e`` (row 2). Node 0's trie has units ``[0]``, ``[0, 1]``,
``[0, 1, 2]``, ``[0, 1, 3]``, ``[0, 2]`` (5 units x 2 positions, instead of 8 row-steps x 2);
node 1's has ``[0]``, ``[0, 1]``, ``[0, 1, 2]``, ``[0, 1, 3]`` (4 x 2, instead of 6 x 2); node 2's
has ``[0]``, ``[0, 2]`` (2 x 1). Work: 20 layer applications x positions instead of
``3 * 4 + 3 * 4 + 2 * 3 = 30``. Node 0 has 3 lanes (its distinct programs, in lexicographic
order ``[0, 1, 2]``, ``[0, 1, 3]``, ``[0, 2]``): ``[0]``, ``[0, 1]`` and ``[0, 1, 2]`` run in lane 0;
``[0, 1, 3]`` starts lane 1 from a copy of ``[0, 1]``'s state, ``[0, 2]`` lane 2 from ``[0]``'s.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .._C import build_units as _build_units
from .._C import plan_unit_waves as _plan_unit_waves
from .cache import SCRATCH_ENTRY
from .packing import PackedPrograms
from .runners import WaveStep


@dataclass(frozen=True)
class PromptTree:
    """Radix tree over the rows' real tokens; nodes are numbered level by level (depth-major).

    Per node ``[G]`` (int64): ``start``/``end`` (positions ``[start, end)``), ``parent`` (-1 at depth
    0), ``depth``, ``rep_row`` (a row under the node). ``row_nodes[r]``: the nodes of row ``r``'s
    prompt, depth 0 first (the last one ends at ``lengths[r]``). ``tokens`` ``[B, T]``: real tokens
    left-aligned, -1 past a row's end.
    """

    start: np.ndarray
    end: np.ndarray
    parent: np.ndarray
    depth: np.ndarray
    rep_row: np.ndarray
    row_nodes: tuple[tuple[int, ...], ...]
    lengths: np.ndarray
    tokens: np.ndarray

    @property
    def num_nodes(self) -> int:
        return len(self.start)

    @property
    def num_depths(self) -> int:
        return int(self.depth.max()) + 1

    @property
    def span(self) -> np.ndarray:
        return self.end - self.start


def build_prompt_tree(input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      anchors: Sequence[Sequence[int]] = ()) -> PromptTree:
    """The radix tree of the rows' real tokens (``input_ids``/``attention_mask`` ``[B, T]``, any padding).

    ``anchors``: token sequences; a depth-0 node that extends one of them is split after the
    longest such anchor, so that node's states can be found under the anchor's tokens (the
    states cached by :class:`.prefix_cache.PrefixCache` across calls). A node equal to an
    anchor is that anchor's longest match: it is not split at a shorter one."""
    ids, mask = input_ids.cpu(), attention_mask.cpu().bool()
    B, T = ids.shape
    lengths = mask.sum(1).numpy().astype(np.int64)
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)   # real columns first, in order
    tokens = ids.gather(1, order).numpy().astype(np.int64)              # [B, T]
    tokens[np.arange(T)[None, :] >= lengths[:, None]] = -1
    start, end, parent, depth, rep = [], [], [], [], []
    row_nodes: list[list[int]] = [[] for _ in range(B)]
    queue = deque([(np.arange(B), 0, -1, 0)])                          # breadth first: depth-major ids
    while queue:
        rows, s, par, d = queue.popleft()
        first = tokens[rows, s]
        for tok in np.unique(first):
            grp = rows[first == tok]
            seg = tokens[grp, s:]                                       # [n, T - s]
            same = (seg == seg[0]).all(0) & (seg[0] >= 0)
            e = s + (int(np.argmin(same)) if not same.all() else same.size)
            if par < 0:  # split after the longest anchor this node extends (a node equal to an anchor stays whole)
                e = max((len(a) for a in anchors if 0 < len(a) <= e and np.array_equal(seg[0, :len(a)], a)), default=e)
            g = len(start)
            start.append(s), end.append(e), parent.append(par), depth.append(d), rep.append(int(grp[0]))
            for r in grp.tolist():
                row_nodes[r].append(g)
            longer = grp[lengths[grp] > e]
            if longer.size:
                queue.append((longer, e, g, d + 1))
    arr = lambda x: np.asarray(x, dtype=np.int64)  # noqa: E731
    return PromptTree(arr(start), arr(end), arr(parent), arr(depth), arr(rep), tuple(map(tuple, row_nodes)),
                      lengths, tokens)


@dataclass(frozen=True)
class UnitTable:
    """Units of a set of members ``(row, group)`` (``polar._C.build_units``), as numpy int64 arrays.

    Per unit ``[U]``: ``parent``, ``layer``, ``group``, ``step``, ``lane``. Per member ``[M]``: ``row``,
    ``group``, ``lane`` (its program's lane) and ``offsets`` ``[M+1]`` into ``units`` / ``slots``:
    the unit and the row-step slot of each (member, step). Per lane: ``lane_end`` (last unit) and
    ``lane_group``.
    """

    parent: np.ndarray
    layer: np.ndarray
    group: np.ndarray
    step: np.ndarray
    lane: np.ndarray
    member_row: np.ndarray
    member_group: np.ndarray
    member_lane: np.ndarray
    member_offsets: np.ndarray
    member_units: np.ndarray
    member_slots: np.ndarray
    lane_end: np.ndarray
    lane_group: np.ndarray

    @property
    def num_units(self) -> int:
        return len(self.parent)

    @property
    def num_lanes(self) -> int:
        return len(self.lane_end)

    def rep_slot(self) -> np.ndarray:
        """``[U]``: a row-step slot that reads each unit (all of them read the same columns)."""
        out = np.empty(self.num_units, dtype=np.int64)
        out[self.member_units] = self.member_slots
        return out

    def lane_copies(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(after_unit, src_lane, dst_lane)``: a unit whose child runs in another lane hands its
        state to that lane right after it runs."""
        child = np.nonzero(self.parent >= 0)[0]
        child = child[self.lane[child] != self.lane[self.parent[child]]]
        par = self.parent[child]
        return par, self.lane[par], self.lane[child]


def build_unit_table(packed: PackedPrograms, member_row: np.ndarray, member_group: np.ndarray) -> UnitTable:
    """Units of members ``(member_row[m], member_group[m])`` of the rows' ``packed`` programs."""
    member_row = np.asarray(member_row, dtype=np.int64)
    member_group = np.asarray(member_group, dtype=np.int64)
    out = _build_units(packed.offsets, packed.layers, torch.from_numpy(member_row.astype(np.int32)),
                       torch.from_numpy(member_group.astype(np.int32)))
    parent, layer, group, step, lane, member_units, member_lane, lane_end = (t.numpy().astype(np.int64) for t in out)
    offsets = packed.offsets.numpy().astype(np.int64)
    lengths = offsets[member_row + 1] - offsets[member_row]
    member_offsets = np.zeros(len(member_row) + 1, dtype=np.int64)
    np.cumsum(lengths, out=member_offsets[1:])
    of_entry = np.repeat(np.arange(len(member_row)), lengths)
    member_slots = offsets[member_row[of_entry]] + np.arange(member_offsets[-1]) - member_offsets[of_entry]
    return UnitTable(parent, layer, group, step, lane, member_row, member_group, member_lane, member_offsets,
                     member_units, member_slots, lane_end, group[lane_end])


def plan_unit_waves(table: UnitTable, policy: str, num_layers: int,
                    done: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(wave_layers [W], wave_offsets [W+1], wave_units)`` from the compiled planner; units
    sorted inside each wave. ``done`` ``[U]`` (bool, closed under parents): units whose states are
    known already; they are left out (their children become roots)."""
    as32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int32))  # noqa: E731
    parent, layer, lane_end = table.parent, table.layer, table.lane_end
    kept = np.arange(table.num_units)
    if done is not None and done.any():
        kept = np.nonzero(~done)[0]
        new_id = np.cumsum(~done) - 1                                        # [U] index among kept units
        par = parent[kept]
        parent = np.where((par < 0) | done[np.maximum(par, 0)], -1, new_id[np.maximum(par, 0)])
        layer, lane_end = layer[kept], new_id[lane_end[~done[lane_end]]]
    layers, offsets, units, _ = _plan_unit_waves(as32(parent), as32(layer), as32(lane_end), policy, num_layers)
    return layers.numpy().astype(np.int64), offsets.numpy().astype(np.int64), kept[units.numpy().astype(np.int64)]


def _as_index(a: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).to(device)


#: Consecutive tree depths share a level (one padded layer call per wave) while the widest of
#: them is at most this many times the narrowest (padding stays below half of the columns).
LEVEL_WIDTH_RATIO = 2


def tree_levels(tree: PromptTree) -> np.ndarray:
    """``[num_levels]``: the level of each tree depth (consecutive depths of similar width merged)."""
    widths = [int(tree.span[tree.depth == d].max()) for d in range(tree.num_depths)]
    level, lo, hi, out = 0, widths[0], widths[0], [0]
    for w in widths[1:]:
        if max(hi, w) <= LEVEL_WIDTH_RATIO * min(lo, w):
            lo, hi = min(lo, w), max(hi, w)
        else:
            level, lo, hi = level + 1, w, w
        out.append(level)
    return np.asarray(out, dtype=np.int64)


@dataclass
class Level:
    """The prompt-tree nodes of some consecutive depths: one hidden-state buffer ``[lanes, width,
    d]`` whose lanes run those nodes' units. Device tensors: ``tokens``/``query_pos`` ``[G_l,
    width]`` (pads: token 0 at position 0), ``key_valid`` ``[G_l, key_width]``, ``lane_node``
    ``[lanes]`` (the node of each lane, local index). ``reads``: some node starts past position
    0, so the level's units read earlier columns from the pool."""

    nodes: np.ndarray
    width: int
    key_width: int
    lanes: int
    first_lane: int
    tokens: torch.Tensor
    query_pos: torch.Tensor
    key_valid: torch.Tensor
    lane_node: torch.Tensor
    reads: bool


@dataclass
class PrefillPlan:
    """Everything the shared prefill runs, planned before any compute.

    ``steps``: ``(level, WaveStep)`` in execution order (each wave's levels ascending).
    ``lane_level`` ``[lanes]``: the level (buffer) of each lane.
    ``key_index`` ``[N, width]`` (numpy int64): the pool entry each row-step slot reads at each
    position (:data:`.cache.SCRATCH_ENTRY` where it has none yet). ``row_lane`` ``[B]``: the
    (global) lane holding each row's last prompt node after its program. ``work``: row-layer x
    position applications computed; ``work_unshared``: the same without sharing
    (``sum_r len(pi_r) * n_r``); ``done_work``: what the caller's done units saved. ``unit_base``
    ``[U]``: each unit's first pool entry; ``lane_start`` ``[lanes]``: the done unit whose final
    state a lane starts from (-1: its node's embeddings, or a copy made during the run);
    ``step_units``: the units each step of ``steps`` computes.
    """

    tree: PromptTree
    table: UnitTable
    levels: list[Level]
    steps: list[tuple[int, WaveStep]]
    num_waves: int
    pool_entries: int
    key_index: np.ndarray
    row_lane: np.ndarray
    lane_level: np.ndarray
    work: int
    work_unshared: int
    unit_base: np.ndarray
    lane_start: np.ndarray
    step_units: list[np.ndarray]
    done_work: int = 0


def prompt_units(tree: PromptTree, packed: PackedPrograms) -> UnitTable:
    """The units of ``packed`` programs over ``tree``'s prompts: one member per (row, prompt node)."""
    B = packed.batch_size
    member_row = np.asarray([r for r in range(B) for _ in tree.row_nodes[r]], dtype=np.int64)
    member_group = np.asarray([g for r in range(B) for g in tree.row_nodes[r]], dtype=np.int64)
    return build_unit_table(packed, member_row, member_group)


def plan_prefill(tree: PromptTree, packed: PackedPrograms, policy: str, num_layers: int, device: torch.device,
                 key_width: int | None = None, done: np.ndarray | None = None,
                 table: UnitTable | None = None) -> PrefillPlan:
    """Plan the shared prefill of ``packed`` programs over ``tree``'s prompts.

    ``key_width``: positions of ``key_index`` (default: the longest prompt; generation adds room
    for the new tokens). ``done`` ``[U]`` (bool, over :func:`prompt_units`' units, closed under
    parents; depth-0 nodes only): units whose keys/values and states the caller provides (the
    pool entries ``plan.unit_base[u]..`` and the lanes of ``plan.lane_start``) instead of
    computing them. ``table``: :func:`prompt_units` of the same arguments, when already built."""
    table = prompt_units(tree, packed) if table is None else table
    member_row, member_group = table.member_row, table.member_group
    if done is None:
        done = np.zeros(table.num_units, dtype=bool)
    if len(done) != table.num_units or (done & (table.parent >= 0) & ~done[np.maximum(table.parent, 0)]).any() \
            or (done & (tree.depth[table.group] > 0)).any():
        raise ValueError("done must mark depth-0 units only, closed under parents")
    wave_layers, wave_offsets, wave_units = plan_unit_waves(table, policy, num_layers, done)

    span = tree.span
    unit_span = span[table.group]                                           # [U]
    base = np.zeros(table.num_units, dtype=np.int64)
    np.cumsum(unit_span[:-1], out=base[1:])
    base += SCRATCH_ENTRY + 1
    pool_entries = int(base[-1] + unit_span[-1]) if table.num_units else 1
    lengths = tree.lengths
    width = int(lengths.max()) if key_width is None else key_width
    key_index = np.full((packed.total_steps, width), SCRATCH_ENTRY, dtype=np.int64)
    for m in range(len(member_row)):
        g = member_group[m]
        lo, hi = table.member_offsets[m], table.member_offsets[m + 1]
        key_index[table.member_slots[lo:hi], tree.start[g]:tree.end[g]] = (
            base[table.member_units[lo:hi]][:, None] + np.arange(span[g])[None, :])
    rep_slot = table.rep_slot()

    # Levels: nodes and lanes of each level are contiguous (depth-major node ids, group-major lanes).
    node_level = tree_levels(tree)[tree.depth]                              # [G]
    lane_level = node_level[table.lane_group]                               # [lanes]
    if np.any(np.diff(lane_level) < 0):
        raise AssertionError("lanes are not level-major")
    num_levels = int(node_level.max()) + 1
    node_first = np.searchsorted(node_level, np.arange(num_levels))
    levels = []
    for lvl in range(num_levels):
        nodes = np.nonzero(node_level == lvl)[0]
        w, kw = int(span[nodes].max()), int(tree.end[nodes].max())
        cols = np.arange(w)
        valid = cols[None, :] < span[nodes][:, None]                         # [G_l, w]
        toks = np.where(valid, tree.tokens[tree.rep_row[nodes][:, None], tree.start[nodes][:, None] + np.minimum(
            cols[None, :], span[nodes][:, None] - 1)], 0)
        qpos = np.where(valid, tree.start[nodes][:, None] + cols[None, :], 0)
        kvalid = np.arange(kw)[None, :] < tree.end[nodes][:, None]
        lanes = np.nonzero(lane_level == lvl)[0]
        levels.append(Level(nodes, w, kw, len(lanes), int(lanes[0]), _as_index(toks, device), _as_index(qpos, device),
                            torch.from_numpy(kvalid).to(device), _as_index(table.lane_group[lanes] - node_first[lvl], device),
                            reads=bool((tree.start[nodes] > 0).any())))

    # Steps: each wave, level by level; lane hand-overs right after the unit that produces them.
    unit_wave = np.repeat(np.arange(len(wave_layers)), np.diff(wave_offsets))
    wave_of = np.full(table.num_units, -1, dtype=np.int64)
    wave_of[wave_units] = unit_wave
    unit_level = node_level[table.group]
    after, src, dst = table.lane_copies()
    run = ~done[after]                                                      # copies after a done unit: lane_start
    after, src, dst = after[run], src[run], dst[run]
    copies: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for a, s, t in zip(wave_of[after].tolist(), src.tolist(), dst.tolist()):
        copies.setdefault((a, int(lane_level[s])), []).append((s, t))
    steps, step_units = [], []
    for w, layer in enumerate(wave_layers.tolist()):
        units = wave_units[wave_offsets[w]:wave_offsets[w + 1]]
        unit_lv = unit_level[units]
        for lvl in np.unique(unit_lv).tolist():
            lv, us = levels[lvl], units[unit_lv == lvl]
            step_units.append(us)
            rows = table.lane[us] - lv.first_lane
            ctx_rows = table.group[us] - node_first[lvl]
            cols = np.arange(lv.width)
            write = np.where(cols[None, :] < unit_span[us][:, None], base[us][:, None] + cols[None, :], SCRATCH_ENTRY)
            read = _as_index(key_index[rep_slot[us], :lv.key_width], device) if lv.reads else None
            pairs = np.asarray(copies.get((w, lvl), []), dtype=np.int64).reshape(-1, 2) - lv.first_lane
            covers = len(us) == lv.lanes and len(lv.nodes) == lv.lanes
            steps.append((lvl, WaveStep(layer, _as_index(rows, device), None, covers, _as_index(ctx_rows, device),
                                        _as_index(write.reshape(-1), device), read,
                                        _as_index(pairs[:, 0], device) if len(pairs) else None,
                                        _as_index(pairs[:, 1], device) if len(pairs) else None)))

    last = np.asarray([nodes[-1] for nodes in tree.row_nodes], dtype=np.int64)
    last_member = np.cumsum([len(nodes) for nodes in tree.row_nodes]) - 1
    row_lane = table.member_lane[last_member]
    assert np.array_equal(table.member_group[last_member], last)
    offsets = packed.offsets.numpy().astype(np.int64)
    # A lane whose first unit to run continues a done unit starts from that unit's state; so does a
    # lane with nothing to run (its final state is the done unit at its end).
    lane_start = np.full(table.num_lanes, -1, dtype=np.int64)
    first = np.nonzero(~done & (table.parent >= 0))[0]
    first = first[done[table.parent[first]]]
    lane_start[table.lane[first]] = table.parent[first]
    ended = done[table.lane_end]
    lane_start[ended] = table.lane_end[ended]
    return PrefillPlan(tree, table, levels, steps, len(wave_layers), pool_entries, key_index, row_lane, lane_level,
                       work=int(unit_span[~done].sum()), work_unshared=int((np.diff(offsets) * lengths).sum()),
                       unit_base=base, lane_start=lane_start, step_units=step_units,
                       done_work=int(unit_span[done].sum()))


@dataclass
class DecodeStepPlan:
    """One shared decode step: each active row feeds one token at its next position.

    Members are the active rows, grouped by history (same prompt and same tokens so far); units are
    the program tries of each group. ``steps``: WaveSteps over one buffer ``[lanes, 1, d]``;
    ``lane_token``/``lane_pos`` ``[lanes]`` (device): the token and position each lane feeds;
    ``row_lane`` ``[n_active]``: the lane holding each active row's final state; ``key_width``:
    positions the step attends over. ``work``/``work_unshared``: units computed vs row-steps.
    """

    steps: list[WaveStep]
    num_waves: int
    lane_token: torch.Tensor
    lane_pos: torch.Tensor
    row_lane: torch.Tensor
    key_width: int
    work: int
    work_unshared: int


def plan_decode_step(packed: PackedPrograms, active: np.ndarray, groups: np.ndarray, tokens: np.ndarray,
                     positions: np.ndarray, key_index: np.ndarray, first_entry: int, policy: str, num_layers: int,
                     device: torch.device) -> DecodeStepPlan:
    """Plan one decode step of the ``active`` rows (batch indices, ascending) feeding ``tokens`` at
    ``positions`` (``[n]`` each); rows with equal ``groups`` ids have equal prompts and histories.

    Allocates the step's pool entries ``first_entry + unit`` and records them in ``key_index``
    (in place) for every row-step slot that reads them."""
    table = build_unit_table(packed, active, groups)
    wave_layers, wave_offsets, wave_units = plan_unit_waves(table, policy, num_layers)
    member_pos = np.asarray(positions, dtype=np.int64)
    entry_member = np.repeat(np.arange(len(active)), np.diff(table.member_offsets))
    key_index[table.member_slots, member_pos[entry_member]] = first_entry + table.member_units
    rep_slot = table.rep_slot()
    lane_member = np.empty(table.num_lanes, dtype=np.int64)
    lane_member[table.member_lane] = np.arange(len(active))
    lane_pos = member_pos[lane_member]
    key_width = int(member_pos.max()) + 1
    after, src, dst = table.lane_copies()
    unit_wave = np.repeat(np.arange(len(wave_layers)), np.diff(wave_offsets))
    wave_of = np.empty(table.num_units, dtype=np.int64)
    wave_of[wave_units] = unit_wave
    steps = []
    for w, layer in enumerate(wave_layers.tolist()):
        us = wave_units[wave_offsets[w]:wave_offsets[w + 1]]
        rows = table.lane[us]
        sel = wave_of[after] == w
        steps.append(WaveStep(layer, _as_index(rows, device), None, len(us) == table.num_lanes, None,
                              _as_index(first_entry + us, device),
                              _as_index(key_index[rep_slot[us], :key_width], device),
                              _as_index(src[sel], device) if sel.any() else None,
                              _as_index(dst[sel], device) if sel.any() else None))
    offsets = packed.offsets.numpy().astype(np.int64)
    return DecodeStepPlan(steps, len(wave_layers), _as_index(np.asarray(tokens)[lane_member], device),
                          _as_index(lane_pos, device), _as_index(table.member_lane, device), key_width,
                          work=table.num_units, work_unshared=int((offsets[active + 1] - offsets[active]).sum()))
