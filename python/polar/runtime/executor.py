"""Batched execution of heterogeneous programs of layers (DESIGN.md section 4).

``batched_execute(model, programs, inputs)``: row ``r`` of the batch runs its own program.
The programs are packed (CSR), planned into waves by the compiled scheduler, and each wave
gathers its rows' hidden states, applies one decoder layer to them as a dense batch, and
scatters the result back. Positions count real tokens only, so a row's result does not depend
on how much (left or right) padding the batch gives it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..programs import Program, validate_programs
from .adapters import ModelAdapter, get_adapter
from .cache import StepKVCache
from .inputs import prepare_inputs
from .masks import PassContext, last_token_states, token_positions
from .packing import pack
from .runners import WaveRunner, WaveStep, get_runner, prepare_waves
from .schedule import DEFAULT_POLICY, check_policy, plan_waves


@dataclass
class ExecutionResult:
    """Output of :func:`batched_execute`.

    ``logits``: ``[B, V]`` at each row's last real token, or ``[B, T, V]`` with
    ``all_positions=True``. ``executed_layers``/``unique_layers``: one int per row (program
    length / distinct layers). ``num_waves``: waves the scheduler planned.
    """

    logits: torch.Tensor
    executed_layers: list[int]
    unique_layers: list[int]
    num_waves: int
    programs: list[Program]


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
                    max_program_length: int | None = None, backend: str = "auto") -> ExecutionResult:
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

    Raises:
        ValueError: bad programs (naming the row), bad inputs, unknown policy; before any compute.
        UnsupportedModelError: the model's architecture is not supported.
    """
    adapter = get_adapter(model)
    check_policy(policy)
    runner = get_runner(backend, adapter.device)
    input_ids, attention_mask = prepare_inputs(inputs, adapter.vocab_size, adapter.device)
    progs = validate_programs(programs, input_ids.shape[0], adapter.num_layers, max_program_length)
    packed = pack(progs)
    waves = plan_waves(packed, policy, adapter.num_layers)
    steps = prepare_waves(waves, len(progs), adapter.device)
    hidden = prefill(adapter, input_ids, attention_mask, steps, runner)
    logits = adapter.logits(hidden if all_positions else last_token_states(hidden, attention_mask))
    return ExecutionResult(
        logits=logits,
        executed_layers=[len(p) for p in progs],
        unique_layers=[p.unique_layers for p in progs],
        num_waves=waves.num_waves,
        programs=progs,
    )
