"""The executor on the real default model (SmolLM2-135M-Instruct), when its converted copy is cached.

CI converts it once (``.ci/run``); elsewhere these tests skip until ``polar.load_default()`` ran.
"""
import pytest
import torch

import polar
import polar.runtime.generation
from polar import models

pytestmark = pytest.mark.slow

PROMPTS = ["What is 2 + 3?", "Name a colour.", "Q: What is 7 + 1?\nA:", "The capital of France is"]


@pytest.fixture(scope="module")
def smollm2():
    if not models.is_default_cached():
        pytest.skip(f"converted default model not cached in {models.default_model_dir()} (run polar.load_default())")
    return models.load_default()


def _batch(tok):
    tok.padding_side = "left"
    return tok(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)


def test_identity_program_logits_match_hf(smollm2):
    model, tok = smollm2
    batch = _batch(tok)
    ours = polar.batched_execute(model, polar.full(30), batch, all_positions=True)
    with torch.inference_mode():
        hf = model(**batch).logits
    real = batch["attention_mask"].bool()
    assert (ours.logits - hf)[real].abs().max() <= 1e-3  # 30 fp32 layers, |logits| ~ 20


def test_mixed_programs_match_reference_rows(smollm2):
    model, tok = smollm2
    batch = _batch(tok)
    programs = [list(range(30)), list(range(0, 30, 2)), list(range(10)) + list(range(5, 30)),
                list(range(4)) + [4, 5, 4, 5] + list(range(6, 24))]
    out = polar.batched_execute(model, programs, batch)
    for r, program in enumerate(programs):
        ids = batch["input_ids"][r][batch["attention_mask"][r].bool()]
        assert (out.logits[r] - polar.reference_forward(model, program, ids)[-1]).abs().max() <= 1e-3


def test_identity_generation_matches_hf_generate(smollm2):
    model, tok = smollm2
    batch = _batch(tok)
    ours = polar.generate(model, tok, batch, polar.full(30), max_new_tokens=12)
    with torch.inference_mode():
        hf = model.generate(**batch, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    eos = set(polar.runtime.generation._eos_ids(model, tok, None))
    for r in range(len(PROMPTS)):
        expected = hf[r, batch["input_ids"].shape[1]:].tolist()
        stop = next((i for i, t in enumerate(expected) if t in eos), None)
        assert ours.tokens[r] == (expected if stop is None else expected[: stop + 1])
