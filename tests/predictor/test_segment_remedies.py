"""The reference code's remedies for the segments head (TrainConfig options) and sweep supervision."""
import json
import math

import numpy as np
import pytest
import torch

from polar.predictor import SearchRecord, TrainConfig, build_targets, records_from_sweep, train_from_files
from polar.predictor._train import _weights, predictor_loss
from polar.programs import Op, Program
from polar.search import LibraryEntry, SweepMatrix
from polar.search._library import library_sha256, library_to_json

D, K_MAX = 6, 3
FULL = tuple(range(D))
SKIP = (0, 1, 3, 4, 5)
SKIP2 = (0, 1, 4, 5)
REPEAT = (0, 1, 2, 3, 2, 3, 4, 5)


def _logits(B, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, D, generator=g, dtype=torch.float64), torch.randn(B, D, 3, generator=g, dtype=torch.float64)


def _loss(targets, seg, ops, lam=0.0):
    w, anti = _weights(targets)
    return predictor_loss(seg, ops, torch.stack([t.seg_target for t in targets]).double(),
                          torch.stack([t.op_target for t in targets]).double(), w.double(), anti, lam)


def test_anti_original_term_is_zero_when_the_full_program_is_valid_and_mean_keep_otherwise():
    records = [SearchRecord("a", "q", (SKIP, FULL), 1.0), SearchRecord("b", "q", (REPEAT,), 0.0),
               SearchRecord("c", "q", (SKIP,), None)]
    targets, _ = build_targets(records, D, K_MAX, 0.3)
    assert [t.full_valid for t in targets] == [True, False, False]
    seg, ops = _logits(3)
    base = _loss(targets, seg, ops)[0]
    only_valid = _loss(targets[:1], seg[:1], ops[:1], lam=2.0)[0]
    assert only_valid == pytest.approx(float(_loss(targets[:1], seg[:1], ops[:1])[0]))  # nothing flagged: no term
    keep = torch.softmax(ops, -1)[..., Op.KEEP].mean(-1)  # [3] mean P(keep) over the layers
    with_term = _loss(targets, seg, ops, lam=0.5)[0]
    assert float(with_term - base) == pytest.approx(0.5 * float(keep[1:].mean()))  # mean over the flagged problems


def test_length_preference_weights_and_per_problem_normalisation():
    beta = 0.1
    records = [SearchRecord("a", "q", (SKIP2, REPEAT), 0.0), SearchRecord("b", "q", (SKIP,), 0.0)]
    plain, _ = build_targets(records, D, K_MAX, 0.3)
    assert [t.weight for t in plain] == [1.0, 1.0]
    lp, _ = build_targets(records, D, K_MAX, 0.3, lenpref_beta=beta)
    l2, l8, l5 = math.exp(-beta * 4), math.exp(-beta * 8), math.exp(-beta * 5)
    assert lp[0].weight == pytest.approx((l2 + l8) / 2) and lp[1].weight == pytest.approx(l5)
    # the shorter program dominates the soft targets: layer 2 starts a segment only in REPEAT's parse
    one = {p: build_targets([SearchRecord("x", "q", (p,), 0.0)], D, K_MAX, 0.3)[0][0] for p in (SKIP2, REPEAT)}
    expect = (l2 * one[SKIP2].seg_target + l8 * one[REPEAT].seg_target) / (l2 + l8)
    assert torch.allclose(lp[0].seg_target, expect)
    summed, _ = build_targets(records, D, K_MAX, 0.3, lenpref_beta=beta, per_problem_normalize=False)
    assert summed[0].weight == pytest.approx(l2 + l8)
    unnorm, _ = build_targets(records, D, K_MAX, 0.3, per_problem_normalize=False)
    assert [t.weight for t in unnorm] == [2.0, 1.0]  # a problem counts once per valid program


@pytest.mark.parametrize("normalize", [True, False])
def test_weighted_soft_target_loss_equals_the_reference_per_program_loss(normalize):
    # The reference trains on (question, program) examples with weight exp(-beta len) (/ n_p when
    # normalised), loss = sum w loss / sum w. With full_program_weight 1 the soft targets give the same.
    beta = 0.07
    records = [SearchRecord("a", "q", (SKIP2, REPEAT, FULL), 1.0), SearchRecord("b", "q", (SKIP,), 0.0)]
    targets, _ = build_targets(records, D, K_MAX, 1.0, lenpref_beta=beta, per_problem_normalize=normalize)
    seg, ops = _logits(2, seed=3)
    ours = _loss(targets, seg, ops)[0]
    losses, weights = [], []
    for p_i, rec in enumerate(records):
        for prog in rec.valid_programs:
            (t,), _ = build_targets([SearchRecord("x", "q", (prog,), 0.0)], D, K_MAX, 1.0)
            losses.append(_loss([t], seg[p_i:p_i + 1], ops[p_i:p_i + 1])[0])
            weights.append(math.exp(-beta * len(prog)) / (len(rec.valid_programs) if normalize else 1))
    reference = sum(w * l for w, l in zip(weights, losses)) / sum(weights)
    assert float(ours) == pytest.approx(float(reference))


def test_drop_full_if_shorter():
    records = [SearchRecord("a", "q", (SKIP, FULL), 1.0), SearchRecord("b", "q", (FULL,), 1.0)]
    targets, report = build_targets(records, D, K_MAX, 0.3, drop_full_if_shorter=True)
    (only_skip,), _ = build_targets([SearchRecord("x", "q", (SKIP,), 0.0)], D, K_MAX, 0.3)
    assert torch.equal(targets[0].seg_target, only_skip.seg_target)
    assert torch.equal(targets[0].op_target, only_skip.op_target)
    assert Program(FULL) in targets[0].programs and targets[0].full_valid  # still a valid program
    assert report.full_dropped == 1 and report.full_downweighted == 0
    assert targets[1].programs == {Program(FULL)}  # no shorter program: the full program stays


def test_train_config_checks_the_new_options():
    with pytest.raises(ValueError):
        TrainConfig(anti_original_lambda=-1)
    with pytest.raises(ValueError):
        TrainConfig(lenpref_beta=-0.1)
    assert TrainConfig.from_dict(TrainConfig(lenpref_beta=0.05).to_dict()).lenpref_beta == 0.05


def _matrix():
    entries = [LibraryEntry("full", FULL), LibraryEntry("skip 2", SKIP), LibraryEntry("repeat 2-3", REPEAT),
               LibraryEntry("T=0.7 #0", FULL, 0.7, 0)]
    questions = ["skip this one", "repeat that one", "nothing works", "skip or full"]
    correct = np.array([[0, 1, 0, 1], [0, 0, 1, 0], [0, 0, 0, 1], [1, 1, 0, 0]], bool)
    records = [{"id": f"p{i}", "question": q, "gt_ans": "1", "source": "toy", "level": 1, "choices": None,
                "num_layers": D} for i, q in enumerate(questions)]
    z = np.zeros(correct.shape)
    return SweepMatrix(records, entries, correct, [[None] * 4] * 4, z, z, z.astype(int), {"model": "toy-llm"})


def test_records_from_sweep():
    recs = records_from_sweep(_matrix())
    assert [r.valid_programs for r in recs] == [(SKIP,), (REPEAT,), (), (FULL, SKIP)]  # samples are not programs
    assert [r.initial_score for r in recs] == [0.0, 0.0, 0.0, 1.0]
    assert recs[0].settings == {"model": "toy-llm", "num_layers": D}


def test_segments_head_trains_on_sweep_files(tmp_path, toy):
    m = _matrix()
    sha = library_sha256(m.entries)
    path = tmp_path / "sweep.jsonl"
    path.with_name("sweep.jsonl.library.json").write_text(json.dumps(
        {"spec": "toy", "sha256": sha, "entries": library_to_json(m.entries)}))
    with open(path, "w") as f:
        for i, r in enumerate(m.records):
            f.write(json.dumps({**r, "correct": [int(c) for c in m.correct[i]], "texts": [""] * 4,
                                "answers": [None] * 4, "logprob_first": [None] * 4, "logprob_mean": [None] * 4,
                                "new_tokens": [0] * 4, "model": "toy-llm", "library_sha256": sha}) + "\n")
    predictor = train_from_files([], tmp_path / "ck", toy.tiny_config(), sweep=[path],
                                 train_config=TrainConfig(epochs=2, val_fraction=0.0, anti_original_lambda=0.5,
                                                          lenpref_beta=0.05, drop_full_if_shorter=True),
                                 encoder=toy.toy_llm_encoder(), progress=False)
    training = predictor.metadata["training"]
    assert training["targets"]["with_targets"] == 3 and training["targets"]["full_dropped"] == 1
    assert str(path) in training["data_files"]
    assert training["train_config"]["anti_original_lambda"] == 0.5
