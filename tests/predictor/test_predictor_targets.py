"""Supervision -> targets (canonical parse, weights, reporting) and the loss."""
from __future__ import annotations

import gzip
import json
import math

import pytest
import torch

from polar.predictor import SearchRecord, build_targets, load_search_results
from polar.predictor._train import predictor_loss, split_problems
from polar.programs import Op, Program, parse


def test_targets_hand_checked():
    """D = 6, k_max = 3. Valid: skip layer 2 (weight 1) and the full program (weight 0.3,
    since a shorter valid program exists).
    parse([0, 1, 3, 4, 5]) = segments 0..1 keep, 2 skip, 3..5 keep;
    parse([0..5])          = segments 0..2 keep, 3..5 keep (fewest segments)."""
    rec = SearchRecord("a", "q", ((0, 1, 3, 4, 5), (0, 1, 2, 3, 4, 5)), 1.0)
    (t,), report = build_targets([rec], num_layers=6, k_max=3, full_program_weight=0.3)
    W = 1.3
    assert torch.allclose(t.seg_target, torch.tensor([1.0, 0, 1 / W, 1.0, 0, 0]))
    expected_ops = torch.zeros(6, 3)
    expected_ops[0, Op.KEEP] = 1.0  # both programs start a kept segment at layer 0
    expected_ops[2, Op.SKIP] = 1 / W  # only the skip program starts a segment at 2
    expected_ops[3, Op.KEEP] = 1.0  # both start a kept segment at 3
    assert torch.allclose(t.op_target, expected_ops)
    assert torch.allclose(t.op_target.sum(-1), t.seg_target)
    assert t.programs == {Program([0, 1, 3, 4, 5]), Program(range(6))}
    assert report.full_downweighted == 1 and report.used == 2 and report.with_targets == 1


def test_full_program_keeps_weight_without_a_shorter_program():
    rec = SearchRecord("a", "q", ((0, 1, 2, 2, 3, 4, 5), (0, 1, 2, 3, 4, 5)), 1.0)
    (t,), report = build_targets([rec], 6, 3, 0.3)
    assert report.full_downweighted == 0
    # [0,1,2,2,3,4,5] -> 0..1 keep, 2 repeat, 3..5 keep; full -> 0..2 keep, 3..5 keep; equal weights.
    assert torch.allclose(t.seg_target, torch.tensor([1.0, 0, 0.5, 1.0, 0, 0]))
    assert t.op_target[2, Op.REPEAT] == 0.5 and t.op_target[3, Op.KEEP] == 1.0


def test_report_counts_every_program():
    records = [
        SearchRecord("ok", "q1", ((0, 1, 3, 4, 5), (0, 1, 3, 4, 5), (0, 2, 1, 3, 4, 5), (0, 0, 0, 1, 2, 3, 4, 5),
                                  (0, 9), ()), 0.0),
        SearchRecord("none", "q2", (), 0.0),  # nothing valid: contributes nothing
        SearchRecord("outside", "q3", ((5, 4, 3, 2, 1, 0),), 0.0),  # only a reordering: nothing usable
        SearchRecord("base", "q4", (), 1.0),  # the full program answered correctly
    ]
    targets, report = build_targets(records, 6, 3, 0.3)
    assert [t.id for t in targets] == ["ok", "base"]
    assert report.problems == 4 and report.with_targets == 2 and report.no_valid_program == 2
    assert report.programs == 6 + 0 + 1 + 1
    assert report.duplicates == 1 and report.not_in_space == 3 and report.invalid == 2
    assert report.used == 2 and report.full_from_initial_score == 1
    assert "not_in_space" in report.examples and "invalid" in report.examples
    assert "3 outside the compact space" in report.summary()
    base = targets[1]
    assert base.programs == {Program(range(6))}
    assert torch.equal(base.seg_target, torch.tensor([1.0, 0, 0, 1, 0, 0]))


def test_loss_equals_hand_computation():
    """The soft-target loss is the weighted mean over a problem's programs of
    (sum of boundary BCEs + sum of op CEs at segment starts) / D, averaged over problems."""
    D, k_max = 6, 3
    records = [SearchRecord("a", "q", ((0, 1, 3, 4, 5), (0, 1, 2, 3, 4, 5)), 1.0),
               SearchRecord("b", "q", ((0, 1, 2, 3, 2, 3, 4, 5),), 0.0)]
    targets, _ = build_targets(records, D, k_max, 0.3)
    g = torch.Generator().manual_seed(0)
    seg = torch.randn(2, D, generator=g, dtype=torch.float64)
    ops = torch.randn(2, D, 3, generator=g, dtype=torch.float64)
    loss, seg_loss, op_loss = predictor_loss(seg, ops, torch.stack([t.seg_target for t in targets]).double(),
                                             torch.stack([t.op_target for t in targets]).double())

    def sigmoid(x):
        return 1 / (1 + math.exp(-x))

    weighted = {"a": [((0, 1, 3, 4, 5), 1.0), ((0, 1, 2, 3, 4, 5), 0.3)], "b": [((0, 1, 2, 3, 2, 3, 4, 5), 1.0)]}
    per_problem_seg, per_problem_op = [], []
    for b, key in enumerate(["a", "b"]):
        total_w = sum(w for _, w in weighted[key])
        s_sum = o_sum = 0.0
        for program, w in weighted[key]:
            cp = parse(program, D, k_max)
            bce = sum(-math.log(sigmoid(seg[b, i].item())) if z else -math.log(1 - sigmoid(seg[b, i].item()))
                      for i, z in enumerate(cp.z_seg))
            starts = [i for i, z in enumerate(cp.z_seg) if z]
            ce = 0.0
            for i, op in zip(starts, cp.ops):
                logits = ops[b, i].tolist()
                ce += -(logits[op] - math.log(sum(math.exp(x) for x in logits)))
            s_sum += w * bce / D
            o_sum += w * ce / D
        per_problem_seg.append(s_sum / total_w)
        per_problem_op.append(o_sum / total_w)
    assert seg_loss.item() == pytest.approx(sum(per_problem_seg) / 2, rel=1e-6)  # targets are float32
    assert op_loss.item() == pytest.approx(sum(per_problem_op) / 2, rel=1e-6)  # targets are float32
    assert loss.item() == pytest.approx(seg_loss.item() + op_loss.item(), rel=1e-12)


def test_load_search_results(tmp_path, toy):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl.gz"
    toy.write_results(a, toy.family_records(4), settings={"model": "m", "num_layers": 6})
    with gzip.open(b, "wt") as f:
        f.write(json.dumps({"id": "x", "question": "q?", "initial_score": 1, "final_valid_transitions": [[0, 1]],
                            "final_invalid_transitions": [[1]]}) + "\n\n")
    recs = load_search_results([a, b])
    assert [r.id for r in recs] == ["p0", "p1", "p2", "p3", "x"]
    assert recs[0].valid_programs == ((0, 1, 3, 4, 5), (0, 1, 2, 3, 4, 5)) and recs[0].initial_score == 1.0
    assert recs[0].settings == {"model": "m", "num_layers": 6} and recs[0].source == f"{a}:1"
    assert recs[-1].valid_programs == ((0, 1),) and recs[-1].initial_score == 1.0

    with pytest.raises(ValueError, match="appears twice"):
        load_search_results([a, a])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "question": "q", "final_valid_transitions": [[0]]}\n{"id": 2, "question": "q"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2 is not a search record \(missing final_valid_transitions\)"):
        load_search_results(bad)
    bad.write_text("{not json\n")  # a torn line is skipped (with a warning): nothing is left
    with pytest.raises(ValueError, match=r"no search records in .*bad.jsonl"):
        load_search_results(bad)
    with pytest.raises(FileNotFoundError):
        load_search_results(tmp_path / "missing.jsonl")


def test_load_search_results_limit_takes_the_first_records_of_each_file(tmp_path, toy):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    toy.write_results(a, toy.family_records(4), settings={"model": "m", "num_layers": 6})
    b.write_text("".join(json.dumps({"id": f"x{i}", "question": "q?", "final_valid_transitions": [[0, 1]]}) + "\n"
                         for i in range(3)))
    assert [r.id for r in load_search_results([a, b], limit=2)] == ["p0", "p1", "x0", "x1"]
    assert len(load_search_results([a, b], limit=10)) == 7
    with pytest.raises(ValueError, match="limit must be a positive int"):
        load_search_results(a, limit=0)


def test_split_is_by_problem_and_stable():
    ids = [f"q{i}" for i in range(100)]
    train, val = split_problems(ids, 0.2, seed=3)
    assert len(val) == 20 and sorted(train + val) == list(range(100))
    # Stable under reordering and added problems: a problem's split depends on its id and the seed.
    train2, val2 = split_problems(ids[::-1] + ["extra"], 0.2, seed=3)
    val_ids = {ids[i] for i in val}
    val2_ids = {(ids[::-1] + ["extra"])[i] for i in val2}
    assert len(val_ids & val2_ids) >= 18
    assert split_problems(ids, 0.2, seed=4)[1] != val
    assert split_problems(ids, 0.0, seed=3) == (list(range(100)), [])


def test_targets_with_max_runs_keep_programs_the_paper_space_drops():
    """D = 6, k_max = 3: one problem whose valid programs run a block 2, 3 and 5 times (as
    polar search's repeats do), one 6 times, and one reordering."""
    twice = (0, 1, 2, 3, 2, 3, 4, 5)  # 0..1 keep, 2..3 repeat, 4..5 keep
    thrice = (0, 1, 2, 3, 2, 3, 2, 3, 4, 5)  # 2..3 run 3 times
    five = (0, 1, 1, 1, 1, 1, 2, 3, 4, 5)  # layer 1 run 5 times
    six = (0, 1, 2, 3) + (2, 3) * 5 + (4, 5)  # 2..3 run 6 times: outside even at max_runs = 5
    reordered = (0, 2, 1, 3, 4, 5)
    rec = SearchRecord("a", "q", (twice, thrice, five, six, reordered), 0.0)

    (t2,), r2 = build_targets([rec], 6, 3, 0.3)
    assert r2.used == 1 and r2.not_in_space == 4 and t2.op_target.shape == (6, 3)
    assert t2.programs == {Program(twice)}
    assert "a segment runs at most twice" in r2.examples["not_in_space"]

    (t5,), r5 = build_targets([rec], 6, 3, 0.3, max_runs=5)
    assert r5.used == 3 and r5.not_in_space == 2 and r5.programs == 5  # 2 more programs kept
    assert t5.programs == {Program(twice), Program(thrice), Program(five)}
    assert t5.op_target.shape == (6, 6) and torch.allclose(t5.op_target.sum(-1), t5.seg_target)
    # twice: [0..1 keep][2..3 x2][4..5 keep]; thrice: [0..1 keep][2..3 x3][4..5 keep];
    # five: [0 keep][1 x5][2..4 keep][5 keep] (fewest segments, then larger first).
    assert torch.allclose(t5.seg_target, torch.tensor([1.0, 1 / 3, 1.0, 0.0, 2 / 3, 1 / 3]))
    expected = torch.zeros(6, 6)
    expected[0, Op.KEEP] = 1.0
    expected[1, 5] = 1 / 3
    expected[2, Op.REPEAT] = expected[2, 3] = 1 / 3
    expected[2, Op.KEEP] = 1 / 3
    expected[4, Op.KEEP] = 2 / 3
    expected[5, Op.KEEP] = 1 / 3
    assert torch.allclose(t5.op_target, expected)
    assert parse(five, 6, 3, max_runs=5).ops == (Op.KEEP, 5, Op.KEEP, Op.KEEP)
    with pytest.raises(ValueError, match="max_runs must be a positive int"):
        build_targets([rec], 6, 3, 0.3, max_runs=0)


def test_paper_space_targets_do_not_move_under_a_larger_max_runs(toy):
    """Programs inside the paper's space parse the same with max_runs = 5: the targets are the
    max_runs = 2 ones with zero columns for 3, 4 and 5 runs."""
    records = toy.family_records(12)
    small, _ = build_targets(records, toy.D, toy.K_MAX, 0.3)
    large, _ = build_targets(records, toy.D, toy.K_MAX, 0.3, max_runs=5)
    for a, b in zip(small, large):
        assert torch.equal(a.seg_target, b.seg_target) and a.programs == b.programs
        assert torch.equal(a.op_target, b.op_target[:, :3]) and not b.op_target[:, 3:].any()
