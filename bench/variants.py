"""Execution variants the benchmarks compare with ``polar.batched_execute`` / ``polar.generate``.

- :func:`fixed_forward`: the model's own fixed-depth forward of the whole batch (the throughput
  ceiling: dense, every row runs every layer once).
- :func:`padded_execute`: every row runs every position of one common supersequence of the
  batch's programs, and keeps the new state only where its program uses that position
  (``torch.where``): no gather/scatter, but ``B * len(supersequence)`` row-layers of work.
- :func:`one_at_a_time_execute` / :func:`one_at_a_time_generate`: each row alone through its own
  program (the reference implementation's approach).
"""
from __future__ import annotations

from typing import Sequence

import torch

import polar
from polar.runtime.masks import PassContext, last_token_states, token_positions

from programs import row_inputs
from supersequence import embed


@torch.inference_mode()
def fixed_forward(model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """HF forward of the batch, last-position logits only (``logits_to_keep=1``, no cache), as
    ``batched_execute`` computes them: ``[B, V]``."""
    out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                use_cache=False, logits_to_keep=1)
    return out.logits[:, -1]


@torch.inference_mode()
def padded_execute(model, programs: Sequence[Sequence[int]], inputs: dict[str, torch.Tensor],
                   supersequence: Sequence[int]) -> torch.Tensor:
    """Last-token logits ``[B, V]``; row ``r`` effectively runs ``programs[r]``.

    Every supersequence position runs its layer on all rows (dense, no gather); rows whose
    program does not use the position discard the output.
    """
    adapter = polar.get_adapter(model)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    use = torch.from_numpy(embed(programs, supersequence))  # [J, B]
    hidden = adapter.embed(ids)
    pos = token_positions(mask)  # positions count real tokens only
    ctx = PassContext(adapter, hidden, mask.bool(), pos, torch.arange(ids.shape[1]), pos)
    for j, layer_idx in enumerate(supersequence):
        out = adapter.call_layer(layer_idx, hidden, ctx.bias(layer_idx), pos, (ctx.cos, ctx.sin), None)
        keep = use[j]
        hidden = out if bool(keep.all()) else torch.where(keep[:, None, None], out, hidden)
    return adapter.logits(last_token_states(hidden, mask))


def one_at_a_time_execute(model, programs: Sequence[Sequence[int]], inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """``polar.batched_execute`` on each row alone with its own program: ``[B, V]``."""
    return torch.cat([polar.batched_execute(model, [p], row_inputs(inputs, r), share_prefix=False).logits
                      for r, p in enumerate(programs)])


def one_at_a_time_generate(model, programs: Sequence[Sequence[int]], inputs: dict[str, torch.Tensor],
                           max_new_tokens: int) -> list[polar.GenerationResult]:
    """``polar.generate`` on each row alone (greedy, no EOS)."""
    return [polar.generate(model, None, row_inputs(inputs, r), [p], max_new_tokens, eos_token_id=[],
                           share_prefix=False)
            for r, p in enumerate(programs)]


@torch.inference_mode()
def fixed_generate(model, inputs: dict[str, torch.Tensor], max_new_tokens: int) -> torch.Tensor:
    """HF ``generate`` of the batch, greedy, exactly ``max_new_tokens`` new tokens per row."""
    return model.generate(**inputs, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                          do_sample=False, pad_token_id=0)
