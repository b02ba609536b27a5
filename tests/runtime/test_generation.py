"""polar.generate: step-indexed KV cache against the no-cache reference, and HF generate."""
import random

import pytest
import torch

import polar
from polar.testing import padded_batch, random_prompts, tiny_model, tiny_tokenizer

NEW = 7
LOOPY = [
    [0, 1, 2, 3, 4, 5],
    [0, 1, 1, 1, 2, 3, 4, 5],  # one layer three times
    [0, 1, 2, 1, 2, 3, 4, 5, 4, 5],  # two segments repeated
    [0, 2, 4],  # skips
    [5, 4, 3, 2, 1, 0],  # reorder
    [3, 3],
]


@pytest.mark.parametrize("backend", ["hf", "fused"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_cached_generation_matches_no_cache_reference(arch_model, side, backend):
    model = arch_model
    prompts = random_prompts(len(LOOPY), model.config.vocab_size, 2, 9, seed=11)
    out = polar.generate(model, None, padded_batch(prompts, side), LOOPY, max_new_tokens=NEW, eos_token_id=[],
                         backend=backend)
    for r, (prompt, program) in enumerate(zip(prompts, LOOPY)):
        assert out.tokens[r] == polar.reference_generate(model, program, prompt, NEW), f"row {r} {program}"
    assert out.finish_reasons == ["length"] * len(LOOPY)
    assert out.executed_layers == [len(p) for p in LOOPY]
    assert out.decode_steps == NEW - 1
    assert out.decode_row_layers == (NEW - 1) * sum(len(p) for p in LOOPY)


def test_policies_generate_the_same_tokens():
    model = tiny_model("qwen2", seed=12)
    batch = padded_batch(random_prompts(len(LOOPY), 128, 2, 9, seed=13), "left")
    a = polar.generate(model, None, batch, LOOPY, max_new_tokens=NEW, policy="lowest", eos_token_id=[])
    b = polar.generate(model, None, batch, LOOPY, max_new_tokens=NEW, policy="step", eos_token_id=[])
    assert a.tokens == b.tokens


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_identity_program_matches_hf_generate(arch):
    model = tiny_model(arch, seed=14)
    batch = padded_batch(random_prompts(4, 128, 3, 10, seed=15), "left")
    ours = polar.generate(model, None, batch, polar.full(6), max_new_tokens=10, eos_token_id=2)
    with torch.inference_mode():
        hf = model.generate(**batch, max_new_tokens=10, do_sample=False, eos_token_id=2, pad_token_id=0)
    T = batch["input_ids"].shape[1]
    for r in range(4):
        expected = hf[r, T:].tolist()
        if 2 in expected:
            expected = expected[: expected.index(2) + 1]
        assert ours.tokens[r] == expected


def test_rows_finish_independently_and_leave_the_batch():
    model = tiny_model("llama", seed=16)
    batch = padded_batch(random_prompts(len(LOOPY), 128, 2, 9, seed=17), "left")
    free = polar.generate(model, None, batch, LOOPY, max_new_tokens=NEW, eos_token_id=[])
    eos = free.tokens[0][1]  # row 0 stops at its second token
    stopped = polar.generate(model, None, batch, LOOPY, max_new_tokens=NEW, eos_token_id=eos)
    for r in range(len(LOOPY)):
        expected = free.tokens[r][: free.tokens[r].index(eos) + 1] if eos in free.tokens[r] else free.tokens[r]
        assert stopped.tokens[r] == expected
        assert stopped.finish_reasons[r] == ("eos" if eos in free.tokens[r] else "length")
    assert len(stopped.tokens[0]) == 2
    # row 0 took part in 1 decode step instead of NEW - 1
    assert free.decode_row_layers - stopped.decode_row_layers == (NEW - 2) * len(LOOPY[0])


def test_stop_strings_and_texts():
    model, tok = tiny_model("llama", seed=18), tiny_tokenizer()
    texts = ["w5 w6 w7", "w9 w10", "w3 w3 w3 w4"]
    free = polar.generate(model, tok, texts, [[0, 1, 2, 3, 4, 5]] * 3, max_new_tokens=NEW, eos_token_id=[])
    assert free.texts == [tok.decode(t) for t in free.tokens]
    stop = tok.decode([free.tokens[1][2]])
    out = polar.generate(model, tok, texts, [[0, 1, 2, 3, 4, 5]] * 3, max_new_tokens=NEW, eos_token_id=[],
                         stop_strings=[stop])
    assert out.finish_reasons[1] == "stop"
    assert out.texts[1].endswith(stop) and len(out.tokens[1]) <= 3
    for r in range(3):
        assert free.tokens[r][: len(out.tokens[r])] == out.tokens[r]


def test_stop_fn_stops_rows_by_rule_and_keeps_prefixes():
    """``stop_fn(row, text)`` stops a row (reason ``rule``) as soon as it says so; other rows go on."""
    model, tok = tiny_model("qwen3", seed=21), tiny_tokenizer()
    texts = ["w5 w6 w7", "w9 w10", "w3 w3 w3 w4"]
    progs = [[0, 1, 2, 3, 4, 5], [0, 1, 1, 2, 3, 4, 5], [0, 2, 4, 5]]
    free = polar.generate(model, tok, texts, progs, max_new_tokens=NEW, eos_token_id=[])
    seen = []

    def rule(row, text):
        seen.append(row)
        return row != 1 and len(text.split()) >= 2  # rows 0 and 2 stop after two words

    out = polar.generate(model, tok, texts, progs, max_new_tokens=NEW, eos_token_id=[], stop_fn=rule)
    for r in range(3):
        assert out.tokens[r] == free.tokens[r][: len(out.tokens[r])]
    assert out.finish_reasons == ["rule", "length", "rule"]
    assert [len(out.tokens[r]) for r in (0, 2)] == [2, 2] and len(out.tokens[1]) == NEW
    assert set(seen) == {0, 1, 2}
    with pytest.raises(ValueError, match="tokenizer"):
        polar.generate(model, None, padded_batch(random_prompts(1, 128, 2, 3, 0), "left"), progs[:1], stop_fn=rule)


def test_text_inputs_leave_the_tokenizer_unchanged():
    model, tok = tiny_model("llama", seed=22), tiny_tokenizer()
    tok.padding_side = "right"
    tok.pad_token = None
    before = (tok.padding_side, tok.pad_token)
    out = polar.generate(model, tok, ["w5 w6 w7", "w9"], [[0, 1, 2, 3, 4, 5]] * 2, max_new_tokens=3, eos_token_id=[])
    assert (tok.padding_side, tok.pad_token) == before
    # the short row was left-padded: same tokens as alone
    alone = polar.generate(model, tok, ["w9"], [[0, 1, 2, 3, 4, 5]], max_new_tokens=3, eos_token_id=[])
    assert out.tokens[1] == alone.tokens[0]


def test_compact_programs_are_accepted_like_their_decoded_programs():
    model = tiny_model("llama", seed=23)
    D = model.config.num_hidden_layers
    batch = padded_batch(random_prompts(3, 128, 3, 7, seed=24), "left")
    compact = [polar.random_compact(D, random.Random(s)) for s in range(3)]
    a = polar.generate(model, None, batch, compact, max_new_tokens=4, eos_token_id=[])
    b = polar.generate(model, None, batch, [c.decode() for c in compact], max_new_tokens=4, eos_token_id=[])
    assert a.tokens == b.tokens and a.programs == b.programs
    with pytest.raises(ValueError, match="row 0: compact program over 8 layers"):
        polar.batched_execute(model, [polar.random_compact(8, random.Random(0))], batch["input_ids"][:1])


def test_sampling_is_seeded_and_top_k_one_is_greedy():
    model = tiny_model("mistral", seed=19)
    batch = padded_batch(random_prompts(4, 128, 2, 6, seed=20), "right")
    progs = LOOPY[:4]
    kw = dict(max_new_tokens=NEW, eos_token_id=[], do_sample=True, temperature=1.5, top_p=0.9)
    a = polar.generate(model, None, batch, progs, seed=1, **kw)
    b = polar.generate(model, None, batch, progs, seed=1, **kw)
    c = polar.generate(model, None, batch, progs, seed=2, **kw)
    assert a.tokens == b.tokens and a.tokens != c.tokens
    greedy = polar.generate(model, None, batch, progs, max_new_tokens=NEW, eos_token_id=[])
    top1 = polar.generate(model, None, batch, progs, max_new_tokens=NEW, eos_token_id=[], do_sample=True, top_k=1, seed=3)
    assert greedy.tokens == top1.tokens


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(do_sample=True, temperature=0.0), "temperature"),
    (dict(do_sample=True, top_p=1.5), "top_p"),
    (dict(stop_strings=["x"]), "need a tokenizer"),
    (dict(policy="best"), "policy"),
])
def test_bad_generation_settings_raise(kwargs, match):
    model = tiny_model("llama", seed=21)
    kwargs.setdefault("max_new_tokens", 3)
    with pytest.raises(ValueError, match=match):
        polar.generate(model, None, torch.ones(1, 3, dtype=torch.long), [[0]], **kwargs)
    with pytest.raises(ValueError, match="tokenizer"):
        polar.generate(model, None, ["some text"], [[0]], max_new_tokens=2)
