"""Decoding: boundary masks under K_max, beam search over ops, re-ranking, fallback."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from polar.predictor import DecodeConfig, decode
from polar.predictor._decode import boundary_mask, mask_log_prob
from polar.programs import Op, Program, build, full, in_space, segments


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _random_logits(D: int, seed: int, scale: float = 2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(D, generator=g) * scale, torch.randn(D, 3, generator=g) * scale


def _valid_masks(D: int, k_max: int):
    for rest in itertools.product((0, 1), repeat=D - 1):
        z = (1,) + rest
        if all(b - a + 1 <= k_max for a, b in segments(z)):
            yield z


def test_docstring_example():
    seg = torch.tensor([5.0, _logit(0.1), _logit(0.9), _logit(0.2)])
    ops = torch.log(torch.tensor([[0.1, 0.7, 0.2], [1, 1, 1], [0.6, 0.3, 0.1], [1, 1, 1]]))
    preds = decode(seg, ops, k=3, k_max=2)
    assert [p.program for p in preds] == [Program([0, 1]), Program([0, 1, 2, 3]), Program([0, 1, 0, 1])]
    assert all(p.compact.z_seg == (1, 0, 1, 0) for p in preds)
    mask_lp = math.log(torch.sigmoid(torch.tensor(5.0)).item() * 0.9 * 0.9 * 0.8)
    assert preds[0].log_prob == pytest.approx(mask_lp + math.log(0.7 * 0.6))
    assert preds[2].log_prob == pytest.approx(mask_lp + math.log(0.2 * 0.6))
    assert preds[0].score == preds[0].log_prob and not preds[0].fallback


@pytest.mark.parametrize("k_max,threshold", [(2, 0.5), (3, 0.5), (3, 0.3), (4, 0.8)])
def test_boundary_mask_is_the_best_mask_under_k_max(k_max, threshold):
    """Against brute force over every mask whose segments fit in k_max."""
    D = 8
    for seed in range(25):
        seg, _ = _random_logits(D, seed)
        if seed % 5 == 0:
            seg = seg - 6  # no boundary wanted anywhere: K_max must force them
        gain = seg - _logit(threshold)

        def value(z):
            return sum(gain[i].item() for i in range(1, D) if z[i])

        z = boundary_mask(seg.tolist(), k_max, threshold)
        assert z[0] == 1 and all(b - a + 1 <= k_max for a, b in segments(z))
        best = max(value(m) for m in _valid_masks(D, k_max))
        assert value(z) == pytest.approx(best, abs=1e-9)
    # With no long run, the mask is plain thresholding.
    seg = torch.tensor([0.0, 3.0, -3.0, 3.0, 3.0, -3.0, 3.0, -3.0])
    assert boundary_mask(seg.tolist(), 4, 0.5) == (1, 1, 0, 1, 1, 0, 1, 0)


@pytest.mark.parametrize("D,k_max", [(5, 2), (6, 3), (7, 4)])
def test_beam_search_matches_brute_force(D, k_max):
    """With every op tried and a beam wider than k, beam search returns the exact top-k programs
    (by log-prob) among all op assignments of the decoded mask, excluding the empty program."""
    k = 5
    for seed in range(10):
        seg, ops = _random_logits(D, seed)
        if seed % 3 == 0:
            ops[:, Op.SKIP] += 4  # skips dominate: the all-skip exclusion matters
        preds = decode(seg, ops, k, k_max, DecodeConfig(beam_size=k + 1, ops_per_segment=3))
        z = preds[0].compact.z_seg
        lp = F.log_softmax(ops.double(), -1)
        starts = [a for a, _ in segments(z)]
        z_lp = mask_log_prob(seg.double(), z)
        brute = []
        for assignment in itertools.product(list(Op), repeat=len(starts)):
            if all(o == Op.SKIP for o in assignment):
                continue
            brute.append((z_lp + sum(lp[s, o].item() for s, o in zip(starts, assignment)), build(z, assignment, k_max)))
        brute.sort(key=lambda t: -t[0])
        assert [p.log_prob for p in preds] == pytest.approx([s for s, _ in brute[:k]], abs=1e-9)
        assert {p.program for p in preds} == {prog for _, prog in brute[:k]} or \
            brute[k - 1][0] == pytest.approx(brute[k][0])  # (a tie at the cut could swap one)


def test_predictions_are_distinct_valid_in_space_sorted_and_respect_k_max():
    D, k_max = 12, 3
    for seed in range(30):
        seg, ops = _random_logits(D, seed, scale=3.0)
        if seed % 4 == 0:
            seg = seg - 10  # the network wants one long segment: K_max cuts it
        for cfg in (DecodeConfig(), DecodeConfig(beam_size=3, ops_per_segment=2), DecodeConfig(length_penalty=2.0)):
            preds = decode(seg, ops, 8, k_max, cfg)
            assert 1 <= len(preds) <= 8
            programs = [p.program for p in preds]
            assert len(set(programs)) == len(programs)
            scores = [p.score for p in preds]
            assert scores == sorted(scores, reverse=True)
            for p in preds:
                assert all(b - a + 1 <= k_max for a, b in p.compact.segments())
                assert p.compact.decode(k_max) == p.program and len(p.program) > 0
                assert in_space(p.program, D, k_max)
                assert p.score == pytest.approx(p.log_prob - cfg.length_penalty * len(p.program) / D)


def test_length_penalty_reranks_toward_shorter_programs():
    D = 6
    seg = torch.tensor([5.0, -5, -5, 5, -5, -5])  # segments 0..2, 3..5
    ops = torch.log(torch.tensor([[0.2, 0.3, 0.5]] * D))  # repeat > keep > skip everywhere
    plain = decode(seg, ops, 3, 3)
    assert len(plain[0].program) == 12  # repeat, repeat
    penalized = decode(seg, ops, 3, 3, DecodeConfig(length_penalty=5.0))
    assert len(penalized[0].program) == 3  # one segment skipped, the other kept
    assert [p.score for p in penalized] == sorted((p.score for p in penalized), reverse=True)
    assert penalized[0].log_prob < plain[0].log_prob


def test_fallback_full_only_when_asked_and_never_replacing():
    D = 6
    seg = torch.tensor([5.0, -5, -5, 5, -5, -5])
    ops = torch.log(torch.tensor([[0.1, 0.2, 0.7]] * D))  # full program = keep, keep: rank 4
    preds = decode(seg, ops, 2, 3)
    assert full(D) not in [p.program for p in preds] and len(preds) == 2
    with_fb = decode(seg, ops, 2, 3, DecodeConfig(fallback_full=True))
    assert [p.program for p in with_fb[:2]] == [p.program for p in preds]  # predictions untouched
    assert len(with_fb) == 3 and with_fb[2].program == full(D) and with_fb[2].fallback
    assert with_fb[2].log_prob == pytest.approx(mask_log_prob(seg, (1, 0, 0, 1, 0, 0)) + 2 * math.log(0.2), rel=1e-6)
    # Already predicted: not appended again.
    ops_keep = torch.log(torch.tensor([[0.1, 0.8, 0.1]] * D))
    top = decode(seg, ops_keep, 2, 3, DecodeConfig(fallback_full=True))
    assert top[0].program == full(D) and len(top) == 2 and not any(p.fallback for p in top)


def test_narrow_search_returns_fewer_and_k_widens_the_beam():
    seg = torch.tensor([5.0, -5, -5, 5, -5, -5])
    ops = torch.zeros(6, 3)
    assert len(decode(seg, ops, 5, 3, DecodeConfig(ops_per_segment=1))) == 1  # one choice per segment
    assert len(decode(seg, ops, 8, 3, DecodeConfig(beam_size=2))) == 8  # 3 * 3 - 1 programs exist
    with pytest.raises(ValueError, match="k must be positive"):
        decode(seg, ops, 0, 3)
    with pytest.raises(ValueError, match="ops_per_segment"):
        DecodeConfig(ops_per_segment=0)
    with pytest.raises(ValueError, match="ops_per_segment is 4 but op_logits has 3 op classes"):
        decode(seg, ops, 2, 3, DecodeConfig(ops_per_segment=4))  # the cap is the predictor's op count


def test_decode_returns_run_counts_the_op_logits_favour():
    """op_logits [D, max_runs + 1]: class c runs a segment c times."""
    seg = torch.tensor([5.0, -5, -5, 5, -5, -5])  # segments 0..2, 3..5
    ops = torch.zeros(6, 6)
    ops[0, Op.KEEP] = 8.0
    ops[3, 4] = 8.0  # the second segment four times
    ops[3, 5] = 6.0  # ... or five
    preds = decode(seg, ops, 3, 3)
    assert preds[0].program == Program([0, 1, 2] + [3, 4, 5] * 4)
    assert preds[0].compact.ops == (Op.KEEP, 4) and preds[1].compact.ops == (Op.KEEP, 5)
    assert preds[0].compact.decode(3) == preds[0].program and not in_space(preds[0].program, 6, 3)
    assert in_space(preds[0].program, 6, 3, max_runs=5)
    lp = F.log_softmax(ops.double(), -1)
    assert preds[0].log_prob == pytest.approx(mask_log_prob(seg.double(), (1, 0, 0, 1, 0, 0)) + lp[0, 1] + lp[3, 4])
    # Never skip every segment: with skip favoured everywhere, the last segment runs its best
    # non-zero count (here 5).
    ops = torch.zeros(6, 6)
    ops[:, Op.SKIP] = 9.0
    ops[3, 5] = 3.0
    top = decode(seg, ops, 1, 3)[0]
    assert top.compact.ops == (Op.SKIP, 5) and top.program == Program([3, 4, 5] * 5)
    with pytest.raises(ValueError, match=r"op_logits \[D, C\] with C >= 2"):
        decode(seg, torch.zeros(6, 1), 1, 3)


@pytest.mark.parametrize("D,k_max,C", [(5, 2, 4), (6, 3, 6)])
def test_beam_search_matches_brute_force_with_run_counts(D, k_max, C):
    k = 5
    for seed in range(6):
        g = torch.Generator().manual_seed(seed)
        seg, ops = torch.randn(D, generator=g) * 2, torch.randn(D, C, generator=g) * 2
        if seed % 3 == 0:
            ops[:, Op.SKIP] += 4
        preds = decode(seg, ops, k, k_max, DecodeConfig(beam_size=k + 1))
        z = preds[0].compact.z_seg
        lp = F.log_softmax(ops.double(), -1)
        starts = [a for a, _ in segments(z)]
        z_lp = mask_log_prob(seg.double(), z)
        brute = sorted(z_lp + sum(lp[s, o].item() for s, o in zip(starts, assignment))
                       for assignment in itertools.product(range(C), repeat=len(starts)) if any(assignment))[::-1]
        assert [p.log_prob for p in preds] == pytest.approx(brute[:k], abs=1e-9)
        assert all(max(p.compact.ops) < C for p in preds)
