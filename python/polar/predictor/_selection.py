"""Choosing k programs for one input: maximise the expected pass@k, not k independent argmaxes.

A scorer gives one input's marginals ``p_j = P(program j correct | input)`` ``[L]``. pass@k of a
selection is ``1 - P(every chosen program is wrong | input)``, which needs the *joint* failure,
not only the marginals: two programs that fail on the same problems add nothing to each other.
The joint comes from the training matrix (``train_correct``, bool ``[n, L]``: program j correct on
training problem r), by the chain rule, one chosen program after the other (``S`` the programs
chosen before ``j``, all assumed wrong):

    f_j        = mean_r train_correct[r, j]                                   training rate of j
    n_S        = #{r : every program of S wrong on r};  c_jS = #{those r where j is correct}
    lift_j(S)  = ((c_jS + a f_j) / (n_S + a)) / f_j     (1 where f_j = 0 or n_S + a = 0; a = ``smoothing``)
    q_j(S)     = clip(p_j * lift_j(S), max(0, (p_j - P(S)) / Q(S)), min(1, p_j / Q(S)))
    Q(S + j)   = Q(S) * (1 - q_j(S)),   Q({}) = 1,   P(S) = 1 - Q(S)
    expected pass@k(j_1, .., j_k) = 1 - Q({j_1, .., j_k})

``q_j(S)`` estimates ``P(j correct | every program of S wrong, input)``: the scorer's ``p_j`` times
how much more (lift > 1) or less often ``j`` is correct on the training problems where ``S`` all
fail than on all training problems. The clip keeps every step inside the bounds that any joint
with these marginals obeys (pass@k between ``max_j p_j`` and ``sum_j p_j``, Frechet). ``a``
shrinks the conditional rate toward ``f_j`` (lift 1: independence) when few training problems
back it (``a = 0``: the raw rate). Two limits fix the rule: with no training matrix (or
independent columns) the programs are independent, ``1 - prod (1 - p_j)``; with an
input-independent scorer that predicts the training rates (``p = f``, ``a = 0``) the objective
is exactly the share of training problems covered, so selection becomes the static set cover on
the training matrix. Programs without a training column (indices ``>= L`` of ``train_correct``)
have lift 1. The estimate depends on the order of the programs in general (it is exact, and
order-free, in both limits); :func:`expected_pass_at_k` evaluates ``chosen`` in the order given.

Selection is greedy: each next program the one most likely correct given that the ones chosen
before are wrong (the largest ``q_j(S)``; ties: larger ``p_j``, then lower index). The greedy
selection is then compared with the ``k`` largest ``p_j`` (in the order of ``p``, and in greedy
order) and the best one under the objective is returned, so it is never worse than independent argmaxes under the
objective; greedy is optimal for ``k = 1``, for independent programs and, in the training-rate
limit, for programs whose training supports are disjoint or nested (tests check these against
brute force over ordered selections).

Example (``a = 0``; ``train_correct`` rows ``[1, 1, 0], [1, 1, 0], [0, 0, 1]``; ``p = [.6, .55, .3]``;
k = 2): program 0 first (largest p). On the one training problem where 0 fails, 1 fails too and
2 is correct, so ``q_1 = .55 * 0 = 0`` and ``q_2 = .3 * (1 / (1/3)) = .9``, clipped to ``.3 / .4 = .75``:
pass@2 of (0, 2) is ``1 - .4 * .25 = .9``, of (0, 1) ``.6``. Independent argmaxes pick 0 and 1.
"""
from __future__ import annotations

from itertools import permutations
from typing import Sequence

import numpy as np

#: Default pseudo-count ``a`` of the training conditional rates (see the module docstring).
DEFAULT_SMOOTHING = 1.0


def _check_proba(proba) -> np.ndarray:
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"proba must be a non-empty 1-D array of probabilities, got shape {p.shape}")
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError("proba must lie in [0, 1]")
    return p


def _check_matrix(train_correct, L: int | None = None) -> np.ndarray | None:
    if train_correct is None:
        return None
    c = np.asarray(train_correct).astype(bool)
    if c.ndim != 2 or c.shape[0] == 0:
        raise ValueError(f"train_correct must be a non-empty bool matrix [n, L], got shape {c.shape}")
    if L is not None and c.shape[1] > L:
        raise ValueError(f"train_correct has {c.shape[1]} columns but proba only {L} entries")
    return c


class CoValidity:
    """The training matrix's conditional rates (module docstring).

    ``train_correct`` bool ``[n, L]`` (or None: every program independent); ``smoothing`` the
    pseudo-count ``a >= 0``. :meth:`step` gives ``q_j(S)`` for every candidate ``j`` at once.
    """

    def __init__(self, train_correct: np.ndarray | None = None, smoothing: float = DEFAULT_SMOOTHING):
        if smoothing < 0:
            raise ValueError(f"smoothing must be >= 0, got {smoothing}")
        self.correct = _check_matrix(train_correct)  # [n, L] bool or None
        self.smoothing = float(smoothing)
        self.rate = None if self.correct is None else self.correct.mean(axis=0)  # f_j [L]

    @property
    def num_columns(self) -> int:
        return 0 if self.correct is None else self.correct.shape[1]

    def all_rows(self) -> np.ndarray | None:
        """The training rows where every program of the empty selection is wrong: all of them."""
        return None if self.correct is None else np.ones(self.correct.shape[0], dtype=bool)

    def lift(self, rows: np.ndarray | None, size: int) -> np.ndarray:
        """``lift_j(S)`` ``[size]`` given the mask ``rows`` [n] of training problems where ``S`` all fail."""
        out = np.ones(size)
        if self.correct is None:
            return out
        L, a = self.num_columns, self.smoothing
        n_s = float(rows.sum())
        if n_s + a <= 0:
            return out
        c = self.correct[rows].sum(axis=0)  # [L] c_jS
        f = self.rate
        with np.errstate(divide="ignore", invalid="ignore"):
            lift = np.where(f > 0, ((c + a * f) / (n_s + a)) / f, 1.0)  # [L]
        out[:L] = lift
        return out

    def step(self, p: np.ndarray, rows: np.ndarray | None, fail: float) -> np.ndarray:
        """``q_j(S)`` ``[L]`` for every ``j``: ``p`` [L] the marginals, ``rows`` the training rows
        where ``S`` all fail, ``fail = Q(S)``."""
        if fail <= 0:
            return np.zeros_like(p)
        q = p * self.lift(rows, p.size)  # [L]
        lo = np.maximum(0.0, (p - (1.0 - fail)) / fail)
        hi = np.minimum(1.0, p / fail)
        return np.clip(q, lo, hi)

    def advance(self, rows: np.ndarray | None, j: int) -> np.ndarray | None:
        """The rows where ``S + j`` all fail."""
        if rows is None or j >= self.num_columns:
            return rows
        return rows & ~self.correct[:, j]

    def fail_all(self, p: np.ndarray, chosen: Sequence[int]) -> float:
        """``Q`` of the programs ``chosen``, taken in that order (1 for none)."""
        fail, rows = 1.0, self.all_rows()
        for j in chosen:
            fail *= 1.0 - float(self.step(p, rows, fail)[j])
            rows = self.advance(rows, int(j))
        return fail


def expected_pass_at_k(proba: Sequence[float], chosen: Sequence[int], train_correct: np.ndarray | None = None,
                       smoothing: float = DEFAULT_SMOOTHING) -> float:
    """The expected pass@k of the programs ``chosen`` (indices into ``proba`` [L], in that order)
    for one input, with the conditional rates of ``train_correct`` (bool [n, L'], ``L' <= L``;
    None: independent programs). Raises ``ValueError`` for a repeated or out-of-range index."""
    p = _check_proba(proba)
    chosen = [int(j) for j in chosen]
    if len(set(chosen)) != len(chosen) or any(not 0 <= j < p.size for j in chosen):
        raise ValueError(f"chosen must be distinct indices in 0..{p.size - 1}, got {chosen}")
    return 1.0 - CoValidity(_check_matrix(train_correct, p.size), smoothing).fail_all(p, chosen)


def _greedy(p: np.ndarray, k: int, cov: CoValidity, allowed: np.ndarray, budget=None) -> tuple[list[int], float]:
    chosen: list[int] = []
    fail, rows = 1.0, cov.all_rows()
    order = np.lexsort((np.arange(p.size), -p))  # ties: larger p, then lower index
    used = 0.0
    for i in range(k):
        q = cov.step(p, rows, fail)  # [L]
        ok = allowed if budget is None else _fits(budget[0], allowed, k - i, budget[1] * k - used)
        cand = order[ok[order]]
        if cand.size == 0:
            break
        j = int(cand[np.argmax(q[cand])])  # first maximum in tie order
        chosen.append(j)
        used += 0.0 if budget is None else float(budget[0][j])
        allowed[j] = False
        fail *= 1.0 - float(q[j])
        rows = cov.advance(rows, j)
    return chosen, fail


def select_top_k(proba: Sequence[float], k: int, train_correct: np.ndarray | None = None,
                 smoothing: float = DEFAULT_SMOOTHING, candidates: Sequence[int] | None = None,
                 lengths: Sequence[int] | None = None, max_mean_length: float | None = None) -> list[int]:
    """``min(k, L)`` distinct indices into ``proba`` [L], in the greedy order (module docstring):
    each the program most likely correct given that the ones before it are wrong. ``candidates``:
    only these indices may be chosen (default: all). The greedy selection is replaced by the ``k``
    largest ``p_j`` (in the order of ``p``, or in greedy order) when those have a strictly higher
    expected pass@k. With ``lengths`` (``[L]`` program lengths) and ``max_mean_length`` (``B``), the
    ``k`` programs have at most ``k * B`` layers in all (with ``B = D``: no more than ``k`` full
    programs cost): each greedy step takes the best program after which the cheapest completion
    still fits, and the selection stops short of ``k`` only when no completion fits at all."""
    p = _check_proba(proba)
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    budget = None
    if max_mean_length is not None:
        if lengths is None or len(lengths) != p.size:
            raise ValueError(f"max_mean_length needs lengths for all {p.size} programs")
        budget = (np.asarray(lengths, dtype=np.float64), float(max_mean_length))
    cov = CoValidity(_check_matrix(train_correct, p.size), smoothing)
    allowed = np.zeros(p.size, dtype=bool)
    if candidates is None:
        allowed[:] = True
    else:
        allowed[[int(j) for j in candidates]] = True
    k = min(k, int(allowed.sum()))
    greedy, fail = _greedy(p, k, cov, allowed.copy(), budget)
    ranked = [int(j) for j in np.argsort(-p, kind="stable") if allowed[j]][:k]
    reordered, reordered_fail = _greedy(p, k, cov, np.isin(np.arange(p.size), ranked), budget)
    best, best_fail = greedy, fail
    for other, other_fail in ((ranked, cov.fail_all(p, ranked)), (reordered, reordered_fail)):
        if len(other) >= len(best) and _within(other, budget) and other_fail < best_fail - 1e-12:
            best, best_fail = other, other_fail
    return best


def _within(chosen: Sequence[int], budget) -> bool:
    """``chosen`` within ``budget`` (``(lengths, B)`` or ``None``): at most ``len(chosen) * B`` layers."""
    if budget is None:
        return True
    lengths, B = budget
    return bool(lengths[list(chosen)].sum() <= B * len(chosen) + 1e-9)


def _fits(lengths: np.ndarray, allowed: np.ndarray, left: int, room: float) -> np.ndarray:
    """``[L]`` bool: program ``j`` (allowed) can be picked now with ``left`` picks to go (this one
    included) and ``room`` layers left, the other picks being the shortest allowed programs."""
    sl = np.sort(lengths[allowed])
    need = left - 1  # picks after this one
    if need <= 0:
        others = np.zeros_like(lengths)
    elif sl.size <= need:  # fewer programs than picks: the others are all the rest
        others = sl.sum() - lengths
    else:  # j among the `need` shortest: its completion takes the next shortest instead
        others = np.where(lengths <= sl[need - 1], sl[:need + 1].sum() - lengths, sl[:need].sum())
    return allowed & (lengths + others <= room + 1e-9)


def brute_force_top_k(proba: Sequence[float], k: int, train_correct: np.ndarray | None = None,
                      smoothing: float = DEFAULT_SMOOTHING) -> tuple[tuple[int, ...], float]:
    """The ordered selection of ``k`` programs with the highest expected pass@k, by enumeration
    (tests; small L)."""
    p = _check_proba(proba)
    cov = CoValidity(_check_matrix(train_correct, p.size), smoothing)
    best = max(permutations(range(p.size), min(k, p.size)), key=lambda s: (-cov.fail_all(p, s), s))
    return best, 1.0 - cov.fail_all(p, best)


def static_cover(train_correct: np.ndarray, k: int, candidates: Sequence[int] | None = None) -> list[int]:
    """Best static set: ``k`` columns chosen greedily to cover the most training problems (a row
    is covered when one chosen column is correct on it), ties by the column's own accuracy, then
    index; once everything coverable is covered, the remaining picks go by accuracy."""
    c = _check_matrix(train_correct)
    cols = list(range(c.shape[1])) if candidates is None else [int(j) for j in candidates]
    acc = c.mean(axis=0)
    uncovered = np.ones(c.shape[0], dtype=bool)
    chosen: list[int] = []
    for _ in range(min(k, len(cols))):
        gains = {j: int((c[:, j] & uncovered).sum()) for j in cols if j not in chosen}
        j = max(gains, key=lambda j: (gains[j], acc[j], -j))
        chosen.append(j)
        uncovered &= ~c[:, j]
    return chosen


def pass_at_k(correct: np.ndarray, chosen: Sequence[Sequence[int]]) -> float:
    """Share of rows of ``correct`` (bool [P, L]) where one of the row's ``chosen`` columns is correct."""
    c = np.asarray(correct).astype(bool)
    if len(chosen) != c.shape[0]:
        raise ValueError(f"{len(chosen)} chosen lists for {c.shape[0]} rows")
    if not len(chosen):
        return float("nan")
    return float(np.mean([bool(c[r, list(s)].any()) if len(s) else False for r, s in enumerate(chosen)]))


__all__ = ["DEFAULT_SMOOTHING", "CoValidity", "brute_force_top_k", "expected_pass_at_k", "pass_at_k",
           "select_top_k", "static_cover"]
