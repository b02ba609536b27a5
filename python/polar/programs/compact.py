"""Compact program representation (docs/architecture.md section 3; paper section 3.1).

The layers ``0 .. D-1`` are cut into contiguous *segments* of at most ``k_max`` layers, given
by a boundary mask ``z_seg`` (``z_seg[i] == 1``: layer ``i`` starts a segment; ``z_seg[0] == 1``),
and each segment gets one op: how many times it runs, ``0 .. max_runs``. The paper's space is
``max_runs = 2`` (:data:`DEFAULT_MAX_RUNS`), with the three ops named by :class:`Op`: ``SKIP``
(0 runs), ``KEEP`` (1) and ``REPEAT`` (2: segment ``[a..b]`` becomes ``a..b a..b``); a larger
``max_runs`` admits blocks run 3, 4, ... times (``polar search`` repeats a block up to
``max_repeats + 1`` times). Decoding concatenates the segments' contributions in layer order and
gives a :class:`~polar.programs.Program`.

Several representations can decode to the same program (``0 1`` is one kept segment or two).
:func:`parse` returns the unique *canonical* one: fewest segments, then fewest skips, then most
extra runs (``sum(max(0, runs - 1))``; with ``max_runs = 2`` the number of repeats), then larger
segments earlier (the lexicographically larger sequence of segment lengths). For a fixed
segmentation the program determines every op (the number of times a segment's first layer
occurs), so these four keys leave no ties.

Programs outside the space (reordered layers, a layer run more than ``max_runs`` times, a
repeated block longer than ``k_max`` or with a gap) are valid programs without a representation;
:func:`parse` raises :class:`NotInSpaceError` saying why.
"""
from __future__ import annotations

import enum
import itertools
import operator
import sys
from dataclasses import dataclass
from typing import Sequence

from ..errors import UserError
from .._checks import check_int
from .program import Program, validate_program

#: Default maximum segment length.
DEFAULT_K_MAX = 4

#: Default most runs of one segment: the paper's space (skip, keep, repeat).
DEFAULT_MAX_RUNS = 2

#: Default probability that a layer starts a new segment in :func:`random_compact`.
DEFAULT_P_BOUNDARY = 0.5

#: Default ``(skip, keep, repeat)`` probabilities in :func:`random_compact`; the expected
#: program length is ``D * (keep + 2 * repeat) = D``.
DEFAULT_OP_PROBS = (0.15, 0.7, 0.15)


class Op(enum.IntEnum):
    """Names of the paper's three ops. An op is a run count; these are the counts 0, 1 and 2,
    and the predictor's op-class index is the run count."""

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
        raise UserError("z_seg is empty; it needs one entry per layer")
    out = []
    for i, b in enumerate(z):
        try:
            v = operator.index(b)  # ints, bools, numpy / 0-d torch integers; not floats
        except TypeError:
            v = None
        if v not in (0, 1):
            raise UserError(f"z_seg[{i}] is {b!r}; boundary entries must be 0 or 1")
        out.append(v)
    if out[0] != 1:
        raise UserError("z_seg[0] must be 1: layer 0 always starts a segment")
    return tuple(out)


def _as_op(op, where: str) -> int:
    """A run count as an int (an :class:`Op` for 0, 1, 2); ``ValueError`` for a negative or non-int."""
    try:
        runs = operator.index(op)  # ints, bools, Op, numpy / 0-d torch integers; not floats
    except TypeError:
        runs = None
    if runs is None or runs < 0:
        raise UserError(f"{where} is {op!r}; ops must be run counts, ints >= 0 (0 skip, 1 keep, 2 repeat, 3, ...)")
    return Op(runs) if runs <= Op.REPEAT else runs


def _op_name(op: int) -> str:
    return Op(op).name.lower() if op <= Op.REPEAT else f"x{op}"


@dataclass(frozen=True)
class CompactProgram:
    """A boundary mask over ``D = len(z_seg)`` layers and one op (run count) per segment, in layer order.

    Construction checks the structure (binary mask, ``z_seg[0] == 1``, one op per segment, ops
    ints >= 0) and coerces entries to ``int`` (run counts 0, 1, 2 to :class:`Op`); the ``k_max``
    and ``max_runs`` limits and non-emptiness are checked by :func:`build` / :meth:`decode`.
    """

    z_seg: tuple[int, ...]
    ops: tuple[int, ...]

    def __post_init__(self) -> None:
        z = _check_mask(self.z_seg)
        n_segments = sum(z)
        if len(self.ops) != n_segments:
            raise UserError(f"got {len(self.ops)} ops for {n_segments} segments; give one op per segment")
        ops = tuple(_as_op(op, f"ops[{s}]") for s, op in enumerate(self.ops))
        object.__setattr__(self, "z_seg", z)
        object.__setattr__(self, "ops", ops)

    @property
    def num_layers(self) -> int:
        return len(self.z_seg)

    def segments(self) -> list[tuple[int, int]]:
        """Inclusive ``(first, last)`` layer pairs, one per op."""
        return segments(self.z_seg)

    def decode(self, k_max: int = DEFAULT_K_MAX) -> Program:
        """The program this representation stands for (see :func:`build`; any run count decodes)."""
        return build(self.z_seg, self.ops, k_max, max_runs=max((DEFAULT_MAX_RUNS, *self.ops)))

    def __repr__(self) -> str:
        parts = []
        for (a, b), op in zip(self.segments(), self.ops):
            parts.append(f"{a}..{b}:{_op_name(op)}" if b > a else f"{a}:{_op_name(op)}")
        return f"CompactProgram(D={self.num_layers}, [{', '.join(parts)}])"


def build(z_seg: Sequence[int], ops: Sequence[int], k_max: int = DEFAULT_K_MAX, *,
          max_runs: int = DEFAULT_MAX_RUNS) -> Program:
    """Decode a compact representation into a program.

    ``z_seg``: ``D`` entries in ``{0, 1}`` with ``z_seg[0] == 1``; ``ops``: one run count per
    segment (an :class:`Op` or an int in ``0 .. max_runs``). Raises ``ValueError`` for a
    malformed mask, a wrong op count, an op that is not an int in ``0 .. max_runs``, a segment
    longer than ``k_max``, or all segments skipped (a program cannot be empty).
    """
    check_int(k_max, "k_max")
    check_int(max_runs, "max_runs")
    cp = CompactProgram(tuple(z_seg), tuple(ops))
    segs = cp.segments()
    for s, ((a, b), op) in enumerate(zip(segs, cp.ops)):
        if op > max_runs:
            raise UserError(f"ops must be run counts 0..{max_runs} (max_runs={max_runs}); ops[{s}] "
                             f"(segment {a}..{b}) is {int(op)}")
    layers: list[int] = []
    for (a, b), op in zip(segs, cp.ops):
        if b - a + 1 > k_max:
            raise UserError(f"segment {a}..{b} has {b - a + 1} layers, over k_max={k_max}")
        block = list(range(a, b + 1))
        layers.extend(block * int(op))
    if not layers:
        raise UserError("every segment is skipped; a program needs at least one layer")
    return Program(layers)


def parse(program, num_layers: int, k_max: int = DEFAULT_K_MAX, *, max_runs: int = DEFAULT_MAX_RUNS) -> CompactProgram:
    """The canonical compact representation of ``program`` on a ``num_layers``-layer model,
    with segments of at most ``k_max`` layers run at most ``max_runs`` times each.

    Canonical: fewest segments, then fewest skips, then most extra runs (``sum(max(0, op - 1))``),
    then the lexicographically larger sequence of segment lengths. Dynamic programming over
    (layer, program position) states, of which at most ``D + 1`` can be reachable:
    ``O(len(program) + D * k_max^2 * max_runs)``.

    Raises ``ValueError`` for an invalid program (empty, non-int entries, index outside
    ``[0, num_layers)``) and :class:`NotInSpaceError` (a ``ValueError``) for a valid program
    with no representation, saying why.
    """
    check_int(k_max, "k_max")
    check_int(max_runs, "max_runs")
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
    # best[i]: cost (segments, skips, -extra runs) of the best way to decode layers i.. into
    # p[at[i]:]; choice[i] = (length, op) of its first segment. None: impossible.
    best: list[tuple[int, int, int] | None] = [None] * (D + 1)
    choice: list[tuple[int, int] | None] = [None] * (D + 1)
    best[D] = (0, 0, 0) if at[D] == N else None
    for i in range(D - 1, -1, -1):
        j = at[i]
        if j is None:
            continue
        for length in range(min(k_max, D - i), 0, -1):  # longer first: cost ties keep the longer
            rest, nj = best[i + length], at[i + length]
            if rest is None:
                continue
            # The step count nj - j fixes the op; the steps must be the segment, run op times.
            op, extra = divmod(nj - j, length)
            if extra or op > max_runs or p[j:nj] != list(range(i, i + length)) * op:
                continue
            cost = (rest[0] + 1, rest[1] + (op == 0), rest[2] - max(0, op - 1))
            if best[i] is None or cost < best[i]:
                best[i], choice[i] = cost, (length, op)

    if best[0] is None:
        raise NotInSpaceError(_why_not_in_space(p, D, k_max, max_runs))
    z_seg, ops = [0] * D, []
    i = 0
    while i < D:
        length, op = choice[i]
        z_seg[i] = 1
        ops.append(op)  # CompactProgram makes 0, 1, 2 Op members
        i += length
    return CompactProgram(tuple(z_seg), tuple(ops))


def _why_not_in_space(p: list[int], D: int, k_max: int, max_runs: int = DEFAULT_MAX_RUNS) -> str:
    """Explain why a valid program has no compact representation."""
    shown = f"{p}" if len(p) <= 40 else f"[{', '.join(map(str, p[:40]))}, ...] ({len(p)} steps)"
    limits = f"k_max={k_max}" if max_runs == DEFAULT_MAX_RUNS else f"k_max={k_max}, max_runs={max_runs}"
    prefix = f"program {shown} has no compact representation (D={D}, {limits})"
    counts: dict[int, list[int]] = {}
    for k, layer in enumerate(p):
        counts.setdefault(layer, []).append(k)
    at_most = {1: "once", 2: "twice"}.get(max_runs, f"{max_runs} times")
    for layer, steps in sorted(counts.items()):
        if len(steps) > max_runs:
            return f"{prefix}: layer {layer} runs {len(steps)} times (steps {steps}); a segment runs at most {at_most}"
    # Maximal runs of consecutive layers: (first step, first layer, last layer).
    runs: list[tuple[int, int, int]] = []
    for k, layer in enumerate(p):
        if runs and layer == runs[-1][2] + 1:
            runs[-1] = (runs[-1][0], runs[-1][1], layer)
        else:
            runs.append((k, layer, layer))
    usable_from = runs[0][1]  # layers of the current run before this belong to a previous repeat
    block: tuple[int, int] | None = None  # (a, b) while the last run was exactly a rerun of block a..b
    for (_, x1, y1), (k2, x2, y2) in zip(runs, runs[1:]):
        if x2 > y1:  # skips forward
            usable_from, block = x2, None
            continue
        if block is not None and x2 == block[0]:
            pass  # one more run of the same block (the run count was checked above)
        elif block is not None and x2 > block[0]:
            return (f"{prefix}: step {k2} reruns from layer {x2}, inside the block {block[0]}..{y1} just repeated, "
                    f"not from its first layer {block[0]}; a repeat reruns its whole segment")
        elif x2 < usable_from:
            # Layers usable_from..y1 are the ones a repeat could rerun here; earlier ones belong to a
            # finished block (this run went on past it) or lie before a forward skip.
            what = (f"not in the contiguous block {usable_from}..{y1} just run" if usable_from <= y1
                    else f"and layer {y1} ended a repeat")
            return f"{prefix}: step {k2} goes back from layer {y1} to layer {x2}, {what} (a reordering, not a repeat)"
        if y2 < y1:
            return (f"{prefix}: step {k2} starts rerunning layers {x2}..{y1} but stops after layer {y2}; "
                    f"a repeat reruns its whole segment")
        if y1 - x2 + 1 > k_max:
            return f"{prefix}: repeated block {x2}..{y1} has {y1 - x2 + 1} layers, over k_max={k_max}"
        usable_from = y1 + 1
        block = (x2, y1) if y2 == y1 else None  # a run past y1 ends the block
    return f"{prefix}: no segmentation with segments of at most {k_max} layers decodes to it"


def in_space(program, num_layers: int, k_max: int = DEFAULT_K_MAX, *, max_runs: int = DEFAULT_MAX_RUNS) -> bool:
    """Whether ``program`` has a compact representation (segments of at most ``k_max`` layers,
    run at most ``max_runs`` times). Invalid programs raise ``ValueError``."""
    try:
        parse(program, num_layers, k_max, max_runs=max_runs)
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
    (always once the current segment has ``k_max`` layers), each op drawn from ``op_probs``
    (weights of running a segment ``0, 1, ..., len(op_probs) - 1`` times; the default is the
    paper's ``skip, keep, repeat``); samples that skip everything are redrawn.

    ``rng`` is anything with a ``random()`` method returning floats in ``[0, 1)``
    (``random.Random``, ``numpy.random.Generator``). With the defaults, lengths are about
    ``D +- 0.16 D`` (mean ``D``). The result is not necessarily canonical; use
    ``parse(cp.decode(k_max), num_layers, k_max, max_runs=len(op_probs) - 1)`` for that.
    Raises ``ValueError`` for ``op_probs`` that are not at least 2 non-negative weights with a
    positive weight on some non-zero run count.
    """
    check_int(k_max, "k_max")
    if num_layers <= 0:
        raise UserError(f"num_layers must be positive, got {num_layers}")
    if not 0.0 <= p_boundary <= 1.0:
        raise UserError(f"p_boundary must be in [0, 1], got {p_boundary}")
    probs = [float(x) for x in op_probs]
    if len(probs) < 2 or min(probs) < 0 or sum(probs) <= 0 or sum(probs[1:]) <= 0:
        raise UserError(f"op_probs must be at least 2 non-negative weights (runs 0 (skip), 1 (keep), 2 (repeat), ...) "
                         f"with some weight on runs >= 1, got {op_probs}")
    total = sum(probs)
    cum = [c / total for c in itertools.accumulate(probs[:-1])]  # cum[k] = P(runs <= k); the last count takes the rest

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
            ops.append(next((k for k, c in enumerate(cum) if u < c), len(cum)))
        if any(op != Op.SKIP for op in ops):
            return CompactProgram(tuple(z_seg), tuple(ops))
