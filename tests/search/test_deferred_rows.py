"""Rows carried across rounds (``GenerateEvaluator.evaluate_some``, ``defer_tokens``): a search
whose unsettled rows are cut after a few tokens and finished in later calls grows the same trees,
writes the same records and grades each program as one uncut call does."""
import hashlib
import json

import pytest

from polar.search import GenerateEvaluator, SearchConfig, SearchRun, run_search, search_problems
from polar.search._evaluate import DEFAULT_DEFER_TOKENS


def _grade(problem, program, text):  # depends on the whole text, so a wrong token would show
    return hashlib.sha256(text.encode()).digest()[0] % 3 == 0


def _evaluator(tiny, defer, **kw):
    model, tok = tiny
    return GenerateEvaluator(model, tok, "fewshot", max_new_tokens=7, early_answer=False, grade=_grade,
                             defer_tokens=defer, **kw)


@pytest.mark.parametrize("mb", [0, 64])
def test_carried_rows_give_the_trees_of_uncut_rounds(tiny, word_problems, mb):
    problems = word_problems(5)
    config = SearchConfig(space="skip+loop", simulations=9, leaves_per_round=3)
    trees = {}
    for defer in (None, 2):
        ev = _evaluator(tiny, defer, prefix_cache_mb=mb)
        carried = []
        real = ev.evaluate_some

        def spy(items, real=real, ev=ev, carried=carried):
            out = real(items)
            carried.append(ev.carried)
            return out

        ev.evaluate_some = spy
        trees[defer] = search_problems(problems, ev, config, batch_size=8)
        if defer:
            assert max(carried) > 0 and ev.carried == 0  # rows were carried, and all finished
            assert sum(ev.stats.rows_per_call) > ev.stats.rows  # carried rows ran in more than one call
    assert {k: t.snapshot() for k, t in trees[None].items()} == {k: t.snapshot() for k, t in trees[2].items()}
    # the same grades as the plain one-call evaluate()
    ev = _evaluator(tiny, None)
    tree = trees[2][problems[0].id]
    nodes = tree.evaluated()
    assert ev.evaluate([(problems[0], n.program) for n in nodes]) == [n.correct for n in nodes]


def test_run_search_records_are_the_same_with_and_without_carried_rows(tiny, word_problems, tmp_path):
    problems = word_problems(4)
    records = {}
    for defer in (None, 1):
        run = SearchRun(data="x", batch_size=6, progress=False,
                        search=SearchConfig(space="skip", simulations=6, leaves_per_round=2))
        out = tmp_path / f"d{defer}.jsonl"
        run_search(run, out, evaluator=_evaluator(tiny, defer), problems=problems)
        lines = [json.loads(x) for x in out.read_text().splitlines()]
        records[defer] = {r["id"]: {k: v for k, v in r.items() if k != "wall_s"} for r in lines}
    assert records[None] == records[1] and len(records[1]) == 4


def test_defer_tokens_default_and_check(tiny):
    model, tok = tiny
    assert GenerateEvaluator(model, tok).defer_tokens is None  # opt-in: measured slower on small searches
    assert GenerateEvaluator(model, tok, defer_tokens=DEFAULT_DEFER_TOKENS).defer_tokens == 8
    with pytest.raises(ValueError):
        GenerateEvaluator(model, tok, defer_tokens=0)
