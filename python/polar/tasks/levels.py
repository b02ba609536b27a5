"""Synthetic arithmetic problems in five difficulty levels, split by a hash of the expression."""
from __future__ import annotations

import hashlib
import logging
import random
from typing import Callable

from ..errors import UserError
from .problem import Problem

logger = logging.getLogger(__name__)


SPLITS: tuple[str, ...] = ("train", "validation", "test")
#: Share (percent) of each level's problem space assigned to each split, by a hash of the problem's
#: expression: a problem belongs to exactly one split, whatever the seed or n.
_SPLIT_BUCKETS = {"train": range(0, 50), "validation": range(50, 65), "test": range(65, 100)}


def split_of(expression: str) -> str:
    """The split (train / validation / test) that owns an arithmetic expression such as ``"3 + 4"``."""
    bucket = int.from_bytes(hashlib.sha256(expression.encode()).digest()[:8], "big") % 100
    for split, rng in _SPLIT_BUCKETS.items():
        if bucket in rng:
            return split
    raise AssertionError(bucket)  # pragma: no cover


def _pairs(first: range, second: range, both_orders: bool = True,
           keep: Callable[[int, int], bool] = lambda a, b: True) -> Callable[[], list[tuple[int, ...]]]:
    def terms() -> list[tuple[int, ...]]:
        out: dict[tuple[int, ...], None] = {}
        for a in first:
            for b in second:
                for t in ((a, b), (b, a)) if both_orders else ((a, b),):
                    if keep(*t):
                        out[t] = None
        return list(out)
    return terms


def _triples(values: range) -> Callable[[], list[tuple[int, ...]]]:
    return lambda: [(a, b, c) for a in values for b in values for c in values]


def _no_carry(a: int, b: int) -> bool:
    return a % 10 + b % 10 < 10


#: Level -> (all its sums as tuples of terms, description). Calibrated on SmolLM2-135M-Instruct
#: (full program, greedy, few-shot prompt, 100 problems per level): base accuracy 64 / 30 / 26 /
#: 13 / 9 % for levels 1..5, and 24 single edits of the full program (skip or repeat one block of
#: 1..4 layers) fix problems on every level (README, "Synthetic problems").
SYNTHETIC_LEVELS: dict[int, tuple[Callable[[], list[tuple[int, ...]]], str]] = {
    1: (_pairs(range(0, 10), range(0, 10)), "a + b, a and b in 0..9"),
    2: (_pairs(range(1, 10), range(10, 30)), "a + b, one term in 1..9, the other in 10..29 (either order)"),
    3: (_pairs(range(10, 51), range(10, 51), keep=_no_carry), "a + b, a and b in 10..50, no carry in the units"),
    4: (_pairs(range(10, 51), range(10, 51)), "a + b, a and b in 10..50"),
    5: (_triples(range(1, 10)), "a + b + c, each in 1..9"),
}


def level_problems(level: int) -> list[tuple[str, int]]:
    """Every distinct ``(expression, value)`` of ``level``, in a fixed order."""
    if level not in SYNTHETIC_LEVELS:
        raise UserError(f"synthetic level must be one of {sorted(SYNTHETIC_LEVELS)}, got {level!r}")
    return [(" + ".join(map(str, t)), sum(t)) for t in SYNTHETIC_LEVELS[level][0]()]


def synthetic(level: int, n: int, split: str = "test", seed: int = 0) -> list[Problem]:
    """``n`` arithmetic problems (``What is 3 + 4?``) of difficulty ``level`` (1..5) from ``split``.

    Deterministic in ``(level, n, split, seed)``. Every expression belongs to exactly one split (by
    a hash of its text), so no problem appears in two splits whatever the seeds. The split's
    problems are drawn without repetition in an order fixed by the seed; past the split's size
    (level 1 has 100 problems, 36 of them in the test split) they repeat in that order to reach
    ``n`` (a warning is logged), so ``n`` draws estimate the accuracy on the split. ``ValueError``
    for an unknown level or split, or a negative ``n``.
    """
    if split not in SPLITS:
        raise UserError(f"split must be one of {SPLITS}, got {split!r}")
    if n < 0:
        raise UserError(f"n must be >= 0, got {n}")
    found = [(e, v) for e, v in level_problems(level) if split_of(e) == split]
    random.Random(f"polar-synthetic/{level}/{split}/{seed}").shuffle(found)
    if not found and n:
        raise UserError(f"synthetic level {level} has no {split} problems")  # pragma: no cover
    if len(found) < n:
        logger.warning("synthetic level %d has %d distinct %s problems; repeating them to reach %d",
                       level, len(found), split, n)
    problems = []
    for k in range(n):
        expression, value = found[k % len(found)]
        problems.append(Problem(id=f"synthetic-L{level}-{split}-s{seed}-{k}", question=f"What is {expression}?",
                                answer=str(value), source="synthetic", level=level))
    return problems
