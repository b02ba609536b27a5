"""MCTS over programs: actions, bounds, spaces, planted rewards, determinism, no repeated work."""
import pytest

from polar.search import SearchConfig, Tree, child_programs, search_problems

D = 6  # the tiny model's depth (conftest)


def one_edit(parent: tuple, child: tuple, config: SearchConfig) -> bool:
    """Whether ``child`` is one allowed action away from ``parent`` (brute force)."""
    n = len(parent)
    if config.space != "loop":
        for k in range(1, config.max_block + 1):
            if any(parent[:s] + parent[s + k:] == child for s in range(n - k + 1)):
                return True
    if config.space != "skip":
        for k in range(1, config.max_block + 1):
            for s in range(n - k + 1):
                for r in range(1, config.max_repeats + 1):
                    if parent[:s + k] + parent[s:s + k] * r + parent[s + k:] == child:
                        return True
    return False


def reachable(config: SearchConfig, num_layers: int) -> set:
    """Every program reachable from the full one (breadth-first over child_programs)."""
    seen = {tuple(range(num_layers))}
    frontier = list(seen)
    while frontier:
        nxt = []
        for p in frontier:
            for c in child_programs(p, config, num_layers):
                if c not in seen:
                    seen.add(c)
                    nxt.append(c)
        frontier = nxt
    return seen


def test_child_programs_actions_and_bounds():
    full = tuple(range(10))
    cfg = SearchConfig(space="skip+loop", max_block=2, max_repeats=2, min_length=0.8, max_length=1.2)
    kids = child_programs(full, cfg, 10)
    assert len(kids) == len(set(kids)) and full not in kids
    assert all(8 <= len(k) <= 12 for k in kids)
    assert (0, 1, 2, 3, 4, 5, 6, 7, 9) in kids                       # skip one entry
    assert (0, 1, 2, 3, 6, 7, 8, 9) in kids                          # skip a block of 2
    assert (0, 1, 2, 3, 4, 3, 4, 3, 4, 5, 6, 7, 8, 9) not in kids    # 14 entries: over 1.2 D
    assert (0, 1, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9) in kids              # repeat one entry twice more
    assert all(one_edit(full, k, cfg) for k in kids)
    assert all(len(k) < 10 for k in child_programs(full, SearchConfig(space="skip"), 10))
    assert all(len(k) > 10 for k in child_programs(full, SearchConfig(space="loop"), 10))
    # edits act on the current program's entries, repeats included
    assert (0, 1, 1, 1, 2) in child_programs((0, 1, 1, 2), SearchConfig(space="loop"), 4)


@pytest.mark.parametrize("space, target, overrides", [
    ("skip", (0, 2, 3, 5), {}),                          # two skips deep; the budget covers the space
    ("loop", (0, 1, 2, 3, 3, 4, 5), {}),
    # skip+loop reaches ~200k programs on 6 layers: plant a single edit, let the root expand fully
    ("skip+loop", (0, 1, 3, 4, 5), {"widening": 100.0, "simulations": 17}),
])
def test_planted_program_is_found_within_bounds_and_space(space, target, overrides, planted, word_problems):
    cfg = SearchConfig(**{"space": space, "simulations": 400, "max_block": 2, "max_repeats": 1, **overrides})
    problems = word_problems(3)
    ev = planted(lambda problem, program: program == target)
    trees = search_problems(problems, ev, cfg, batch_size=16)
    assert max(ev.seen.values()) == 1, "a program was evaluated twice"
    lo, hi = cfg.length_bounds(D)
    for problem in problems:
        tree = trees[problem.id]
        nodes = tree.evaluated()
        assert tree.finished and [n.program for n in nodes if n.correct] == [target]
        if space != "skip+loop":  # the budget covers the whole space: every program once
            assert tree.root.exhausted and {n.program for n in nodes} == reachable(cfg, D)
        for n in nodes[1:]:
            assert lo <= len(n.program) <= hi
            assert one_edit(n.parent.program, n.program, cfg)
        assert tree.root.reward == 1 and tree.root.visits == len(nodes)


def test_budget_respected_and_search_prefers_rewarded_region(planted, word_problems):
    cfg = SearchConfig(space="skip+loop", simulations=24, seed=3)
    # every program that repeats layer 0 is correct: the tree should keep finding them
    ev = planted(lambda problem, program: program.count(0) > 1)
    trees = search_problems(word_problems(4), ev, cfg, batch_size=64)
    for tree in trees.values():
        assert tree.simulations == 24 and len(tree.evaluated()) == 25
        assert all(n.correct is not None for n in tree.nodes.values())
    found = sum(n.correct for t in trees.values() for n in t.evaluated())
    edits = child_programs(tuple(range(D)), cfg, D)
    share = sum(c.count(0) > 1 for c in edits) / len(edits)
    assert found / (4 * 25) > share  # above the rate of a random single edit
    assert max(ev.seen.values()) == 1


def test_same_seed_same_trees_whatever_the_batching(planted, word_problems):
    cfg = SearchConfig(space="skip+loop", simulations=20, seed=7)
    reward = lambda problem, program: (sum(program) + len(problem.id)) % 3 == 0  # noqa: E731
    problems = word_problems(5)
    a = search_problems(problems, planted(reward), cfg, batch_size=64)
    b = search_problems(problems[::-1], planted(reward), cfg, batch_size=cfg.leaves_per_round)
    c = search_problems(problems, planted(reward), SearchConfig(space="skip+loop", simulations=20, seed=8), 64)
    assert all(a[p.id].snapshot() == b[p.id].snapshot() for p in problems)
    assert any(a[p.id].snapshot() != c[p.id].snapshot() for p in problems)


def test_virtual_loss_spreads_one_round_and_rounds_are_atomic():
    cfg = SearchConfig(simulations=10, leaves_per_round=4)
    tree = Tree("x", D, cfg)
    assert [n.program for n in tree.propose(4)] == [tuple(range(D))]   # the first round: the root alone
    with pytest.raises(RuntimeError):
        tree.propose(4)
    tree.record(tree.root, False)
    leaves = tree.propose(4)
    assert len(leaves) == 4 and len({n.program for n in leaves}) == 4 and tree.pending == 4
    assert tree.root.visits == 5
    for n in leaves:
        tree.record(n, True)
    assert tree.root.reward == 4 and not tree.finished
    while not tree.finished:
        for n in tree.propose(4):
            tree.record(n, False)
    assert tree.simulations == 10


def test_config_errors():
    for bad in (dict(space="jump"), dict(simulations=-1), dict(max_block=0), dict(min_length=1.2),
                dict(max_length=0.9), dict(leaves_per_round=0), dict(widening=0)):
        with pytest.raises(ValueError):
            SearchConfig(**bad).validate()


def test_max_active_caps_trees_in_progress_without_changing_them(planted, word_problems):
    cfg = SearchConfig(space="skip+loop", simulations=12, seed=3)
    reward = lambda problem, program: (sum(program) + len(problem.id)) % 3 == 0  # noqa: E731
    problems = word_problems(6)
    free = search_problems(problems, planted(reward), cfg, batch_size=64)
    ev = planted(reward)
    finished_at: list[int] = []  # evaluate calls made when each tree finished
    capped = search_problems(problems, ev, cfg, batch_size=64, max_active=2,
                             on_finish=lambda p, tree, wall: finished_at.append(len(ev.batches)))
    assert all(free[p.id].snapshot() == capped[p.id].snapshot() for p in problems)
    assert max(ev.batches) <= 2 * cfg.leaves_per_round  # two trees at most in any round
    assert len(finished_at) == 6 and finished_at[0] < finished_at[-1] // 2  # the first finished early
    with pytest.raises(ValueError, match="max_active"):
        search_problems(problems, ev, cfg, batch_size=64, max_active=0)
