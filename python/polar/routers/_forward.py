"""A plain, differentiable forward over the base model's layer parts, for training routers.

The engine (:mod:`polar.runtime.routed`) runs routed batches for inference; training needs a
forward that autograd can go through and that can be teacher-forced. This one runs layers in order
``0 .. D-1`` on a padded batch (left or right padding; positions count real tokens only), each
layer ``l`` run ``counts[r, l]`` times for row ``r`` (teacher forcing along a label program; default
once), with the router's :class:`polar.LayerGates` applied by the engine's own gated layer
(:func:`polar.runtime.gated.run_layer_gated`), so training and inference compute the same function::

    h = embed(ids)                                    # [B, T, d]
    for l in 0 .. D-1:
        on_layer(l, h)                                # e.g. record DR.LLM's pooled features
        g = gates(l, h)                               # LayerGates or None
        for each run k < max_r counts[r, l]:
            h[rows with counts > k] = layer_l(h[rows], g[rows])

With every gate open it equals the Hugging Face forward (tested). Gradients reach only what the
caller asks for (:func:`torch.autograd.grad` on the router's parameters): the base model's
parameters are never given a ``.grad``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..runtime.adapters import ModelAdapter
from ..runtime.gated import run_layer_gated
from ..runtime.masks import PassContext, token_positions
from ..runtime.routing import LayerGates


@dataclass
class PassTensors:
    """What every layer of one training pass shares: the batch's attention biases (per sliding
    window), positions ``[B, T]`` and rotary ``cos``/``sin`` ``[B, T, hd]``."""

    context: PassContext
    position_ids: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor

    @classmethod
    def build(cls, adapter: ModelAdapter, hidden: torch.Tensor, attention_mask: torch.Tensor) -> "PassTensors":
        pos = token_positions(attention_mask)                                   # [B, T]
        cols = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        ctx = PassContext(adapter, hidden, attention_mask.bool(), pos, cols, pos)
        return cls(ctx, pos, ctx.cos, ctx.sin)


def _select(gates: LayerGates | None, rows: torch.Tensor | None) -> dict:
    if gates is None:
        return {}
    pick = (lambda t: t if t is None or rows is None else t[rows])
    return {"attention": pick(gates.attention), "token": pick(gates.token), "token_adapter": gates.token_adapter,
            "token_scale": pick(gates.token_scale)}


def run_layer(adapter: ModelAdapter, layer: int, hidden: torch.Tensor, tensors: PassTensors,
              gates: LayerGates | None = None, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Layer ``layer`` on ``hidden[rows]`` (all rows when ``rows`` is None), gated by ``gates``
    (fields over all ``B`` rows; ``None``: the plain layer). Returns the new ``[n, T, d]`` states."""
    x = hidden if rows is None else hidden[rows]                                # [n, T, d]
    bias = tensors.context.bias(layer)                                          # [B, 1, T, T]
    pos, cos, sin = tensors.position_ids, tensors.cos, tensors.sin
    if rows is not None:
        bias, pos, cos, sin = bias[rows], pos[rows], cos[rows], sin[rows]
    return run_layer_gated(adapter, layer, x, bias, pos, (cos, sin), None, **_select(gates, rows))


def forward_hidden(adapter: ModelAdapter, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                   counts: torch.Tensor | None = None,
                   gates: Callable[[int, torch.Tensor], LayerGates | None] | None = None,
                   on_layer: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Final hidden states ``[B, T, d]`` (before the final norm) of ``input_ids`` ``[B, T]``.

    ``counts`` ``[B, D]`` (ints in 0..2): how many times row ``r`` runs layer ``l`` (default: once,
    the full program); ``gates(l, h)``: the gates of layer ``l`` for the states ``h`` ``[B, T, d]``
    entering it (``None``: plain); ``on_layer(l, h)`` is called with the states entering layer ``l``
    (before its gates)."""
    D = adapter.num_layers
    hidden = adapter.embed(input_ids)                                           # [B, T, d]
    tensors = PassTensors.build(adapter, hidden, attention_mask)
    for layer in range(D):
        if on_layer is not None:
            on_layer(layer, hidden)
        g = gates(layer, hidden) if gates is not None else None
        if counts is None:
            hidden = run_layer(adapter, layer, hidden, tensors, g)
            continue
        for k in range(int(counts[:, layer].max())):
            rows = (counts[:, layer] > k).nonzero().flatten()                   # [n]
            if len(rows) == hidden.shape[0]:
                hidden = run_layer(adapter, layer, hidden, tensors, g)
            else:
                hidden = hidden.index_copy(0, rows, run_layer(adapter, layer, hidden, tensors, g, rows))
    return hidden


def lm_loss(adapter: ModelAdapter, hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy of the columns' predictions against ``targets`` ``[B, T]`` (the token column
    ``t`` should predict; negative: no loss there), ``hidden`` ``[B, T, d]``. Returns ``(loss, number
    of predicted tokens)``; the LM head runs on those columns only."""
    rows, cols = (targets >= 0).nonzero(as_tuple=True)                          # [N], [N]
    logits = adapter.logits(hidden[rows, cols])                                 # [N, V]
    return torch.nn.functional.cross_entropy(logits.float(), targets[rows, cols]), int(len(rows))
