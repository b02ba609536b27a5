"""Argument checks shared by every stage (one rule, one message): bad input fails before compute."""
from __future__ import annotations

from .errors import UserError


def check_int(value, name: str, minimum: int = 1, optional: bool = False, hint: str = "") -> None:
    """Raise :class:`polar.UserError` unless ``value`` is an int ``>= minimum`` (a bool is not an int here);
    ``None`` passes when ``optional``. ``hint`` is added to the message in parentheses."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        extra = f" ({hint})" if hint else ""
        raise UserError(f"{name} must be {what}{' or None' if optional else ''}{extra}, got {value!r}")
