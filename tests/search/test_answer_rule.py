"""The early-answer rule: unit cases, grades on recorded real outputs equal those of a 50-token
budget, and the rule really stops rows inside ``generate``."""
import json
from pathlib import Path

import pytest

from polar.programs import full
from polar.runtime import generate, stop_end
from polar.search import GenerateEvaluator, SearchConfig, search_problems
from polar.tasks import Problem, answer_rule, answer_settled, is_correct, stop_strings

RECORDED = Path(__file__).with_name("data") / "recorded_outputs.jsonl"


@pytest.mark.parametrize("text, settled", [
    ("", False), ("  ", False), ("\n\n", False),
    (" 12", False), (" 12 ", False), (" 12,", False), (" 12.", False), (" -", False), (" $", False),
    (" 3 /", False), (" 3 / 4", False), (" 12 +", False), (" 12 + 3 =", False), (" 12 + 3 = 15", False),
    (" 12\n", True), (" 12 apples", True), (" 12. The", True), (" 3 / 4 cups", True), (" (5)", True),
    (" 12 + 3 = 15 is", True), (" 2 x 4 = 8 x", True), (" The answer", True), (" + + +", True),
    ("!!", True), (" 1,000 m", True), (" 201, 211", True), (" 3 4", True),
])
def test_fewshot_rule(text, settled):
    assert answer_settled(text, "fewshot") is settled


def test_direct_and_multiple_choice_rules():
    assert not answer_settled("so \\boxed{1", "direct") and answer_settled("so \\boxed{1} and", "direct")
    assert not answer_settled("12 apples", "direct")
    letters = (" C", " (C", " \\text{C", " C.", " Cat", " 5")
    settled = [answer_settled(t, "fewshot", multiple_choice=True) for t in letters]
    assert settled == [False, False, False, True, True, True]
    mc = Problem("m", "Pick", "B", "t", choices=["x", "y"])
    assert answer_rule("fewshot", mc)(" B)") and not answer_rule("fewshot", mc)(" B")
    with pytest.raises(ValueError):
        answer_rule("chat")


def early_stop_text(row: dict) -> tuple[str, int]:
    """What generate with the rule returns for a recorded row, and the tokens it generates."""
    problem = Problem(**row["problem"])
    stops, rule, text = stop_strings(row["style"]), answer_rule(row["style"], problem), row["text"]
    for k, cut in enumerate(row["cuts"], start=1):  # generate calls stop_fn after each token
        prefix = text[:cut]
        end = stop_end(prefix, stops)
        if end is not None:
            return prefix[:end], k
        if rule(prefix):
            return prefix, k
    return text, len(row["cuts"])


def test_grades_on_recorded_outputs_equal_the_50_token_budget():
    rows = [json.loads(line) for line in RECORDED.read_text().splitlines()]
    assert len(rows) >= 100 and {r["style"] for r in rows} == {"fewshot", "direct"}
    tokens_early = tokens_budget = 0
    for row in rows:
        problem = Problem(**row["problem"])
        end = stop_end(row["text"], stop_strings(row["style"]))
        budget_text = row["text"] if end is None else row["text"][:end]
        text, used = early_stop_text(row)
        assert is_correct(text, problem) == is_correct(budget_text, problem), (row["text"][:60], text)
        tokens_early += used
        tokens_budget += len(row["cuts"])
    assert tokens_early < 0.5 * tokens_budget
    # every prefix at which the rule fires grades like the budget (any tokenizer would agree)
    for row in rows:
        problem = Problem(**row["problem"])
        stops, rule = stop_strings(row["style"]), answer_rule(row["style"], problem)
        end = stop_end(row["text"], stops)
        graded = is_correct(row["text"] if end is None else row["text"][:end], problem)
        for i in range(1, len(row["text"]) + 1):
            prefix = row["text"][:i]
            if stop_end(prefix, stops) is not None:
                break
            if rule(prefix):
                assert is_correct(prefix, problem) == graded, (row["text"][:60], prefix)


def test_rule_stops_rows_in_generate_with_unchanged_grades(tiny, word_problems):
    model, tok = tiny
    problems = word_problems(6)
    ev = GenerateEvaluator(model, tok, "fewshot", max_new_tokens=12)
    items = [(p, full(6)) for p in problems] + [(p, (0, 1, 1, 2, 4, 5)) for p in problems]
    early = ev.generate(items)
    budget = generate(model, tok, [ev.prompt(p) for p, _ in items], [list(g) for _, g in items], 12,
                      stop_strings=stop_strings("fewshot"))
    assert early.finish_reasons.count("rule") > len(items) // 2
    assert sum(map(len, early.tokens)) < sum(map(len, budget.tokens))
    for (p, _), a, b in zip(items, early.texts, budget.texts):
        assert is_correct(a, p) == is_correct(b, p)


def test_evaluator_share_prefix_off_gives_the_same_texts(tiny, word_problems):
    model, tok = tiny
    problems = word_problems(4)
    items = [(p, g) for p in problems for g in (full(6), (0, 1, 1, 2, 4, 5), (0, 2, 3, 4, 5))]
    shared = GenerateEvaluator(model, tok, "fewshot", max_new_tokens=8)
    plain = GenerateEvaluator(model, tok, "fewshot", max_new_tokens=8, share_prefix=False)
    a, b = shared.generate(items), plain.generate(items)
    assert a.texts == b.texts
    assert a.prefill_work < b.prefill_work == b.prefill_work_unshared  # sharing really happened


def test_search_with_the_prefix_cache_grows_the_same_trees(tiny, word_problems):
    """Rounds reuse the few-shot prefix's states (the cache hits) and the texts, hence grades and
    trees, are those of the search without the cache."""
    model, tok = tiny
    grade = lambda problem, program, text: len(text) % 2 == 0  # noqa: E731  (depends on every generated token)
    cfg = SearchConfig(space="skip+loop", simulations=10, seed=1)
    problems = word_problems(4)
    evs = [GenerateEvaluator(model, tok, "fewshot", max_new_tokens=4, grade=grade, prefix_cache_mb=mb) for mb in (0, 64)]
    texts = []
    for ev in evs:
        calls = []
        inner = ev.generate
        ev.generate = lambda items, inner=inner, calls=calls: calls.append(inner(items)) or calls[-1]
        trees = search_problems(problems, ev, cfg, batch_size=64)
        texts.append(([r.texts for r in calls], {p.id: trees[p.id].snapshot() for p in problems}))
    assert texts[0] == texts[1]
    assert evs[0].prefix_cache is None and evs[1].prefix_cache.hits > 0
    assert len(texts[0][0]) > 1  # several rounds
