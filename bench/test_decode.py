"""Decode throughput: 32 new tokens (greedy, no EOS) for the prefill batches.

Variants: ``polar.generate`` with the ``bound`` policy (the default), ``lowest`` (not on SmolLM2
B=8: the B=32 case carries the comparison) and ``step`` (tiny model only), ``polar_shared`` (the
default call: ``bound`` with ``share_prefix=True``), HF ``model.generate``
of the same batch at fixed depth, and ``polar.generate`` one row at a time (not on tiny B=128:
~70 s for a ratio that only grows with B). ``*_prefill`` variants run the
same call with one new token (prefill + first token, no decode pass), so that
``time(32) - time(1)`` isolates the 31 decode passes.

Work (row-layer x token applications): polar ``sum(len) * T + decode_row_layers``; fixed depth
``B * D * (T + 31)``. Prefix sharing is off (``share_prefix=False``), as in ``test_prefill.py``,
except in ``polar_shared`` (its work counts a state computed once once; on these batches of
distinct random prompts nothing is shared, so it does the unshared work).
"""
from __future__ import annotations

import pytest

import polar
from common import LARGE, NEW_TOKENS, get_batch, run
from variants import fixed_generate, one_at_a_time_generate

CASES = [("tiny", 8), ("tiny", 32), ("tiny", 128), ("smollm2", 8), ("smollm2", 32)]
if LARGE:
    CASES.append(("smollm2", 128))
VARIANTS = ["hf_generate", "hf_generate_prefill", "polar_bound", "polar_bound_prefill", "polar_shared",
            "polar_shared_prefill", "polar_lowest",
            "polar_lowest_prefill", "polar_step", "polar_step_prefill", "one_at_a_time"]


def skip_reason(model_name: str, B: int, variant: str) -> str | None:
    """Cases left out to keep the suite around 10 minutes on one core."""
    if variant.startswith("polar_step") and model_name != "tiny":
        return "step policy decode only on the tiny model (time budget)"
    if variant.startswith("polar_lowest") and model_name == "smollm2" and B == 8:
        return "lowest decode on SmolLM2 only at B=32 (time budget)"
    if variant == "one_at_a_time" and model_name == "tiny" and B == 128:
        return "one-at-a-time decode of 128 rows takes ~70 s (time budget)"
    return None


def rounds_for(model_name: str, B: int, variant: str) -> int:
    if variant == "one_at_a_time" or variant == "polar_step":
        return 1
    if model_name == "tiny":
        return 2 if B < 128 else 1
    return 2 if B == 8 else 1


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("model_name,B", CASES, ids=[f"{m}-B{b}" for m, b in CASES])
def test_decode(benchmark, models, model_name, B, variant):
    reason = skip_reason(model_name, B, variant)
    if reason:
        pytest.skip(reason)
    model, desc = models.get(model_name)
    batch = get_batch(model_name, model, B)
    D, T, progs, inputs = batch.num_layers, batch.tokens, batch.programs, batch.inputs
    new = 1 if variant.endswith("_prefill") else NEW_TOKENS
    benchmark.group = f"decode {model_name} B={B}"
    info = dict(suite="decode", model=model_name, model_desc=desc, B=B, T=T, D=D, variant=variant,
                new_tokens=new, baseline=variant == "hf_generate")
    if variant.startswith("hf_generate"):
        fn = lambda: fixed_generate(model, inputs, new)  # noqa: E731
        work = B * D * (T + new - 1)
        decode_work = B * D * (new - 1)
    elif variant.startswith("polar_"):
        share = variant.startswith("polar_shared")
        policy = "bound" if share else variant.split("_")[1]
        fn = lambda: polar.generate(model, None, inputs, progs, new, eos_token_id=[], policy=policy,
                                         share_prefix=share)  # noqa: E731
        work = decode_work = None
    else:
        fn = lambda: one_at_a_time_generate(model, progs, inputs, new)  # noqa: E731
        work = batch.program_steps * (T + new - 1)
        decode_work = batch.program_steps * (new - 1)
    out = run(benchmark, fn, rounds_for(model_name, B, variant), 0, **info)
    if variant.startswith("polar_"):
        assert all(len(t) == new for t in out.tokens)
        decode_work = out.decode_row_layers
        work = out.prefill_work + decode_work  # = program_steps * T unless states are shared
        benchmark.extra_info.update(prefill_waves=out.prefill_waves, decode_waves=out.decode_waves)
    elif variant.startswith("hf_generate"):
        assert out.shape == (B, T + new)
    benchmark.extra_info.update(work=work, decode_work=decode_work, new_token_count=B * new)
