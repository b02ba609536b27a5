"""Prefill throughput: heterogeneous programs in one batch vs the fixed-depth forward.

Figure of merit: row-layer throughput ``sum(len(program)) * T / s`` relative to the fixed-depth
forward's ``B * D * T / s`` on the same inputs (docs/architecture.md section 17). Prefix sharing is off
(``share_prefix=False``): these suites measure the executor doing all of the work; sharing is
measured by ``bench/shared_prefix.py``.
"""
from __future__ import annotations

import pytest
import torch

import polar
from common import LARGE, get_batch, run
from supersequence import beam_supersequence
from variants import fixed_forward, one_at_a_time_execute, padded_execute

CASES = [("tiny", 8), ("tiny", 32), ("tiny", 128), ("smollm2", 8), ("smollm2", 32)]
if LARGE:
    CASES.append(("smollm2", 128))
VARIANTS = ["fixed_hf", "fixed_polar", "bound", "lowest", "step", "padded", "one_at_a_time"]

_SUPERSEQ: dict = {}
_REFERENCE: dict = {}


def rounds_for(model_name: str, B: int, variant: str) -> tuple[int, int]:
    """(rounds, warmup) keeping the suite within minutes on one core."""
    if model_name == "tiny":
        return (1, 1) if (variant in ("one_at_a_time", "padded", "step") and B == 128) else (3, 1)
    if B == 8:
        return 2, 0
    return 1, 0


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("model_name,B", CASES, ids=[f"{m}-B{b}" for m, b in CASES])
def test_prefill(benchmark, models, model_name, B, variant):
    model, desc = models.get(model_name)
    batch = get_batch(model_name, model, B)
    D, T, progs, inputs = batch.num_layers, batch.tokens, batch.programs, batch.inputs
    benchmark.group = f"prefill {model_name} B={B}"
    info = dict(suite="prefill", model=model_name, model_desc=desc, B=B, T=T, D=D, variant=variant,
                baseline=variant == "fixed_hf")
    if variant == "fixed_hf":
        fn, row_layers = (lambda: fixed_forward(model, inputs)), B * D
    elif variant == "fixed_polar":
        fn, row_layers = (lambda: polar.batched_execute(model, polar.full(D), inputs, share_prefix=False).logits), B * D
    elif variant in polar.runtime.POLICIES:
        pk = polar.pack(progs)
        info["waves"] = polar.plan_waves(pk, variant).num_waves
        fn, row_layers = (lambda: polar.batched_execute(model, progs, inputs, policy=variant, share_prefix=False).logits), batch.program_steps
    elif variant == "padded":
        key = (model_name, B)
        if key not in _SUPERSEQ:
            _SUPERSEQ[key] = beam_supersequence(progs, D, width=64)
        seq = _SUPERSEQ[key]
        info["waves"] = len(seq)
        info["padded_row_layers"] = B * len(seq)
        fn, row_layers = (lambda: padded_execute(model, progs, inputs, seq)), batch.program_steps
    else:
        fn, row_layers = (lambda: one_at_a_time_execute(model, progs, inputs)), batch.program_steps
    rounds, warmup = rounds_for(model_name, B, variant)
    logits = run(benchmark, fn, rounds, warmup, **info, row_layers=row_layers, work=row_layers * T,
                 longest=max(len(p) for p in progs))
    # every heterogeneous variant must compute the same logits
    if variant not in ("fixed_hf", "fixed_polar"):
        ref = _REFERENCE.setdefault((model_name, B), logits)
        assert torch.allclose(logits, ref, atol=1e-3, rtol=1e-3), f"{variant} disagrees with the first variant"
