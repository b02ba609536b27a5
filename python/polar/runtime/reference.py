"""Plain reference implementations used to check the executor: no batching, no cache.

``reference_forward`` runs one unpadded sequence through a program by looping over the
program's layers with a plain causal mask, reading the model's modules directly (not through
the executor's adapter). ``reference_generate`` recomputes the whole prefix at every step.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .adapters import layer_sliding_window


@torch.inference_mode()
def reference_forward(model, program: Sequence[int], input_ids: torch.Tensor) -> torch.Tensor:
    """Logits ``[T, V]`` of one sequence ``input_ids`` ``[T]`` (no padding) under ``program``."""
    base = model.model
    ids = input_ids.reshape(1, -1).to(base.embed_tokens.weight.device)
    T = ids.shape[1]
    hidden = base.embed_tokens(ids)
    position_ids = torch.arange(T, device=ids.device)[None]
    cos_sin = base.rotary_emb(hidden, position_ids)
    i = torch.arange(T, device=ids.device)
    dist = i[:, None] - i[None, :]
    masks = {}
    for layer_idx in program:
        window = layer_sliding_window(model.config, layer_idx)
        if window not in masks:
            allowed = (dist >= 0) if window is None else (dist >= 0) & (dist < window)
            masks[window] = torch.zeros(T, T, dtype=hidden.dtype, device=ids.device).masked_fill(
                ~allowed, torch.finfo(hidden.dtype).min)[None, None]
        out = base.layers[layer_idx](hidden, attention_mask=masks[window], position_ids=position_ids,
                                     position_embeddings=cos_sin)
        hidden = out[0] if isinstance(out, tuple) else out
    return model.lm_head(base.norm(hidden))[0]


@torch.inference_mode()
def reference_generate(model, program: Sequence[int], input_ids: torch.Tensor, max_new_tokens: int,
                       eos_token_id: int | Sequence[int] | None = None) -> list[int]:
    """Greedy decoding that recomputes ``program`` on the full prefix at every step."""
    eos = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id or ())
    seq = input_ids.reshape(-1).tolist()
    new: list[int] = []
    for _ in range(max_new_tokens):
        tok = int(reference_forward(model, program, torch.tensor(seq))[-1].argmax())
        new.append(tok)
        seq.append(tok)
        if tok in eos:
            break
    return new
