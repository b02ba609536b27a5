"""Top-k selection by expected pass@k (polar.predictor._selection) against brute force."""
from itertools import permutations

import numpy as np
import pytest

from polar.predictor import expected_pass_at_k, pass_at_k, select_top_k, static_cover
from polar.predictor._selection import brute_force_top_k


def _coverage(correct, subset):
    return float(correct[:, list(subset)].any(axis=1).mean())


def test_docstring_example():
    C = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]], bool)
    p = np.array([0.6, 0.55, 0.3])
    assert expected_pass_at_k(p, [0, 1], C, smoothing=0) == pytest.approx(0.6)
    assert expected_pass_at_k(p, [0, 2], C, smoothing=0) == pytest.approx(0.9)
    assert select_top_k(p, 2, C, smoothing=0) == [0, 2]
    assert select_top_k(p, 2) == [0, 1]  # without co-failures: independent argmaxes


@pytest.mark.parametrize("seed", range(6))
def test_objective_is_training_coverage_when_the_scorer_predicts_the_training_rates(seed):
    # Brute force over every ordered selection: with p = training rates and no smoothing, the
    # objective is exactly the share of training problems that the programs cover, in any order.
    rng = np.random.default_rng(seed)
    C = rng.random((12, 5)) < rng.uniform(0.1, 0.7, size=5)
    p = C.mean(axis=0)
    for k in range(1, 6):
        for s in permutations(range(5), k):
            assert expected_pass_at_k(p, s, C, smoothing=0) == pytest.approx(_coverage(C, s)), s


@pytest.mark.parametrize("seed", range(4))
def test_objective_without_matrix_is_independent_and_smoothing_shrinks_to_it(seed):
    rng = np.random.default_rng(seed)
    p = rng.random(6)
    C = rng.random((20, 6)) < 0.4
    for s in [(0,), (1, 3), (0, 2, 5), (0, 1, 2, 3, 4, 5)]:
        indep = 1 - np.prod(1 - p[list(s)])
        assert expected_pass_at_k(p, s) == pytest.approx(indep)
        assert expected_pass_at_k(p, s, C, smoothing=1e9) == pytest.approx(indep, abs=1e-6)
        # Frechet bounds hold whatever the matrix says
        value = expected_pass_at_k(p, s, C, smoothing=0)
        assert max(p[list(s)]) - 1e-12 <= value <= min(1.0, p[list(s)].sum()) + 1e-12
    # the first program's objective is its own probability
    assert expected_pass_at_k(p, [2], C, smoothing=0) == pytest.approx(p[2])


def test_objective_by_hand_chain_rule():
    # rows: a training matrix of 4 problems x 3 programs
    C = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 1], [0, 0, 1]], bool)
    p = np.array([0.5, 0.2, 0.3])
    a = 1.0
    f = C.mean(axis=0)  # [.25, .5, .5]
    # after 0: 3 rows where 0 fails (1, 2, 3); program 2 correct on 2 of them
    q2 = p[2] * ((2 + a * f[2]) / (3 + a)) / f[2]
    fail = (1 - p[0]) * (1 - q2)
    # after 0, 2: rows where both fail: row 1; program 1 correct there
    q1 = p[1] * ((1 + a * f[1]) / (1 + a)) / f[1]
    q1 = min(q1, p[1] / fail)
    assert expected_pass_at_k(p, [0, 2, 1], C, smoothing=a) == pytest.approx(1 - fail * (1 - q1))


def test_columns_without_training_data_are_independent():
    C = np.array([[1, 0], [0, 1], [0, 0]], bool)  # 2 library columns; index 2 has no column
    p = np.array([0.5, 0.5, 0.4])
    fail01 = 1 - expected_pass_at_k(p[:2], [0, 1], C, smoothing=0)
    assert 1 - expected_pass_at_k(p, [0, 1, 2], C, smoothing=0) == pytest.approx(fail01 * 0.6)


@pytest.mark.parametrize("seed", range(4))
def test_greedy_equals_brute_force_for_independent_programs(seed):
    p = np.random.default_rng(seed).random(6)
    for k in range(1, 5):
        chosen = select_top_k(p, k)
        _, best = brute_force_top_k(p, k)
        assert expected_pass_at_k(p, chosen) == pytest.approx(best)


@pytest.mark.parametrize("seed", range(4))
def test_greedy_equals_brute_force_for_disjoint_and_nested_supports(seed):
    rng = np.random.default_rng(seed)
    n, L = 30, 5
    owner = rng.integers(0, L + 1, size=n)  # each problem solved by at most one program: disjoint supports
    disjoint = np.stack([owner == j for j in range(L)], axis=1)
    depth = rng.integers(0, L + 1, size=n)  # program j solves the problems of depth > j: nested supports
    nested = np.stack([depth > j for j in range(L)], axis=1)[:, rng.permutation(L)]
    for C in (disjoint, nested):
        p = C.mean(axis=0)
        for k in range(1, L + 1):
            chosen = select_top_k(p, k, C, smoothing=0)
            _, best = brute_force_top_k(p, k, C, smoothing=0)
            assert expected_pass_at_k(p, chosen, C, smoothing=0) == pytest.approx(best)
            assert _coverage(C, chosen) == pytest.approx(best)


@pytest.mark.parametrize("seed", range(20))
def test_k1_is_the_argmax_and_greedy_never_loses_to_independent_argmaxes(seed):
    rng = np.random.default_rng(seed)
    L = 5
    C = rng.random((15, L)) < rng.uniform(0.1, 0.8, size=L)
    C[:, 1] = C[:, 0]  # a duplicate column: co-failure matters
    p = np.clip(C.mean(axis=0) + rng.normal(0, 0.15, size=L), 0.01, 0.99)
    assert select_top_k(p, 1, C) == [int(np.argmax(p))]
    for k in range(1, L + 1):
        chosen = select_top_k(p, k, C)
        assert len(set(chosen)) == len(chosen) == k
        argmax = list(np.argsort(-p, kind="stable")[:k])
        assert expected_pass_at_k(p, chosen, C) >= expected_pass_at_k(p, argmax, C) - 1e-12
        _, best = brute_force_top_k(p, k, C)
        assert expected_pass_at_k(p, chosen, C) <= best + 1e-12


def test_candidates_limit_the_choice_and_bad_inputs_are_refused():
    p = np.array([0.9, 0.8, 0.1, 0.2])
    assert select_top_k(p, 2, candidates=[2, 3]) == [3, 2]
    assert select_top_k(p, 10) == [0, 1, 3, 2]  # k larger than L: every program once
    with pytest.raises(ValueError):
        select_top_k(p, 0)
    with pytest.raises(ValueError):
        expected_pass_at_k(p, [0, 0])
    with pytest.raises(ValueError):
        expected_pass_at_k([1.5, 0.2], [0])


@pytest.mark.parametrize("seed", range(8))
def test_a_length_budget_holds_and_changes_nothing_where_it_does_not_bind(seed):
    rng = np.random.default_rng(seed)
    L, D = 9, 10
    p = rng.uniform(0.05, 0.9, L)
    train = rng.random((30, L)) < rng.uniform(0.1, 0.6, L)
    lengths = rng.integers(7, 15, L)
    free = select_top_k(p, 5, train)
    got = select_top_k(p, 5, train, lengths=lengths, max_mean_length=D)
    if np.sort(lengths)[:5].sum() <= 5 * D:  # some 5 programs fit in 50 layers
        assert len(set(got)) == len(got) == 5 and lengths[got].sum() <= 5 * D
    else:
        assert got == []
    if lengths[free].sum() <= 5 * D:
        assert got == free  # the unconstrained choice fits: the same choice
    assert select_top_k(p, 5, train, lengths=np.full(L, 3), max_mean_length=D) == free
    # the greedy step never picks a program after which no completion fits: brute force over completions
    for k in (2, 3):
        got = select_top_k(p, k, train, lengths=lengths, max_mean_length=8)
        feasible = any(lengths[list(c)].sum() <= 8 * k for c in permutations(range(L), k))
        assert (len(got) == k and lengths[got].sum() <= 8 * k) if feasible else len(got) < k


def test_a_length_budget_swaps_a_long_program_for_a_short_one():
    # the two most likely programs are long (12 layers); a budget of 10 per candidate allows one
    # of them, with a short one beside it; a long program may still come first
    p = np.array([0.6, 0.55, 0.5, 0.1])
    lengths = np.array([12, 12, 8, 8])
    assert select_top_k(p, 2) == [0, 1]
    assert select_top_k(p, 2, lengths=lengths, max_mean_length=10) == [0, 2]
    assert select_top_k(p, 1, lengths=lengths, max_mean_length=10) == [2]
    assert select_top_k(p, 1, lengths=lengths, max_mean_length=12) == [0]
    assert select_top_k(p, 3, lengths=np.array([12, 12, 12, 12]), max_mean_length=10) == []  # nothing fits
    with pytest.raises(ValueError, match="lengths"):
        select_top_k(p, 2, max_mean_length=10)


def test_static_cover_and_pass_at_k():
    C = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], bool)
    assert static_cover(C, 2) == [0, 2]  # column 1 adds nothing to column 0
    assert static_cover(C, 3) == [0, 2, 3]
    assert pass_at_k(C, [[0, 2]] * 5) == pytest.approx(0.8)
    assert pass_at_k(C, [[1], [1], [1], [2], [2]]) == pytest.approx(0.6)
