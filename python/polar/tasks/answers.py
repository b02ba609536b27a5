"""Answer text helpers: the last ``\\boxed{}``, exact number parsing and comparison.

Imports nothing else of polar, so formats, prompts and grading can all use it.
"""
from __future__ import annotations

import math
import re
from fractions import Fraction

#: Outputs longer than this are cut (head and tail kept) before any parsing.
MAX_OUTPUT_CHARS = 20_000
#: How many ``\\boxed{`` occurrences (from the end) are tried before giving up.
MAX_BOXED_TRIES = 8

_BOXED = ("\\boxed{", "\\fbox{")
#: A number as models write it: ``1,000``, ``-2.5``, ``3/4``, ``.5``.
NUMBER_PATTERN = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?|[-+]?\.\d+"


def truncate_output(text: str) -> str:
    """``text`` cut to ``MAX_OUTPUT_CHARS`` (head and tail kept)."""
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
