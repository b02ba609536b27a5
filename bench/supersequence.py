"""Common supersequences of a batch of programs: lower bound, greedy policies, offline beam search.

Any common supersequence of the batch's programs is a valid wave order (wave ``j`` runs layer
``seq[j]`` on every row whose next step needs it), so the shortest one is the least number of
waves any scheduler can reach. Finding it is NP-hard for many sequences; here:

- :func:`count_lower_bound`: every layer ``l`` must occur at least ``max_r count_r(l)`` times,
  so ``sum_l max_r count_r(l)`` waves are needed (at least the longest program).
- :func:`greedy_waves`: cheap online policies (one choice per wave, Python): ``lowest`` (the
  library's default), ``most`` (the layer that the most ready rows need, ties to the lower
  index), ``critical`` (the layer whose ready rows have the most remaining steps in total),
  ``lowest_lookahead`` (``lowest``, but prefer the layer with the smallest lower bound after
  the wave among the two lowest candidates).
- :func:`beam_supersequence`: offline beam search over next-layer choices, states ranked by
  the count lower bound of what remains (then by total remaining steps).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def count_lower_bound(programs: Sequence[Sequence[int]], num_layers: int) -> int:
    """``sum over layers of max over rows of (occurrences of the layer in the row's program)``."""
    counts = np.zeros((len(programs), num_layers), dtype=np.int64)
    for r, p in enumerate(programs):
        np.add.at(counts[r], np.asarray(p, dtype=np.int64), 1)
    return int(counts.max(0).sum())


class _Tables:
    """Padded programs ``next_layer[r, k]`` (-1 past the end) and suffix layer counts."""

    def __init__(self, programs: Sequence[Sequence[int]], num_layers: int):
        B = len(programs)
        L = max(len(p) for p in programs)
        self.lengths = np.array([len(p) for p in programs], dtype=np.int64)
        self.next_layer = np.full((B, L + 1), -1, dtype=np.int64)
        # suffix[r, k, l]: occurrences of layer l in programs[r][k:]
        self.suffix = np.zeros((B, L + 1, num_layers), dtype=np.int16)
        for r, p in enumerate(programs):
            self.next_layer[r, : len(p)] = p
            for k in range(len(p) - 1, -1, -1):
                self.suffix[r, k] = self.suffix[r, k + 1]
                self.suffix[r, k, p[k]] += 1
        self.rows = np.arange(B)

    def bound(self, pos: np.ndarray) -> np.ndarray:
        """Count lower bound of the remaining work for states ``pos`` ``[S, B]`` -> ``[S]``."""
        return self.suffix[self.rows[None, :], pos].max(1).sum(-1)


def beam_supersequence(programs: Sequence[Sequence[int]], num_layers: int, width: int = 64) -> list[int]:
    """A short common supersequence of ``programs`` by beam search (``width`` states per depth).

    Every state in the beam has the same depth, so the first state to finish gives the result.
    Width 1 is the online greedy policy ``greedy_lb`` (minimise the bound after each wave).
    """
    t = _Tables(programs, num_layers)
    beam = np.zeros((1, len(programs)), dtype=np.int64)
    history: list[tuple[np.ndarray, np.ndarray]] = []  # per depth: (parent index, layer) of each state
    while True:
        nxt = t.next_layer[t.rows[None, :], beam]  # [S, B]
        parents, layers = [], []
        for s in range(beam.shape[0]):
            cands = np.unique(nxt[s][nxt[s] >= 0])
            parents.append(np.full(cands.size, s))
            layers.append(cands)
        parent = np.concatenate(parents)
        layer = np.concatenate(layers)
        children = beam[parent] + (nxt[parent] == layer[:, None])
        _, first = np.unique(children, axis=0, return_index=True)
        parent, layer, children = parent[first], layer[first], children[first]
        remaining = (t.lengths[None, :] - children)
        done = np.flatnonzero(remaining.sum(1) == 0)
        if done.size:
            seq = [int(layer[done[0]])]
            p = int(parent[done[0]])
            for par, lay in reversed(history):
                seq.append(int(lay[p]))
                p = int(par[p])
            return seq[::-1]
        order = np.lexsort((remaining.sum(1), t.bound(children)))[:width]
        history.append((parent[order], layer[order]))
        beam = children[order]


def embed(programs: Sequence[Sequence[int]], seq: Sequence[int]) -> np.ndarray:
    """``use[j, r]``: row ``r`` runs its next step at position ``j`` of the supersequence ``seq``
    (greedy earliest embedding). Raises ``ValueError`` if ``seq`` is not a common supersequence."""
    use = np.zeros((len(seq), len(programs)), dtype=bool)
    for r, p in enumerate(programs):
        k = 0
        for j, layer in enumerate(seq):
            if k < len(p) and p[k] == layer:
                use[j, r] = True
                k += 1
        if k != len(p):
            raise ValueError(f"row {r}: the sequence is not a supersequence of its program")
    return use


Chooser = Callable[[dict[int, int], list[int], Sequence[Sequence[int]]], int]


def _lowest(ready: dict[int, int], pos, programs) -> int:
    return min(ready.values())


def _most(ready: dict[int, int], pos, programs) -> int:
    tally: dict[int, int] = {}
    for layer in ready.values():
        tally[layer] = tally.get(layer, 0) + 1
    return min(tally, key=lambda l: (-tally[l], l))


def _critical(ready: dict[int, int], pos, programs) -> int:
    weight: dict[int, int] = {}
    for r, layer in ready.items():
        weight[layer] = weight.get(layer, 0) + len(programs[r]) - pos[r]
    return min(weight, key=lambda l: (-weight[l], l))


def _lowest_lookahead(ready: dict[int, int], pos, programs) -> int:
    cands = sorted(set(ready.values()))[:2]
    if len(cands) == 1:
        return cands[0]
    best = None
    for layer in cands:
        after = [p[pos[r] + (r in ready and ready[r] == layer):] for r, p in enumerate(programs)]
        key = (count_lower_bound([a for a in after if a] or [[0]], 1 + max(max(p) for p in programs)), layer)
        best = key if best is None or key < best else best
    return best[1]


POLICIES: dict[str, Chooser] = {
    "lowest": _lowest, "most": _most, "critical": _critical, "lowest_lookahead": _lowest_lookahead,
}


def greedy_waves(programs: Sequence[Sequence[int]], policy: str) -> list[int]:
    """The wave layer sequence of an online policy from :data:`POLICIES` (one choice per wave)."""
    choose = POLICIES[policy]
    pos = [0] * len(programs)
    seq: list[int] = []
    while True:
        ready = {r: p[pos[r]] for r, p in enumerate(programs) if pos[r] < len(p)}
        if not ready:
            return seq
        layer = choose(ready, pos, programs)
        seq.append(layer)
        for r, l in ready.items():
            if l == layer:
                pos[r] += 1
