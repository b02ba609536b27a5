"""random_single_edit on any depth: valid, never empty, distinct, k capped by what exists."""
import logging

import pytest

from polar.evaluation import RandomSingleEdits
from polar.evaluation.methods import single_edits
from polar.programs import validate_program
from polar.tasks import Problem

PROBLEMS = [Problem(id=f"p{i}", question="q", answer="1", source="s") for i in range(3)]


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5, 30])
def test_edits_are_valid_nonempty_and_distinct_on_any_depth(depth):
    edits = single_edits(depth)
    assert len(set(edits)) == len(edits) and tuple(range(depth)) not in {tuple(e) for e in edits}
    for e in edits:
        validate_program(list(e), depth, max_length=2 * depth)
    for row in RandomSingleEdits(depth, seed=1).candidates(PROBLEMS, 5):
        progs = [c.program for c in row]
        assert len(progs) == min(5, len(edits)) and len(set(progs)) == len(progs)
        assert all(len(p) >= 1 and set(p) <= set(range(depth)) for p in progs)


def test_k_is_capped_by_the_distinct_edits_in_one_log_line(caplog):
    method = RandomSingleEdits(1, seed=0)  # one layer: only "repeat layer 0"
    with caplog.at_level(logging.WARNING):
        out = method.candidates(PROBLEMS, 5)
        method.candidates(PROBLEMS, 5)
    assert [len(r) for r in out] == [1, 1, 1] and list(out[0][0].program) == [0, 0]
    assert len([r for r in caplog.records if "distinct single edits" in r.getMessage()]) == 1
    many = RandomSingleEdits(3, seed=0).candidates(PROBLEMS, 100)
    assert all(len(r) == len(single_edits(3)) for r in many)  # every edit once, no endless loop
