"""Programs written as text: ``full``, a layer list, or the compact segment form.

One parser for every place a program is typed (``polar lm-eval --program``, lm-eval's
``model_args``, where commas separate arguments, so a program's parts are separated by spaces,
``+`` or ``;``; commas are accepted too where they are free)::

    full                       -> 0 1 .. D-1
    0-5 5 6-29                 -> 0 1 2 3 4 5 5 6 .. 29   (a range is inclusive; "a..b" works too)
    0-3:keep 4-5:skip 6-9:repeat 10-29:keep ...    compact form: segments tiling 0..D-1 in order,
                               one op each (skip, keep, repeat, or xN: N runs); "a:op" for one layer

The compact form is decoded with :func:`polar.build` (segments of at most ``k_max`` layers), so it
names exactly the programs of the segment space; ``repr(CompactProgram)`` pastes in without its
brackets and commas. Errors are :class:`polar.UserError` (a ``ValueError``) saying what is wrong.
"""
from __future__ import annotations

import re

from ..errors import UserError
from .compact import DEFAULT_K_MAX, DEFAULT_MAX_RUNS, build
from .program import Program, full, validate_program

_SEPARATORS = re.compile(r"[\s+;,]+")
_RANGE = re.compile(r"^(\d+)(?:(?:-|\.\.)(\d+))?$")
_OP_NAMES = {"skip": 0, "keep": 1, "repeat": 2}


def _layer_range(token: str, text: str) -> list[int]:
    m = _RANGE.match(token)
    if m is None:
        raise UserError(f"program {text!r}: {token!r} is not a layer index or a range a-b")
    a = int(m.group(1))
    b = a if m.group(2) is None else int(m.group(2))
    return list(range(a, b + 1)) if a <= b else list(range(a, b - 1, -1))


def _op(name: str, token: str, text: str) -> int:
    name = name.strip().lower()
    if name in _OP_NAMES:
        return _OP_NAMES[name]
    if re.fullmatch(r"x\d+", name):
        return int(name[1:])
    raise UserError(f"program {text!r}: segment {token!r} has op {name!r}; expected skip, keep, repeat or xN")


def parse_program_text(text: str, num_layers: int, k_max: int = DEFAULT_K_MAX) -> Program:
    """The program ``text`` names on a ``num_layers``-layer model (see the module docstring).

    Raises :class:`polar.UserError` for an empty text, a malformed part, compact segments that do
    not tile ``0..D-1`` in order, or a program the model cannot run (a layer out of range)."""
    if not isinstance(text, str):
        raise UserError(f"program text must be a string, got {type(text).__name__}")
    stripped = text.strip().strip("[]")
    if stripped.lower() == "full":
        return full(num_layers)
    tokens = [t for t in _SEPARATORS.split(stripped) if t]
    if not tokens:
        raise UserError("program text is empty; give 'full', a layer list such as '0-5 5 6-29' or segments")
    compact = [":" in t for t in tokens]
    if any(compact) and not all(compact):
        raise UserError(f"program {text!r} mixes layer indices and 'a-b:op' segments; use one form")
    if not any(compact):
        layers = [i for t in tokens for i in _layer_range(t, text)]
        return validate_program(layers, num_layers)
    z_seg, ops, expected = [0] * num_layers, [], 0
    for token in tokens:
        span, name = token.split(":", 1)
        layers = _layer_range(span, text)
        if layers[0] != expected or layers != sorted(layers):
            raise UserError(f"program {text!r}: segment {token!r} should start at layer {expected} and ascend "
                            f"(segments tile 0..{num_layers - 1} in order)")
        if layers[0] >= num_layers:
            raise UserError(f"program {text!r}: segment {token!r} is past the model's {num_layers} layers")
        z_seg[layers[0]] = 1
        ops.append(_op(name, token, text))
        expected = layers[-1] + 1
    if expected != num_layers:
        raise UserError(f"program {text!r}: segments cover layers 0..{expected - 1}, the model has {num_layers}")
    try:
        program = build(z_seg, ops, k_max, max_runs=max(DEFAULT_MAX_RUNS, *ops))
    except ValueError as e:
        raise UserError(f"program {text!r}: {e}") from None
    return validate_program(program, num_layers)


def program_text(program) -> str:
    """A short text form of a program that :func:`parse_program_text` reads back (ascending runs
    of consecutive layers as ranges): ``[0, 1, 2, 2, 3]`` -> ``"0-2 2-3"``."""
    layers = list(program)
    parts, start = [], 0
    for k in range(1, len(layers) + 1):
        if k == len(layers) or layers[k] != layers[k - 1] + 1:
            a, b = layers[start], layers[k - 1]
            parts.append(str(a) if a == b else f"{a}-{b}")
            start = k
    return " ".join(parts)
