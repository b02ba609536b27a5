"""ShortGPT baseline (Men et al., 2024): remove the layers with the lowest Block Influence.

``BI_l = 1 - mean over real tokens of cos(x_l, y_l)`` where ``x_l`` / ``y_l`` are the hidden states
entering / leaving layer ``l`` in the full forward pass. Measured on training prompts; variant
``j`` removes the ``j`` layers of lowest BI (``j = 1..k``).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import UserError
from ..programs import Program
from ..runtime import get_adapter


@torch.inference_mode()
def block_influence(model, tokenizer, prompts: Sequence[str], batch_size: int = 16) -> list[float]:
    """Block Influence of every decoder layer, averaged over the real tokens of ``prompts``.

    Runs the model's own forward with forward hooks that read each layer's input and output
    (nothing is patched). Returns ``D`` floats. ``ValueError`` for no prompts."""
    if not prompts:
        raise UserError("block_influence needs at least one prompt")
    adapter = get_adapter(model)
    D = adapter.num_layers
    sums = torch.zeros(D, dtype=torch.float64)
    count = 0
    state: dict[str, torch.Tensor] = {}

    def hook(idx):
        def fn(module, args, kwargs, output):
            x = args[0] if args else kwargs["hidden_states"]          # [B, T, d]
            y = output[0] if isinstance(output, tuple) else output      # [B, T, d]
            cos = torch.nn.functional.cosine_similarity(x.float(), y.float(), dim=-1)  # [B, T]
            sums[idx] += float(((1 - cos) * state["mask"]).sum())
        return fn

    handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(adapter.layers)]
    try:
        for start in range(0, len(prompts), batch_size):
            ids = [tokenizer(p)["input_ids"] for p in prompts[start:start + batch_size]]
            T = max(len(x) for x in ids)
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
            input_ids = torch.tensor([[pad] * (T - len(x)) + list(x) for x in ids], device=adapter.device)
            mask = torch.tensor([[0] * (T - len(x)) + [1] * len(x) for x in ids], device=adapter.device)
            state["mask"] = mask.float()
            model(input_ids=input_ids, attention_mask=mask, use_cache=False)
            count += int(mask.sum())
    finally:
        for h in handles:
            h.remove()
    return (sums / count).tolist()


def shortgpt_programs(influence: Sequence[float], k: int) -> list[Program]:
    """Variant ``j`` (``j = 1..k``) skips the ``j`` layers of lowest Block Influence (ties: lower index)."""
    order = sorted(range(len(influence)), key=lambda i: (influence[i], i))
    out = []
    for j in range(1, k + 1):
        removed = set(order[:j])
        out.append(Program(i for i in range(len(influence)) if i not in removed))
    return out
