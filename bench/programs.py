"""Benchmark batches: programs drawn from the PoLar segment space (docs/architecture.md section 3) and prompts.

Programs come from :func:`polar.programs.random_compact` (segments of at most ``k_max = 4``
layers, each skipped, kept or repeated), redrawn until the length lies in
``[0.7 D, 1.2 D]``, so a batch mixes shorter-than-full, about-full and longer-than-full programs.
"""
from __future__ import annotations

import random

import torch

from polar.programs.compact import random_compact

MIN_LENGTH_FACTOR = 0.7
MAX_LENGTH_FACTOR = 1.2


def sample_programs(num_layers: int, batch_size: int, seed: int, k_max: int = 4) -> list[list[int]]:
    """``batch_size`` programs of a ``num_layers``-layer model, lengths in ``[0.7 D, 1.2 D]``."""
    rng = random.Random(seed)
    lo, hi = MIN_LENGTH_FACTOR * num_layers, MAX_LENGTH_FACTOR * num_layers
    out: list[list[int]] = []
    while len(out) < batch_size:
        prog = list(random_compact(num_layers, rng, k_max=k_max).decode(k_max))
        if lo <= len(prog) <= hi:
            out.append(prog)
    return out


def random_prompts(batch_size: int, num_tokens: int, vocab_size: int, seed: int) -> dict[str, torch.Tensor]:
    """Unpadded prompts: ``input_ids`` ``[B, T]`` (ids ``>= 3``, avoiding pad/bos/eos of the tiny vocab)
    and an all-ones ``attention_mask``."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab_size, (batch_size, num_tokens), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def row_inputs(inputs: dict[str, torch.Tensor], row: int) -> dict[str, torch.Tensor]:
    """Row ``row`` of a batch as a batch of one."""
    return {k: v[row : row + 1] for k, v in inputs.items()}
