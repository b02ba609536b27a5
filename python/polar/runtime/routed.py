"""The routed engine (docs/architecture.md section 15): layers run in order, a router decides per row.

Prefill (:func:`routed_prefill`): for ``i = 0 .. D-1``, ``router.decide(i, hidden, mask)`` over the
whole batch gives ``c [B]`` in ``{0, 1, 2}``; the rows with ``c >= 1`` form layer ``i``'s first wave,
those with ``c = 2`` its second (gathered rows, no padding, the ordinary runners of
:mod:`.runners`; a layer the router gates runs through :func:`.gated.run_layer_gated`). Each wave's
fresh keys/values are kept in a chunk of their own (``[n, H_kv, T, hd]``, rows and program steps
recorded), since the programs, hence the slots, are known only at the end.

Decode (:class:`RoutedGeneration`): the prompt's decisions fix each row's program. The chunks are
copied once into a :class:`.cache.StepKVCache` with the exact slots of those programs
(``offsets[row] + step``: ``N = sum of lengths`` entries), then every decode step runs the same
layer-ordered waves over the active rows (re-planned when rows leave). Layer order is also the
best schedule here: a routed program runs each layer at most twice in a row, so
``sum over layers of max runs`` waves, the lower bound of docs/architecture.md section 6, and
exactly the waves of the ``lowest`` policy on these programs. Attention gates decided over the
prompt are reused; token gates are asked again for each new column. No prefix sharing: rows decide
independently.

Worked example (``D = 3``, two rows, decisions ``[1, 2]``, ``[0, 1]``, ``[2, 1]`` at layers 0, 1, 2)::

    layer 0: wave rows [0, 1]            (row 0 step 0, row 1 step 0)
    layer 1: wave rows [0, 1], then [1]  (row 0 step 1; row 1 steps 1, 2)
    layer 2: wave rows [0, 1], then [0]  (row 0 steps 2, 3; row 1 step 3)
    programs: [0, 1, 2, 2], [0, 1, 1, 2]; slots: row 0 -> 0..3, row 1 -> 4..7
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..programs import Program
from .adapters import ModelAdapter
from .cache import StepKVCache
from .gated import run_layer_gated
from .masks import PassContext, last_token_states, token_positions
from .packing import pack
from .routing import LayerGates, check_decisions, check_gates, check_router, program_of
from .runners import WaveRunner, WaveStep


@dataclass
class GateRecord:
    """What the router's gates decided in prefill, for the result and for decode.

    ``attention`` ``[B, D]`` float32 (1 where no attention gate was given) or ``None`` (none at
    all); ``gated[i]``: layer ``i`` had gates; ``token_gated[i]``: it had token gates;
    ``skipped_tokens`` ``[B]``: (real token, program step) pairs that took the token adapter."""

    attention: torch.Tensor | None
    gated: list[bool]
    token_gated: list[bool]
    skipped_tokens: torch.Tensor

    @classmethod
    def empty(cls, batch_size: int, num_layers: int) -> "GateRecord":
        return cls(None, [False] * num_layers, [False] * num_layers, torch.zeros(batch_size, dtype=torch.long))

    @property
    def any_token(self) -> bool:
        return any(self.token_gated)


@dataclass
class RoutedPrefill:
    """Output of :func:`routed_prefill`: final states ``hidden`` ``[B, T, d]``, per-layer run counts
    ``counts`` ``[B, D]`` (CPU long), the decided ``programs``, ``num_waves`` run, the gates'
    record, and (``keep_kv``) per wave ``(rows [n], steps [n], keys, values [n, H_kv, T, hd])``."""

    hidden: torch.Tensor
    counts: torch.Tensor
    programs: list[Program]
    num_waves: int
    gates: GateRecord
    kv: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)


def _apply_wave(adapter: ModelAdapter, runner: WaveRunner, hidden: torch.Tensor, wave: WaveStep, ctx: PassContext,
                cache: StepKVCache | None, start_col: int, gates: LayerGates | None) -> torch.Tensor:
    """One wave, plain (the runner) or gated (the layer's parts, gathered rows); returns ``hidden``."""
    if gates is None:
        return runner.run(adapter, hidden, [wave], ctx, cache, start_col)
    rows = wave.rows
    view = None if cache is None else cache.view(wave, start_col)
    pick = (lambda t: None if t is None else t.to(hidden.device).index_select(0, rows))
    out = run_layer_gated(adapter, wave.layer, hidden.index_select(0, rows),          # [n, Q, d]
                          ctx.bias(wave.layer).index_select(0, rows), ctx.query_pos.index_select(0, rows),
                          (ctx.cos.index_select(0, rows), ctx.sin.index_select(0, rows)), view,
                          attention=pick(gates.attention), token=pick(gates.token),
                          token_adapter=gates.token_adapter, token_scale=pick(gates.token_scale))
    if wave.covers_batch:
        return out
    hidden.index_copy_(0, rows, out)
    return hidden


def routed_prefill(adapter: ModelAdapter, runner: WaveRunner, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor, router, keep_kv: bool = False) -> RoutedPrefill:
    """Run the prompts ``input_ids`` ``[B, T]`` layer by layer with ``router`` deciding (module docstring).

    Raises :class:`polar.UserError` naming the layer when the router's output is malformed."""
    check_router(router)
    B, T = input_ids.shape
    D, device = adapter.num_layers, adapter.device
    hidden = adapter.embed(input_ids)                                          # [B, T, d]
    positions = token_positions(attention_mask)                                # [B, T]
    ctx = PassContext(adapter, hidden, attention_mask.bool(), positions, torch.arange(T, device=device), positions)
    real = attention_mask.bool()                                               # [B, T]
    has_gates = hasattr(router, "gates")
    record = GateRecord.empty(B, D)
    counts = torch.zeros(B, D, dtype=torch.long)
    done = torch.zeros(B, dtype=torch.long)                                    # steps run so far per row
    kv, num_waves = [], 0
    for i in range(D):
        c = check_decisions(router.decide(i, hidden, attention_mask), i, B)    # [B] cpu
        counts[:, i] = c
        gates = check_gates(router.gates(i, hidden, attention_mask), i, B, T) if has_gates else None
        if gates is not None:
            record.gated[i] = True
            if gates.attention is not None:
                if record.attention is None:
                    record.attention = torch.ones(B, D, dtype=torch.float32, device=device)
                record.attention[:, i] = gates.attention.to(device, torch.float32)
            if gates.token is not None:
                record.token_gated[i] = True
        for j in range(int(c.max())):
            sel = (c > j).nonzero().flatten()                                  # [n] cpu
            rows = sel.to(device)
            n = sel.numel()
            cache = None
            if keep_kv:
                cache = StepKVCache(n, adapter.num_kv_heads, T, adapter.head_dim, adapter.dtype, device)
                kv.append((sel, done[sel].clone(), cache.keys, cache.values))
            wave = WaveStep(i, rows, None if cache is None else torch.arange(n, device=device), n == B)
            hidden = _apply_wave(adapter, runner, hidden, wave, ctx, cache, 0, gates)
            if gates is not None and gates.token is not None:
                skipped = (~gates.token.to(device) & real).index_select(0, rows).sum(-1)  # [n]
                record.skipped_tokens[sel] += skipped.cpu()
            done[sel] += 1
            num_waves += 1
    programs = [program_of(row) for row in counts.tolist()]
    return RoutedPrefill(hidden, counts, programs, num_waves, record, kv)


def token_layers(programs: list[Program], tokens: torch.Tensor, record: GateRecord) -> list[float] | None:
    """Mean layers per token that ran the full layer, per row (``None`` without token gates).

    ``tokens`` ``[B]``: tokens each row processed (real prompt tokens plus fed-back new tokens)."""
    if not record.any_token:
        return None
    full = torch.tensor([len(p) for p in programs], dtype=torch.long) * tokens - record.skipped_tokens
    return (full.double() / tokens.double()).tolist()


class RoutedGeneration:
    """Prefill with a router, then decode the decided programs (module docstring).

    Same interface and counters as the other generation engines (:mod:`.generation`):
    ``prefill() -> [B, V]``, ``decode(active, tokens, t) -> [n, V]``; ``programs``/``packed`` are
    set by ``prefill``."""

    def __init__(self, adapter: ModelAdapter, runner: WaveRunner, input_ids: torch.Tensor,
                 attention_mask: torch.Tensor, router, max_new_tokens: int):
        self.adapter, self.runner, self.router = adapter, runner, router
        self.input_ids, self.attention_mask = input_ids, attention_mask
        B, T = input_ids.shape
        device = adapter.device
        self.T, self.L = T, T + max_new_tokens
        self.key_valid = torch.zeros(B, self.L, dtype=torch.bool, device=device)  # real-token columns
        self.key_pos = torch.zeros(B, self.L, dtype=torch.long, device=device)    # RoPE position of each column
        self.key_valid[:, :T] = attention_mask.bool()
        self.key_pos[:, :T] = token_positions(attention_mask)
        self.n_real = attention_mask.sum(-1)                                   # [B]
        self.tokens = self.n_real.cpu().clone()                                # tokens processed per row
        self.active: list[int] | None = None
        self.plan: list[WaveStep] = []
        self.prefill_work_cached = 0
        self.decode_waves = self.decode_work = self.decode_work_unshared = 0

    def prefill(self) -> torch.Tensor:
        adapter = self.adapter
        out = routed_prefill(adapter, self.runner, self.input_ids, self.attention_mask, self.router, keep_kv=True)
        self.programs, self.counts, self.record = out.programs, out.counts, out.gates
        self.packed = pack(self.programs)
        self.slot_base = self.packed.offsets[:-1].long()                       # [B] first slot of each row
        self.cache = StepKVCache(self.packed.total_steps, adapter.num_kv_heads, self.L, adapter.head_dim,
                                 adapter.dtype, adapter.device)
        for rows, steps, keys, values in out.kv:                               # chunks -> exact slots
            slots = (self.slot_base[rows] + steps).to(adapter.device)
            self.cache.keys[slots, :, : self.T] = keys
            self.cache.values[slots, :, : self.T] = values
        self.step_start = self.counts.cumsum(1) - self.counts                  # [B, D] first step of each layer
        self.prefill_waves = out.num_waves
        self.prefill_work = self.prefill_work_unshared = int((self.packed.lengths().long() * self.n_real.cpu()).sum())
        self.cache_entries = self.cache.entries
        return adapter.logits(last_token_states(out.hidden, self.attention_mask))  # [B, V]

    def _plan(self, active: list[int]) -> list[WaveStep]:
        """Layer-ordered waves over the ``active`` rows (positions in the active list)."""
        device, idx = self.adapter.device, torch.tensor(active, dtype=torch.long)
        counts, start = self.counts[idx], self.step_start[idx]                 # [n, D]
        waves = []
        for i in range(self.adapter.num_layers):
            for j in range(int(counts[:, i].max())):
                sel = (counts[:, i] > j).nonzero().flatten()                   # [m] positions among active
                slots = self.slot_base[idx[sel]] + start[sel, i] + j           # [m]
                waves.append(WaveStep(i, sel.to(device), slots.to(device), sel.numel() == len(active)))
        return waves

    def _gates(self, layer: int, hidden: torch.Tensor, rows: torch.Tensor) -> LayerGates | None:
        """Decode gates of ``layer`` for the active ``rows``: prefill's attention gates, new token gates."""
        record = self.record
        if not record.gated[layer]:
            return None
        attention = None if record.attention is None else record.attention[rows, layer]   # [n]
        if not record.token_gated[layer]:
            return None if attention is None else LayerGates(attention=attention)
        n = hidden.shape[0]
        mask = torch.ones(n, 1, dtype=torch.long, device=hidden.device)
        new = check_gates(self.router.gates(layer, hidden, mask), layer, n, 1)
        if new is None:
            return None if attention is None else LayerGates(attention=attention)
        return LayerGates(attention, new.token, new.token_adapter, new.token_scale)

    def decode(self, active: list[int], tokens: torch.Tensor, t: int) -> torch.Tensor:
        adapter, device = self.adapter, self.adapter.device
        if active != self.active:
            self.active = list(active)
            self.plan = self._plan(self.active)
        rows = torch.tensor(active, device=device)                             # [n]
        col = self.T + t
        self.key_valid[rows, col] = True
        self.key_pos[rows, col] = self.n_real[rows] + t
        hidden = adapter.embed(tokens[:, None])                                # [n, 1, d]
        ctx = PassContext(adapter, hidden, self.key_valid[rows, : col + 1], self.key_pos[rows, : col + 1],
                          torch.tensor([col], device=device), self.key_pos[rows, col : col + 1])
        current, gates = -1, None
        for wave in self.plan:
            if wave.layer != current:
                current = wave.layer
                gates = self._gates(current, hidden, rows)
            hidden = _apply_wave(adapter, self.runner, hidden, wave, ctx, self.cache, col, gates)
            if gates is not None and gates.token is not None:
                skipped = (~gates.token[:, 0].to(wave.rows.device)).index_select(0, wave.rows).long()  # [m]
                self.record.skipped_tokens[torch.tensor(active)[wave.rows.cpu()]] += skipped.cpu()
        self.tokens[torch.tensor(active)] += 1
        self.decode_waves += len(self.plan)
        work = sum(wave.rows.numel() for wave in self.plan)
        self.decode_work += work
        self.decode_work_unshared += work
        return adapter.logits(hidden[:, -1])                                   # [n, V]

    def token_layers(self) -> list[float] | None:
        """Mean full layers per processed token, per row (``None`` without token gates)."""
        return token_layers(self.programs, self.tokens, self.record)
