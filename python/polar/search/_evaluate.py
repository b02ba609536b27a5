"""Grading programs: the evaluator interface of the search and its ``polar.generate`` backend.

An evaluator turns a list of ``(problem, program)`` pairs into one grade each. The search hands
it every leaf of a round at once; :class:`GenerateEvaluator` runs them as ONE batched
:func:`polar.runtime.generate` call (row ``i``: the problem's prompt with program ``i``), stops
each row as soon as its graded answer can no longer change (:func:`polar.tasks.answer_rule`,
the prompt style's stop strings, EOS, or the token budget) and grades the text. Memoisation is
the search's job (a tree never proposes a program twice), not the evaluator's.

:meth:`GenerateEvaluator.evaluate_some` (with ``defer_tokens``; off by default): rows whose
answer has not settled after ``defer_tokens`` tokens of a call are cut and carried into the next
call (:mod:`polar.runtime.resume`: the same tokens, so the same grades), where they decode beside
the next round's rows instead of alone; the search waits for a tree's carried rows before it asks
that tree for more leaves, so every tree, and every record, is the one an uncut round gives. It is
off by default because it was measured slower (issue 23: 16 problems x 16 simulations 89.7 s
uncut vs 101.8 s carried; 4 x 16 about even): blocked trees make later rounds smaller (11 calls
instead of 5), which costs more prefill sharing than the merged tails save in decode.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..programs import Program
from .._checks import check_int
from ..runtime import PrefixCache, generate, prefix_cache_bytes
from ..runtime.resume import ResumableRow, advance, row_text
from ..tasks import DEFAULT_PROMPT_STYLE, Problem, answer_rule, build_prompt, generation_setting, is_correct, stop_strings

#: ``grade(problem, program, text) -> correct``.
GradeFn = Callable[[Problem, Program, str], bool]

#: The default prompt style's token budget (:data:`polar.tasks.GENERATION_SETTINGS`: the
#: reference implementation's 50; with the early-answer rule few rows ever reach it).
DEFAULT_MAX_NEW_TOKENS = generation_setting(DEFAULT_PROMPT_STYLE).max_new_tokens

#: Memory for the few-shot prefix's states kept across rounds (:class:`polar.runtime.PrefixCache`).
DEFAULT_PREFIX_CACHE_MB = 4096

#: A ``defer_tokens`` for :class:`GenerateEvaluator` (opt-in): rows unsettled after this many tokens
#: of a round's call continue in the next call; most rows settle within 2-6 tokens.
DEFAULT_DEFER_TOKENS = 8


class Evaluator(Protocol):
    """Grades programs on problems. ``num_layers``: the model depth ``D`` the programs index."""

    num_layers: int

    def evaluate(self, items: Sequence[tuple[Problem, Program]]) -> list[bool]:
        """One grade per ``(problem, program)``, in order."""
        ...


@dataclass
class EvaluatorStats:
    """What an evaluator has done: calls, rows per call, generated tokens, finish reasons."""

    calls: int = 0
    rows: int = 0
    rows_per_call: list[int] = field(default_factory=list)
    generated_tokens: int = 0
    finish_reasons: Counter = field(default_factory=Counter)


def grade_answer(problem: Problem, program: Program, text: str) -> bool:
    """The default grade: the text's answer is correct for the problem (the program is unused)."""
    return is_correct(text, problem)


class GenerateEvaluator:
    """Grade programs by generating with them: one :func:`polar.runtime.generate` call per
    :meth:`evaluate` (greedy, ``max_new_tokens`` at most, the prompt style's stop strings, and
    with ``early_answer`` the early-answer rule as ``stop_fn``); ``None``: the prompt style's
    :func:`polar.tasks.generation_setting`, the one evaluation uses too.

    ``grade`` replaces the grader (tests plant rewards with it while the model still runs);
    ``share_prefix=False`` turns shared-prefix execution off (same texts; benchmarks compare).
    ``prefix_cache_mb``: budget of the :class:`polar.runtime.PrefixCache` that keeps the prompts'
    common prefix (the few-shot shots) across calls, so a round computes only the program prefixes
    no earlier round ran on it (0: none; needs ``share_prefix``; same texts). ``defer_tokens``: in
    :meth:`evaluate_some`, rows unsettled after this many tokens of a call are carried into the
    next call, and :func:`search_problems` uses it (``None``, the default: one uncut call per
    round; same grades either way; see the module docstring).
    """

    def __init__(self, model, tokenizer, prompt_style: str = DEFAULT_PROMPT_STYLE,
                 max_new_tokens: int | None = None, early_answer: bool | None = None,
                 grade: GradeFn = grade_answer, share_prefix: bool = True,
                 prefix_cache_mb: int = DEFAULT_PREFIX_CACHE_MB, defer_tokens: int | None = None):
        setting = generation_setting(prompt_style)  # UserError for an unknown style
        check_int(defer_tokens, "defer_tokens", optional=True)
        budget = prefix_cache_bytes(prefix_cache_mb)
        self.prefix_cache = PrefixCache(budget, model) if budget and share_prefix else None
        self.model, self.tokenizer = model, tokenizer
        self.prompt_style = prompt_style
        self.max_new_tokens = setting.max_new_tokens if max_new_tokens is None else max_new_tokens
        self.early_answer = setting.early_answer if early_answer is None else early_answer
        self.grade = grade
        self.share_prefix = share_prefix
        self.num_layers: int = model.config.num_hidden_layers
        self.stats = EvaluatorStats()
        self.defer_tokens = defer_tokens
        self._prompts: dict[str, str] = {}
        self._ids: dict[str, list[int]] = {}
        self._carried: list[tuple[object, Problem, Program, ResumableRow]] = []

    def prompt(self, problem: Problem) -> str:
        if problem.id not in self._prompts:
            self._prompts[problem.id] = build_prompt(problem, self.prompt_style, self.tokenizer)
        return self._prompts[problem.id]

    def generate(self, items: Sequence[tuple[Problem, Program]]):
        """The :class:`polar.runtime.GenerationResult` of one call over ``items``."""
        rules = [answer_rule(self.prompt_style, problem) for problem, _ in items]
        result = generate(self.model, self.tokenizer, [self.prompt(p) for p, _ in items],
                          [list(program) for _, program in items], self.max_new_tokens,
                          stop_strings=stop_strings(self.prompt_style),
                          stop_fn=(lambda row, text: rules[row](text)) if self.early_answer else None,
                          share_prefix=self.share_prefix, prefix_cache=self.prefix_cache)
        self.stats.calls += 1
        self.stats.rows += len(items)
        self.stats.rows_per_call.append(len(items))
        self.stats.generated_tokens += sum(len(t) for t in result.tokens)
        self.stats.finish_reasons.update(result.finish_reasons)
        return result

    def evaluate(self, items: Sequence[tuple[Problem, Program]]) -> list[bool]:
        if not items:
            return []
        texts = self.generate(items).texts
        return [bool(self.grade(problem, program, text)) for (problem, program), text in zip(items, texts)]

    @property
    def carried(self) -> int:
        """Rows cut in an earlier :meth:`evaluate_some` call, to be finished by a later one."""
        return len(self._carried)

    def evaluate_some(self, items: Sequence[tuple[object, Problem, Program]]) -> list[tuple[object, bool]]:
        """``(handle, grade)`` of every row that finishes in ONE generate call over the new
        ``items`` (``(handle, problem, program)``; the handle is the caller's) and the rows carried
        from earlier calls. With ``defer_tokens`` and new items, a row still unsettled after that
        many tokens of the call is cut and carried (its grade comes from a later call); a call
        without new items runs every carried row to its end. Grades equal :meth:`evaluate`'s."""
        for handle, problem, program in items:
            if problem.id not in self._ids:
                self._ids[problem.id] = list(self.tokenizer([self.prompt(problem)], padding=False)["input_ids"][0])
            rule = answer_rule(self.prompt_style, problem) if self.early_answer else None
            self._carried.append((handle, problem, program, ResumableRow(self._ids[problem.id], list(program), rule)))
        if not self._carried:
            return []
        rows = [r for *_, r in self._carried]
        before = sum(len(r.tokens) for r in rows)
        advance(self.model, self.tokenizer, rows, self.max_new_tokens, stop_strings(self.prompt_style),
                cut_after=self.defer_tokens if items else None, share_prefix=self.share_prefix,
                prefix_cache=self.prefix_cache)
        self.stats.calls += 1
        self.stats.rows += len(items)
        self.stats.rows_per_call.append(len(rows))
        self.stats.generated_tokens += sum(len(r.tokens) for r in rows) - before
        stops = stop_strings(self.prompt_style)
        done, self._carried = [x for x in self._carried if x[3].done], [x for x in self._carried if not x[3].done]
        self.stats.finish_reasons.update(r.finish_reason for *_, r in done)
        return [(handle, bool(self.grade(problem, program, row_text(self.tokenizer, r, stops))))
                for handle, problem, program, r in done]
