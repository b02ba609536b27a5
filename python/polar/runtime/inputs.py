"""Input normalisation: token ids and attention masks as the executor expects them."""
from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import UserError


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
            raise UserError("inputs has no 'input_ids'")
        input_ids, attention_mask = inputs["input_ids"], inputs.get("attention_mask")
    else:
        raise UserError(f"inputs must be a tensor of token ids or a dict/BatchEncoding, got {type(inputs).__name__}")
    if not isinstance(input_ids, torch.Tensor):
        input_ids = torch.as_tensor(input_ids)
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if input_ids.dim() != 2 or input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise UserError(f"input_ids must be a non-empty [B, T] tensor, got shape {tuple(input_ids.shape)}")
    if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        raise UserError(f"input_ids must be integer token ids, got {input_ids.dtype}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    else:
        attention_mask = torch.as_tensor(attention_mask)
        if attention_mask.dim() == 1:
            attention_mask = attention_mask[None]
        if attention_mask.shape != input_ids.shape:
            raise UserError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(input_ids.shape)}")
        if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
            raise UserError("attention_mask must contain only 0 and 1")
    empty = (attention_mask.sum(-1) == 0).nonzero().flatten().tolist()
    if empty:
        raise UserError(f"row {empty[0]} has no real tokens (attention_mask is all zero)")
    lo, hi = int(input_ids.min()), int(input_ids.max())
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        row = int(((input_ids == bad).any(-1)).nonzero()[0])
        raise UserError(f"row {row}: token id {bad} outside the vocabulary [0, {vocab_size})")
    return input_ids.to(device=device, dtype=torch.long), attention_mask.to(device=device, dtype=torch.long)
