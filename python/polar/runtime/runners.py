"""Wave runners (docs/architecture.md section 6): how one planned wave is applied to the hidden states.

Planning is apart from compute: the scheduler's waves are turned into :class:`WaveStep` s once
(:func:`prepare_waves`) and consumed by a :class:`WaveRunner`. Two runners give the same results:

- :class:`HFRunner` (``"hf"``): gather the wave's rows, call the Hugging Face decoder layer with
  our masks, positions and a per-wave cache view, scatter the result back.
- :class:`FusedRunner` (``"fused"``): call the layer's parts around ``polar_kernels`` ops
  (:mod:`.fused`), updating the full hidden-state buffer in place.

``backend="auto"`` picks ``fused`` on CUDA and ``hf`` elsewhere (:func:`get_runner`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from polar_kernels import uses_triton

from ..errors import UserError
from .adapters import ModelAdapter
from .cache import PooledKVCache, StepKVCache
from .fused import run_layer_fused
from .masks import PassContext
from .schedule import Waves


@dataclass
class WaveStep:
    """One wave ready to run: ``rows`` (int64, on device) of the hidden-state buffer.

    ``slots``: their :class:`StepKVCache` slots. Shared-prefix waves (:mod:`.units`) instead
    give ``ctx_rows`` (rows of the :class:`PassContext` tensors, default ``rows``),
    ``write_index``/``read_index`` (:class:`PooledKVCache` entries, see :class:`PoolView`) and
    ``copy_src``/``copy_dst``: after the wave, ``hidden[copy_dst] = hidden[copy_src]`` (a state
    that several units continue from is handed to each of their lanes).
    """

    layer: int
    rows: torch.Tensor
    slots: torch.Tensor | None
    covers_batch: bool
    ctx_rows: torch.Tensor | None = None
    write_index: torch.Tensor | None = None
    read_index: torch.Tensor | None = None
    copy_src: torch.Tensor | None = None
    copy_dst: torch.Tensor | None = None


def prepare_waves(waves: Waves, batch_size: int, device: torch.device,
                  slot_base: torch.Tensor | None = None) -> list[WaveStep]:
    """Move wave index tensors to ``device`` once; ``slot_base[row]`` is the row's first slot."""
    out = []
    for layer, rows, steps in waves:
        slots = None if slot_base is None else (slot_base[rows] + steps).to(device)
        out.append(WaveStep(layer, rows.to(device), slots, rows.numel() == batch_size))
    return out


def copy_lanes(hidden: torch.Tensor, wave: WaveStep) -> None:
    """``hidden[copy_dst] = hidden[copy_src]`` after a shared-prefix wave (no-op without copies)."""
    if wave.copy_src is not None:
        hidden.index_copy_(0, wave.copy_dst, hidden.index_select(0, wave.copy_src))


class WaveRunner:
    """Applies planned waves to hidden states ``[B, Q, d]`` (``Q`` = prompt columns, or 1 in decode)."""

    name: str = ""

    def run(self, adapter: ModelAdapter, hidden: torch.Tensor, waves: list[WaveStep], ctx: PassContext,
            cache: StepKVCache | PooledKVCache | None = None, start_col: int = 0) -> torch.Tensor:
        """Apply every wave in order and return the updated states ``[B, Q, d]``. With a ``cache``
        each wave writes its rows' keys/values for columns ``start_col ..`` into their slots."""
        raise NotImplementedError


class HFRunner(WaveRunner):
    """Gather, call the Hugging Face decoder layer as is, scatter back.

    A wave covering the whole batch skips the gather/scatter: its rows are sorted and distinct,
    so it is the identity permutation."""

    name = "hf"

    def run(self, adapter, hidden, waves, ctx, cache=None, start_col=0):
        for wave in waves:
            rows = wave.rows
            crows = rows if wave.ctx_rows is None else wave.ctx_rows
            view = None if cache is None else cache.view(wave, start_col)
            if wave.covers_batch:
                x, bias, pos, cos, sin = hidden, ctx.bias(wave.layer), ctx.query_pos, ctx.cos, ctx.sin
            else:
                x = hidden.index_select(0, rows)                             # [n, Q, d]
                bias = ctx.bias(wave.layer).index_select(0, crows)           # [n, 1, Q, K]
                pos = ctx.query_pos.index_select(0, crows)                   # [n, Q]
                cos, sin = ctx.cos.index_select(0, crows), ctx.sin.index_select(0, crows)  # [n, Q, hd]
            out = adapter.call_layer(wave.layer, x, bias, pos, (cos, sin), view)  # [n, Q, d]
            if wave.covers_batch:
                hidden = out
            else:
                hidden.index_copy_(0, rows, out)
            copy_lanes(hidden, wave)
        return hidden


class FusedRunner(WaveRunner):
    """Gathered RMSNorm / residual scatter kernels around the layer's parts, in place. One new
    column per row (decode) skips Hugging Face's attention function: with a :class:`StepKVCache`
    (``start_col > 0``, power-of-two ``head_dim >= 16``) ``slot_decode_attention`` reads the cache
    by slot; with a :class:`PooledKVCache` (shared prefixes; waves that read earlier columns) and
    Triton kernels in use (CUDA, or ``polar_kernels.triton_on_cpu()``), ``pool_decode_attention``
    reads the pool through the wave's index table. Otherwise Hugging Face's attention runs (on CPU
    with shared prefixes: its keys gathered from the pool by :class:`.cache.PoolView`)."""

    name = "fused"

    def run(self, adapter, hidden, waves, ctx, cache=None, start_col=0):
        hidden = hidden.contiguous()
        hd = adapter.head_dim
        slot_decode = (isinstance(cache, StepKVCache) and start_col > 0 and hd >= 16 and hd & (hd - 1) == 0)
        pool_decode = (isinstance(cache, PooledKVCache) and hidden.shape[1] == 1 and uses_triton(hidden.device))
        for wave in waves:
            rows = wave.rows
            crows = rows if wave.ctx_rows is None else wave.ctx_rows
            view = None if cache is None else cache.view(wave, start_col)
            decode = slot_decode or (pool_decode and wave.read_index is not None)
            key_mask = ctx.allowed(wave.layer)[:, -1].index_select(0, crows) if decode else None  # [n, K]
            bias = None if decode else ctx.bias(wave.layer).index_select(0, crows)              # [n, 1, Q, K]
            run_layer_fused(adapter, wave.layer, hidden, rows, bias, ctx.query_pos.index_select(0, crows),
                            ctx.cos.index_select(0, crows), ctx.sin.index_select(0, crows), view, key_mask)
            copy_lanes(hidden, wave)
        return hidden


#: The runners by name: one list, used by validation, ``auto`` and the CLI.
RUNNERS: dict[str, WaveRunner] = {"hf": HFRunner(), "fused": FusedRunner()}
BACKENDS = ("auto", *RUNNERS)


def get_runner(backend: str, device: torch.device) -> WaveRunner:
    """The runner for ``backend``: ``"hf"``, ``"fused"``, or ``"auto"`` (``fused`` on CUDA, ``hf``
    elsewhere). Raises ``ValueError`` for an unknown name."""
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if backend == "auto":
        backend = "fused" if device.type == "cuda" else "hf"
    return RUNNERS[backend]
