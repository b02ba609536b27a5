"""CSR packing of programs (docs/architecture.md section 6): ``offsets[B+1]``, ``layers[N]`` (int32).

The KV-cache slot of ``(row, step)`` is ``offsets[row] + step``.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..programs.program import Program, as_layer_index


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
            flat = np.fromiter((as_layer_index(x) for x in flat.tolist()), dtype=np.int64, count=flat.size)
        flat = flat.astype(np.int32).reshape(-1)
    return PackedPrograms(torch.from_numpy(offsets), torch.from_numpy(flat))
