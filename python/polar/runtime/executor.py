"""Batched execution of heterogeneous programs of layers (docs/architecture.md section 6).

``batched_execute(model, programs, inputs)``: row ``r`` of the batch runs its own program.
The programs are packed (CSR), planned into waves by the compiled scheduler, and each wave
gathers its rows' hidden states, applies one decoder layer to them as a dense batch, and
scatters the result back. Positions count real tokens only, so a row's result does not depend
on how much (left or right) padding the batch gives it.

With ``share_prefix=True`` (the default) states that several rows share are computed once
(docs/architecture.md section 9; :mod:`.units` plans, :mod:`.shared` runs): rows with the same prompt
share every step of their common program prefix, and rows whose prompts start with the same
tokens share those positions' states for every program prefix they have in common.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UserError
from ..programs import Program, validate_programs
from .adapters import ModelAdapter, get_adapter
from .cache import PooledKVCache, StepKVCache
from .inputs import prepare_inputs
from .masks import PassContext, last_token_states, token_positions
from .packing import pack
from .routed import routed_prefill, token_layers
from .routing import check_router
from .runners import WaveRunner, WaveStep, get_runner, prepare_waves
from .schedule import DEFAULT_POLICY, check_policy, plan_waves
from .shared import prefill_all_states, prefill_logits, run_prefill
from .units import build_prompt_tree, plan_prefill


@dataclass
class ExecutionResult:
    """Output of :func:`batched_execute`.

    ``logits``: ``[B, V]`` at each row's last real token, or ``[B, T, V]`` with
    ``all_positions=True``. ``executed_layers``/``unique_layers``: one int per row (program
    length / distinct layers). ``num_waves``: waves the scheduler planned. ``work``: layer
    applications x real token columns computed; ``work_unshared``: the same without prefix
    sharing, ``sum over rows of len(program) x real tokens`` (equal when ``share_prefix=False``;
    pad columns are not counted in either).

    Routed calls (``router=``) also give ``programs`` (the decided ones); ``attention_gates``
    ``[B, D]`` float32 (CPU; 1 where no attention gate was given) when the router gave attention
    gates, else ``None``; ``token_layers``: per row, the mean number of layers each real token ran
    in full (token gates; ``None`` without them).
    """

    logits: torch.Tensor
    executed_layers: list[int]
    unique_layers: list[int]
    num_waves: int
    programs: list[Program]
    work: int = 0
    work_unshared: int = 0
    attention_gates: torch.Tensor | None = None
    token_layers: list[float] | None = None


def prefill(adapter: ModelAdapter, input_ids: torch.Tensor, attention_mask: torch.Tensor,
            waves: list[WaveStep], runner: WaveRunner, cache: StepKVCache | None = None) -> torch.Tensor:
    """Run the planned waves over whole prompts; returns final hidden states ``[B, T, d]``."""
    hidden = adapter.embed(input_ids)
    T = input_ids.shape[1]
    positions = token_positions(attention_mask)
    cols = torch.arange(T, device=input_ids.device)
    ctx = PassContext(adapter, hidden, attention_mask.bool(), positions, cols, positions)
    return runner.run(adapter, hidden, waves, ctx, cache, start_col=0)


@torch.inference_mode()
def batched_execute(model, programs, inputs, *, policy: str = DEFAULT_POLICY, all_positions: bool = False,
                    max_program_length: int | None = None, backend: str = "auto",
                    share_prefix: bool = True, router=None) -> ExecutionResult:
    """Run row ``r`` of ``inputs`` through ``programs[r]`` and return its logits.

    Args:
        model: a supported Hugging Face causal LM (Llama, Mistral, Qwen2, Qwen3, Qwen2-MoE, Qwen3-MoE).
        programs: ``B`` programs (sequences of layer indices), or one :class:`Program` for all rows.
        inputs: ``BatchEncoding``/dict with ``input_ids`` ``[B, T]`` and ``attention_mask`` (left or
            right padding), or a tensor of ids.
        policy: wave scheduling policy, ``"bound"`` (default), ``"lowest"`` or ``"step"`` (same
            results, different waves; see :func:`polar.runtime.plan_waves_reference`).
        all_positions: return logits ``[B, T, V]`` for every column instead of ``[B, V]``.
        max_program_length: longest program accepted (default ``4 * D``).
        backend: ``"hf"`` (call each Hugging Face decoder layer on gathered rows), ``"fused"``
            (:mod:`polar.runtime.fused`: gathered norm / residual scatter kernels around the layer's
            parts), or ``"auto"`` (fused on CUDA, hf elsewhere). Same results either way.
        share_prefix: compute each state that several rows share once (docs/architecture.md section 9):
            the same program prefix on the same prompt, and the same program prefix on a common
            prompt prefix. Same results as ``False`` up to float rounding (different batch
            shapes); with ``all_positions`` pad columns then hold the logits of a zero state.
        router: a :class:`polar.Router` (anything with ``decide(layer, hidden, attention_mask)``),
            with ``programs=None``: layers run in order and the router decides per layer and row
            to skip, run or repeat (and may gate sub-layers or tokens), see
            :mod:`polar.runtime.routing`. ``policy``, ``share_prefix`` and
            ``max_program_length`` do not apply (waves are layer-ordered, rows unshared); the
            result's ``programs`` are the decided ones, and ``batched_execute(model, programs,
            ...)`` with them gives the same logits (up to float rounding unless
            ``policy="lowest"``, ``share_prefix=False``: then bit for bit, when no gates are used).

    Raises:
        ValueError: bad programs (naming the row), bad inputs, unknown policy, programs and a
            router together or neither; before any compute. A malformed router output raises
            ``UserError`` naming the layer.
        UnsupportedModelError: the model's architecture is not supported.
    """
    adapter = get_adapter(model)
    check_policy(policy)
    runner = get_runner(backend, adapter.device)
    input_ids, attention_mask = prepare_inputs(inputs, adapter.vocab_size, adapter.device)
    if router is not None:
        return _routed_execute(adapter, runner, programs, input_ids, attention_mask, router, all_positions)
    if programs is None:
        raise UserError("programs is None; give one program per row, or a router")
    progs = validate_programs(programs, input_ids.shape[0], adapter.num_layers, max_program_length)
    packed = pack(progs)
    work_unshared = int((packed.lengths().long() * attention_mask.sum(-1).cpu()).sum())
    if share_prefix:
        plan = plan_prefill(build_prompt_tree(input_ids, attention_mask), packed, policy, adapter.num_layers,
                            adapter.device)
        cache = PooledKVCache(plan.pool_entries, adapter.num_kv_heads, adapter.head_dim, adapter.dtype, adapter.device)
        buffers = run_prefill(adapter, runner, plan, cache)
        if all_positions:
            logits = adapter.logits(prefill_all_states(plan, buffers, attention_mask))
        else:
            logits = prefill_logits(adapter, plan, buffers)
        num_waves, work = plan.num_waves, plan.work
    else:
        waves = plan_waves(packed, policy, adapter.num_layers)
        steps = prepare_waves(waves, len(progs), adapter.device)
        hidden = prefill(adapter, input_ids, attention_mask, steps, runner)
        logits = adapter.logits(hidden if all_positions else last_token_states(hidden, attention_mask))
        num_waves, work = waves.num_waves, work_unshared
    return ExecutionResult(
        logits=logits,
        executed_layers=[len(p) for p in progs],
        unique_layers=[p.unique_layers for p in progs],
        num_waves=num_waves,
        programs=progs,
        work=work,
        work_unshared=work_unshared,
    )


def _routed_execute(adapter: ModelAdapter, runner: WaveRunner, programs, input_ids: torch.Tensor,
                    attention_mask: torch.Tensor, router, all_positions: bool) -> ExecutionResult:
    """``batched_execute`` with a router deciding (:mod:`.routed`)."""
    if programs is not None:
        raise UserError("give either programs or a router, not both (programs=None when a router decides)")
    check_router(router)
    out = routed_prefill(adapter, runner, input_ids, attention_mask, router)
    hidden = out.hidden if all_positions else last_token_states(out.hidden, attention_mask)
    n_real = attention_mask.sum(-1).cpu()
    work = int(sum(len(p) * int(n) for p, n in zip(out.programs, n_real)))
    gates = out.gates
    return ExecutionResult(
        logits=adapter.logits(hidden),
        executed_layers=[len(p) for p in out.programs],
        unique_layers=[p.unique_layers for p in out.programs],
        num_waves=out.num_waves,
        programs=out.programs,
        work=work,
        work_unshared=work,
        attention_gates=None if gates.attention is None else gates.attention.cpu(),
        token_layers=token_layers(out.programs, n_real, gates),
    )
