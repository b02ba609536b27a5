"""Synthetic arithmetic levels 1..5 ("What is 23 + 41?"), plain Python, no polar imports.

Each level (and each probed candidate) is a finite set of expressions given by a term generator:
``terms(rng) -> (terms, ops)``.  ``space(name)`` enumerates the whole set (all are small enough), so
the distinct count is exact.  A sha256 hash of the expression text assigns every expression to one
split (train 50 / validation 15 / test 35), whatever the seed, as polar.synthetic does.

    problems(level, n, split=None, seed=0) -> list of (id, question, answer:int)

``split=None`` draws from all distinct problems (used for measuring).  The 5 chosen levels are
``LEVELS``; ``CANDIDATES`` holds everything that was probed (see results.json / probe.json).
"""
from __future__ import annotations

import hashlib
import itertools
import random

SPLIT_BUCKETS = {"train": range(0, 50), "validation": range(50, 65), "test": range(65, 100)}


def split_of(expression: str) -> str:
    bucket = int.from_bytes(hashlib.sha256(expression.encode()).digest()[:8], "big") % 100
    for split, r in SPLIT_BUCKETS.items():
        if bucket in r:
            return split
    raise AssertionError(bucket)


def evaluate(terms, ops) -> int:
    value = terms[0]
    for op, t in zip(ops, terms[1:]):
        value = value + t if op == "+" else value - t if op == "-" else value * t
    return value


def expression(terms, ops) -> str:
    out = str(terms[0])
    for op, t in zip(ops, terms[1:]):
        out += f" {op} {t}"
    return out


# --- candidate definitions: name -> (description, enumerator of (terms, ops)) ------------------

def _sum2(r1, r2, both_orders=True, pred=None):
    def gen():
        seen = set()
        pairs = itertools.product(range(r1[0], r1[1] + 1), range(r2[0], r2[1] + 1))
        for a, b in pairs:
            for t in ((a, b), (b, a)) if both_orders else ((a, b),):
                if t in seen or (pred and not pred(*t)):
                    continue
                seen.add(t)
                yield t, ("+",)
    return gen


def _sum3(lo, hi):
    def gen():
        for t in itertools.product(range(lo, hi + 1), repeat=3):
            yield t, ("+", "+")
    return gen


def _sub(a_range, b_range, pred=lambda a, b: a - b >= 0):
    def gen():
        for a in range(a_range[0], a_range[1] + 1):
            for b in range(b_range[0], b_range[1] + 1):
                if pred(a, b):
                    yield (a, b), ("-",)
    return gen


def _carry(a, b):  # units digits carry
    return (a % 10) + (b % 10) >= 10


CANDIDATES = {
    "add_0_9": ("a + b, a and b in 0..9", _sum2((0, 9), (0, 9))),
    "add_1d_10_20": ("a + b, one term in 1..9, the other in 10..20 (either order)", _sum2((1, 9), (10, 20))),
    "add_1d_10_29": ("a + b, one term in 1..9, the other in 10..29 (either order)", _sum2((1, 9), (10, 29))),
    "add_1d_10_49": ("a + b, one term in 1..9, the other in 10..49 (either order)", _sum2((1, 9), (10, 49))),
    "add_10_30": ("a + b, a and b in 10..30", _sum2((10, 30), (10, 30))),
    "add_10_50": ("a + b, a and b in 10..50", _sum2((10, 50), (10, 50))),
    "add_10_50_carry": ("a + b, a and b in 10..50, units digits carry", _sum2((10, 50), (10, 50), pred=_carry)),
    "add_10_50_nocarry": ("a + b, a and b in 10..50, no carry", _sum2((10, 50), (10, 50), pred=lambda a, b: not _carry(a, b))),
    "add_10_99": ("a + b, a and b in 10..99", _sum2((10, 99), (10, 99))),
    "add3_1_9": ("a + b + c, each in 1..9", _sum3(1, 9)),
    "add3_0_5": ("a + b + c, each in 0..5", _sum3(0, 5)),
    "sub_0_9": ("a - b, 0 <= b <= a <= 9", _sub((0, 9), (0, 9))),
    "sub_10_20": ("a - b, a in 10..20, b in 1..9", _sub((10, 20), (1, 9))),
    "sub_10_30_1d": ("a - b, a in 10..30, b in 1..9", _sub((10, 30), (1, 9))),
    "sub_10_50": ("a - b, 10 <= b < a <= 50", _sub((10, 50), (10, 50), pred=lambda a, b: a > b)),
    "mul_1_9": ("a * b, a and b in 1..9", lambda: ((t, ("*",)) for t in itertools.product(range(1, 10), repeat=2))),
}

#: The chosen levels (from the 100-problem base probes in probe.json; measured in results.json).
LEVELS: dict[int, str] = {
    1: "add_0_9",
    2: "add_1d_10_29",
    3: "add_10_50_nocarry",
    4: "add_10_50",
    5: "add3_1_9",
}


def description(name_or_level) -> str:
    name = LEVELS.get(name_or_level, name_or_level)
    return CANDIDATES[name][0]


def space(name_or_level) -> list[tuple[str, int]]:
    """All distinct (expression, answer) of a candidate or level, in a fixed order."""
    name = LEVELS.get(name_or_level, name_or_level)
    out, seen = [], set()
    for terms, ops in CANDIDATES[name][1]():
        e = expression(terms, ops)
        if e not in seen:
            seen.add(e)
            out.append((e, evaluate(terms, ops)))
    return out


def distinct_count(name_or_level, split=None) -> int:
    return sum(1 for e, _ in space(name_or_level) if split is None or split_of(e) == split)


def problems(name_or_level, n: int, split: str | None = None, seed: int = 0):
    """``n`` distinct problems (fewer if the split has fewer): (id, 'What is E?', answer)."""
    name = LEVELS.get(name_or_level, name_or_level)
    pool = [(e, v) for e, v in space(name) if split is None or split_of(e) == split]
    rng = random.Random(f"levels/{name}/{split}/{seed}")
    rng.shuffle(pool)
    return [(f"{name}-{split or 'all'}-s{seed}-{k}", f"What is {e}?", v) for k, (e, v) in enumerate(pool[:n])]


if __name__ == "__main__":
    for lv, name in LEVELS.items():
        print(lv, name, description(lv), distinct_count(lv),
              {s: distinct_count(lv, s) for s in SPLIT_BUCKETS})
    print()
    for name in CANDIDATES:
        print(f"{name:20s} {distinct_count(name):6d}  {description(name)}")
