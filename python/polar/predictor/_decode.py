"""Predicted logits -> top-k programs (paper section 3.2; docs/architecture.md section 11).

1. **Boundaries.** Layer ``i`` starts a segment when ``sigmoid(seg_logits[i]) > threshold``,
   ``z_seg[0] = 1`` always, and no segment is longer than ``k_max``. When plain thresholding
   would make a segment too long, the mask is the best one under the constraint: the mask
   maximising ``sum_i z_i * (seg_logits[i] - logit(threshold))`` over ``i >= 1`` (an exact dynamic
   program, ``O(D * k_max)``; with no long run it is the thresholded mask itself; with
   ``threshold = 0.5`` it is the most likely valid mask).
2. **Ops.** An op is a run count ``0 .. max_runs`` (``op_logits`` has ``C = max_runs + 1``
   classes: skip, keep, repeat, three runs, ...). Beam search over the segments in layer order:
   each partial program is extended by the ``ops_per_segment`` most likely ops of the next
   segment (default: all ``C``; ranked by the op logits at its first layer), and the
   ``max(beam_size, k)`` best by log-probability are kept. Programs that skip every segment are
   not programs and are never produced (after an all-skip prefix the last segment chooses among
   the ops that run it). Scores add up, so with every op tried and a beam wider than ``k`` the
   top-k is exact (tests check it against brute force).
3. **Re-ranking.** ``score = log_prob - length_penalty * len(program) / D``; the ``k`` best
   distinct programs by ``score`` are returned (``length_penalty = 0``: ordered by log-prob).
4. **Fallback.** Only with ``fallback_full``: the full program is appended after the k
   predictions (flagged ``fallback=True``) when it is not already one of them; it never
   replaces a prediction.

``log_prob`` is the log-probability of the mask and the ops under the predictor's independent
Bernoulli (boundaries) and categorical (ops) outputs.

Example (D = 4, k_max = 2): boundary probabilities ``(1, .1, .9, .2)`` give ``z_seg = (1, 0, 1, 0)``,
segments ``0..1`` and ``2..3``; op probabilities (keep .7, repeat .2, skip .1) for the first and
(skip .6, keep .3, repeat .1) for the second give, best first, ``[0, 1]`` (keep, skip),
``[0, 1, 2, 3]`` (keep, keep), ``[0, 1, 0, 1]`` (repeat, skip), ...
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from ..programs import CompactProgram, Op, Program, build, full
from ._config import DecodeConfig


@dataclass(frozen=True)
class Prediction:
    """One predicted program for one question."""

    program: Program  # the layers to run
    compact: CompactProgram  # the representation the decoder scored (decodes to `program`; not
    #                          necessarily canonical: `polar.programs.parse(program, D)` gives that)
    score: float  # ranking score: log_prob - length_penalty * len(program) / D
    log_prob: float  # log-probability of the boundaries and ops under the predictor
    fallback: bool = False  # True only for the full program appended by DecodeConfig.fallback_full


def boundary_mask(seg_logits: Sequence[float], k_max: int, threshold: float = 0.5) -> tuple[int, ...]:
    """The boundary mask ``z_seg`` (``D`` entries) from boundary logits (see the module docstring)."""
    D = len(seg_logits)
    if D < 1:
        raise ValueError("seg_logits is empty")
    bias = math.log(threshold / (1.0 - threshold))
    gain = [float(b) - bias for b in seg_logits]  # value of starting a segment at layer i (i >= 1)
    best = [0.0] * D  # best[i]: best total gain of layers 0..i given a segment starts at i
    prev = [-1] * D  # the previous segment start on that best path
    for i in range(1, D):
        j = max(range(max(0, i - k_max), i), key=lambda j: (best[j], j))  # ties: the later start
        best[i], prev[i] = gain[i] + best[j], j
    last = max(range(max(0, D - k_max), D), key=lambda j: (best[j], j))
    z = [0] * D
    i = last
    while i >= 0:
        z[i] = 1
        i = prev[i]
    return tuple(z)


def mask_log_prob(seg_logits: torch.Tensor, z_seg: Sequence[int]) -> float:
    """``sum_i log P(z_i)`` under independent Bernoullis ``sigmoid(seg_logits)`` ([D])."""
    z = torch.tensor(z_seg, dtype=seg_logits.dtype)  # [D]
    return float(-F.binary_cross_entropy_with_logits(seg_logits, z, reduction="sum"))


def beam_ops(op_log_probs: Sequence[Sequence[float]], width: int,
             ops_per_segment: int | None = None) -> list[tuple[tuple[int, ...], float]]:
    """Beam search over one op (run count) per segment: ``op_log_probs[s][c]`` ([S, C]) is
    ``log P(c runs)`` of segment ``s``.

    Returns up to ``width`` ``(ops, log_prob)`` pairs (at least one), best first (ties: smaller
    op values first), none of which skips every segment: after all-skip prefixes, the last
    segment's ``ops_per_segment`` (None: all) best ops are taken among run counts >= 1.
    """
    S = len(op_log_probs)
    beams: list[tuple[tuple[int, ...], float]] = [((), 0.0)]
    for s, lp in enumerate(op_log_probs):
        ranked = sorted(range(len(lp)), key=lambda c: (-lp[c], c))
        cand = []
        for ops, score in beams:
            must_run = s == S - 1 and all(o == Op.SKIP for o in ops)  # else every segment is skipped
            top = [c for c in ranked if c != Op.SKIP] if must_run else ranked
            for c in top[:ops_per_segment]:
                cand.append((ops + (c,), score + lp[c]))
        cand.sort(key=lambda t: (-t[1], t[0]))
        beams = cand[:width]
    return beams


def decode(seg_logits: torch.Tensor, op_logits: torch.Tensor, k: int, k_max: int,
           config: DecodeConfig = DecodeConfig()) -> list[Prediction]:
    """Top-``k`` distinct programs for one question from ``seg_logits`` [D] and ``op_logits``
    [D, C] (``C = max_runs + 1`` op classes, ``C >= 2``). Raises ``ValueError`` for other shapes,
    ``k < 1`` or ``config.ops_per_segment > C``."""
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    D = seg_logits.shape[0]
    if seg_logits.dim() != 1 or op_logits.dim() != 2 or op_logits.shape[0] != D or op_logits.shape[1] < 2:
        raise ValueError(f"expected seg_logits [D] and op_logits [D, C] with C >= 2 op classes, got "
                         f"{tuple(seg_logits.shape)}, {tuple(op_logits.shape)}")
    C = op_logits.shape[1]
    if config.ops_per_segment is not None and config.ops_per_segment > C:
        raise ValueError(f"ops_per_segment is {config.ops_per_segment} but op_logits has {C} op classes")
    seg_logits = seg_logits.detach().double().cpu()  # [D]
    op_lp = F.log_softmax(op_logits.detach().double().cpu(), dim=-1)  # [D, C]
    z = boundary_mask(seg_logits.tolist(), k_max, config.threshold)
    z_lp = mask_log_prob(seg_logits, z)
    starts = [i for i, b in enumerate(z) if b]
    seg_lp = op_lp[starts].tolist()  # [S, C]
    found: dict[Program, Prediction] = {}
    for ops, lp in beam_ops(seg_lp, max(config.beam_size, k), config.ops_per_segment):
        program = build(z, ops, k_max, max_runs=C - 1)
        if program in found:  # cannot happen for one mask (the program fixes the ops); kept as a guard
            continue
        log_prob = z_lp + lp
        score = log_prob - config.length_penalty * len(program) / D
        found[program] = Prediction(program, CompactProgram(z, ops), score, log_prob)
    preds = sorted(found.values(), key=lambda p: (-p.score, tuple(p.program)))[:k]
    if config.fallback_full:
        whole = full(D)
        if all(p.program != whole for p in preds):
            log_prob = z_lp + sum(row[Op.KEEP] for row in seg_lp)
            score = log_prob - config.length_penalty
            keep = (Op.KEEP,) * len(starts)
            preds.append(Prediction(whole, CompactProgram(z, keep), score, log_prob, fallback=True))
    return preds


def decode_batch(seg_logits: torch.Tensor, op_logits: torch.Tensor, k: int, k_max: int,
                 config: DecodeConfig = DecodeConfig()) -> list[list[Prediction]]:
    """:func:`decode` for every row of ``seg_logits`` [B, D] and ``op_logits`` [B, D, C]."""
    return [decode(seg_logits[r], op_logits[r], k, k_max, config) for r in range(seg_logits.shape[0])]
