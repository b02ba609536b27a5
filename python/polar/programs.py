"""Programs of layers: validation and CSR packing (DESIGN.md sections 1 and 4).

A program is a non-empty sequence of decoder-layer indices ``(i_1, .., i_K)`` with
``0 <= i_k < D``; skipping omits indices, looping repeats them. The full forward pass is
``(0, 1, .., D-1)``. Any sequence of ints is accepted where a program is expected;
:class:`Program` is an immutable, hashable, validated tuple.
"""
from __future__ import annotations

import itertools
import operator
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

#: Default upper bound on a program's length, as a multiple of the model depth.
DEFAULT_MAX_LENGTH_FACTOR = 4


class Program(tuple):
    """An immutable program of layer indices. ``Program([0, 1, 1, 3])``."""

    def __new__(cls, layers: Iterable[int]):
        return super().__new__(cls, (_as_int(i) for i in layers))

    @classmethod
    def full(cls, num_layers: int) -> "Program":
        """The full forward pass ``(0, .., D-1)``."""
        if num_layers <= 0:
            raise ValueError(f"num_layers must be positive, got {num_layers}")
        return cls(range(num_layers))

    def __repr__(self) -> str:
        return f"Program({list(self)})"

    @property
    def unique_layers(self) -> int:
        """Number of distinct layers the program runs."""
        return len(set(self))


def full(num_layers: int) -> Program:
    """The full forward pass ``(0, .., D-1)`` of a ``num_layers``-layer model."""
    return Program.full(num_layers)


def _as_int(x) -> int:
    """``x`` as an int if it is an integer (Python, numpy or 0-d integer tensor), else ``TypeError``."""
    if isinstance(x, bool) or (isinstance(x, torch.Tensor) and (x.dtype.is_floating_point or x.dtype == torch.bool)):
        raise TypeError(f"{x!r} is not an int")
    return operator.index(x)


def _as_layer_list(program, row: int | None) -> list[int]:
    where = f"program for row {row}" if row is not None else "program"
    if isinstance(program, torch.Tensor):
        if program.dim() != 1 or program.dtype.is_floating_point or program.dtype == torch.bool:
            raise ValueError(f"{where}: a tensor program must be 1-D integer, got {program.dtype} {tuple(program.shape)}")
        return [int(x) for x in program.tolist()]
    if hasattr(program, "tolist") and not isinstance(program, Sequence):  # numpy arrays
        program = program.tolist()
    if isinstance(program, (str, bytes)) or not isinstance(program, Sequence):
        raise ValueError(f"{where}: expected a sequence of ints, got {type(program).__name__}")
    out = []
    for k, x in enumerate(program):
        try:
            out.append(_as_int(x))
        except TypeError:
            raise ValueError(f"{where}: entry {k} is {x!r}, not an int") from None
    return out


def validate_program(program, num_layers: int, max_length: int | None = None, row: int | None = None) -> Program:
    """Check one program against a ``num_layers``-layer model and return it as a :class:`Program`.

    Raises ``ValueError`` naming ``row`` (when given) for: not a sequence of ints, empty,
    longer than ``max_length`` (default ``4 * num_layers``), or an index outside ``[0, num_layers)``.
    """
    if num_layers <= 0:
        raise ValueError(f"num_layers must be positive, got {num_layers}")
    where = f"program for row {row}" if row is not None else "program"
    layers = _as_layer_list(program, row)
    if not layers:
        raise ValueError(f"{where} is empty; a program needs at least one layer")
    limit = DEFAULT_MAX_LENGTH_FACTOR * num_layers if max_length is None else max_length
    if len(layers) > limit:
        raise ValueError(f"{where} has {len(layers)} steps, over the limit of {limit}")
    for k, i in enumerate(layers):
        if not 0 <= i < num_layers:
            raise ValueError(f"{where}: step {k} uses layer {i}, outside [0, {num_layers}) for this {num_layers}-layer model")
    return Program(layers)


def validate_programs(programs, batch_size: int, num_layers: int, max_length: int | None = None) -> list[Program]:
    """Validate ``batch_size`` programs (or one program, broadcast to every row).

    ``programs`` is a list of programs, one per row, or a single :class:`Program` which is
    used for every row. Raises ``ValueError`` on a count mismatch or on any bad program.
    """
    if isinstance(programs, Program):
        return [validate_program(programs, num_layers, max_length)] * batch_size
    if isinstance(programs, (str, bytes)) or not isinstance(programs, Sequence):
        raise ValueError(f"programs must be a list of {batch_size} programs (or one polar.Program), got {type(programs).__name__}")
    if len(programs) != batch_size:
        raise ValueError(f"got {len(programs)} programs for a batch of {batch_size} rows; give one program per row")
    return [validate_program(p, num_layers, max_length, row=r) for r, p in enumerate(programs)]


@dataclass(frozen=True)
class PackedPrograms:
    """Programs in CSR form: row ``r`` runs ``layers[offsets[r]:offsets[r+1]]``.

    ``offsets``: int32 ``[B+1]``; ``layers``: int32 ``[N]``, ``N = sum of lengths``. The KV-cache
    slot of ``(row, step)`` is ``offsets[row] + step``.
    """

    offsets: torch.Tensor
    layers: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.offsets.numel() - 1

    @property
    def total_steps(self) -> int:
        return self.layers.numel()

    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def subset(self, rows: Sequence[int]) -> "PackedPrograms":
        """The packed programs of ``rows`` only (in that order), offsets restarting at 0.

        Raises ``ValueError`` for a row outside ``[0, B)``."""
        rows = [int(r) for r in rows]
        bad = [r for r in rows if not 0 <= r < self.batch_size]
        if bad:
            raise ValueError(f"row {bad[0]} is outside [0, {self.batch_size})")
        lengths = self.lengths()
        parts = [self.layers[self.offsets[r] : self.offsets[r + 1]] for r in rows]
        offsets = torch.zeros(len(rows) + 1, dtype=torch.int32)
        if rows:
            offsets[1:] = torch.cumsum(lengths[rows], 0)
        layers = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int32)
        return PackedPrograms(offsets, layers.to(torch.int32))


def pack(programs: Sequence[Sequence[int]]) -> PackedPrograms:
    """Pack programs into CSR int32 arrays (entries must be ints; ranges are checked by
    :func:`validate_programs`). Raises ``TypeError`` for a non-integer entry."""
    lengths = np.fromiter((len(p) for p in programs), dtype=np.int64, count=len(programs))
    offsets = np.zeros(len(programs) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    if all(isinstance(p, Program) for p in programs):  # already checked entry by entry
        flat = np.fromiter(itertools.chain.from_iterable(programs), dtype=np.int32, count=int(offsets[-1]))
    else:
        flat = np.asarray(list(itertools.chain.from_iterable(programs)))
        if flat.size and flat.dtype.kind not in "iu":  # bools, floats, tensors: the per-entry check says which
            flat = np.fromiter((_as_int(x) for x in flat.tolist()), dtype=np.int64, count=flat.size)
        flat = flat.astype(np.int32).reshape(-1)
    return PackedPrograms(torch.from_numpy(offsets), torch.from_numpy(flat))
