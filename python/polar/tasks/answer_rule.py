"""The early-answer rule: stop generating once the graded answer can no longer change.

Search grades thousands of programs per problem; most of a fixed 50-token budget is spent after
the answer is already written. :func:`answer_settled` tells, from the decoded continuation so
far, whether the answer that :func:`polar.tasks.extract_answer` reads (or, for multiple-choice
problems, the option letter) is final; :func:`answer_rule` wraps it for
``polar.generate(..., stop_fn=...)``.

- ``"fewshot"`` (the grader reads the answer at the start of the continuation): settled as soon
  as the text can no longer be the beginning of a leading number or equation, i.e. the first
  number is complete (followed by a character that cannot extend it: ``"12 apples"``, ``"12."``
  followed by a non-digit), an equation ``2 + 3 = 5`` is complete, or the output cannot start a
  number at all (``" The"``). Text that might still grow into ``1,000``, ``2.5``, ``3 / 4`` or
  ``2 + 3 = 5`` (``"12"``, ``"12 "``, ``"12,"``, ``"2 + 3 ="``) is not settled. Leading
  whitespace never settles; a newline after content does (it is the style's stop string).
- ``"direct"`` (the grader reads ``\\boxed{}``): settled at the first closed ``\\boxed{...}``.
- multiple choice, ``"fewshot"``: settled once the leading option letter is followed by a
  non-letter or the text cannot start one; ``"direct"``: the first closed ``\\boxed{}``.

The rule assumes that the model's answer is the first one it writes (a later ``\\boxed{}`` or
``answer is 7`` on the same line would change :func:`extract_answer`'s reading); on recorded
outputs of the default model its grades equal those of a full 50-token budget (tests/search).

Example::

    >>> answer_settled(" 12", "fewshot"), answer_settled(" 12\\n", "fewshot"), answer_settled(" 12 apples", "fewshot")
    (False, True, True)
"""
from __future__ import annotations

import re
from typing import Callable

from ..errors import UserError
from .answers import last_boxed
from .problem import Problem
from .prompts import PROMPT_STYLES

# Texts that may still grow into what the grader's leading rules read (a loose superset: being
# too loose costs a few tokens, never a grade). Fewshot: a leading equation ``2 + 3 = 5`` (the
# grader allows ``[\s$]*`` before it) or a leading number after up to 8 symbols (``1,000``,
# ``-2.5``, ``3 / 4``).
_OPERAND = r"[\d.,]+"
_OPERATOR = r"[-+*/×x]"
_NUMBER_SO_FAR = r"[-+]?[\d.,]*\s*(?:/\s*\d*)?"            # 12, 1,000, 2.5, 3 / 4
_MAY_BECOME_EQUATION = re.compile(
    rf"[\s$]*[-+]?(?:{_OPERAND}(?:\s*{_OPERATOR}\s*{_OPERAND})*\s*(?:{_OPERATOR}\s*)?)?"       # 2 + 3 (+)
    rf"|[\s$]*[-+]?{_OPERAND}(?:\s*{_OPERATOR}\s*{_OPERAND})+\s*=\s*[$]?{_NUMBER_SO_FAR}")   # 2 + 3 = 5
_MAY_BECOME_NUMBER = re.compile(rf"[\s$*(\[`'\"]{{0,8}}{_NUMBER_SO_FAR}")
# Multiple choice, fewshot: an option letter at the start (``C``, ``(C)``, ``\text{C}``) not yet
# followed by a character that decides it.
_MAY_BECOME_LETTER = re.compile(r"[\s*(\[`'\"]{0,8}(?:\\(?:t(?:e(?:x(?:t\{?)?)?)?)?)?[A-Z]?")


def answer_settled(text: str, style: str, multiple_choice: bool = False) -> bool:
    """Whether the answer graded from ``text`` (a continuation so far) can no longer change.

    ``style``: one of ``PROMPT_STYLES``; ``multiple_choice``: the problem has options (the grader
    reads a letter). Raises ``ValueError`` for an unknown style. See the module docstring."""
    if style == "direct":
        return last_boxed(text) is not None
    if style != "fewshot":
        raise UserError(f"unknown prompt style {style!r}; expected one of {PROMPT_STYLES}")
    content = text.lstrip()
    if not content:
        return False
    if "\n" in content:  # the few-shot stop string: the graded line is complete
        return True
    if multiple_choice:
        return _MAY_BECOME_LETTER.fullmatch(text) is None
    return _MAY_BECOME_EQUATION.fullmatch(text) is None and _MAY_BECOME_NUMBER.fullmatch(text) is None


def answer_rule(style: str, problem: Problem | None = None) -> Callable[[str], bool]:
    """``text -> bool``: :func:`answer_settled` for ``style`` and ``problem`` (multiple choice when
    it has ``choices``). Raises ``ValueError`` for an unknown style."""
    if style not in PROMPT_STYLES:
        raise UserError(f"unknown prompt style {style!r}; expected one of {PROMPT_STYLES}")
    multiple_choice = bool(problem is not None and problem.choices)
    return lambda text: answer_settled(text, style, multiple_choice)
