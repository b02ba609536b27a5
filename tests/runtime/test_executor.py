"""batched_execute against the Hugging Face forward and the no-cache reference loop."""
import pytest
import torch
from polar.testing import mixed_programs, padded_batch, random_prompts

import polar
from polar.testing import tiny_model

TOL = 1e-4


@pytest.mark.parametrize("backend", ["hf", "fused"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_identity_program_matches_hf_forward(arch_model, side, backend):
    model = arch_model
    D = model.config.num_hidden_layers
    batch = padded_batch(random_prompts(5, model.config.vocab_size, 2, 12, seed=3), side)
    ours = polar.batched_execute(model, polar.full(D), batch, all_positions=True, backend=backend)
    with torch.inference_mode():
        hf = model(**batch).logits
    real = batch["attention_mask"].bool()
    assert ours.logits.shape == hf.shape
    assert (ours.logits - hf)[real].abs().max() <= TOL
    last = polar.batched_execute(model, [polar.full(D)] * 5, batch, backend=backend)
    idx = real.long().cumsum(-1).argmax(-1)  # column of the last real token
    assert last.logits.shape == (5, model.config.vocab_size)
    assert (last.logits - hf[torch.arange(5), idx]).abs().max() <= TOL
    assert last.executed_layers == [D] * 5 and last.unique_layers == [D] * 5


def test_identity_program_eager_attention():
    model = tiny_model("llama", seed=2, attn_implementation="eager")
    batch = padded_batch(random_prompts(4, 128, 1, 9, seed=4), "left")
    ours = polar.batched_execute(model, polar.full(6), batch, all_positions=True)
    with torch.inference_mode():
        hf = model(**batch).logits
    assert (ours.logits - hf)[batch["attention_mask"].bool()].abs().max() <= TOL


@pytest.mark.parametrize("backend", ["hf", "fused"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_mixed_programs_match_reference_rows(arch_model, side, backend):
    model = arch_model
    D = model.config.num_hidden_layers
    prompts = random_prompts(18, model.config.vocab_size, 1, 11, seed=5)
    programs = mixed_programs(D, 18, seed=6)
    batch = padded_batch(prompts, side)
    out = polar.batched_execute(model, programs, batch, all_positions=True, backend=backend)
    real = batch["attention_mask"].bool()
    for r, (prompt, program) in enumerate(zip(prompts, programs)):
        ref = polar.reference_forward(model, program, prompt)
        assert (out.logits[r][real[r]] - ref).abs().max() <= TOL, f"row {r} program {program}"
    assert out.executed_layers == [len(p) for p in programs]
    assert out.unique_layers == [len(set(p)) for p in programs]


def test_policies_give_same_logits(arch_model):
    model = arch_model
    D = model.config.num_hidden_layers
    batch = padded_batch(random_prompts(16, model.config.vocab_size, 2, 8, seed=7), "left")
    programs = mixed_programs(D, 16, seed=8)
    lowest = polar.batched_execute(model, programs, batch, policy="lowest")
    step = polar.batched_execute(model, programs, batch, policy="step")
    assert (lowest.logits - step.logits).abs().max() <= TOL


def test_result_does_not_depend_on_padding_amount():
    model = tiny_model("qwen3", seed=3)
    prompt = torch.randint(3, 128, (6,))
    alone = polar.batched_execute(model, [[0, 1, 1, 3]], prompt[None]).logits[0]
    for side in ("left", "right"):
        batch = padded_batch([prompt, torch.randint(3, 128, (13,))], side)
        padded = polar.batched_execute(model, [[0, 1, 1, 3], [2]], batch).logits[0]
        assert (padded - alone).abs().max() <= TOL


def test_skip_only_batch_uses_at_most_one_wave_per_layer():
    model = tiny_model("llama", seed=4)
    programs = [[0, 2, 5], [1, 2, 3], [0, 1, 2, 3, 4, 5], [4], [3, 5]]
    batch = padded_batch(random_prompts(5, 128, 2, 5, seed=9), "left")
    out = polar.batched_execute(model, programs, batch)
    assert out.num_waves == 6


class _Counter:
    def __init__(self, model):
        self.calls = 0
        model.model.embed_tokens.register_forward_hook(lambda *a: setattr(self, "calls", self.calls + 1))


@pytest.mark.parametrize(
    "programs, inputs, match",
    [
        ([[0, 1], []], None, "row 1 is empty"),
        ([[0, 6]], "one", "row 0: step 1 uses layer 6"),
        ([[0, -1]], "one", "row 0: step 1 uses layer -1"),
        ([[0]] * 3, None, "3 programs for a batch of 2"),
        ([[0] * 25, [0]], None, "row 0 has 25 steps, over the limit of 24"),
        ([[0, 1.5], [1]], None, "row 0: entry 1"),
        ("0 1 2", None, "programs must be a list"),
        ([[0], [1]], {"input_ids": torch.ones(2, 3, dtype=torch.long), "attention_mask": torch.zeros(2, 3)}, "no real tokens"),
        ([[0], [1]], {"input_ids": torch.full((2, 3), 500)}, "outside the vocabulary"),
        ([[0], [1]], {"input_ids": torch.ones(2, 3)}, "integer token ids"),
        ([[0], [1]], {"input_ids": torch.ones(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 4)}, "shape"),
        ([[0], [1]], {"input_ids": torch.ones(2, 3, dtype=torch.long), "attention_mask": torch.full((2, 3), 2)}, "only 0 and 1"),
    ],
)
def test_bad_programs_and_inputs_raise_before_compute(programs, inputs, match):
    model = tiny_model("llama", seed=5)
    counter = _Counter(model)
    if inputs is None:
        inputs = torch.randint(3, 128, (2, 4))
    elif inputs == "one":
        inputs = torch.randint(3, 128, (1, 4))
    with pytest.raises(ValueError, match=match):
        polar.batched_execute(model, programs, inputs)
    with pytest.raises(ValueError, match=match):
        polar.generate(model, None, inputs, programs, max_new_tokens=2)
    assert counter.calls == 0


def test_unknown_policy_or_backend_raises():
    model = tiny_model("llama", seed=5)
    with pytest.raises(ValueError, match="policy"):
        polar.batched_execute(model, [[0]], torch.ones(1, 2, dtype=torch.long), policy="fastest")
    with pytest.raises(ValueError, match="backend"):
        polar.batched_execute(model, [[0]], torch.ones(1, 2, dtype=torch.long), backend="cuda")


def test_unsupported_model_names_its_class():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64)).eval()
    with pytest.raises(polar.UnsupportedModelError, match="GPT2LMHeadModel"):
        polar.batched_execute(model, [[0]], torch.ones(1, 2, dtype=torch.long))


def test_tensor_and_1d_inputs():
    model = tiny_model("llama", seed=6)
    ids = torch.randint(3, 128, (7,))
    a = polar.batched_execute(model, [[0, 3]], ids).logits
    b = polar.batched_execute(model, polar.Program([0, 3]), {"input_ids": ids[None].tolist()}).logits
    ref = polar.reference_forward(model, [0, 3], ids)[-1]
    assert (a[0] - ref).abs().max() <= TOL and (b[0] - ref).abs().max() <= TOL
