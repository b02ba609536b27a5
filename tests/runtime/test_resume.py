"""Rows cut after a few tokens and resumed in later calls (:mod:`polar.runtime.resume`) end with the
tokens, log-probabilities, texts and finish reasons of one uninterrupted :func:`polar.generate`
call with the same budget, stop strings and stop rule, also when a stop string or the rule spans
the cut, with sharing and the prefix cache, on several architectures."""
from __future__ import annotations

import random

import pytest

from polar.errors import UserError
from polar.runtime import PrefixCache, generate
from polar.runtime.resume import ResumableRow, advance, row_text
from polar.testing import mcts_edit, tiny_model, tiny_tokenizer

D = 6
MAX_NEW = 9


def _rows(n: int, seed: int):
    rng = random.Random(seed)
    shots = " ".join(f"w{rng.randint(3, 127)}" for _ in range(7))
    prompts = [f"{shots} w{rng.randint(3, 127)} w{rng.randint(3, 127)}" for _ in range(n)]
    prompts[1] = prompts[0]  # two rows on one prompt
    programs = [list(range(D))] + [mcts_edit(list(range(D)), rng) for _ in range(n - 1)]
    return prompts, programs


def _rule(text: str) -> bool:  # fires on the text as a whole: a later token decides it
    words = text.split()
    return len(words) >= 4 and words[-1] == words[-2]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
@pytest.mark.parametrize("cut_after", [1, 3])
@pytest.mark.parametrize("cached", [False, True])
def test_cut_and_resumed_rows_equal_one_uninterrupted_call(arch, cut_after, cached):
    model, tok = tiny_model(arch, num_layers=D, seed=4), tiny_tokenizer()
    prompts, programs = _rows(10, seed=7)
    # a stop string seen in the uninterrupted call's texts, so that some rows stop on it
    probe = generate(model, tok, prompts, programs, MAX_NEW)
    stop = [probe.texts[2].split()[3]]
    ref = generate(model, tok, prompts, programs, MAX_NEW, stop_strings=stop, stop_fn=lambda r, t: _rule(t))
    assert "stop" in ref.finish_reasons and len(set(ref.finish_reasons)) >= 2
    cache = PrefixCache(1 << 26, model) if cached else None
    ids = tok(prompts, padding=False)["input_ids"]
    rows = [ResumableRow(list(i), p, _rule) for i, p in zip(ids, programs)]
    calls = 0
    while not all(r.done for r in rows):
        advance(model, tok, rows, MAX_NEW, stop, cut_after=cut_after, prefix_cache=cache)
        calls += 1
    assert calls >= max(map(len, ref.tokens)) // cut_after > 1  # rows really were cut and resumed
    for r, tokens, lps, text, reason in zip(rows, ref.tokens, ref.token_logprobs, ref.texts, ref.finish_reasons):
        assert r.tokens == tokens
        assert r.token_logprobs == pytest.approx(lps, abs=1e-4)
        assert row_text(tok, r, stop) == text
        assert r.finish_reason == reason
    if cached:
        assert cache.hits > 0


def test_rows_of_other_lengths_resume_together_and_bad_arguments_fail():
    model, tok = tiny_model("llama", num_layers=D, seed=2), tiny_tokenizer()
    prompts, programs = _rows(6, seed=3)
    ref = generate(model, tok, prompts, programs, MAX_NEW)
    ids = tok(prompts, padding=False)["input_ids"]
    rows = [ResumableRow(list(i), p) for i, p in zip(ids, programs)]
    advance(model, tok, rows[:3], MAX_NEW, cut_after=2)      # three rows 2 tokens ahead of the others
    assert all(len(r.tokens) == 2 and not r.done for r in rows[:3])
    advance(model, tok, rows, MAX_NEW)                        # all together, each to its own budget
    assert [r.tokens for r in rows] == ref.tokens and [r.finish_reason for r in rows] == ref.finish_reasons
    assert advance(model, tok, rows, MAX_NEW) is None         # nothing left to run
    with pytest.raises(UserError):
        advance(model, tok, [ResumableRow(list(ids[0]), programs[0])], MAX_NEW, do_sample=True)
    with pytest.raises(ValueError):
        advance(model, tok, [ResumableRow(list(ids[0]), programs[0])], MAX_NEW, cut_after=0)
    with pytest.raises(UserError, match="max_new_tokens"):
        advance(model, tok, [ResumableRow(list(ids[0]), programs[0], tokens=[5] * MAX_NEW)], MAX_NEW)
