"""Programs of layers and their validation (docs/architecture.md section 2).

A program is a non-empty sequence of decoder-layer indices ``(i_1, .., i_K)`` with
``0 <= i_k < D``; skipping omits indices, looping repeats them. The full forward pass is
``(0, 1, .., D-1)``. Any sequence of ints is accepted where a program is expected;
:class:`Program` is an immutable, hashable, validated tuple.
"""
from __future__ import annotations

import operator
from typing import Iterable, Sequence

import torch

from ..errors import UserError


#: Default upper bound on a program's length, as a multiple of the model depth.
DEFAULT_MAX_LENGTH_FACTOR = 4


class Program(tuple):
    """An immutable program of layer indices. ``Program([0, 1, 1, 3])``."""

    def __new__(cls, layers: Iterable[int]):
        return super().__new__(cls, (as_layer_index(i) for i in layers))

    @classmethod
    def full(cls, num_layers: int) -> "Program":
        """The full forward pass ``(0, .., D-1)``."""
        if num_layers <= 0:
            raise UserError(f"num_layers must be positive, got {num_layers}")
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


def as_layer_index(x) -> int:
    """``x`` as an int if it is an integer (Python, numpy or 0-d integer tensor), else ``TypeError``."""
    if isinstance(x, bool) or (isinstance(x, torch.Tensor) and (x.dtype.is_floating_point or x.dtype == torch.bool)):
        raise TypeError(f"{x!r} is not an int")
    return operator.index(x)


def _as_layer_list(program, row: int | None) -> list[int]:
    where = f"program for row {row}" if row is not None else "program"
    if isinstance(program, torch.Tensor):
        if program.dim() != 1 or program.dtype.is_floating_point or program.dtype == torch.bool:
            raise UserError(f"{where}: a tensor program must be 1-D integer, got {program.dtype} {tuple(program.shape)}")
        return [int(x) for x in program.tolist()]
    if hasattr(program, "tolist") and not isinstance(program, Sequence):  # numpy arrays
        program = program.tolist()
    if isinstance(program, (str, bytes)) or not isinstance(program, Sequence):
        raise UserError(f"{where}: expected a sequence of ints, got {type(program).__name__}")
    out = []
    for k, x in enumerate(program):
        try:
            out.append(as_layer_index(x))
        except TypeError:
            raise UserError(f"{where}: entry {k} is {x!r}, not an int") from None
    return out


def validate_program(program, num_layers: int, max_length: int | None = None, row: int | None = None) -> Program:
    """Check one program against a ``num_layers``-layer model and return it as a :class:`Program`.

    ``program``: a sequence of ints (list, tuple, 1-D integer tensor or array) or a
    :class:`polar.CompactProgram` over ``num_layers`` layers (decoded).
    Raises ``ValueError`` naming ``row`` (when given) for: not a sequence of ints, empty,
    longer than ``max_length`` (default ``4 * num_layers``), or an index outside ``[0, num_layers)``.
    """
    if num_layers <= 0:
        raise UserError(f"num_layers must be positive, got {num_layers}")
    where = f"program for row {row}" if row is not None else "program"
    if hasattr(program, "z_seg") and callable(getattr(program, "decode", None)):  # a CompactProgram
        if program.num_layers != num_layers:
            raise UserError(f"{where}: compact program over {program.num_layers} layers, the model has {num_layers}")
        program = program.decode(k_max=num_layers)
    layers = _as_layer_list(program, row)
    if not layers:
        raise UserError(f"{where} is empty; a program needs at least one layer")
    limit = DEFAULT_MAX_LENGTH_FACTOR * num_layers if max_length is None else max_length
    if len(layers) > limit:
        raise UserError(f"{where} has {len(layers)} steps, over the limit of {limit}")
    for k, i in enumerate(layers):
        if not 0 <= i < num_layers:
            raise UserError(f"{where}: step {k} uses layer {i}, outside [0, {num_layers}) for this {num_layers}-layer model")
    return Program(layers)


def validate_programs(programs, batch_size: int, num_layers: int, max_length: int | None = None) -> list[Program]:
    """Validate ``batch_size`` programs (or one program, broadcast to every row).

    ``programs`` is a list of programs, one per row, or a single :class:`Program` which is
    used for every row. Raises ``ValueError`` on a count mismatch or on any bad program.
    """
    if isinstance(programs, Program):
        return [validate_program(programs, num_layers, max_length)] * batch_size
    if isinstance(programs, (str, bytes)) or not isinstance(programs, Sequence):
        raise UserError(f"programs must be a list of {batch_size} programs (or one polar.Program), got {type(programs).__name__}")
    if len(programs) != batch_size:
        raise UserError(f"got {len(programs)} programs for a batch of {batch_size} rows; give one program per row")
    return [validate_program(p, num_layers, max_length, row=r) for r, p in enumerate(programs)]
