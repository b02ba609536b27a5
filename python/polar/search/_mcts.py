"""Monte Carlo tree search over programs of layers, one tree per problem (paper appendix B).

Nodes are programs; the root is the full pass ``(0, .., D-1)``. An action edits the current
program (a tuple of layer indices, not the layer order ``0..D-1``):

- *skip*: drop a contiguous block of ``k`` entries, ``1 <= k <= max_block``;
- *repeat*: run a contiguous block of ``k`` entries ``r`` more times, ``1 <= r <= max_repeats``
  (``(a, b, c)`` with block ``(b,)`` and ``r = 2`` becomes ``(a, b, b, b, c)``).

The space restricts the actions (``skip``: skips only, ``loop``: repeats only, ``skip+loop``:
both); every program stays within ``ceil(min_length * D) .. floor(max_length * D)`` entries.
Each distinct program is one node of its tree: an action that leads to a program already in the
tree (another edit order) is not taken again, so a simulation always evaluates a new program.

One simulation: descend from the root by the tree policy, expand one new child (progressive
widening: a node holds at most ``max(1, floor(widening * sqrt(visits)))`` children before its
best child is descended into), evaluate that child's program (reward 1 if its answer grades
correct, else 0; there is no random rollout) and add the reward along the path. The tree policy
picks the child maximising ``R/v + c * sqrt(ln V / v) - lambda * |pi| / D`` (``R`` reward sum and
``v`` visits of the child, ``V`` visits of the parent, ``|pi|`` the child's program length).

Rounds and virtual loss: :meth:`Tree.propose` selects up to ``n`` leaves at once; every node on
a selected path counts the visit immediately (reward 0 until the result arrives), which lowers
its UCB so that the next selection of the round takes another path. :meth:`Tree.record`
adds the real rewards. A tree's first round is its root alone. All randomness (the order in
which a node tries its actions) comes from a generator seeded by ``(seed, problem id)``, so a
tree depends on nothing but its seed, its problem and the rewards, never on which other trees
shared its batches.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from ..errors import UserError

#: Search spaces (paper table 1): which actions a tree may take.
SPACES: tuple[str, ...] = ("skip", "loop", "skip+loop")

ProgramKey = tuple[int, ...]


@dataclass(frozen=True)
class SearchConfig:
    """Settings of the tree search; every field is recorded with the results."""

    space: str = "skip+loop"     # one of SPACES
    simulations: int = 64        # new programs evaluated per problem (the full program not counted)
    max_block: int = 4           # k: entries in one skipped or repeated block, 1..k
    max_repeats: int = 4         # r: extra runs of a repeated block, 1..r
    min_length: float = 0.65     # shortest program, as a multiple of D (rounded up)
    max_length: float = 1.3      # longest program, as a multiple of D (rounded down)
    exploration: float = 1.0     # c: weight of the UCB exploration term
    length_penalty: float = 0.1  # lambda: UCB penalty per program length / D
    widening: float = 2.0        # a node holds at most max(1, floor(widening * sqrt(visits))) children
    leaves_per_round: int = 4    # leaves one tree contributes to a batched round (virtual loss)
    seed: int = 0                # with the problem id, seeds each tree's generator

    def validate(self) -> "SearchConfig":
        """``self`` if every field is in range, else ``ValueError`` naming the field."""
        if self.space not in SPACES:
            raise UserError(f"unknown search space {self.space!r}; expected one of {SPACES}")
        for name in ("simulations", "max_block", "max_repeats", "leaves_per_round"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "simulations" else 1):
                raise UserError(f"{name} must be a {'non-negative' if name == 'simulations' else 'positive'} "
                                 f"int, got {value!r}")
        if not 0 < self.min_length <= 1 <= self.max_length:
            raise UserError(f"length bounds must satisfy 0 < min_length <= 1 <= max_length, "
                             f"got {self.min_length} .. {self.max_length}")
        for name in ("exploration", "length_penalty", "widening"):
            if not getattr(self, name) >= 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.widening == 0:
            raise UserError("widening must be > 0")
        return self

    def length_bounds(self, num_layers: int) -> tuple[int, int]:
        """``(shortest, longest)`` program length allowed on a ``num_layers``-layer model."""
        lo = max(1, math.ceil(self.min_length * num_layers - 1e-9))
        hi = math.floor(self.max_length * num_layers + 1e-9)
        return lo, hi


def child_programs(program: ProgramKey, config: SearchConfig, num_layers: int) -> list[ProgramKey]:
    """The distinct programs one action away from ``program`` within the space and the length
    bounds, in a fixed order (skips by block size and start, then repeats by size, start, count)."""
    lo, hi = config.length_bounds(num_layers)
    n = len(program)
    out: dict[ProgramKey, None] = {}
    if config.space in ("skip", "skip+loop"):
        for k in range(1, config.max_block + 1):
            if n - k < lo:
                break
            for s in range(n - k + 1):
                out.setdefault(program[:s] + program[s + k:], None)
    if config.space in ("loop", "skip+loop"):
        for k in range(1, config.max_block + 1):
            for s in range(n - k + 1):
                block = program[s:s + k]
                for r in range(1, config.max_repeats + 1):
                    if n + r * k > hi:
                        break
                    out.setdefault(program[:s + k] + block * r + program[s + k:], None)
    out.pop(program, None)
    return [p for p in out if lo <= len(p) <= hi]


@dataclass(eq=False)
class Node:
    """One program of a tree with its statistics."""

    program: ProgramKey
    parent: "Node | None"
    index: int                                  # creation order in its tree (root 0)
    children: list["Node"] = field(default_factory=list)
    visits: int = 0                             # simulations through this node (pending ones included)
    reward: float = 0.0                         # summed rewards of finished simulations through it
    correct: bool | None = None                 # this program's grade; None while pending
    untried: list[ProgramKey] | None = None     # child programs not expanded yet (lazily built)
    exhausted: bool = False                     # nothing left to expand below this node


class Tree:
    """The search tree of one problem (see the module docstring).

    Use: ``nodes = tree.propose(n)``; evaluate their programs; ``tree.record(node, correct)``
    for each; repeat until :attr:`finished`.
    """

    def __init__(self, problem_id: str, num_layers: int, config: SearchConfig):
        self.problem_id = problem_id
        self.num_layers = num_layers
        self.config = config
        self.rng = random.Random(f"polar-mcts:{config.seed}:{problem_id}")  # str seed: stable across runs
        root_program = tuple(range(num_layers))
        self.root = Node(root_program, None, 0)
        self.nodes: dict[ProgramKey, Node] = {root_program: self.root}
        self.pending = 0

    # -- state ------------------------------------------------------------------------------
    @property
    def simulations(self) -> int:
        """Simulations started (non-root nodes, pending ones included)."""
        return len(self.nodes) - 1

    @property
    def finished(self) -> bool:
        return (self.pending == 0 and self.root.correct is not None
                and (self.simulations >= self.config.simulations or self.root.exhausted))

    def max_proposals(self, n: int) -> int:
        """An upper bound on how many nodes :meth:`propose` (``n``) returns now."""
        if self.pending:
            return 0
        if self.root.correct is None:
            return 1
        return 0 if self.root.exhausted else max(0, min(n, self.config.simulations - self.simulations))

    # -- rounds -----------------------------------------------------------------------------
    def propose(self, n: int) -> list[Node]:
        """Up to ``n`` new nodes to evaluate (virtual loss applied); the root alone in the first
        round; ``[]`` when the tree is finished. Call only when nothing is pending."""
        if self.pending:
            raise RuntimeError(f"tree {self.problem_id}: propose() while {self.pending} results are pending")
        if self.root.correct is None:
            self.root.visits += 1
            self.pending = 1
            return [self.root]
        leaves = []
        for _ in range(self.max_proposals(n)):
            leaf = self._select()
            if leaf is None:
                break
            leaves.append(leaf)
        self.pending = len(leaves)
        return leaves

    def record(self, node: Node, correct: bool) -> None:
        """The grade of a proposed node: its reward is added along its path."""
        if node.correct is not None:
            raise RuntimeError(f"tree {self.problem_id}: program {list(node.program)} recorded twice")
        node.correct = bool(correct)
        self.pending -= 1
        walk: Node | None = node
        while walk is not None:
            walk.reward += float(correct)
            walk = walk.parent

    def _select(self) -> Node | None:
        """Descend by the tree policy and expand one new node (visits counted); None when the
        whole reachable space is in the tree."""
        node = self.root
        while True:
            if node.untried is None:
                node.untried = child_programs(node.program, self.config, self.num_layers)
                self.rng.shuffle(node.untried)
            live = [c for c in node.children if not c.exhausted]
            limit = max(1, math.floor(self.config.widening * math.sqrt(max(node.visits, 1))))
            if node.untried and (len(node.children) < limit or not live):
                child = self._expand(node)
                if child is not None:
                    return child
                live = [c for c in node.children if not c.exhausted]
            if not live:  # nothing new below this node: mark it and start again from the root
                node.exhausted = True
                if node is self.root:
                    return None
                node = self.root
                continue
            node = max(live, key=lambda c, parent=node: self._ucb(c, parent))

    def _expand(self, node: Node) -> Node | None:
        while node.untried:
            program = node.untried.pop()
            if program in self.nodes:  # reached before by another edit order
                continue
            child = Node(program, node, len(self.nodes))
            node.children.append(child)
            self.nodes[program] = child
            walk: Node | None = child
            while walk is not None:  # virtual loss: the visit counts now, the reward later
                walk.visits += 1
                walk = walk.parent
            return child
        return None

    def _ucb(self, child: Node, parent: Node) -> float:
        c = self.config
        explore = c.exploration * math.sqrt(math.log(max(parent.visits, 1)) / child.visits)
        return child.reward / child.visits + explore - c.length_penalty * len(child.program) / self.num_layers

    # -- results ----------------------------------------------------------------------------
    def evaluated(self) -> list[Node]:
        """Nodes with a grade, in creation order (the root first)."""
        return [n for n in sorted(self.nodes.values(), key=lambda n: n.index) if n.correct is not None]

    def snapshot(self) -> list[tuple]:
        """``(program, parent program, visits, reward, correct)`` per node in creation order: the
        whole tree as plain data (two trees are equal iff their snapshots are)."""
        return [(n.program, n.parent.program if n.parent else None, n.visits, n.reward, n.correct)
                for n in sorted(self.nodes.values(), key=lambda n: n.index)]
