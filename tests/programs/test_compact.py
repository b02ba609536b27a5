"""Compact program representation: build / parse round trips, canonical form, the space's edge."""
from __future__ import annotations

import itertools
import random
from functools import lru_cache

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from polar.programs.compact import (
    CompactProgram,
    NotInSpaceError,
    Op,
    build,
    in_space,
    parse,
    random_compact,
    segments,
)
from polar.programs import Program

SETTINGS = settings(max_examples=150, deadline=None)


def mask_from_lengths(lengths):
    z = []
    for n in lengths:
        z += [1] + [0] * (n - 1)
    return tuple(z)


def lengths_of(cp: CompactProgram):
    return [b - a + 1 for a, b in cp.segments()]


def draw_lengths(draw, k_max: int, max_layers: int) -> list[int]:
    """Segment lengths (each 1..k_max) of a random model of 1..max_layers layers."""
    lengths, left = [], draw(st.integers(1, max_layers))
    while left:
        n = draw(st.integers(1, min(k_max, left)))
        lengths.append(n)
        left -= n
    return lengths


@st.composite
def representations(draw, max_layers=40):
    """(CompactProgram, k_max) with at least one non-skip op."""
    k_max = draw(st.integers(1, 5))
    lengths = draw_lengths(draw, k_max, max_layers)
    ops = draw(st.lists(st.sampled_from(list(Op)), min_size=len(lengths), max_size=len(lengths)))
    if all(op == Op.SKIP for op in ops):
        ops[draw(st.integers(0, len(ops) - 1))] = draw(st.sampled_from([Op.KEEP, Op.REPEAT]))
    return CompactProgram(mask_from_lengths(lengths), tuple(ops)), k_max


# ---------------------------------------------------------------------------------------------
# Round trips


@SETTINGS
@given(representations())
def test_parse_build_canonical_round_trip(rep):
    x, k_max = rep
    program = build(x.z_seg, x.ops, k_max)
    canon = parse(program, x.num_layers, k_max)
    assert build(canon.z_seg, canon.ops, k_max) == program
    # parse(build(c)) == c for the canonical c: idempotent.
    assert parse(build(canon.z_seg, canon.ops, k_max), x.num_layers, k_max) == canon
    assert canon.decode(k_max) == program
    assert len(canon.ops) <= len(x.ops)  # canonical has fewest segments
    assert all(b - a + 1 <= k_max for a, b in canon.segments())


@SETTINGS
@given(representations())
def test_build_parse_is_identity_on_programs_in_space(rep):
    x, k_max = rep
    p = x.decode(k_max)
    assert in_space(p, x.num_layers, k_max)
    assert build(*_fields(parse(p, x.num_layers, k_max)), k_max) == p
    # Accepts plain lists, tuples and 1-D integer tensors as well (whatever validate_program takes).
    assert parse(list(p), x.num_layers, k_max) == parse(torch.tensor(p), x.num_layers, k_max)


def _fields(cp):
    return cp.z_seg, cp.ops


# ---------------------------------------------------------------------------------------------
# Canonical form against brute force on small models: enumerate every representation, group
# by decoded program, and take the minimum of the documented key.


@lru_cache(maxsize=None)
def all_representations(num_layers, k_max):
    out = []
    for n_seg in range(1, num_layers + 1):
        for lengths in itertools.product(range(1, k_max + 1), repeat=n_seg):
            if sum(lengths) != num_layers:
                continue
            for ops in itertools.product(list(Op), repeat=n_seg):
                if any(op != Op.SKIP for op in ops):
                    out.append(CompactProgram(mask_from_lengths(lengths), ops))
    return out


def canonical_key(cp):
    n_skip = sum(op == Op.SKIP for op in cp.ops)
    n_rep = sum(op == Op.REPEAT for op in cp.ops)
    return (len(cp.ops), n_skip, -n_rep, tuple(-n for n in lengths_of(cp)))


@lru_cache(maxsize=None)
def brute_force(num_layers, k_max):
    """{program: [representations]}"""
    by_program = {}
    for cp in all_representations(num_layers, k_max):
        by_program.setdefault(cp.decode(k_max), []).append(cp)
    return by_program


SMALL = [(d, k) for d in range(1, 7) for k in range(1, 5) if k <= d] + [(7, 3)]


@pytest.mark.parametrize("num_layers,k_max", SMALL)
def test_parse_matches_brute_force_canonical(num_layers, k_max):
    for program, reps in brute_force(num_layers, k_max).items():
        keys = sorted(canonical_key(cp) for cp in reps)
        assert len(keys) == len(set(keys)), "the documented key must leave no ties"
        expected = min(reps, key=canonical_key)
        assert parse(program, num_layers, k_max) == expected


@pytest.mark.parametrize("num_layers,k_max", SMALL)
def test_skip_and_repeat_counts_are_fixed_once_segments_are_fewest(num_layers, k_max):
    # A program fixes how often each layer runs (0, 1 or 2 times = the op of its segment), and a
    # segment never spans layers of different multiplicity; so among fewest-segment
    # representations the skip and repeat counts never differ, and only the length order
    # breaks ties. (The "fewest skips" / "most repeats" keys are kept for the contract, but
    # never decide.)
    for program, reps in brute_force(num_layers, k_max).items():
        fewest = min(len(cp.ops) for cp in reps)
        counts = {canonical_key(cp)[1:3] for cp in reps if len(cp.ops) == fewest}
        assert len(counts) == 1, (program, counts)


@pytest.mark.parametrize("num_layers,k_max,max_len", [(1, 1, 4), (2, 1, 5), (3, 2, 6), (4, 4, 6), (4, 2, 6)])
def test_in_space_exactly_on_brute_force_programs(num_layers, k_max, max_len):
    # Every sequence over range(D) up to max_len: in the space iff some representation
    # decodes to it; otherwise the error explains a concrete reason (never the fallback).
    space = set(brute_force(num_layers, k_max))
    for n in range(1, max_len + 1):
        for seq in itertools.product(range(num_layers), repeat=n):
            if Program(seq) in space:
                assert in_space(seq, num_layers, k_max)
            else:
                with pytest.raises(NotInSpaceError) as e:
                    parse(seq, num_layers, k_max)
                assert "no segmentation" not in str(e.value), str(e.value)
                assert not in_space(seq, num_layers, k_max)


# ---------------------------------------------------------------------------------------------
# Hand-checked canonical examples


def rep(lengths, ops):
    return CompactProgram(mask_from_lengths(lengths), tuple(Op[o.upper()] for o in ops))


@pytest.mark.parametrize(
    "program,num_layers,k_max,expected",
    [
        # Full pass, D=8, k_max=4: at least ceil(8/4)=2 segments, and 4+4 is the only way.
        (list(range(8)), 8, 4, rep([4, 4], ["keep", "keep"])),
        # D=2: one segment run twice; two segments would give 0 0 1 1 or need 4 steps from 2 segs
        # of one layer each, which cannot interleave.
        ([0, 1, 0, 1], 2, 4, rep([2], ["repeat"])),
        # Full pass, D=5, k_max=4: two segments, lengths (4,1) (1,4) (2,3) (3,2); the
        # lexicographically largest (4,1) wins.
        (list(range(5)), 5, 4, rep([4, 1], ["keep", "keep"])),
        # D=9, k_max=4: 3 segments needed; largest-first gives (4,4,1), not (1,4,4) or (3,3,3).
        (list(range(9)), 9, 4, rep([4, 4, 1], ["keep", "keep", "keep"])),
        # D=7: layers 0..4 kept (2 segments, 4+1), 5..6 skipped (1 segment): (4,1,2).
        ([0, 1, 2, 3, 4], 7, 4, rep([4, 1, 2], ["keep", "keep", "skip"])),
        # Skips cannot share a segment with kept layers: [0..1 skip][2..5 keep].
        ([2, 3, 4, 5], 6, 4, rep([2, 4], ["skip", "keep"])),
        # The descent 3 -> 2 fixes the repeat segment to exactly 2..3; the kept layers around it
        # form their own segments: [0..1 keep][2..3 repeat][4..5 keep].
        ([0, 1, 2, 3, 2, 3, 4, 5], 6, 4, rep([2, 2, 2], ["keep", "repeat", "keep"])),
        # Two separate repeats back to back; one segment 0..3 repeated would be 0123 0123.
        ([0, 1, 0, 1, 2, 3, 2, 3], 4, 4, rep([2, 2], ["repeat", "repeat"])),
        # Repeat of a single layer inside a kept run: (3,1,1), the kept 0..2 is one segment.
        ([0, 1, 2, 3, 3, 4], 5, 4, rep([3, 1, 1], ["keep", "repeat", "keep"])),
        # Skipped gap of 5 layers with k_max=4 needs 2 skip segments, larger first: (1,4,1,1).
        ([0, 6], 7, 4, rep([1, 4, 1, 1], ["keep", "skip", "skip", "keep"])),
        # k_max=1: every layer its own segment.
        ([0, 0, 2], 3, 1, rep([1, 1, 1], ["repeat", "skip", "keep"])),
        # D=6, k_max=4, layers 0..4 kept, 5 skipped: the 5 kept layers need 2 segments and the
        # skip 1, so 3 in all: (4,1,1), (1,4,1), (2,3,1), (3,2,1); largest first is (4,1,1).
        ([0, 1, 2, 3, 4], 6, 4, rep([4, 1, 1], ["keep", "keep", "skip"])),
    ],
)
def test_hand_checked_canonical_forms(program, num_layers, k_max, expected):
    got = parse(program, num_layers, k_max)
    assert got == expected, got
    assert got.decode(k_max) == Program(program)


def test_fewest_segments_beats_larger_first():
    # D=8, k_max=4, keep all but layer 1: [0 keep][1 skip][2..5 keep][6..7 keep] = (1,1,4,2);
    # no 3-segment form exists since the kept 2..7 (6 layers) needs 2 segments. Among the
    # 4-segment forms (1,1,4,2) beats (1,1,2,4) and (1,1,3,3).
    got = parse([0, 2, 3, 4, 5, 6, 7], 8, 4)
    assert lengths_of(got) == [1, 1, 4, 2]
    assert got.ops == (Op.KEEP, Op.SKIP, Op.KEEP, Op.KEEP)


# ---------------------------------------------------------------------------------------------
# Outside the space


@pytest.mark.parametrize(
    "program,num_layers,k_max,reason",
    [
        ([1, 0], 2, 4, "reordering"),
        ([0, 2, 1, 3], 4, 4, "reordering"),
        ([0, 2, 0, 2], 3, 4, "reordering"),  # 0 and 2 are not one contiguous block
        ([0, 0, 0], 1, 4, "runs 3 times"),
        ([0, 1, 0, 1, 0, 1], 2, 4, "runs 3 times"),
        ([0, 1, 2, 3, 4, 0, 1, 2, 3, 4], 5, 4, "over k_max=4"),
        ([0, 1, 0, 1], 2, 1, "over k_max=1"),
        ([0, 1, 2, 0, 1], 3, 4, "stops after layer 1"),
        ([0, 1, 2, 1, 2, 3, 2, 3], 4, 4, "layer 2 runs 3 times"),  # repeats 1..2 and 2..3 overlap
        ([0, 1, 1, 0], 2, 4, "reordering"),
        ([2, 3, 2, 3, 1], 4, 4, "reordering"),
    ],
)
def test_not_in_space_says_why(program, num_layers, k_max, reason):
    with pytest.raises(NotInSpaceError, match=reason):
        parse(program, num_layers, k_max)
    assert not in_space(program, num_layers, k_max)
    assert issubclass(NotInSpaceError, ValueError)


@SETTINGS
@given(st.integers(2, 40), st.data())
def test_reordered_skip_only_programs_are_outside(num_layers, data):
    layers = sorted(data.draw(st.sets(st.integers(0, num_layers - 1), min_size=2)))
    i, j = sorted(data.draw(st.lists(st.integers(0, len(layers) - 1), min_size=2, max_size=2, unique=True)))
    layers[i], layers[j] = layers[j], layers[i]  # all distinct and no longer ascending
    with pytest.raises(NotInSpaceError, match="reordering"):
        parse(layers, num_layers)


@SETTINGS
@given(representations(), st.data())
def test_triple_runs_are_outside(rep_k, data):
    x, k_max = rep_k
    p = list(x.decode(k_max))
    k = data.draw(st.integers(0, len(p) - 1))
    p[k:k] = [p[k]] * data.draw(st.integers(2, 3))  # layer p[k] now runs at least 3 times
    with pytest.raises(NotInSpaceError, match="times"):
        parse(p, x.num_layers, k_max)


@SETTINGS
@given(st.integers(1, 5), st.integers(0, 20), st.integers(0, 20))
def test_repeats_longer_than_k_max_are_outside(k_max, before, after):
    block = list(range(before, before + k_max + 1))
    num_layers = before + k_max + 1 + after
    p = list(range(before)) + block + block + list(range(before + k_max + 1, num_layers))
    with pytest.raises(NotInSpaceError, match=f"over k_max={k_max}"):
        parse(p, num_layers, k_max)
    assert in_space(p, num_layers, k_max + 1)  # fits once the limit allows the block


def test_invalid_programs_raise_value_error_not_in_space_error():
    for bad, match in [([], "empty"), ([0, 5], "outside"), ([0, 1.0], "not an int"), ([-1], "outside")]:
        with pytest.raises(ValueError, match=match) as e:
            parse(bad, 4)
        assert not isinstance(e.value, NotInSpaceError)


# ---------------------------------------------------------------------------------------------
# build / CompactProgram / segments validation


def test_build_examples():
    assert build((1, 0, 1), (Op.KEEP, Op.REPEAT)) == Program([0, 1, 2, 2])
    assert build([1, 1, 0, 1], [2, 0, 1]) == Program([0, 0, 3])
    assert build((1,), (Op.REPEAT,)) == Program([0, 0])
    assert segments([1, 0, 0, 1, 1, 0]) == [(0, 2), (3, 3), (4, 5)]
    assert segments([True, False]) == [(0, 1)]


@pytest.mark.parametrize(
    "z_seg,ops,k_max,match",
    [
        ((0, 1), (Op.KEEP,), 4, r"z_seg\[0\] must be 1"),
        ((1, 2), (Op.KEEP,), 4, r"z_seg\[1\] is 2"),
        ((1, 0.0), (Op.KEEP,), 4, r"z_seg\[1\]"),
        ((), (), 4, "empty"),
        ((1, 0, 1), (Op.KEEP,), 4, "2 segments"),
        ((1, 0), (Op.KEEP, Op.KEEP), 4, "2 ops for 1 segments"),
        ((1, 0, 0), (Op.KEEP,), 2, "over k_max=2"),
        ((1, 1), (Op.SKIP, Op.SKIP), 4, "every segment is skipped"),
        ((1,), (3,), 4, "ops must be"),
        ((1,), (Op.KEEP,), 0, "k_max"),
    ],
)
def test_build_rejects(z_seg, ops, k_max, match):
    with pytest.raises(ValueError, match=match):
        build(z_seg, ops, k_max)


def test_compact_program_is_frozen_hashable_and_coerces():
    cp = CompactProgram([1, 0, 1], [1, 2])
    assert cp.z_seg == (1, 0, 1) and cp.ops == (Op.KEEP, Op.REPEAT)
    assert isinstance(cp.ops[0], Op)
    assert hash(cp) == hash(CompactProgram((1, 0, 1), (Op.KEEP, Op.REPEAT)))
    with pytest.raises(AttributeError):
        cp.ops = ()
    assert [int(op) for op in Op] == [0, 1, 2]


# ---------------------------------------------------------------------------------------------
# random_compact


@pytest.mark.parametrize("make_rng", [lambda: random.Random(0), lambda: np.random.default_rng(0)])
def test_random_compact_is_in_space_with_realistic_lengths(make_rng):
    rng, num_layers = make_rng(), 30
    lengths = []
    for _ in range(500):
        cp = random_compact(num_layers, rng)
        assert cp.num_layers == num_layers
        assert all(b - a + 1 <= 4 for a, b in cp.segments())
        p = cp.decode()
        assert in_space(p, num_layers)
        lengths.append(len(p))
    lengths = np.array(lengths)
    assert 0.9 * num_layers < lengths.mean() < 1.1 * num_layers
    assert np.mean((lengths >= 0.7 * num_layers) & (lengths <= 1.2 * num_layers)) > 0.75


def test_random_compact_options_and_determinism():
    a = [random_compact(12, random.Random(5), k_max=2) for _ in range(3)]
    b = [random_compact(12, random.Random(5), k_max=2) for _ in range(3)]
    assert a == b
    rng = random.Random(1)
    for _ in range(50):
        cp = random_compact(12, rng, k_max=2, p_boundary=0.0)
        assert lengths_of(cp) == [2] * 6  # no optional boundaries: k_max forces them
        assert random_compact(5, rng, op_probs=(0.0, 1.0, 0.0)).decode() == Program(range(5))
    only_skip_or_keep = random_compact(6, rng, p_boundary=1.0, op_probs=(0.99, 0.01, 0.0))
    assert Op.REPEAT not in only_skip_or_keep.ops and Op.KEEP in only_skip_or_keep.ops
    with pytest.raises(ValueError):
        random_compact(0, rng)
    with pytest.raises(ValueError):
        random_compact(4, rng, op_probs=(1.0, 0.0, 0.0))
    with pytest.raises(ValueError):
        random_compact(4, rng, p_boundary=1.5)


def test_parse_scales_to_deep_models():
    rng = random.Random(3)
    for num_layers in (64, 100):
        for _ in range(20):
            cp = random_compact(num_layers, rng)
            p = cp.decode()
            canon = parse(p, num_layers)
            assert canon.decode() == p and len(canon.ops) <= len(cp.ops)
    assert parse(list(range(100)), 100) == rep([4] * 25, ["keep"] * 25)


# ---------------------------------------------------------------------------------------------
# Run counts above 2 (max_runs): an op is how many times its segment runs.


@st.composite
def run_representations(draw, max_layers=30):
    """(CompactProgram, k_max, max_runs) with ops in 0..max_runs and at least one non-skip op."""
    k_max = draw(st.integers(1, 5))
    max_runs = draw(st.integers(1, 6))
    lengths = draw_lengths(draw, k_max, max_layers)
    ops = draw(st.lists(st.integers(0, max_runs), min_size=len(lengths), max_size=len(lengths)))
    if not any(ops):
        ops[draw(st.integers(0, len(ops) - 1))] = draw(st.integers(1, max_runs))
    return CompactProgram(mask_from_lengths(lengths), tuple(ops)), k_max, max_runs


@SETTINGS
@given(run_representations())
def test_parse_build_round_trip_with_run_counts(rep_k):
    x, k_max, max_runs = rep_k
    program = build(x.z_seg, x.ops, k_max, max_runs=max_runs)
    assert x.decode(k_max) == program  # decode takes whatever run counts it holds
    canon = parse(program, x.num_layers, k_max, max_runs=max_runs)
    assert build(canon.z_seg, canon.ops, k_max, max_runs=max_runs) == program
    assert parse(canon.decode(k_max), x.num_layers, k_max, max_runs=max_runs) == canon
    assert len(canon.ops) <= len(x.ops) and max(canon.ops) <= max_runs
    assert in_space(program, x.num_layers, k_max, max_runs=max_runs)
    # A larger limit admits the same representations: the canonical form does not move.
    assert parse(program, x.num_layers, k_max, max_runs=max_runs + 3) == canon
    most = max(x.ops)
    if most >= 2:
        with pytest.raises(NotInSpaceError, match=f"runs {most} times"):
            parse(program, x.num_layers, k_max, max_runs=most - 1)


@SETTINGS
@given(representations())
def test_paper_space_programs_parse_the_same_under_larger_max_runs(rep_k):
    x, k_max = rep_k
    p = x.decode(k_max)
    canon = parse(p, x.num_layers, k_max)
    assert parse(p, x.num_layers, k_max, max_runs=2) == canon
    assert parse(p, x.num_layers, k_max, max_runs=5) == canon


@lru_cache(maxsize=None)
def brute_force_runs(num_layers, k_max, max_runs):
    """{program: [representations]} over ops 0..max_runs."""
    by_program = {}
    for n_seg in range(1, num_layers + 1):
        for lengths in itertools.product(range(1, k_max + 1), repeat=n_seg):
            if sum(lengths) != num_layers:
                continue
            for ops in itertools.product(range(max_runs + 1), repeat=n_seg):
                if any(ops):
                    cp = CompactProgram(mask_from_lengths(lengths), ops)
                    by_program.setdefault(cp.decode(k_max), []).append(cp)
    return by_program


def runs_key(cp):
    """The documented canonical key: segments, skips, -extra runs, -lengths."""
    return (len(cp.ops), sum(op == 0 for op in cp.ops), -sum(max(0, op - 1) for op in cp.ops),
            tuple(-n for n in lengths_of(cp)))


@pytest.mark.parametrize("num_layers,k_max,max_runs", [(3, 2, 3), (4, 2, 3), (4, 3, 4), (5, 3, 3), (4, 4, 5),
                                                      (5, 2, 1)])
def test_parse_matches_brute_force_with_run_counts(num_layers, k_max, max_runs):
    space = brute_force_runs(num_layers, k_max, max_runs)
    for program, reps in space.items():
        keys = [runs_key(cp) for cp in reps]
        assert len(keys) == len(set(keys)), "the documented key must leave no ties"
        assert parse(program, num_layers, k_max, max_runs=max_runs) == min(reps, key=runs_key)
    if max_runs == 2:
        assert space.keys() == brute_force(num_layers, k_max).keys()


@pytest.mark.parametrize("num_layers,k_max,max_runs,max_len", [(1, 1, 3, 5), (2, 1, 3, 7), (2, 2, 4, 7), (3, 2, 3, 7),
                                                               (3, 3, 5, 6), (4, 2, 3, 6), (2, 2, 1, 5)])
def test_in_space_exactly_with_run_counts(num_layers, k_max, max_runs, max_len):
    # Every sequence over range(D) up to max_len: in the space iff some representation decodes
    # to it; otherwise the error gives a concrete reason (never the fallback).
    space = set(brute_force_runs(num_layers, k_max, max_runs))
    for n in range(1, max_len + 1):
        for seq in itertools.product(range(num_layers), repeat=n):
            if Program(seq) in space:
                assert in_space(seq, num_layers, k_max, max_runs=max_runs)
            else:
                with pytest.raises(NotInSpaceError) as e:
                    parse(seq, num_layers, k_max, max_runs=max_runs)
                assert "no segmentation" not in str(e.value), str(e.value)


def test_block_run_five_times():
    """Layers 2..3 run 5 times (polar search's repeat with r = 4): outside the paper's space,
    inside with max_runs=5."""
    p = [0, 1] + [2, 3] * 5 + [4, 5]
    with pytest.raises(NotInSpaceError, match=r"layer 2 runs 5 times \(steps \[2, 4, 6, 8, 10\]\); "
                                              r"a segment runs at most twice$") as e:
        parse(p, 6)
    assert "(D=6, k_max=4)" in str(e.value)  # the paper's space: message as before
    with pytest.raises(NotInSpaceError, match=r"\(D=6, k_max=4, max_runs=4\).*a segment runs at most 4 times$"):
        parse(p, 6, max_runs=4)
    with pytest.raises(NotInSpaceError, match="at most once$"):
        parse(p, 6, max_runs=1)
    assert not in_space(p, 6) and in_space(p, 6, max_runs=5)
    cp = parse(p, 6, max_runs=5)
    assert cp == CompactProgram(mask_from_lengths([2, 2, 2]), (1, 5, 1))
    assert cp.ops == (Op.KEEP, 5, Op.KEEP) and isinstance(cp.ops[0], Op) and type(cp.ops[1]) is int
    assert cp.decode() == Program(p)
    assert repr(cp) == "CompactProgram(D=6, [0..1:keep, 2..3:x5, 4..5:keep])"


@pytest.mark.parametrize(
    "program,num_layers,k_max,max_runs,reason",
    [
        ([0, 1, 0, 1, 0], 2, 4, 3, "stops after layer 0"),  # the third run of 0..1 is cut short
        ([2, 3, 2, 3, 3], 4, 4, 3, r"step 4 reruns from layer 3, inside the block 2\.\.3 just repeated, not from"),
        ([0, 1, 1, 0, 1], 2, 4, 3, "and layer 1 ended a repeat"),
        ([0, 1, 0, 1, 2, 0, 1], 3, 4, 3, "reordering"),  # the block ended (layer 2 ran after it)
        ([1, 2, 1, 2, 1, 2, 0], 3, 4, 5, "ended a repeat"),
        ([0, 0, 0, 0, 0, 0], 1, 4, 5, "layer 0 runs 6 times.*at most 5 times"),
        ([0, 1, 2, 0, 1, 2, 0, 1, 2], 3, 2, 5, "over k_max=2"),
    ],
)
def test_not_in_space_says_why_with_run_counts(program, num_layers, k_max, max_runs, reason):
    with pytest.raises(NotInSpaceError, match=reason):
        parse(program, num_layers, k_max, max_runs=max_runs)
    assert not in_space(program, num_layers, k_max, max_runs=max_runs)


def test_build_and_compact_program_with_run_counts():
    assert build((1, 0, 1), (Op.KEEP, 3), max_runs=3) == Program([0, 1, 2, 2, 2])
    assert build((1, 0, 1), (0, 4), max_runs=5) == Program([2, 2, 2, 2])
    one_line = r"^ops must be run counts 0\.\.2 \(max_runs=2\); ops\[1\] \(segment 2\.\.2\) is 3$"
    with pytest.raises(ValueError, match=one_line):
        build((1, 0, 1), (Op.KEEP, 3))
    with pytest.raises(ValueError, match=r"0\.\.3 \(max_runs=3\); ops\[0\] \(segment 0\.\.1\) is 4"):
        build((1, 0, 1), (4, 1), max_runs=3)
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="max_runs must be a positive int"):
            build((1,), (1,), max_runs=bad)
        with pytest.raises(ValueError, match="max_runs must be a positive int"):
            parse([0], 1, max_runs=bad)
    cp = CompactProgram((1, 0, 1), (np.int64(1), torch.tensor(7)))
    assert cp.ops == (Op.KEEP, 7) and type(cp.ops[1]) is int
    assert cp.decode() == Program([0, 1] + [2] * 7)  # decode takes any run count it holds
    assert hash(CompactProgram((1,), (3,))) == hash(CompactProgram((1,), (3,)))
    for bad, shown in [(-1, "-1"), (1.0, "1.0"), ("2", "'2'"), (None, "None")]:
        with pytest.raises(ValueError, match=rf"ops\[1\] is {shown}; ops must be run counts, ints >= 0"):
            CompactProgram((1, 1), (1, bad))
    assert repr(CompactProgram((1, 0, 1, 1), (0, 3, 2))) == "CompactProgram(D=4, [0..1:skip, 2:x3, 3:repeat])"


def test_random_compact_with_run_count_weights():
    rng = random.Random(2)
    for _ in range(30):
        cp = random_compact(10, rng, k_max=3, op_probs=(0.1, 0.5, 0.1, 0.1, 0.1, 0.1))
        assert max(cp.ops) <= 5 and any(cp.ops)
        assert in_space(cp.decode(3), 10, 3, max_runs=5)
    assert set(random_compact(8, rng, op_probs=(0, 0, 0, 0, 1)).ops) == {4}
    assert random_compact(8, rng, op_probs=(0, 1)).decode() == Program(range(8))
    for bad in [(1.0,), (1.0, 0.0, 0.0, 0.0), (0.5, -0.1, 1.0)]:
        with pytest.raises(ValueError, match="op_probs"):
            random_compact(4, rng, op_probs=bad)
    # Three weights sample as before (seeded outputs stay the same).
    assert random_compact(8, random.Random(0), op_probs=(0.2, 0.5, 0.3)) == \
        CompactProgram((1, 0, 0, 1, 1, 0, 1, 0), (Op.KEEP, Op.KEEP, Op.KEEP, Op.REPEAT))  # value before max_runs
