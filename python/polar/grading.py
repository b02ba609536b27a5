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
import math
import re
import threading
from fractions import Fraction
from typing import TYPE_CHECKING

from polar.prompts import ANSWER_PREFIX, CHOICE_LETTERS

if TYPE_CHECKING:  # pragma: no cover
    from polar.data import Problem

logger = logging.getLogger(__name__)

#: Outputs longer than this are cut (head and tail kept) before any parsing.
MAX_OUTPUT_CHARS = 20_000
#: Extracted answers longer than this are not handed to math-verify (graded wrong unless numeric).
MAX_ANSWER_CHARS = 300
#: Seconds math-verify may spend on one parse or comparison (main thread only, see ``_verify``).
VERIFY_TIMEOUT_S = 1
#: How many ``\\boxed{`` occurrences (from the end) are tried before giving up.
MAX_BOXED_TRIES = 8

_BOXED = ("\\boxed{", "\\fbox{")
_NUMBER = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?|[-+]?\.\d+"
_LEADING_NUMBER = re.compile(r"^[\s$*(\[`'\"]{0,8}(" + _NUMBER + r")")
_LEADING_EQUATION = re.compile(r"^[\s$]*[-+]?[\d.,]+(?:\s*[-+*/×x]\s*[\d.,]+)+\s*=\s*[$]?(" + _NUMBER + r")")
_ANSWER_IS = re.compile(r"answer is\s*:?\s*[$*]{0,4}(" + _NUMBER + r")", re.IGNORECASE)
_PREFIXED_NUMBER = re.compile(re.escape(ANSWER_PREFIX) + r"[\s$*(\[`'\"]{0,8}(" + _NUMBER + r")")


def _truncate(text: str) -> str:
    if len(text) <= MAX_OUTPUT_CHARS:
        return text
    half = MAX_OUTPUT_CHARS // 2
    return text[:half] + "\n" + text[-half:]


def last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, braces balanced."""
    end = len(text)
    for _ in range(MAX_BOXED_TRIES):
        starts = [(text.rfind(tag, 0, end), tag) for tag in _BOXED]
        start, tag = max(starts)
        if start < 0:
            return None
        depth, i = 1, start + len(tag)
        while i < len(text):
            ch = text[i]
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    return text[start + len(tag):i].strip()
            i += 1
        end = start  # unbalanced: try an earlier one
    return None


def extract_answer(output_text: str | None) -> str | None:
    """The model's answer in ``output_text`` (see module docstring), or None when there is none."""
    if not output_text or not isinstance(output_text, str):
        return None
    text = _truncate(output_text)
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
# numbers


_FRAC = re.compile(r"^\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}$")
_FRAC_SHORT = re.compile(r"^\\[dt]?frac(\d)(\d)$")
_PLAIN = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$")


def _strip_number_text(text: str) -> str:
    s = text.strip().strip("$").strip()
    s = re.sub(r"\\text\{\s*([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\(?:mathrm|mbox|textbf)\{([^{}]*)\}", r"\1", s)
    s = s.replace("\\!", "").replace("\\,", "").replace("\\ ", "").replace("{,}", "")
    s = s.replace("\\%", "").replace("%", "").replace("\\$", "").replace("$", "")
    s = s.replace("^\\circ", "").replace("^{\\circ}", "").replace("°", "")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.strip().rstrip(".").strip()
    if re.fullmatch(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    s = s.replace(" ", "")
    while len(s) > 2 and s[0] == "(" and s[-1] == ")":
        s = s[1:-1]
    if len(s) > 2 and s[0] == "{" and s[-1] == "}":
        s = s[1:-1]
    return s


def parse_number(text: str | None) -> Fraction | None:
    """The exact value of a plain number in ``text`` (``1,000``, ``-0.5``, ``3/4``, ``\\frac{1}{2}``,
    ``50\\%``, ``$18``), or None when ``text`` is not a single number."""
    if text is None or len(text) > 100:
        return None
    s = _strip_number_text(text)
    if not s:
        return None
    sign = 1
    if s[0] in "+-" and len(s) > 1 and not _PLAIN.match(s):
        sign, s = (-1 if s[0] == "-" else 1), s[1:].strip("()")
    try:
        if _PLAIN.match(s):
            return sign * Fraction(s)
        m = _FRAC.match(s) or _FRAC_SHORT.match(s)
        if m is None and s.count("/") == 1:
            m = re.match(r"^([^/]+)/([^/]+)$", s)
        if m is not None:
            num, den = parse_number(m.group(1)), parse_number(m.group(2))
            if num is not None and den is not None and den != 0:
                return sign * num / den
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return None


def _decimals(text: str) -> int:
    m = re.search(r"\.(\d+)\s*$", text.strip().rstrip("%").strip())
    return len(m.group(1)) if m else 0


def numbers_equal(pred: str, gold: str) -> bool | None:
    """Exact numeric comparison; None when either side is not a plain number.

    A gold answer written with 3 or more decimals (``0.6666666667``) is treated as rounded: the
    prediction matches when it rounds to the same decimals.
    """
    p, g = parse_number(pred), parse_number(gold)
    if p is None or g is None:
        return None
    if p == g:
        return True
    d = _decimals(_strip_number_text(gold))
    if d >= 3:
        return abs(float(p) - float(g)) <= 0.5 * 10.0 ** (-d) + 1e-12
    return math.isclose(float(p), float(g), rel_tol=1e-9, abs_tol=0.0)


# ---------------------------------------------------------------------------------------------
# math-verify


def _verify(pred: str, gold: str) -> bool:
    """Symbolic equivalence of two short LaTeX answers with math-verify.

    math-verify's own time limit uses ``signal.alarm``, which only works in the main thread (it
    raises elsewhere). In the main thread we use it with ``VERIFY_TIMEOUT_S``; in other threads we
    call it without a limit, which is safe only because inputs are capped at ``MAX_ANSWER_CHARS``.
    """
    try:
        from math_verify import parse, verify
    except ImportError:  # pragma: no cover - math-verify is a dependency
        logger.warning("math-verify is not installed: symbolic comparison disabled")
        return False
    in_main = threading.current_thread() is threading.main_thread()
    limit = VERIFY_TIMEOUT_S if in_main else None
    try:
        gold_parsed = parse(f"\\boxed{{{gold}}}", parsing_timeout=limit)
        pred_parsed = parse(f"\\boxed{{{pred}}}", parsing_timeout=limit)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=limit))
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

_LETTER_AT_START = re.compile(r"^[\s*(\[`'\"]{0,8}(?:\\text\{)?([A-Z])(?![A-Za-z])")


def extract_choice(output_text: str | None, n_choices: int) -> str | None:
    """The option letter the output picks (``\\boxed{C}``, ``C``, ``(C)``, ``A: C``), or None."""
    if not output_text or not isinstance(output_text, str):
        return None
    text = _truncate(output_text)
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
    return None


def is_correct(output_text: str | None, problem: "Problem") -> bool:
    """Whether the model output answers ``problem`` correctly (never raises on model output)."""
    if problem.choices:
        letter = extract_choice(output_text, len(problem.choices))
        return letter is not None and letter == problem.answer.strip().upper()
    pred = extract_answer(output_text)
    if pred is None:
        return False
    return answers_equal(pred, problem.answer)
