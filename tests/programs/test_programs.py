"""Program validation and CSR packing (docs/architecture.md sections 2 and 6)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from polar.programs import Program, full, validate_program, validate_programs
from polar.runtime.packing import PackedPrograms, pack

SETTINGS = settings(max_examples=100, deadline=None)

D = 6  # model depth used by the hand-written cases


# ---------------------------------------------------------------------------------------------
# Program / full


def test_program_is_an_immutable_hashable_tuple():
    p = Program([0, 1, 1, 3])
    assert p == (0, 1, 1, 3) and isinstance(p, tuple)
    assert hash(p) == hash(Program((0, 1, 1, 3)))
    assert p.unique_layers == 3
    assert repr(p) == "Program([0, 1, 1, 3])"
    assert Program(np.array([2, 0])) == (2, 0)
    assert all(type(i) is int for i in Program(torch.tensor([1, 2])))


def test_full():
    assert full(4) == Program([0, 1, 2, 3]) == Program.full(4)
    assert isinstance(full(1), Program)
    for bad in (0, -2):
        with pytest.raises(ValueError, match="num_layers must be positive"):
            full(bad)


# ---------------------------------------------------------------------------------------------
# validate_program


def test_validate_program_accepts_int_sequences_and_tensors():
    expected = Program([0, 5, 5, 2])
    for ok in ([0, 5, 5, 2], (0, 5, 5, 2), expected, torch.tensor([0, 5, 5, 2]),
               torch.tensor([0, 5, 5, 2], dtype=torch.int32), [np.int64(0), np.int32(5), 5, 2]):
        got = validate_program(ok, D)
        assert got == expected and isinstance(got, Program)
    assert validate_program(range(3), D) == Program([0, 1, 2])
    assert validate_program([0] * (4 * D), D) == Program([0] * (4 * D))  # default limit is 4 D


@pytest.mark.parametrize(
    "program,kwargs,match",
    [
        ([], {}, "is empty; a program needs at least one layer"),
        ([0, D], {}, rf"step 1 uses layer {D}, outside \[0, {D}\)"),
        ([-1], {}, r"step 0 uses layer -1, outside"),
        ([0] * (4 * D + 1), {}, rf"has {4 * D + 1} steps, over the limit of {4 * D}"),
        ([0, 1, 2], {"max_length": 2}, "has 3 steps, over the limit of 2"),
        ([0, 1.0], {}, "entry 1 is 1.0, not an int"),
        ([0.0], {}, "entry 0 is 0.0, not an int"),
        ([np.float64(1)], {}, "entry 0 .* not an int"),
        ([True, 1], {}, "entry 0 is True, not an int"),
        ([np.bool_(False)], {}, "entry 0 .* not an int"),
        ([0, None], {}, "entry 1 is None, not an int"),
        ([0, "1"], {}, "entry 1 is '1', not an int"),
        ("012", {}, "expected a sequence of ints, got str"),
        (b"\x00", {}, "expected a sequence of ints, got bytes"),
        (3, {}, "expected a sequence of ints, got int"),
        ({0, 1}, {}, "expected a sequence of ints, got set"),
        (torch.tensor([0.0, 1.0]), {}, "tensor program must be 1-D integer"),
        (torch.tensor([True]), {}, "tensor program must be 1-D integer"),
        (torch.tensor([[0, 1]]), {}, "tensor program must be 1-D integer"),
    ],
)
def test_validate_program_rejects(program, kwargs, match):
    with pytest.raises(ValueError, match=match):
        validate_program(program, D, **kwargs)
    # With a row, the message names it.
    with pytest.raises(ValueError, match=r"program for row 7\b") as e:
        validate_program(program, D, row=7, **kwargs)
    assert e.match(match)


def test_validate_program_rejects_float_tensor_entries():
    with pytest.raises(ValueError, match="not an int"):
        validate_program([torch.tensor(1.5)], D)


def test_program_constructor_rejects_floats():
    with pytest.raises((TypeError, ValueError)):
        Program([1.7])


# ---------------------------------------------------------------------------------------------
# validate_programs


def test_validate_programs_per_row_and_broadcast():
    got = validate_programs([[0, 1], (2,), torch.tensor([3, 3])], 3, D)
    assert got == [Program([0, 1]), Program([2]), Program([3, 3])]
    assert validate_programs(Program([1, 2]), 3, D) == [Program([1, 2])] * 3
    assert validate_programs([], 0, D) == []


@pytest.mark.parametrize(
    "programs,batch,match",
    [
        ([[0], [1]], 3, "got 2 programs for a batch of 3 rows"),
        ([[0], [1], [2]], 2, "got 3 programs for a batch of 2 rows"),
        ([[0]], 0, "got 1 programs for a batch of 0 rows"),
        ([[0], []], 2, "program for row 1 is empty"),
        ([[0], [1], [0, D + 3]], 3, rf"program for row 2: step 1 uses layer {D + 3}, outside"),
        ([[0], [0] * (4 * D + 1)], 2, "program for row 1 has .* over the limit"),
        ([[0], [0, 0.5]], 2, "program for row 1: entry 1 is 0.5, not an int"),
        ([[False], [0]], 2, "program for row 0: entry 0 is False, not an int"),
        ((0, 1), 2, "program for row 0: expected a sequence of ints, got int"),
        ("ab", 2, "programs must be a list of 2 programs"),
        ({0: [1]}, 1, "programs must be a list of 1 programs"),
        (None, 1, "programs must be a list"),
    ],
)
def test_validate_programs_rejects(programs, batch, match):
    with pytest.raises(ValueError, match=match):
        validate_programs(programs, batch, D)


def test_validate_programs_reports_the_first_bad_row_and_max_length():
    with pytest.raises(ValueError, match="program for row 1 has 3 steps, over the limit of 2"):
        validate_programs([[0], [0, 1, 2], []], 3, D, max_length=2)
    with pytest.raises(ValueError, match="over the limit of 2"):
        validate_programs(Program([0, 1, 2]), 4, D, max_length=2)


# ---------------------------------------------------------------------------------------------
# pack / PackedPrograms

programs_strategy = st.lists(st.lists(st.integers(0, 40), max_size=12), max_size=10)


def unpack(packed: PackedPrograms) -> list[list[int]]:
    off = packed.offsets.tolist()
    flat = packed.layers.tolist()
    return [flat[off[r] : off[r + 1]] for r in range(packed.batch_size)]


@SETTINGS
@given(programs_strategy)
def test_pack_round_trip(programs):
    packed = pack(programs)
    assert packed.offsets.dtype == torch.int32 and packed.layers.dtype == torch.int32
    assert packed.offsets.shape == (len(programs) + 1,) and packed.offsets[0] == 0
    assert packed.batch_size == len(programs)
    assert packed.total_steps == sum(len(p) for p in programs) == packed.offsets[-1]
    assert packed.lengths().tolist() == [len(p) for p in programs]
    assert unpack(packed) == programs
    # Slot of (row, step) is offsets[row] + step.
    for r, p in enumerate(programs):
        for s, layer in enumerate(p):
            assert packed.layers[packed.offsets[r] + s] == layer


@SETTINGS
@given(programs_strategy, st.data())
def test_subset_matches_packing_the_subset(programs, data):
    packed = pack(programs)
    rows = data.draw(st.lists(st.integers(0, len(programs) - 1), max_size=8)) if programs else []
    sub = packed.subset(rows)
    expected = pack([programs[r] for r in rows])
    assert torch.equal(sub.offsets, expected.offsets) and torch.equal(sub.layers, expected.layers)
    assert sub.offsets.dtype == torch.int32 and sub.layers.dtype == torch.int32
    assert unpack(sub) == [programs[r] for r in rows]


def test_pack_of_validated_programs_and_empty_batch():
    packed = pack(validate_programs([[0, 1], [2]], 2, D))
    assert packed.offsets.tolist() == [0, 2, 3] and packed.layers.tolist() == [0, 1, 2]
    empty = pack([])
    assert empty.batch_size == 0 and empty.total_steps == 0 and empty.offsets.tolist() == [0]
    assert empty.layers.dtype == torch.int32
    assert pack([[0]]).subset([]).offsets.tolist() == [0]
    assert pack([[0], [1, 2]]).subset(range(2)).layers.tolist() == [0, 1, 2]


def test_subset_out_of_range_row_is_a_value_error():
    with pytest.raises(ValueError, match="row 5"):
        pack([[0], [1]]).subset([5])


def test_subset_negative_row_is_rejected():
    with pytest.raises(ValueError):
        pack([[0], [1, 2, 3]]).subset([-1])
