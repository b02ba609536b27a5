"""Shared-prefix execution (docs/architecture.md section 9): the same logits and tokens with ``share_prefix``
on as off, and as the no-cache reference, on every tiny architecture; the work counters."""
from __future__ import annotations

import inspect
import random

import pytest
import torch
from hypothesis import given, settings, strategies as st

import polar
from polar.runtime.adapters import get_adapter
from polar.runtime.packing import pack
from polar.runtime.units import build_prompt_tree, plan_prefill, tree_levels
from polar.testing import ARCHITECTURES, mcts_edit, padded_batch, tiny_model, tiny_tokenizer

TOL = 1e-4
D = 6
NEW = 6


def mcts_batch(seed: int, vocab: int = 128):
    """Prompts that share a long few-shot-like prefix (some identical, one a prefix of another, one
    unrelated) and programs shaped like one MCTS round (parent, single-edit children, a grandchild)."""
    g = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    shots = torch.randint(3, vocab, (9,), generator=g)
    q = [torch.randint(3, vocab, (n,), generator=g) for n in (2, 3, 4)]
    prompts = [torch.cat([shots, q[0]]), torch.cat([shots, q[0]]), torch.cat([shots, q[1]]), torch.cat([shots, q[1]]),
               torch.cat([shots, q[2]]), shots[:7].clone(), torch.cat([shots, q[0]]), torch.randint(3, vocab, (5,), generator=g)]
    parent = list(range(D))
    children = [mcts_edit(parent, rng) for _ in range(4)]
    programs = [parent, children[0], parent, children[1], children[2], children[3], mcts_edit(children[0], rng),
                [1, 1, 2, 3, 3, 4]]
    return prompts, programs


def reference_rows(model, prompts, programs):
    return [polar.reference_forward(model, p, x) for x, p in zip(prompts, programs)]


@pytest.mark.parametrize("backend", ["hf", "fused"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_shared_logits_match_unshared_and_reference(arch_model, side, backend):
    model = arch_model
    prompts, programs = mcts_batch(seed=1, vocab=model.config.vocab_size)
    batch = padded_batch(prompts, side)
    real = batch["attention_mask"].bool()
    on = polar.batched_execute(model, programs, batch, all_positions=True, backend=backend)
    off = polar.batched_execute(model, programs, batch, all_positions=True, backend=backend, share_prefix=False)
    assert (on.logits - off.logits)[real].abs().max() <= TOL
    for r, ref in enumerate(reference_rows(model, prompts, programs)):
        assert (on.logits[r][real[r]] - ref).abs().max() <= TOL, f"row {r}"
    last_on = polar.batched_execute(model, programs, batch, backend=backend)
    last_off = polar.batched_execute(model, programs, batch, backend=backend, share_prefix=False)
    assert (last_on.logits - last_off.logits).abs().max() <= TOL
    assert last_on.num_waves == last_off.num_waves
    assert last_on.work < last_on.work_unshared == last_off.work == last_off.work_unshared
    assert last_off.work_unshared == sum(len(p) * len(x) for p, x in zip(programs, prompts))


@pytest.mark.parametrize("backend", ["hf", "fused"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_shared_generation_matches_unshared_and_reference(arch_model, side, backend):
    model = arch_model
    prompts, programs = mcts_batch(seed=2, vocab=model.config.vocab_size)
    batch = padded_batch(prompts, side)
    on = polar.generate(model, None, batch, programs, max_new_tokens=NEW, eos_token_id=[], backend=backend)
    off = polar.generate(model, None, batch, programs, max_new_tokens=NEW, eos_token_id=[], backend=backend,
                         share_prefix=False)
    assert on.tokens == off.tokens
    for r, (x, p) in enumerate(zip(prompts, programs)):
        assert on.tokens[r] == polar.reference_generate(model, p, x, NEW), f"row {r} {p}"
    assert on.prefill_work < on.prefill_work_unshared == off.prefill_work
    assert on.decode_work <= on.decode_work_unshared == off.decode_work == (NEW - 1) * sum(map(len, programs))
    assert on.decode_row_layers == on.decode_work
    assert on.cache_entries < off.cache_entries == on.cache_entries_unshared
    assert (on.prefill_waves, on.decode_waves, on.decode_steps) == (off.prefill_waves, off.decode_waves, off.decode_steps)


def test_identical_rows_share_everything():
    model = tiny_model("qwen3", seed=3)
    prompt = torch.randint(3, 128, (9,))
    program = [0, 1, 2, 2, 3, 5]
    B = 5
    on = polar.generate(model, None, prompt.repeat(B, 1), [program] * B, max_new_tokens=NEW, eos_token_id=[])
    off = polar.generate(model, None, prompt.repeat(B, 1), [program] * B, max_new_tokens=NEW, eos_token_id=[],
                         share_prefix=False)
    assert on.tokens == off.tokens == [polar.reference_generate(model, program, prompt, NEW)] * B
    assert on.prefill_work * B == on.prefill_work_unshared == B * len(program) * len(prompt)
    assert on.decode_work * B == on.decode_work_unshared  # same tokens: decode shares too
    assert on.cache_entries == 1 + len(program) * (len(prompt) + NEW - 1)  # scratch + one copy of everything


def test_nothing_shared_does_the_unshared_work():
    model = tiny_model("llama", seed=4)
    prompts = [torch.tensor([3 + r, 10, 11, 12]) for r in range(4)]  # different first tokens
    programs = [[0, 1], [1, 2], [2, 3], [3, 4]]                      # different first layers
    batch = padded_batch(prompts, "left")
    on = polar.generate(model, None, batch, programs, max_new_tokens=NEW, eos_token_id=[])
    off = polar.generate(model, None, batch, programs, max_new_tokens=NEW, eos_token_id=[], share_prefix=False)
    assert on.tokens == off.tokens
    assert (on.prefill_work, on.decode_work) == (on.prefill_work_unshared, on.decode_work_unshared)


def test_common_prompt_prefix_is_computed_once_per_program_prefix():
    model = tiny_model("mistral", seed=5)  # sliding window 5 < prompt length
    shots = torch.randint(3, 128, (10,))
    prompts = [torch.cat([shots, torch.tensor([20 + r, 30])]) for r in range(4)]
    program = [0, 1, 2, 3, 4, 5]
    out = polar.batched_execute(model, [program] * 4, padded_batch(prompts, "right"))
    assert out.work == len(program) * (10 + 4 * 2)
    assert out.work_unshared == 4 * len(program) * 12
    for r, x in enumerate(prompts):
        assert (out.logits[r] - polar.reference_forward(model, program, x)[-1]).abs().max() <= TOL


def test_rows_finishing_early_sampling_and_stop_strings_agree():
    model, tok = tiny_model("llama", seed=6), tiny_tokenizer()
    texts = ["w5 w6 w7 w8 w9", "w5 w6 w7 w8 w9", "w5 w6 w7 w3", "w5 w6 w7 w3", "w4 w5"]
    programs = [[0, 1, 2, 3, 4, 5], [0, 1, 2, 4, 5], [0, 1, 2, 3, 4, 5], [0, 1, 1, 2, 3, 4, 5], [0, 2, 4]]
    free = polar.generate(model, tok, texts, programs, max_new_tokens=NEW, eos_token_id=[])
    eos = free.tokens[1][1]
    stop = tok.decode([free.tokens[2][2]])
    for kw in (dict(eos_token_id=eos), dict(eos_token_id=[], stop_strings=[stop]),
               dict(eos_token_id=[], do_sample=True, temperature=1.3, top_p=0.9, seed=7)):
        on = polar.generate(model, tok, texts, programs, max_new_tokens=NEW, **kw)
        off = polar.generate(model, tok, texts, programs, max_new_tokens=NEW, share_prefix=False, **kw)
        assert (on.tokens, on.texts, on.finish_reasons) == (off.tokens, off.texts, off.finish_reasons), kw
    on = polar.generate(model, tok, texts, programs, max_new_tokens=NEW, eos_token_id=eos)
    for r, toks in enumerate(free.tokens):  # each row stops at its own first EOS, the others go on
        cut = toks[: toks.index(eos) + 1] if eos in toks else toks
        assert on.tokens[r] == cut and on.finish_reasons[r] == ("eos" if eos in toks else "length")
    assert len(on.tokens[1]) <= 2 and len({len(t) for t in on.tokens}) > 1


@st.composite
def random_families(draw):
    """Random trees of programs (edits of edits) on random prompts sharing random prefixes."""
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    prompts = [[rng.randrange(3, 12) for _ in range(rng.randint(1, 9))]]
    programs = [[rng.randrange(D) for _ in range(rng.randint(1, 2 * D))]]
    for _ in range(draw(st.integers(0, 7))):
        base = rng.choice(prompts)
        cut = rng.randint(0, len(base))
        prompts.append(base[:cut] + [rng.randrange(3, 12) for _ in range(rng.randint(0 if cut else 1, 4))])
        programs.append(mcts_edit(rng.choice(programs), rng))
    return [torch.tensor(p) for p in prompts], programs, draw(st.sampled_from(["left", "right"]))


@pytest.fixture(scope="module")
def qwen2():
    return tiny_model("qwen2", seed=8)


@settings(max_examples=25, deadline=None)
@given(case=random_families())
def test_random_trees_and_prompt_prefixes_give_the_same_logits(qwen2, case):
    prompts, programs, side = case
    batch = padded_batch(prompts, side)
    real = batch["attention_mask"].bool()
    on = polar.batched_execute(qwen2, programs, batch, all_positions=True)
    off = polar.batched_execute(qwen2, programs, batch, all_positions=True, share_prefix=False)
    assert (on.logits - off.logits)[real].abs().max() <= TOL
    assert on.work <= on.work_unshared == off.work


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_cache_keyword_is_the_one_the_installed_transformers_takes(arch):
    """The decoder layer and attention take our cache under the keyword of this Transformers
    version (``cache`` since 5.x, ``past_key_values``/``past_key_value`` before), and it reaches
    attention: the layer writes keys/values through it."""
    model = tiny_model(arch, seed=9)
    adapter = get_adapter(model)
    layer = adapter.layers[0]
    params = inspect.signature(type(layer).forward).parameters
    expected = next(k for k in ("cache", "past_key_values", "past_key_value") if k in params)
    assert adapter.cache_kwarg == expected
    assert adapter.attn_cache_kwarg in inspect.signature(type(layer.self_attn).forward).parameters

    class Recorder:
        def __init__(self):
            self.calls = []

        def update(self, key, value, *args, **kwargs):
            self.calls.append(tuple(key.shape))
            return key, value

        def get_seq_length(self, *args, **kwargs):
            return 0

    x = torch.randn(2, 3, model.config.hidden_size)
    pos = torch.arange(3).expand(2, -1)
    bias = torch.zeros(2, 1, 3, 3)
    rec = Recorder()
    with torch.inference_mode():
        adapter.call_layer(0, x, bias, pos, adapter.rotary(x, pos), rec)
    assert rec.calls == [(2, adapter.num_kv_heads, 3, adapter.head_dim)]


def test_a_unit_can_share_its_layer_call_with_its_ancestors():
    """Depths of similar width run as one level: the test batch's question nodes (depth 2) run in
    the same layer calls as the shots' tail (depth 1) whose keys they read."""
    prompts, programs = mcts_batch(seed=1)
    batch = padded_batch(prompts, "left")
    tree = build_prompt_tree(batch["input_ids"], batch["attention_mask"])
    assert list(tree_levels(tree)) == [0, 1, 1]
    plan = plan_prefill(tree, pack(programs), "bound", D, torch.device("cpu"))
    assert len(plan.levels) == 2 and plan.levels[1].reads and not plan.levels[0].reads
    assert set(tree.depth[plan.levels[1].nodes]) == {1, 2}


@pytest.mark.parametrize("n,Q,K", [(1, 1, 1), (3, 1, 7), (4, 5, 9)])
def test_pool_view_writes_then_reads_its_index_table(n, Q, K):
    """``PoolView.update`` writes each unit's columns to ``write_index`` and returns exactly the pool
    entries ``read_index`` lists (``keys[read_index]``, as ``[n, H, K, hd]``), the new ones included."""
    from polar.runtime.cache import PooledKVCache, PoolView

    g = torch.Generator().manual_seed(n * 100 + K)
    H, hd, P = 3, 8, 40
    pool = PooledKVCache(P, H, hd, torch.float32, torch.device("cpu"))
    pool.keys.normal_(generator=g)
    pool.values.normal_(generator=g)
    write = torch.randperm(P - 1, generator=g)[: n * Q] + 1
    read = torch.randint(0, P, (n, K), generator=g)
    read[:, -1] = write.view(n, Q)[:, -1]                                # each unit reads its last new column
    key, value = torch.randn(n, H, Q, hd, generator=g), torch.randn(n, H, Q, hd, generator=g)
    k, v = PoolView(pool, write, read).update(key, value, 0)
    assert torch.equal(pool.keys[write], key.transpose(1, 2).reshape(n * Q, H, hd))
    assert torch.equal(k, pool.keys[read].transpose(1, 2)) and torch.equal(v, pool.values[read].transpose(1, 2))
    assert torch.equal(k[:, :, -1], key[:, :, -1]) and torch.equal(v[:, :, -1], value[:, :, -1])
    assert k.shape == (n, H, K, hd)


def test_pool_reserve_keeps_entries_and_zeroes_new_ones():
    from polar.runtime.cache import PooledKVCache

    pool = PooledKVCache(5, 2, 4, torch.float32, torch.device("cpu"), max_entries=12)
    pool.keys.normal_()
    pool.values.normal_()
    keys, values = pool.keys.clone(), pool.values.clone()
    pool.reserve(4)                                                     # fits: nothing changes
    assert pool.entries == 5
    pool.reserve(7)                                                     # doubles to 10
    assert pool.entries == 10 and torch.equal(pool.keys[:5], keys) and torch.equal(pool.values[:5], values)
    assert not pool.keys[5:].any() and not pool.values[5:].any()
    pool.reserve(11)                                                    # capped at max_entries
    assert pool.entries == 12 and torch.equal(pool.keys[:5], keys) and not pool.keys[5:].any()
