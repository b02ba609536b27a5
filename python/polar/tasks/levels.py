"""Synthetic arithmetic problems in five difficulty levels, split by a hash of the expression."""
from __future__ import annotations

import hashlib
import logging
import random
from typing import Callable

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


def _sum_of(*ranges: tuple[int, int]) -> Callable[[random.Random], list[int]]:
    def make(rng: random.Random) -> list[int]:
        terms = [rng.randint(lo, hi) for lo, hi in ranges]
        rng.shuffle(terms)
        return terms
    return make


def _mixed_small(rng: random.Random) -> list[int]:
    terms = [rng.randint(1, 9), rng.randint(10, 20)]
    rng.shuffle(terms)
    return terms


#: Level -> (generator of the terms of a sum, description, number of distinct problems).
#: Calibrated on SmolLM2-135M-Instruct (full program, greedy, few-shot prompt): accuracy falls from
#: about two thirds (level 1) to near zero (level 5); the model adds single digits and little more.
SYNTHETIC_LEVELS: dict[int, tuple[Callable[[random.Random], list[int]], str, int]] = {
    1: (_sum_of((0, 9), (0, 9)), "a + b, a and b in 0..9", 100),
    2: (_mixed_small, "a + b, one in 1..9 and one in 10..20", 2 * 9 * 11),
    3: (_sum_of((10, 30), (10, 30)), "a + b, a and b in 10..30", 21 * 21),
    4: (_sum_of((10, 99), (10, 99)), "a + b, a and b in 10..99", 90 * 90),
    5: (_sum_of((10, 99), (10, 99), (10, 99)), "a + b + c, each in 10..99", 90 ** 3),
}


def synthetic(level: int, n: int, split: str = "test", seed: int = 0) -> list[Problem]:
    """``n`` arithmetic problems (``What is 3 + 4?``) of difficulty ``level`` (1..5) from ``split``.

    Deterministic in ``(level, n, split, seed)``. Every expression belongs to exactly one split (by
    a hash of its text), so no problem appears in two splits whatever the seeds. Problems are drawn
    without repetition while the split has unused ones; the small levels (level 1 has 100 problems,
    about 35 of them in the test split) then repeat their split's problems in a fixed order to
    reach ``n`` (a warning is logged), so ``n`` draws estimate the accuracy on the split. ``ValueError``
    for an unknown level or split, or a negative ``n``.
    """
    if level not in SYNTHETIC_LEVELS:
        raise ValueError(f"synthetic level must be one of {sorted(SYNTHETIC_LEVELS)}, got {level!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    make, _, space = SYNTHETIC_LEVELS[level]
    rng = random.Random(f"polar-synthetic/{level}/{split}/{seed}")
    found: list[tuple[str, int]] = []
    seen: set[str] = set()
    misses, max_misses = 0, 50 * space + 1000
    while len(found) < n and misses < max_misses:
        terms = make(rng)
        expression = " + ".join(map(str, terms))
        if expression in seen or split_of(expression) != split:
            misses += 1
            continue
        misses = 0
        seen.add(expression)
        found.append((expression, sum(terms)))
    if not found and n:
        raise ValueError(f"synthetic level {level} has no {split} problems")  # pragma: no cover
    if len(found) < n:
        logger.warning("synthetic level %d has %d distinct %s problems; repeating them to reach %d",
                       level, len(found), split, n)
    problems = []
    for k in range(n):
        expression, value = found[k % len(found)]
        problems.append(Problem(id=f"synthetic-L{level}-{split}-s{seed}-{k}", question=f"What is {expression}?",
                                answer=str(value), source="synthetic", level=level))
    return problems
