"""Grading generated answers against a problem's gold answer.

``extract_answer`` reads the model's answer out of its output (the continuation, not the prompt):

1. the content of the last complete ``\\boxed{...}`` (nested braces allowed);
2. else the first number right after the answer prefix ``A:`` when the output contains it;
3. else, when the output starts with an equation (``2 + 2 = 4``), the number after its ``=``;
4. else the number at the start of the output (after a few leading symbols such as ``$`` or ``*``);
5. else the number after ``answer is`` (``The answer is: 12``);
6. else ``None``.

``is_correct`` compares that answer with the gold answer: first an exact numeric comparison
(``1,000 == 1000``, ``0.5 == \\frac{1}{2}``, ``50%``, ``$18``), then ``math_verify`` (symbolic
LaTeX equivalence) under a time limit. Multiple-choice problems (``problem.choices``) compare option
letters. Outputs are truncated before parsing so huge or garbled outputs grade as wrong quickly;
grading never raises on model output.
"""

from __future__ import annotations

import logging
import re
import threading

from math_verify import parse as _mv_parse, verify as _mv_verify

from .answers import NUMBER_PATTERN, last_boxed, numbers_equal, truncate_output
from .problem import Problem
from .prompts import ANSWER_PREFIX, CHOICE_LETTERS

logger = logging.getLogger(__name__)

#: Extracted answers longer than this are not handed to math-verify (graded wrong unless numeric).
MAX_ANSWER_CHARS = 300
#: Seconds math-verify may spend on one parse or comparison (main thread only, see ``_verify``).
VERIFY_TIMEOUT_S = 1

_NUMBER = NUMBER_PATTERN
_LEADING_NUMBER = re.compile(r"^[\s$*(\[`'\"]{0,8}(" + _NUMBER + r")")
_LEADING_EQUATION = re.compile(r"^[\s$]*[-+]?[\d.,]+(?:\s*[-+*/×x]\s*[\d.,]+)+\s*=\s*[$]?(" + _NUMBER + r")")
_ANSWER_IS = re.compile(r"answer is\s*:?\s*[$*]{0,4}(" + _NUMBER + r")", re.IGNORECASE)
_PREFIXED_NUMBER = re.compile(re.escape(ANSWER_PREFIX) + r"[\s$*(\[`'\"]{0,8}(" + _NUMBER + r")")


def extract_answer(output_text: str | None) -> str | None:
    """The model's answer in ``output_text`` (see module docstring), or None when there is none."""
    if not output_text or not isinstance(output_text, str):
        return None
    text = truncate_output(output_text)
    boxed = last_boxed(text)
    if boxed:
        return boxed
    head = text[:2000]
    match = _PREFIXED_NUMBER.search(head) if ANSWER_PREFIX in head else None
    if match is None:
        equation = _LEADING_EQUATION.match(head)
        if equation is not None:  # "2 + 2 = 4": the answer is the value after "="
            return equation.group(1).replace(" ", "")
        match = _LEADING_NUMBER.match(head) or _ANSWER_IS.search(head)
    if match is not None:
        return match.group(1).replace(" ", "")
    return None


# ---------------------------------------------------------------------------------------------
# math-verify


def _verify(pred: str, gold: str) -> bool:
    """Symbolic equivalence of two short LaTeX answers with math-verify.

    math-verify's own time limit uses ``signal.alarm``, which only works in the main thread (it
    raises elsewhere). In the main thread we use it with ``VERIFY_TIMEOUT_S``; in other threads we
    call it without a limit, which is safe only because inputs are capped at ``MAX_ANSWER_CHARS``.
    """
    in_main = threading.current_thread() is threading.main_thread()
    limit = VERIFY_TIMEOUT_S if in_main else None
    try:
        gold_parsed = _mv_parse(f"\\boxed{{{gold}}}", parsing_timeout=limit)
        pred_parsed = _mv_parse(f"\\boxed{{{pred}}}", parsing_timeout=limit)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(_mv_verify(gold_parsed, pred_parsed, timeout_seconds=limit))
    except Exception as err:  # noqa: BLE001 - math-verify raises many kinds (timeouts, sympy errors)
        logger.debug("math-verify failed on %r vs %r: %s", pred, gold, err)
        return False


def answers_equal(pred: str, gold: str) -> bool:
    """True when the extracted answer ``pred`` equals the gold answer (numeric, then symbolic)."""
    pred, gold = pred.strip(), gold.strip()
    if not pred or not gold:
        return False
    if pred == gold:
        return True
    numeric = numbers_equal(pred, gold)
    if numeric is not None:
        return numeric
    if len(pred) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
        return False
    return _verify(pred, gold)


# ---------------------------------------------------------------------------------------------
# multiple choice

# a lone letter at the start; not a word such as "I think" / "A cat"
_LETTER_AT_START = re.compile(r"^[\s*(\[`'\"]{0,8}(?:\\text\{)?([A-Z])(?![A-Za-z'])(?![ \t]+[a-z])")
# MMLU-Pro's own extraction order: "answer is (C)", then "Answer: C"
_ANSWER_IS_LETTER = re.compile(r"answer is:?\s*\**\(?([A-Z])\)?(?![A-Za-z])", re.IGNORECASE)
_ANSWER_COLON_LETTER = re.compile(r"answer:\s*\**\(?([A-Z])\)?(?![A-Za-z])", re.IGNORECASE)


def extract_choice(output_text: str | None, n_choices: int) -> str | None:
    """The option letter the output picks, or None: ``\\boxed{C}``; ``C``, ``(C)`` or ``A: C`` at the
    start; else, as MMLU-Pro's own evaluation reads it, ``The answer is (C)`` then ``Answer: C``."""
    if not output_text or not isinstance(output_text, str):
        return None
    text = truncate_output(output_text)
    valid = CHOICE_LETTERS[:n_choices]
    candidates = []
    boxed = last_boxed(text)
    if boxed is not None:
        candidates.append(boxed)
    head = text[:2000]
    if head.lstrip().startswith(ANSWER_PREFIX):
        head = head.lstrip()[len(ANSWER_PREFIX):]
    candidates.append(head)
    for cand in candidates:
        m = _LETTER_AT_START.match(cand)
        if m and m.group(1) in valid:
            return m.group(1)
    for pattern in (_ANSWER_IS_LETTER, _ANSWER_COLON_LETTER):
        for m in pattern.finditer(text[:20000]):
            letter = m.group(1).upper()
            if letter in valid:
                return letter
    return None


def is_correct(output_text: str | None, problem: Problem) -> bool:
    """Whether the model output answers ``problem`` correctly (never raises on model output)."""
    if problem.choices:
        letter = extract_choice(output_text, len(problem.choices))
        return letter is not None and letter == problem.answer.strip().upper()
    pred = extract_answer(output_text)
    if pred is None:
        return False
    return answers_equal(pred, problem.answer)
