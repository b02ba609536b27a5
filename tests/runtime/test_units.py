"""Shared-prefix planning: the prompt tree, the compiled unit tries and unit waves (docs/architecture.md sections 6 and 9)."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from polar import _C
from polar.programs.compact import random_compact
from polar.runtime.packing import pack
from polar.runtime.schedule import POLICIES, plan_waves
from polar.runtime.units import build_prompt_tree, build_unit_table, plan_prefill, plan_unit_waves
from polar.testing import padded_batch

SETTINGS = settings(max_examples=120, deadline=None)


def i32(xs):
    return torch.tensor(xs, dtype=torch.int32)


@st.composite
def program_families(draw):
    """Programs that share prefixes: a few roots, then edits (skip or repeat a block) of earlier ones."""
    depth = draw(st.integers(1, 10))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    progs = [list(random_compact(depth, rng).decode()) for _ in range(draw(st.integers(1, 3)))]
    for _ in range(draw(st.integers(0, 12))):
        p = list(rng.choice(progs))
        k = rng.randint(1, min(4, len(p)))
        i = rng.randrange(0, len(p) - k + 1)
        q = p[:i] + p[i + k:] if rng.random() < 0.5 else p[:i + k] + p[i:i + k] + p[i + k:]
        progs.append(q or [0])
    rng.shuffle(progs)
    return depth, progs


@st.composite
def members_of(draw):
    depth, progs = draw(program_families())
    n_groups = draw(st.integers(1, 4))
    members = draw(st.lists(st.tuples(st.integers(0, len(progs) - 1), st.integers(0, n_groups - 1)),
                            min_size=1, max_size=20))
    return depth, progs, members


def check_units(progs, members, table):
    """Each (member, step) -> the unit of (group, program prefix); unit fields; lanes."""
    key_of_unit = {}
    for m, (row, group) in enumerate(members):
        units = table.member_units[table.member_offsets[m]:table.member_offsets[m + 1]].tolist()
        assert len(units) == len(progs[row])
        for s, u in enumerate(units):
            key = (group, tuple(progs[row][: s + 1]))
            assert key_of_unit.setdefault(u, key) == key, "one unit, one (group, prefix)"
            assert table.layer[u] == progs[row][s] and table.step[u] == s and table.group[u] == group
            assert table.parent[u] == (units[s - 1] if s else -1)
        assert table.lane_end[table.member_lane[m]] == units[-1]
    # distinct (group, prefix) -> distinct units: a bijection
    assert len(set(key_of_unit.values())) == len(key_of_unit) == table.num_units
    # lanes: one per distinct (group, program), group-major, lexicographic inside a group
    distinct = sorted({(g, tuple(progs[r])) for r, g in members})
    assert table.num_lanes == len(distinct)
    for lane, (g, prog) in enumerate(distinct):
        assert key_of_unit[int(table.lane_end[lane])] == (g, prog)
    # a unit's lane is the smallest program through it
    for u, (g, prefix) in key_of_unit.items():
        through = [i for i, (gg, p) in enumerate(distinct) if gg == g and p[: len(prefix)] == prefix]
        assert table.lane[u] == min(through)


def check_unit_waves(table, layers, offsets, units):
    wave_of = {}
    for w in range(len(layers)):
        us = units[offsets[w]:offsets[w + 1]].tolist()
        assert us and us == sorted(set(us)), "units of a wave are sorted and distinct"
        for u in us:
            assert u not in wave_of, "each unit in one wave"
            wave_of[u] = w
            assert table.layer[u] == layers[w]
            if table.parent[u] >= 0:
                assert wave_of.get(int(table.parent[u]), w) < w, "a unit runs after its parent"
    assert sorted(wave_of) == list(range(table.num_units))
    return wave_of


@SETTINGS
@given(members_of(), st.sampled_from(POLICIES))
def test_units_are_the_program_tries_of_each_group_and_waves_keep_the_invariants(case, policy):
    depth, progs, members = case
    packed = pack(progs)
    table = build_unit_table(packed, np.array([r for r, _ in members]), np.array([g for _, g in members]))
    check_units(progs, members, table)
    layers, offsets, units = plan_unit_waves(table, policy, depth)
    wave_of = check_unit_waves(table, layers, offsets, units)
    # the same program prefix in two groups runs in the same wave
    by_prefix = {}
    for m, (row, group) in enumerate(members):
        for s, u in enumerate(table.member_units[table.member_offsets[m]:table.member_offsets[m + 1]].tolist()):
            assert by_prefix.setdefault(tuple(progs[row][: s + 1]), wave_of[u]) == wave_of[u]
    # the waves are the plan of the lanes' programs (the distinct programs of each group)
    lanes = [list(p) for _, p in sorted({(g, tuple(progs[r])) for r, g in members})]
    assert len(layers) == plan_waves(pack(lanes), policy, depth).num_waves


def test_unit_planner_rejects_bad_input():
    with pytest.raises(ValueError, match="row 2 outside"):
        _C.build_units(i32([0, 1, 2]), i32([0, 1]), i32([2]), i32([0]))
    with pytest.raises(ValueError, match="negative group"):
        _C.build_units(i32([0, 1]), i32([0]), i32([0]), i32([-1]))
    with pytest.raises(ValueError, match="empty program"):
        _C.build_units(i32([0, 0, 1]), i32([0]), i32([0]), i32([0]))
    with pytest.raises(ValueError, match="parent"):
        _C.plan_unit_waves(i32([1, -1]), i32([0, 0]), i32([0]), "bound")
    with pytest.raises(ValueError, match="lies on no lane"):
        _C.plan_unit_waves(i32([-1, -1]), i32([0, 0]), i32([0]), "bound")
    with pytest.raises(ValueError, match="outside"):
        _C.plan_unit_waves(i32([-1]), i32([5]), i32([0]), "bound", 3)
    with pytest.raises(ValueError, match="policy"):
        _C.plan_unit_waves(i32([-1]), i32([0]), i32([0]), "fastest")


@st.composite
def prompt_families(draw):
    """Prompts that share random prefixes (and some identical prompts)."""
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    vocab = draw(st.integers(4, 9))  # a small vocabulary makes accidental common prefixes too
    prompts = [[rng.randrange(3, vocab) for _ in range(rng.randint(1, 8))]]
    for _ in range(draw(st.integers(0, 9))):
        base = rng.choice(prompts)
        cut = rng.randint(0, len(base))
        prompts.append(base[:cut] + [rng.randrange(3, vocab) for _ in range(rng.randint(0 if cut else 1, 5))])
    return [torch.tensor(p) for p in prompts]


@SETTINGS
@given(prompt_families(), st.sampled_from(["left", "right"]))
def test_prompt_tree_is_the_radix_tree_of_the_real_tokens(prompts, side):
    batch = padded_batch(prompts, side)
    tree = build_prompt_tree(batch["input_ids"], batch["attention_mask"])
    assert list(tree.depth) == sorted(tree.depth), "nodes numbered level by level"
    under = {g: [] for g in range(tree.num_nodes)}
    for r, p in enumerate(prompts):
        nodes = tree.row_nodes[r]
        assert tree.start[nodes[0]] == 0 and tree.end[nodes[-1]] == len(p)
        for a, b in zip(nodes, nodes[1:]):
            assert tree.end[a] == tree.start[b] and tree.parent[b] == a and tree.depth[b] == tree.depth[a] + 1
        for g in nodes:
            under[g].append(r)
    for g, rows in under.items():
        s, e = tree.start[g], tree.end[g]
        assert rows and e > s
        assert len({tuple(prompts[r][s:e].tolist()) for r in rows}) == 1, "rows under a node share its tokens"
        # maximal: the rows under g do not all continue with one more common token, unless one of them ends
        if all(len(prompts[r]) > e for r in rows):
            assert len({int(prompts[r][e]) for r in rows}) > 1
    # siblings start with different tokens; identical prompts end at the same node
    for g in range(tree.num_nodes):
        sib = [h for h in range(tree.num_nodes) if tree.parent[h] == tree.parent[g] and h != g]
        assert all(tree.tokens[tree.rep_row[h], tree.start[h]] != tree.tokens[tree.rep_row[g], tree.start[g]]
                   for h in sib)
    last = {}
    for r, p in enumerate(prompts):
        assert last.setdefault(tuple(p.tolist()), tree.row_nodes[r][-1]) == tree.row_nodes[r][-1]
    assert len(set(last.values())) == len(last)


def test_worked_example_of_the_units_docstring():
    a, b, c, d, e = 3, 4, 5, 6, 7
    prompts = [torch.tensor([a, b, c, d])] * 2 + [torch.tensor([a, b, e])]
    programs = [[0, 1, 2], [0, 1, 3], [0, 2]]
    batch = padded_batch(prompts, "left")
    tree = build_prompt_tree(batch["input_ids"], batch["attention_mask"])
    assert tree.row_nodes == ((0, 1), (0, 1), (0, 2))
    assert list(tree.start) == [0, 2, 2] and list(tree.end) == [2, 4, 3]
    plan = plan_prefill(tree, pack(programs), "bound", 4, torch.device("cpu"))
    assert (plan.work, plan.work_unshared) == (20, 30)
    assert plan.table.num_units == 5 + 4 + 2 and plan.table.num_lanes == 3 + 2 + 1
    assert plan.pool_entries == 1 + 20  # scratch entry + one column per unit position
    # node 0's lanes: [0] [0,1] [0,1,2] in lane 0, [0,1,3] in lane 1, [0,2] in lane 2
    t = plan.table
    node0 = {tuple(programs[r][: s + 1]): int(u) for m, (r, g) in enumerate(zip(t.member_row, t.member_group)) if g == 0
             for s, u in enumerate(t.member_units[t.member_offsets[m]:t.member_offsets[m + 1]])}
    assert [t.lane[node0[k]] for k in [(0,), (0, 1), (0, 1, 2), (0, 1, 3), (0, 2)]] == [0, 0, 0, 1, 2]
    # every (slot, position) of a row reads its own unit's column: rows 0 and 1 share columns 0-3 at step 0
    assert (plan.key_index[0, :4] == plan.key_index[3, :4]).all() and (plan.key_index[0, :4] > 0).all()
    # row 2 reads node 0's columns of its step-0 unit (shared with rows 0 and 1), then its own
    assert (plan.key_index[6, :2] == plan.key_index[0, :2]).all() and plan.key_index[6, 2] not in plan.key_index[:6]
