"""Online routing: the router interface (docs/architecture.md section 15).

A *router* decides, while a batch runs, which layers each row runs. Any object with a
``decide`` method is one::

    class SkipOddLayers:
        def decide(self, layer, hidden, attention_mask):
            return torch.full((hidden.shape[0],), 1 - layer % 2, dtype=torch.long)

    out = polar.batched_execute(model, None, inputs, router=SkipOddLayers())
    out.programs                     # the decided programs, here [0, 2, 4, ..] for every row

The engine (:mod:`.routed`) runs layers in order ``0 .. D-1``. Before layer ``i`` it calls
``router.decide(i, hidden, attention_mask)`` once, for the whole batch:

- ``hidden`` ``[B, T, d]``: the states entering layer ``i`` of every row, in batch order, padded
  as the inputs are (pad columns hold unspecified finite values). Read it, do not modify it.
- ``attention_mask`` ``[B, T]`` (long, 1 = real token).
- returns an integer tensor ``[B]`` (``torch.long`` preferred; any integer dtype, any device) with
  :data:`SKIP` (0), :data:`RUN` (1, run once) or :data:`REPEAT` (2, run twice in a row). A wrong
  shape, dtype or value raises :class:`polar.UserError` naming the layer.

Rows that run layer ``i`` form its wave (gathered, no padding); rows with 2 run it again in a
second wave. Keys/values are stored per program step (a repeated layer owns two cache entries).
The decisions over the prompt fix each row's program for decoding: ``decide`` is called in
prefill only, and ``generate(programs=result.programs)`` replays a routed generation exactly.

Optional gate hook (duck-typed: the engine checks ``hasattr(router, "gates")``)::

    def gates(self, layer, hidden, attention_mask) -> LayerGates | None

called in prefill right after ``decide`` with the same arguments; ``None`` runs layer ``layer``
plainly. A returned :class:`LayerGates` applies to every run of the layer in this pass (both
runs of a repeat). In decode the engine reuses the attention gates decided over the prompt (a
whole-sequence decision) and calls ``gates`` again only for layers whose prefill gates had a
``token`` field, with the single new column: ``hidden`` ``[n, 1, d]`` and ``attention_mask``
``[n, 1]`` of the ``n`` rows still generating (in batch order; their ``attention`` field is
ignored there). Gated layers are computed from the layer's parts (:mod:`.gated`), densely over
the wave's rows.

Notes for router authors: ``batched_execute`` and ``generate`` run under
``torch.inference_mode()`` (train routers with your own forward, e.g. teacher forcing along label
programs); ``decide``'s output is moved to the CPU once per layer (one sync per layer on a GPU);
a router is called with the whole batch, so decisions must be per row (never read row 0 for all).

Empty programs: a row whose router skips every layer gets the empty program (embed, final norm,
LM head) in ``.programs``; such a result is well defined, but ``generate(programs=...)`` refuses
empty programs, so that row cannot be replayed as a program.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from ..errors import UserError
from ..programs import Program

#: Decision values of :meth:`Router.decide`.
SKIP, RUN, REPEAT = 0, 1, 2
#: The most times a router can run one layer in a row.
MAX_RUNS = REPEAT


@runtime_checkable
class Router(Protocol):
    """Decides per layer and row: skip (0), run once (1) or run twice (2). See the module docstring."""

    def decide(self, layer: int, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``hidden`` ``[B, T, d]`` entering ``layer``, ``attention_mask`` ``[B, T]`` -> LongTensor ``[B]``."""
        ...


@dataclass
class LayerGates:
    """Gates of one layer for the rows of one call of ``router.gates`` (``B`` rows, ``T`` columns).

    - ``attention``: ``[B]`` float; multiplies the attention sub-layer's output per row,
      ``h = h + g * attn(norm(h))`` (MindSkip). Decided in prefill and reused in decode.
    - ``token``: ``[B, T]`` bool; ``True``: the token runs the full layer; ``False``: its
      keys/values are still computed (the cache stays consistent) but its output is
      ``token_adapter(x)`` instead of the layer's (FlexiDepth). Asked again in decode.
    - ``token_adapter``: ``x`` ``[n, T, d]`` (the hidden entering the layer) -> new hidden
      ``[n, T, d]`` for the skipped tokens; required when ``token`` has a ``False``.
    - ``token_scale``: ``[B, T]`` float or ``None`` (= 1); for tokens that run the full layer, the
      layer's update is scaled: ``h + s * (layer(h) - h)``.

    Order inside a gated layer: ``h1 = x + attention * attn(norm1(x))``, ``y = h1 + mlp(norm2(h1))``,
    ``y = x + token_scale * (y - x)``, then ``y = where(token, y, token_adapter(x))``.
    """

    attention: torch.Tensor | None = None
    token: torch.Tensor | None = None
    token_adapter: Callable[[torch.Tensor], torch.Tensor] | None = None
    token_scale: torch.Tensor | None = None


def check_router(router) -> None:
    """Raise :class:`UserError` unless ``router`` has a callable ``decide`` (and, if present, ``gates``)."""
    if not callable(getattr(router, "decide", None)):
        raise UserError(f"router {type(router).__name__} has no decide(layer, hidden, attention_mask) method")
    if hasattr(router, "gates") and not callable(router.gates):
        raise UserError(f"router {type(router).__name__}: 'gates' is not callable")


def check_decisions(decisions, layer: int, batch_size: int) -> torch.Tensor:
    """Validate ``router.decide``'s output for ``layer``: returns it as a CPU long tensor ``[B]``.

    Raises :class:`UserError` naming the layer for a non-tensor, a wrong shape, a float/bool dtype
    or a value outside ``{0, 1, 2}``."""
    where = f"router.decide for layer {layer}"
    if not isinstance(decisions, torch.Tensor):
        raise UserError(f"{where} returned {type(decisions).__name__}; expected a LongTensor of shape [{batch_size}]")
    if decisions.shape != (batch_size,):
        raise UserError(f"{where} returned shape {tuple(decisions.shape)}; expected [{batch_size}] (one per row)")
    if decisions.dtype.is_floating_point or decisions.dtype.is_complex or decisions.dtype == torch.bool:
        raise UserError(f"{where} returned dtype {decisions.dtype}; expected an integer tensor (torch.long)")
    out = decisions.detach().to("cpu", torch.long)
    bad = ((out < SKIP) | (out > MAX_RUNS)).nonzero()
    if bad.numel():
        row = int(bad[0, 0])
        raise UserError(f"{where}: row {row} got {int(out[row])}; expected 0 (skip), 1 (run) or 2 (repeat)")
    return out


def check_gates(gates, layer: int, batch_size: int, columns: int) -> LayerGates | None:
    """Validate ``router.gates``'s output for ``layer`` (``None`` or a :class:`LayerGates` over
    ``batch_size`` rows and ``columns`` token columns). Raises :class:`UserError` naming the layer."""
    if gates is None:
        return None
    where = f"router.gates for layer {layer}"
    if not isinstance(gates, LayerGates):
        raise UserError(f"{where} returned {type(gates).__name__}; expected polar.LayerGates or None")
    for name, shape, kind in (("attention", (batch_size,), "float"), ("token", (batch_size, columns), "bool"),
                              ("token_scale", (batch_size, columns), "float")):
        value = getattr(gates, name)
        if value is None:
            continue
        if not isinstance(value, torch.Tensor) or value.shape != shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise UserError(f"{where}: {name} is {got}; expected a {kind} tensor of shape {list(shape)}")
        if (kind == "bool") != (value.dtype == torch.bool) or (kind == "float" and not value.dtype.is_floating_point):
            raise UserError(f"{where}: {name} has dtype {value.dtype}; expected a {kind} tensor")
    if gates.token is None and (gates.token_scale is not None or gates.token_adapter is not None):
        raise UserError(f"{where}: token_scale/token_adapter given without token gates")
    if gates.token is not None and gates.token_adapter is None and not bool(gates.token.all()):
        raise UserError(f"{where}: some tokens skip the layer but no token_adapter is given")
    if gates.token_adapter is not None and not callable(gates.token_adapter):
        raise UserError(f"{where}: token_adapter is not callable")
    return gates


def decisions_of(program: Sequence[int], num_layers: int) -> list[int]:
    """How many times each layer runs in ``program``: ``[D]`` ints in ``{0, 1, 2}``, for a program a
    router can produce (layers ascending, each at most twice in a row, e.g. ``[0, 1, 1, 3]`` ->
    ``[1, 2, 0, 1]`` for ``D = 4``). Raises :class:`UserError` for a reordered program, a layer run
    more than twice, or an index outside ``[0, num_layers)``."""
    counts = [0] * num_layers
    prev = -1
    for k, layer in enumerate(int(i) for i in program):
        if not 0 <= layer < num_layers:
            raise UserError(f"program step {k}: layer {layer} outside [0, {num_layers})")
        if layer < prev:
            raise UserError(f"program step {k}: layer {layer} after layer {prev}; a router runs layers in order")
        counts[layer] += 1
        if counts[layer] > MAX_RUNS:
            raise UserError(f"program step {k}: layer {layer} runs more than {MAX_RUNS} times")
        prev = layer
    return counts


def program_of(counts: Sequence[int]) -> Program:
    """The program of per-layer run counts (inverse of :func:`decisions_of`): ``[1, 2, 0, 1]`` ->
    ``Program([0, 1, 1, 3])``."""
    return Program(layer for layer, c in enumerate(counts) for _ in range(int(c)))


class ReplayRouter:
    """A router that replays given programs: row ``r`` runs ``programs[r]`` (one per row, or one
    :class:`polar.Program` for every row). Each program must be one a router can produce
    (:func:`decisions_of`: layers in order, each at most twice). Raises :class:`UserError` at
    construction for such a program, and in ``decide`` for a batch of another size."""

    def __init__(self, programs, num_layers: int | None = None):
        self.broadcast = isinstance(programs, Program)
        progs = [programs] if self.broadcast else list(programs)
        if not progs:
            raise UserError("ReplayRouter needs at least one program")
        D = num_layers if num_layers is not None else 1 + max((max(p) for p in progs if len(p)), default=0)
        rows = []
        for r, p in enumerate(progs):
            try:
                rows.append(decisions_of(p, D))
            except UserError as e:
                raise UserError(f"ReplayRouter: program for row {r}: {e}") from None
        self.counts = torch.tensor(rows, dtype=torch.long)                 # [B, D] (or [1, D] broadcast)

    def decide(self, layer: int, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        B = hidden.shape[0]
        if layer >= self.counts.shape[1]:
            return torch.zeros(B, dtype=torch.long)
        if self.broadcast:
            return self.counts[0, layer].expand(B)
        if B != self.counts.shape[0]:
            raise UserError(f"ReplayRouter holds {self.counts.shape[0]} programs, the batch has {B} rows")
        return self.counts[:, layer]


__all__ = ["MAX_RUNS", "REPEAT", "RUN", "SKIP", "LayerGates", "ReplayRouter", "Router", "check_decisions",
           "check_gates", "check_router", "decisions_of", "program_of"]
