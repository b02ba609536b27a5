"""Wave scheduling (docs/architecture.md section 6): the compiled planner and a plain Python reference.

A wave ``(layer, rows, steps)`` applies one layer to a set of rows, each at its own program
step. Invariants: every ``(row, step)`` appears once; a row's steps appear in increasing wave
order; a wave holds a row at most once; rows inside a wave are sorted.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import torch

from ..errors import UserError
from .._C import plan_waves as _compiled_plan_waves
from .packing import PackedPrograms

#: Scheduling policies. ``bound`` (default): greedy on the remaining-waves lower bound;
#: ``lowest``: lowest needed layer first; ``step``: every row advances one step per round.
POLICIES = ("bound", "lowest", "step")
DEFAULT_POLICY = "bound"


@dataclass(frozen=True)
class Waves:
    """Flat wave arrays (all int32): wave ``w`` runs layer ``layers[w]`` on
    ``rows[offsets[w]:offsets[w+1]]`` at steps ``steps[offsets[w]:offsets[w+1]]``."""

    layers: torch.Tensor
    offsets: torch.Tensor
    rows: torch.Tensor
    steps: torch.Tensor

    @property
    def num_waves(self) -> int:
        return self.layers.numel()

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """Yield ``(layer, rows, steps)`` per wave (rows/steps as int64 tensors)."""
        rows = self.rows.long()
        steps = self.steps.long()
        bounds = self.offsets.tolist()
        for w, layer in enumerate(self.layers.tolist()):
            yield layer, rows[bounds[w] : bounds[w + 1]], steps[bounds[w] : bounds[w + 1]]

    def as_lists(self) -> list[tuple[int, list[int], list[int]]]:
        return [(l, r.tolist(), s.tolist()) for l, r, s in self]


def check_policy(policy: str) -> None:
    """Raise ``ValueError`` unless ``policy`` is one of :data:`POLICIES`."""
    if policy not in POLICIES:
        raise UserError(f"unknown scheduling policy {policy!r}; expected one of {POLICIES}")


def plan_waves(packed: PackedPrograms, policy: str = DEFAULT_POLICY, num_layers: int | None = None) -> Waves:
    """Plan waves with the compiled scheduler ``polar._C.plan_waves``.

    Raises ``ValueError`` for an unknown policy or a layer index outside ``[0, num_layers)``.
    """
    check_policy(policy)
    layers, offsets, rows, steps = _compiled_plan_waves(packed.offsets, packed.layers, policy,
                                                 -1 if num_layers is None else num_layers)
    return Waves(layers, offsets, rows, steps)


def plan_waves_reference(programs: list[list[int]], policy: str = DEFAULT_POLICY) -> list[tuple[int, list[int], list[int]]]:
    """Plain Python planner with the same semantics as the compiled one (for tests and benchmarks).

    Returns a list of ``(layer, rows, steps)`` with rows sorted inside each wave.

    Policies, each wave running one layer with every row whose next layer it is:
    ``lowest`` picks the lowest such layer. ``bound`` works on a lower bound of the waves still
    needed, ``sum over layers l of max over rows of (times l remains in the row's program)``:
    it picks the layer whose wave clears the largest fraction of the rows holding that layer's
    maximum (at 1 the bound drops), then the layer with most ready rows, then the lowest.
    ``step`` advances every row one step per round (one wave per distinct layer).
    """
    check_policy(policy)
    pos = [0] * len(programs)
    waves: list[tuple[int, list[int], list[int]]] = []

    def emit(layer: int, members: list[int]) -> None:
        members = sorted(members)
        waves.append((layer, members, [pos[r] for r in members]))
        for r in members:
            pos[r] += 1

    if policy in ("lowest", "bound"):
        while True:
            ready = {r: p[pos[r]] for r, p in enumerate(programs) if pos[r] < len(p)}
            if not ready:
                return waves
            if policy == "lowest":
                layer = min(ready.values())
            else:
                def key(l):
                    remaining = [p[pos[r]:].count(l) for r, p in enumerate(programs)]
                    holders = [r for r, k in enumerate(remaining) if k == max(remaining)]
                    cleared = Fraction(sum(ready.get(r) == l for r in holders), len(holders))
                    return (-cleared, -sum(1 for x in ready.values() if x == l), l)
                layer = min(set(ready.values()), key=key)
            emit(layer, [r for r, l in ready.items() if l == layer])
    while True:  # step
        active = [r for r, p in enumerate(programs) if pos[r] < len(p)]
        if not active:
            return waves
        nexts = {r: programs[r][pos[r]] for r in active}
        for layer in sorted(set(nexts.values())):
            emit(layer, [r for r in active if nexts[r] == layer])
