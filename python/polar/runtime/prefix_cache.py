"""States of a prompt prefix kept across :func:`polar.generate` calls.

Within one call, shared-prefix execution computes the state of a prompt node after a program
prefix once. A search asks, round after round, for programs that continue the ones it has just
run, on prompts that start with the same few-shot shots; :class:`PrefixCache` keeps the shots'
units between calls so that a later call only computes the program steps it has not seen.

An entry is one unit of a depth-0 prompt node (:mod:`.units`): the node's tokens ``t`` (the
cache's *anchor*), a program prefix ``pi[:k]``, and what the unit produced: its keys and values
``[span, H_kv, head_dim]`` and the hidden states after it ``[span, d]``. Entries form one trie
per anchor (a node per program prefix); lookups walk it from the root, so a cached unit is only
used with all of its ancestors. Least recently used entries are evicted past ``max_bytes``,
with their descendants (which could no longer be reached).

A cache belongs to one model: :meth:`PrefixCache.bind` (given at construction or done by the first
:func:`polar.generate` call) keeps a weak reference to it and a cheap fingerprint of its weights
(:func:`weight_fingerprint`: dtype, device and sums of a strided sample of every parameter), and
every later use checks both, so a cache never serves the states of another model, of a model
freed and replaced at the same address, or of one whose weights were edited in place.
"""
from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from .._checks import check_int

#: Elements sampled (evenly spaced) from each parameter by :func:`weight_fingerprint`.
FINGERPRINT_SAMPLES = 16


def common_prefix(seqs: Iterable[Sequence[int]]) -> tuple[int, ...]:
    """The longest common prefix of token sequences (``()`` when they share none or there are none)."""
    seqs = [tuple(q) for q in seqs]
    if not seqs:
        return ()
    n = 0
    while all(len(q) > n for q in seqs) and len({q[n] for q in seqs}) == 1:
        n += 1
    return seqs[0][:n]


def next_anchor(seqs: Iterable[Sequence[int]], anchor: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """The cache anchor after a call's prompts ``seqs`` (token lists): the longest common prefix of
    them and the anchor before (``None``: none yet), where the prompts' common part (few-shot shots,
    the question's fixed words) ends. Unchanged when they hold one distinct sequence (a single
    prompt would make its whole self the anchor, which no other prompt extends) or share no token."""
    distinct = {tuple(q) for q in seqs} | ({anchor} if anchor is not None else set())
    if len(distinct) < 2:
        return anchor
    return common_prefix(distinct) or anchor


def prefix_cache_bytes(prefix_cache_mb: int) -> int:
    """The byte budget of ``--prefix-cache-mb`` (MiB; 0: no cache). The one check of that flag:
    :class:`polar.UserError` unless it is an int >= 0."""
    check_int(prefix_cache_mb, "prefix_cache_mb", minimum=0)
    return prefix_cache_mb << 20


@torch.no_grad()
def weight_fingerprint(model: torch.nn.Module) -> tuple:
    """A cheap fingerprint of a model's weights: dtype and device of the first parameter, and per
    parameter its in-place version counter and the sum of ``FINGERPRINT_SAMPLES`` evenly spaced
    elements (one small transfer in all). Changes when the model is moved or cast, or when a
    parameter is edited in place (an edit that leaves every sampled element as it was and does not
    count as an in-place operation, e.g. through ``.data`` on one unsampled element, goes unseen)."""
    params = list(model.parameters())
    if not params:
        return ()
    sums = [p.detach().reshape(-1)[:: max(1, p.numel() // FINGERPRINT_SAMPLES)][:FINGERPRINT_SAMPLES].double().sum()
            for p in params]
    return (str(params[0].dtype), str(params[0].device), tuple(getattr(p, "_version", 0) for p in params),
            tuple(torch.stack(sums).cpu().tolist()))


@dataclass
class CachedUnit:
    """One unit's outputs: ``keys``/``values`` ``[span, H_kv, head_dim]``, ``hidden`` ``[span, d]``."""

    keys: torch.Tensor
    values: torch.Tensor
    hidden: torch.Tensor

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.keys, self.values, self.hidden))


class PrefixCache:
    """An LRU store of prompt-prefix units for one model, at most ``max_bytes`` of tensors.

    ``model``: the model the cache belongs to (default: the first model :func:`polar.generate`
    uses it with; see :meth:`bind`). Counters: ``hits``/``misses`` (units of anchored nodes found /
    computed), ``evictions``. Raises ``ValueError`` for a negative budget, and when used with
    another model or after the model's weights changed (:meth:`check`).
    """

    def __init__(self, max_bytes: int, model: torch.nn.Module | None = None):
        check_int(max_bytes, "max_bytes", minimum=0)
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.hits = self.misses = self.evictions = 0
        self._model: weakref.ref | None = None
        self._fingerprint: tuple | None = None
        self._roots: dict[tuple[int, ...], int] = {}                 # anchor tokens -> root id
        self._child: dict[tuple[int, int], int] = {}                 # (node id, layer) -> node id
        self._children: dict[int, set[int]] = {}
        self._parent: dict[int, tuple[int, int]] = {}                # node id -> (parent id, layer)
        self._units: OrderedDict[int, CachedUnit] = OrderedDict()    # least recently used first
        self._next = 0
        if model is not None:
            self.bind(model)

    @property
    def model(self) -> torch.nn.Module | None:
        """The model the cache is bound to (``None``: not bound yet, or freed)."""
        return None if self._model is None else self._model()

    def bind(self, model: torch.nn.Module) -> None:
        """Tie the cache to ``model`` (the first call), or :meth:`check` that it is that model."""
        if self._model is None:
            self._model = weakref.ref(model)
            self._fingerprint = weight_fingerprint(model)
        else:
            self.check(model)

    def check(self, model: torch.nn.Module) -> None:
        """``ValueError`` unless ``model`` is the bound model, with the weights it had when bound."""
        owner = self.model
        if owner is None and self._model is not None:
            raise ValueError("the model this PrefixCache was made for is gone; use a new cache")
        if owner is not model:
            raise ValueError("this PrefixCache holds states of another model; use one cache per model")
        if weight_fingerprint(model) != self._fingerprint:
            raise ValueError("the model's weights (or dtype, or device) changed since this PrefixCache was made; "
                             "its states are stale: use a new cache")

    @property
    def anchors(self) -> list[tuple[int, ...]]:
        """Token sequences of the depth-0 nodes that have cached units."""
        return list(self._roots)

    def __len__(self) -> int:
        return len(self._units)

    def root(self, tokens: tuple[int, ...], create: bool = False) -> int | None:
        """The trie root of ``tokens`` (created when ``create``), or ``None``."""
        if tokens not in self._roots and create:
            self._roots[tokens] = self._new(None)
        return self._roots.get(tokens)

    def child(self, node: int | None, layer: int) -> int | None:
        """The node after ``node``'s program prefix plus ``layer``, or ``None``."""
        return None if node is None else self._child.get((node, layer))

    def get(self, node: int) -> CachedUnit:
        return self._units[node]

    def add(self, parent: int, layer: int, unit: CachedUnit) -> int:
        """Store ``unit`` as the child ``layer`` of ``parent`` (a root or a stored node); returns its id."""
        node = self._child.get((parent, layer))
        if node is None:
            node = self._new((parent, layer))
        else:
            self.nbytes -= self._units[node].nbytes
        self._units[node] = unit
        self._units.move_to_end(node)
        self.nbytes += unit.nbytes
        return node

    def touch(self, nodes: Iterable[int]) -> None:
        """Mark ``nodes`` as just used, in the given order (pass ancestors last: they are kept longest)."""
        for n in nodes:
            self._units.move_to_end(n)

    def trim(self) -> None:
        """Evict least recently used units (and everything under them) until within ``max_bytes``."""
        while self.nbytes > self.max_bytes and self._units:
            self._drop(next(iter(self._units)))

    def _new(self, link: tuple[int, int] | None) -> int:
        node, self._next = self._next, self._next + 1
        self._children[node] = set()
        if link is not None:
            self._parent[node] = link
            self._child[link] = node
            self._children[link[0]].add(node)
        return node

    def _drop(self, node: int) -> None:
        stack = [node]
        while stack:
            n = stack.pop()
            stack.extend(self._children.pop(n))
            unit = self._units.pop(n)
            self.nbytes -= unit.nbytes
            self.evictions += 1
            parent = self._parent.pop(n)
            del self._child[parent]
            if parent[0] in self._children:
                self._children[parent[0]].discard(n)
        for tokens, root in list(self._roots.items()):                  # forget roots left empty
            if not self._children[root]:
                del self._roots[tokens], self._children[root]
