"""Batched execution of heterogeneous programs of layers (DESIGN.md section 4).

``batched_execute(model, programs, inputs)``: row ``r`` of the batch runs its own program.
The programs are packed (CSR), planned into waves by the compiled scheduler, and each wave
gathers its rows' hidden states, applies one decoder layer to them as a dense batch, and
scatters the result back. Positions count real tokens only, so a row's result does not depend
on how much (left or right) padding the batch gives it.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .adapters import ModelAdapter, get_adapter
from .cache import StepKVCache
from .programs import PackedPrograms, Program, pack, validate_programs
from .schedule import DEFAULT_POLICY, Waves, check_policy, plan_waves


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


def prepare_inputs(inputs, vocab_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalize ``inputs`` to ``(input_ids [B, T] long, attention_mask [B, T] long)`` on ``device``.

    ``inputs``: a ``BatchEncoding``/dict with ``input_ids`` (and optionally ``attention_mask``),
    or an integer tensor of ids ``[B, T]`` or ``[T]``. Raises ``ValueError`` on bad shapes or
    dtypes, ids outside the vocabulary, a mask that is not 0/1, or a row without real tokens.
    """
    if isinstance(inputs, torch.Tensor):
        input_ids, attention_mask = inputs, None
    elif isinstance(inputs, Mapping) or hasattr(inputs, "keys"):
        if "input_ids" not in inputs:
            raise ValueError("inputs has no 'input_ids'")
        input_ids, attention_mask = inputs["input_ids"], inputs.get("attention_mask")
    else:
        raise ValueError(f"inputs must be a tensor of token ids or a dict/BatchEncoding, got {type(inputs).__name__}")
    if not isinstance(input_ids, torch.Tensor):
        input_ids = torch.as_tensor(input_ids)
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if input_ids.dim() != 2 or input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must be a non-empty [B, T] tensor, got shape {tuple(input_ids.shape)}")
    if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        raise ValueError(f"input_ids must be integer token ids, got {input_ids.dtype}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    else:
        attention_mask = torch.as_tensor(attention_mask)
        if attention_mask.dim() == 1:
            attention_mask = attention_mask[None]
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(input_ids.shape)}")
        if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
            raise ValueError("attention_mask must contain only 0 and 1")
    empty = (attention_mask.sum(-1) == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"row {empty[0]} has no real tokens (attention_mask is all zero)")
    lo, hi = int(input_ids.min()), int(input_ids.max())
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        row = int(((input_ids == bad).any(-1)).nonzero()[0])
        raise ValueError(f"row {row}: token id {bad} outside the vocabulary [0, {vocab_size})")
    return input_ids.to(device=device, dtype=torch.long), attention_mask.to(device=device, dtype=torch.long)


def token_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """RoPE positions counting real tokens only: ``[B, T]`` (pads get the position before them, or 0)."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def attention_allowed(key_valid: torch.Tensor, key_pos: torch.Tensor, query_cols: torch.Tensor,
                      query_pos: torch.Tensor, window: int | None) -> torch.Tensor:
    """Which keys each query attends to: bool ``[B, Q, K]``.

    ``key_valid`` ``[B, K]`` bool: real-token columns; ``key_pos`` ``[B, K]`` and ``query_pos``
    ``[B, Q]``: token positions; ``query_cols`` ``[Q]``: the column of each query. A query sees
    valid keys at columns ``<= its own``, within ``window`` positions if given. Each query also
    sees its own column, so pad queries never have an empty softmax (their outputs are unused).
    """
    cols = torch.arange(key_valid.shape[1], device=key_valid.device)
    allowed = key_valid[:, None, :] & (cols[None, None, :] <= query_cols[None, :, None])
    if window is not None:
        allowed &= (query_pos[:, :, None] - key_pos[:, None, :]) < window
    allowed |= cols[None, None, :] == query_cols[None, :, None]
    return allowed


def additive_bias(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool ``[B, Q, K]`` -> additive mask ``[B, 1, Q, K]`` (0 where allowed, dtype min elsewhere)."""
    bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    bias.masked_fill_(~allowed, torch.finfo(dtype).min)
    return bias[:, None]


class PassContext:
    """Per-pass tensors shared by all waves: attention biases per window size, rotary cos/sin."""

    def __init__(self, adapter: ModelAdapter, hidden: torch.Tensor, key_valid: torch.Tensor,
                 key_pos: torch.Tensor, query_cols: torch.Tensor, query_pos: torch.Tensor):
        self.adapter = adapter
        self.key_valid, self.key_pos = key_valid, key_pos
        self.query_cols, self.query_pos = query_cols, query_pos
        self.cos, self.sin = adapter.rotary(hidden, query_pos)
        self._allowed: dict[int | None, torch.Tensor] = {}
        self._bias: dict[int | None, torch.Tensor] = {}
        self.dtype = hidden.dtype

    def allowed(self, layer: int) -> torch.Tensor:
        """Bool ``[B, Q, K]`` attention pattern of ``layer`` (depends on its sliding window)."""
        window = self.adapter.sliding_windows[layer]
        if window not in self._allowed:
            self._allowed[window] = attention_allowed(self.key_valid, self.key_pos, self.query_cols,
                                                      self.query_pos, window)
        return self._allowed[window]

    def bias(self, layer: int) -> torch.Tensor:
        """Additive mask ``[B, 1, Q, K]`` of ``layer``."""
        window = self.adapter.sliding_windows[layer]
        if window not in self._bias:
            self._bias[window] = additive_bias(self.allowed(layer), self.dtype)
        return self._bias[window]


@dataclass
class WaveStep:
    """One wave ready to run: ``rows`` (int64, on device) of the current batch; ``slots`` their KV slots."""

    layer: int
    rows: torch.Tensor
    slots: torch.Tensor | None
    covers_batch: bool


def prepare_waves(waves: Waves, batch_size: int, device: torch.device,
                  slot_base: torch.Tensor | None = None) -> list[WaveStep]:
    """Move wave index tensors to ``device`` once; ``slot_base[row]`` is the row's first slot."""
    out = []
    for layer, rows, steps in waves:
        slots = None if slot_base is None else (slot_base[rows] + steps).to(device)
        out.append(WaveStep(layer, rows.to(device), slots, rows.numel() == batch_size))
    return out


BACKENDS = ("auto", "hf", "fused")


def resolve_backend(backend: str, device: torch.device) -> str:
    """``auto`` -> ``fused`` (kernels) on CUDA, ``hf`` (Hugging Face layer calls) elsewhere."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if backend == "auto":
        return "fused" if device.type == "cuda" else "hf"
    return backend


def run_waves(adapter: ModelAdapter, hidden: torch.Tensor, waves: list[WaveStep], ctx: PassContext,
              cache: StepKVCache | None = None, start_col: int = 0, backend: str = "hf") -> torch.Tensor:
    """Apply every wave to ``hidden`` ``[B, Q, d]`` and return the updated states.

    ``backend="hf"``: gather the wave's rows, call the Hugging Face decoder layer, scatter back
    (a wave covering the whole batch skips the gather/scatter: its rows are sorted and distinct,
    so it is the identity permutation). ``backend="fused"``: :mod:`polar.fused`, in place; with a
    cache and ``start_col > 0`` (decode) attention reads the cache by slot.
    """
    if backend == "fused":
        return _run_waves_fused(adapter, hidden, waves, ctx, cache, start_col)
    for wave in waves:
        layer = adapter.layers[wave.layer]
        rows = wave.rows
        view = None if cache is None else cache.wave_view(wave.slots, start_col)
        if wave.covers_batch:
            x, bias, pos, cos, sin = hidden, ctx.bias(wave.layer), ctx.query_pos, ctx.cos, ctx.sin
        else:
            x = hidden.index_select(0, rows)
            bias = ctx.bias(wave.layer).index_select(0, rows)
            pos = ctx.query_pos.index_select(0, rows)
            cos, sin = ctx.cos.index_select(0, rows), ctx.sin.index_select(0, rows)
        out = layer(x, attention_mask=bias, position_ids=pos, past_key_values=view,
                    use_cache=view is not None, position_embeddings=(cos, sin))
        if isinstance(out, tuple):
            out = out[0]
        if wave.covers_batch:
            hidden = out
        else:
            hidden.index_copy_(0, rows, out)
    return hidden


def _run_waves_fused(adapter, hidden, waves, ctx, cache, start_col):
    from .fused import run_layer_fused

    hidden = hidden.contiguous()
    hd = adapter.head_dim  # the slot kernel needs a power-of-two head_dim >= 16
    decode = cache is not None and start_col > 0 and hd >= 16 and hd & (hd - 1) == 0
    for wave in waves:
        rows = wave.rows
        view = None if cache is None else cache.wave_view(wave.slots, start_col)
        key_mask = ctx.allowed(wave.layer)[:, -1].index_select(0, rows) if decode else None
        bias = None if decode else ctx.bias(wave.layer).index_select(0, rows)  # decode + odd head_dim: HF attention
        run_layer_fused(adapter.layers[wave.layer], hidden, rows, bias, ctx.query_pos.index_select(0, rows),
                        ctx.cos.index_select(0, rows), ctx.sin.index_select(0, rows), view, key_mask)
    return hidden


def last_token_states(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``hidden`` ``[B, T, d]`` at each row's last real token (left or right padding): ``[B, d]``."""
    cols = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = torch.where(attention_mask.bool(), cols, -1).max(-1).values
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def prefill(adapter: ModelAdapter, input_ids: torch.Tensor, attention_mask: torch.Tensor,
            waves: list[WaveStep], cache: StepKVCache | None = None, backend: str = "hf") -> torch.Tensor:
    """Run the planned waves over whole prompts; returns final hidden states ``[B, T, d]``."""
    hidden = adapter.embed(input_ids)
    T = input_ids.shape[1]
    positions = token_positions(attention_mask)
    cols = torch.arange(T, device=input_ids.device)
    ctx = PassContext(adapter, hidden, attention_mask.bool(), positions, cols, positions)
    return run_waves(adapter, hidden, waves, ctx, cache, start_col=0, backend=backend)


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
            results, different waves; see :func:`polar.plan_waves_reference`).
        all_positions: return logits ``[B, T, V]`` for every column instead of ``[B, V]``.
        max_program_length: longest program accepted (default ``4 * D``).
        backend: ``"hf"`` (call each Hugging Face decoder layer on gathered rows), ``"fused"``
            (:mod:`polar.fused`: gathered norm / residual scatter kernels around the layer's
            parts), or ``"auto"`` (fused on CUDA, hf elsewhere). Same results either way.

    Raises:
        ValueError: bad programs (naming the row), bad inputs, unknown policy; before any compute.
        UnsupportedModelError: the model's architecture is not supported.
    """
    adapter = get_adapter(model)
    check_policy(policy)
    backend = resolve_backend(backend, adapter.device)
    input_ids, attention_mask = prepare_inputs(inputs, adapter.vocab_size, adapter.device)
    progs = validate_programs(programs, input_ids.shape[0], adapter.num_layers, max_program_length)
    packed = pack(progs)
    waves = plan_waves(packed, policy, adapter.num_layers)
    steps = prepare_waves(waves, len(progs), adapter.device)
    hidden = prefill(adapter, input_ids, attention_mask, steps, backend=backend)
    logits = adapter.logits(hidden if all_positions else last_token_states(hidden, attention_mask))
    return ExecutionResult(
        logits=logits,
        executed_layers=[len(p) for p in progs],
        unique_layers=[p.unique_layers for p in progs],
        num_waves=waves.num_waves,
        programs=progs,
    )
