"""Compact program representation (DESIGN.md section 2; paper section 3.1).

The layers ``0 .. D-1`` are cut into contiguous *segments* of at most ``k_max`` layers, given
by a boundary mask ``z_seg`` (``z_seg[i] == 1``: layer ``i`` starts a segment; ``z_seg[0] == 1``),
and each segment gets one :class:`Op`: ``SKIP`` (omit it), ``KEEP`` (run it once) or ``REPEAT``
(run it twice: segment ``[a..b]`` becomes ``a..b a..b``). Decoding concatenates the segments'
contributions in layer order and gives a :class:`~polar.programs.Program`.

Several representations can decode to the same program (``0 1`` is one kept segment or two).
:func:`parse` returns the unique *canonical* one: fewest segments, then fewest skips, then most
repeats, then larger segments earlier (the lexicographically larger sequence of segment
lengths). For a fixed segmentation the program determines every op (the number of times a
segment's first layer occurs is 0, 1 or 2), so these four keys leave no ties.

Programs outside the space (reordered layers, a layer run three times, a repeated block longer
than ``k_max`` or with a gap) are valid programs without a representation; :func:`parse`
raises :class:`NotInSpaceError` saying why.
"""
from __future__ import annotations

import enum
import operator
import sys
from dataclasses import dataclass
from typing import Sequence

from .program import Program, validate_program

#: Default maximum segment length.
DEFAULT_K_MAX = 4

#: Default probability that a layer starts a new segment in :func:`random_compact`.
DEFAULT_P_BOUNDARY = 0.5

#: Default ``(skip, keep, repeat)`` probabilities in :func:`random_compact`; the expected
#: program length is ``D * (keep + 2 * repeat) = D``.
DEFAULT_OP_PROBS = (0.15, 0.7, 0.15)


class Op(enum.IntEnum):
    """What a segment does. The values are the predictor's op-class indices."""

    SKIP = 0
    KEEP = 1
    REPEAT = 2


class NotInSpaceError(ValueError):
    """A valid program that has no compact representation (the message says why)."""


def segments(z_seg: Sequence[int]) -> list[tuple[int, int]]:
    """The segments of a boundary mask as inclusive ``(first, last)`` layer pairs, in order.

    Raises ``ValueError`` if ``z_seg`` is empty, not binary, or ``z_seg[0] != 1``.
    """
    z = _check_mask(z_seg)
    starts = [i for i, b in enumerate(z) if b]
    ends = [s - 1 for s in starts[1:]] + [len(z) - 1]
    return list(zip(starts, ends))


def _check_mask(z_seg: Sequence[int]) -> tuple[int, ...]:
    z = tuple(z_seg)
    if not z:
        raise ValueError("z_seg is empty; it needs one entry per layer")
    out = []
    for i, b in enumerate(z):
        try:
            v = operator.index(b)  # ints, bools, numpy / 0-d torch integers; not floats
        except TypeError:
            v = None
        if v not in (0, 1):
            raise ValueError(f"z_seg[{i}] is {b!r}; boundary entries must be 0 or 1")
        out.append(v)
    if out[0] != 1:
        raise ValueError("z_seg[0] must be 1: layer 0 always starts a segment")
    return tuple(out)


@dataclass(frozen=True)
class CompactProgram:
    """A boundary mask over ``D = len(z_seg)`` layers and one op per segment, in layer order.

    Construction checks the structure (binary mask, ``z_seg[0] == 1``, one op per segment) and
    coerces entries to ``int`` / :class:`Op`; the ``k_max`` limit and non-emptiness are checked
    by :func:`build` / :meth:`decode`.
    """

    z_seg: tuple[int, ...]
    ops: tuple[Op, ...]

    def __post_init__(self) -> None:
        z = _check_mask(self.z_seg)
        n_segments = sum(z)
        if len(self.ops) != n_segments:
            raise ValueError(f"got {len(self.ops)} ops for {n_segments} segments; give one op per segment")
        try:
            ops = tuple(Op(op) for op in self.ops)
        except ValueError as e:
            raise ValueError(f"ops must be Op values 0 (skip), 1 (keep) or 2 (repeat): {e}") from None
        object.__setattr__(self, "z_seg", z)
        object.__setattr__(self, "ops", ops)

    @property
    def num_layers(self) -> int:
        return len(self.z_seg)

    def segments(self) -> list[tuple[int, int]]:
        """Inclusive ``(first, last)`` layer pairs, one per op."""
        return segments(self.z_seg)

    def decode(self, k_max: int = DEFAULT_K_MAX) -> Program:
        """The program this representation stands for (see :func:`build`)."""
        return build(self.z_seg, self.ops, k_max)

    def __repr__(self) -> str:
        parts = []
        for (a, b), op in zip(self.segments(), self.ops):
            parts.append(f"{a}..{b}:{op.name.lower()}" if b > a else f"{a}:{op.name.lower()}")
        return f"CompactProgram(D={self.num_layers}, [{', '.join(parts)}])"


def _check_k_max(k_max: int) -> None:
    if isinstance(k_max, bool) or not isinstance(k_max, int) or k_max < 1:
        raise ValueError(f"k_max must be a positive int, got {k_max!r}")


def build(z_seg: Sequence[int], ops: Sequence[int], k_max: int = DEFAULT_K_MAX) -> Program:
    """Decode a compact representation into a program.

    ``z_seg``: ``D`` entries in ``{0, 1}`` with ``z_seg[0] == 1``; ``ops``: one :class:`Op` (or
    its int value) per segment. Raises ``ValueError`` for a malformed mask, a wrong op count, a
    segment longer than ``k_max``, or all segments skipped (a program cannot be empty).
    """
    _check_k_max(k_max)
    cp = CompactProgram(tuple(z_seg), tuple(ops))
    layers: list[int] = []
    for (a, b), op in zip(cp.segments(), cp.ops):
        if b - a + 1 > k_max:
            raise ValueError(f"segment {a}..{b} has {b - a + 1} layers, over k_max={k_max}")
        block = list(range(a, b + 1))
        layers.extend(block * int(op))
    if not layers:
        raise ValueError("every segment is skipped; a program needs at least one layer")
    return Program(layers)


def parse(program, num_layers: int, k_max: int = DEFAULT_K_MAX) -> CompactProgram:
    """The canonical compact representation of ``program`` on a ``num_layers``-layer model.

    Canonical: fewest segments, then fewest skips, then most repeats, then the lexicographically
    larger sequence of segment lengths. Dynamic programming over (layer, program position)
    states, of which at most ``D + 1`` can be reachable: ``O(len(program) + D * k_max^2)``.

    Raises ``ValueError`` for an invalid program (empty, non-int entries, index outside
    ``[0, num_layers)``) and :class:`NotInSpaceError` (a ``ValueError``) for a valid program
    with no representation, saying why.
    """
    _check_k_max(k_max)
    p = list(validate_program(program, num_layers, max_length=sys.maxsize))
    D, N = num_layers, len(p)
    # A state (i, j) means: layers 0..i-1 are decoded into steps p[:j]. Decoding emits layers in
    # segment order, so then max(p[:j]) < i <= min(p[j:]); for a given i at most one j fits
    # (two would put the steps between them both below and at or above i): at[i].
    prefix_max = [-1] * (N + 1)
    for k in range(N):
        prefix_max[k + 1] = max(prefix_max[k], p[k])
    suffix_min = [D] * (N + 1)
    for k in range(N - 1, -1, -1):
        suffix_min[k] = min(suffix_min[k + 1], p[k])
    at: list[int | None] = []
    j = 0
    for i in range(D + 1):
        while suffix_min[j] < i:  # suffix_min is non-decreasing and suffix_min[N] = D
            j += 1
        at.append(j if prefix_max[j] < i else None)
    # best[i]: cost (segments, skips, -repeats) of the best way to decode layers i.. into
    # p[at[i]:]; choice[i] = (length, op) of its first segment. None: impossible.
    best: list[tuple[int, int, int] | None] = [None] * (D + 1)
    choice: list[tuple[int, Op] | None] = [None] * (D + 1)
    best[D] = (0, 0, 0) if at[D] == N else None
    for i in range(D - 1, -1, -1):
        j = at[i]
        if j is None:
            continue
        for length in range(min(k_max, D - i), 0, -1):  # longer first: cost ties keep the longer
            rest, nj = best[i + length], at[i + length]
            if rest is None:
                continue
            # The step count nj - j fixes the op; the steps must be the segment, once or twice.
            op = {0: Op.SKIP, length: Op.KEEP, 2 * length: Op.REPEAT}.get(nj - j)
            if op is None or p[j:nj] != list(range(i, i + length)) * int(op):
                continue
            cost = (rest[0] + 1, rest[1] + (op == Op.SKIP), rest[2] - (op == Op.REPEAT))
            if best[i] is None or cost < best[i]:
                best[i], choice[i] = cost, (length, op)

    if best[0] is None:
        raise NotInSpaceError(_why_not_in_space(p, D, k_max))
    z_seg, ops = [0] * D, []
    i = 0
    while i < D:
        length, op = choice[i]
        z_seg[i] = 1
        ops.append(op)
        i += length
    return CompactProgram(tuple(z_seg), tuple(ops))


def _why_not_in_space(p: list[int], D: int, k_max: int) -> str:
    """Explain why a valid program has no compact representation."""
    shown = f"{p}" if len(p) <= 40 else f"[{', '.join(map(str, p[:40]))}, ...] ({len(p)} steps)"
    prefix = f"program {shown} has no compact representation (D={D}, k_max={k_max})"
    counts: dict[int, list[int]] = {}
    for k, layer in enumerate(p):
        counts.setdefault(layer, []).append(k)
    for layer, steps in sorted(counts.items()):
        if len(steps) > 2:
            return f"{prefix}: layer {layer} runs {len(steps)} times (steps {steps}); a segment runs at most twice"
    # Maximal runs of consecutive layers: (first step, first layer, last layer).
    runs: list[tuple[int, int, int]] = []
    for k, layer in enumerate(p):
        if runs and layer == runs[-1][2] + 1:
            runs[-1] = (runs[-1][0], runs[-1][1], layer)
        else:
            runs.append((k, layer, layer))
    usable_from = runs[0][1]  # layers of the current run before this belong to a previous repeat
    for (_, x1, y1), (k2, x2, y2) in zip(runs, runs[1:]):
        if x2 > y1:  # skips forward
            usable_from = x2
            continue
        if x2 < usable_from:
            # Layers usable_from..y1 are the ones a repeat could rerun here. (x1 <= x2 < usable_from
            # cannot happen: layer x2 would run in this run, the previous one and the next.)
            what = (f"not in the contiguous block {usable_from}..{y1} just run" if usable_from <= y1
                    else f"and layer {y1} ended a repeat")
            return f"{prefix}: step {k2} goes back from layer {y1} to layer {x2}, {what} (a reordering, not a repeat)"
        if y2 < y1:
            return (f"{prefix}: step {k2} starts rerunning layers {x2}..{y1} but stops after layer {y2}; "
                    f"a repeat reruns its whole segment")
        if y1 - x2 + 1 > k_max:
            return f"{prefix}: repeated block {x2}..{y1} has {y1 - x2 + 1} layers, over k_max={k_max}"
        usable_from = y1 + 1
    return f"{prefix}: no segmentation with segments of at most {k_max} layers decodes to it"


def in_space(program, num_layers: int, k_max: int = DEFAULT_K_MAX) -> bool:
    """Whether ``program`` has a compact representation. Invalid programs raise ``ValueError``."""
    try:
        parse(program, num_layers, k_max)
    except NotInSpaceError:
        return False
    return True


def random_compact(
    num_layers: int,
    rng,
    k_max: int = DEFAULT_K_MAX,
    p_boundary: float = DEFAULT_P_BOUNDARY,
    op_probs: Sequence[float] = DEFAULT_OP_PROBS,
) -> CompactProgram:
    """Sample a representation: layer ``i > 0`` starts a segment with probability ``p_boundary``
    (always once the current segment has ``k_max`` layers), ops drawn from ``op_probs``
    (``skip, keep, repeat``); samples that skip everything are redrawn.

    ``rng`` is anything with a ``random()`` method returning floats in ``[0, 1)``
    (``random.Random``, ``numpy.random.Generator``). With the defaults, lengths are about
    ``D +- 0.16 D`` (mean ``D``). The result is not necessarily canonical; use
    ``parse(cp.decode(k_max), num_layers, k_max)`` for that.
    """
    _check_k_max(k_max)
    if num_layers <= 0:
        raise ValueError(f"num_layers must be positive, got {num_layers}")
    if not 0.0 <= p_boundary <= 1.0:
        raise ValueError(f"p_boundary must be in [0, 1], got {p_boundary}")
    probs = [float(x) for x in op_probs]
    if len(probs) != 3 or min(probs) < 0 or sum(probs) <= 0 or probs[1] + probs[2] <= 0:
        raise ValueError(f"op_probs must be 3 non-negative weights (skip, keep, repeat) with keep + repeat > 0, got {op_probs}")
    total = sum(probs)
    cum = [probs[0] / total, (probs[0] + probs[1]) / total]

    while True:
        z_seg, run = [1], 1
        for _ in range(1, num_layers):
            if run >= k_max or rng.random() < p_boundary:
                z_seg.append(1)
                run = 1
            else:
                z_seg.append(0)
                run += 1
        ops = []
        for _ in range(sum(z_seg)):
            u = rng.random()
            ops.append(Op.SKIP if u < cum[0] else Op.KEEP if u < cum[1] else Op.REPEAT)
        if any(op != Op.SKIP for op in ops):
            return CompactProgram(tuple(z_seg), tuple(ops))
