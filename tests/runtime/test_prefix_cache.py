"""The cross-call prefix cache (:class:`polar.runtime.PrefixCache`): rounds of ``generate`` calls
on prompts with common shots give the same logits and tokens with the cache as without it and as
the no-cache reference; the work it saves is counted; eviction keeps the trie consistent."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import polar
from polar.programs import validate_programs
from polar.runtime import PrefixCache, generate
from polar.runtime.adapters import get_adapter
from polar.runtime.packing import pack
from polar.runtime.prefix_cache import CachedUnit
from polar.runtime.runners import get_runner
from polar.runtime.shared import SharedGeneration
from polar.runtime.units import build_prompt_tree, plan_prefill, prompt_units
from polar.testing import mcts_edit, padded_batch, tiny_model

TOL = 1e-4
D = 6


def rounds(seed: int, vocab: int, n_rounds: int = 4, rows: int = 8):
    """Search-shaped calls: prompts = common shots + one of 4 questions (one round asks about a
    single question, so its whole prompt is one node unless split at the cached shots); each
    round's programs edit programs of earlier rounds."""
    g = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    shots = torch.randint(3, vocab, (9,), generator=g)
    questions = [torch.cat([shots, torch.randint(3, vocab, (n,), generator=g)]) for n in (1, 2, 3, 4)]
    pool = [list(range(D))]
    out = []
    for r in range(n_rounds):
        programs = [mcts_edit(rng.choice(pool), rng) for _ in range(rows)]
        if r == 0:
            programs[0] = list(range(D))
        pool += programs
        prompts = [questions[1]] * rows if r == 2 else [rng.choice(questions) for _ in range(rows)]
        out.append((prompts, programs))
    return out


def prefill_logits(model, prompts, programs, side, cache=None, backend="hf") -> torch.Tensor:
    adapter = get_adapter(model)
    batch = padded_batch(prompts, side)
    packed = pack(validate_programs(programs, len(programs), D, None))
    with torch.inference_mode():
        engine = SharedGeneration(adapter, get_runner(backend, adapter.device), batch["input_ids"],
                                  batch["attention_mask"], packed, "bound", 4, cache)
        return engine.prefill()                                                 # [B, V]


@pytest.mark.parametrize("arch, backend", [("llama", "hf"), ("qwen2", "hf"), ("qwen3_moe", "hf"), ("llama", "fused")])
@pytest.mark.parametrize("side", ["left", "right"])
def test_rounds_with_the_cache_match_without_it_and_the_reference(arch, backend, side):
    model = tiny_model(arch, num_layers=D)
    cache = PrefixCache(1 << 30)
    for r, (prompts, programs) in enumerate(rounds(seed=3, vocab=model.config.vocab_size)):
        hits = cache.hits
        with_cache = prefill_logits(model, prompts, programs, side, cache, backend)
        without = prefill_logits(model, prompts, programs, side)
        assert (with_cache - without).abs().max() <= TOL
        for row, (x, p) in enumerate(zip(prompts, programs)):
            assert (with_cache[row] - polar.reference_forward(model, p, x)[-1]).abs().max() <= TOL, f"round {r} row {row}"
        if r > 0:
            assert cache.hits > hits, f"round {r} found nothing in the cache"


def test_generate_tokens_and_work_with_the_cache():
    model = tiny_model("llama", num_layers=D)
    cache = PrefixCache(1 << 30)
    saved = 0
    for r, (prompts, programs) in enumerate(rounds(seed=5, vocab=model.config.vocab_size)):
        batch = padded_batch(prompts, "left")
        on = generate(model, None, batch, programs, 6, prefix_cache=cache)
        off = generate(model, None, batch, programs, 6)
        assert on.tokens == off.tokens
        assert on.prefill_work + on.prefill_work_cached == off.prefill_work  # the same units, some from the cache
        assert off.prefill_work_cached == 0
        saved += on.prefill_work_cached
        if r == 2:  # one question only: the prompt node is split at the cached shots
            assert on.prefill_work_cached > 0
    assert saved > 0 and cache.hits > 0 and cache.misses > 0
    assert cache.anchors and all(len(a) == 9 for a in cache.anchors)
    # programs seen before, on the same shots: the whole shots node comes from the cache (lanes
    # with nothing to run start from their last cached state)
    prompts, programs = rounds(seed=5, vocab=model.config.vocab_size)[0]
    prompts = [prompts[0][:9]] + prompts[1:]                     # row 0's prompt is the shots alone
    batch = padded_batch(prompts, "left")
    on = generate(model, None, batch, programs, 6, prefix_cache=cache)
    off = generate(model, None, batch, programs, 6)
    distinct_prefixes = {tuple(p[:k]) for p in programs for k in range(1, len(p) + 1)}
    assert on.tokens == off.tokens and on.prefill_work_cached == 9 * len(distinct_prefixes)
    ref = [polar.reference_forward(model, p, x)[-1] for x, p in zip(prompts, programs)]
    assert (prefill_logits(model, prompts, programs, "left", cache) - torch.stack(ref)).abs().max() <= TOL


def test_a_small_budget_evicts_and_stays_correct():
    model = tiny_model("llama", num_layers=D)
    unit_bytes = 9 * (2 * model.config.num_key_value_heads * (model.config.hidden_size // model.config.num_attention_heads)
                      + model.config.hidden_size) * 4
    cache = PrefixCache(12 * unit_bytes)
    for prompts, programs in rounds(seed=7, vocab=model.config.vocab_size, n_rounds=5):
        with_cache = prefill_logits(model, prompts, programs, "left", cache)
        without = prefill_logits(model, prompts, programs, "left")
        assert (with_cache - without).abs().max() <= TOL
        assert cache.nbytes <= cache.max_bytes and len(cache) <= 12
    assert cache.evictions > 0


def test_eviction_takes_descendants_and_forgets_empty_anchors():
    unit = CachedUnit(torch.zeros(2, 1, 4), torch.zeros(2, 1, 4), torch.zeros(2, 8))
    cache = PrefixCache(10 * unit.nbytes)
    root = cache.root((5, 6), create=True)
    a = cache.add(root, 0, unit)
    b = cache.add(a, 1, unit)
    c = cache.add(b, 2, unit)
    other = cache.add(cache.root((7,), create=True), 3, unit)
    assert cache.child(cache.child(cache.child(cache.root((5, 6)), 0), 1), 2) == c
    cache.touch([c, b, other])                      # `a` is now the least recently used
    cache.max_bytes = 3 * unit.nbytes
    cache.trim()
    assert len(cache) == 1 and cache.child(cache.root((7,)), 3) == other   # a, and b and c under it, gone
    assert cache.anchors == [(7,)] and cache.root((5, 6)) is None
    assert cache.nbytes == unit.nbytes and cache.evictions == 3


def test_bad_use_is_refused():
    model = tiny_model("llama", num_layers=D)
    batch = padded_batch([torch.tensor([3, 4, 5])], "left")
    with pytest.raises(ValueError, match="share_prefix"):
        generate(model, None, batch, [[0, 1]], 2, share_prefix=False, prefix_cache=PrefixCache(1 << 20))
    with pytest.raises(ValueError, match="max_bytes"):
        PrefixCache(-1)
    cache = PrefixCache(1 << 20)
    generate(model, None, batch, [[0, 1]], 2, prefix_cache=cache)
    with pytest.raises(ValueError, match="another model"):
        generate(tiny_model("llama", seed=1, num_layers=D), None, batch, [[0, 1]], 2, prefix_cache=cache)


def test_anchors_split_only_depth0_nodes_that_extend_them():
    ids = torch.tensor([[3, 4, 5, 6, 7], [3, 4, 5, 6, 8], [9, 4, 5, 6, 7]])
    mask = torch.ones_like(ids)
    plain = build_prompt_tree(ids, mask)
    split = build_prompt_tree(ids, mask, anchors=[(3, 4), (3, 4, 5), (9, 9)])
    assert plain.span[plain.depth == 0].tolist() == [4, 5]                 # [3 4 5 6], [9 4 5 6 7]
    assert split.span[split.depth == 0].tolist() == [3, 5]                 # longest anchor (3, 4, 5); (9, 9) unused
    assert [len(nodes) for nodes in split.row_nodes] == [3, 3, 1]                # [3 4 5] [6] [7 or 8]; [9 ..]


def test_done_units_must_be_depth0_and_closed_under_parents():
    ids = torch.tensor([[3, 4, 5, 6], [3, 4, 5, 7]])
    tree = build_prompt_tree(ids, torch.ones_like(ids))
    packed = pack(validate_programs([[0, 1, 2], [0, 2]], 2, D, None))
    table = prompt_units(tree, packed)
    depth0 = tree.depth[table.group] == 0
    child = np.nonzero(depth0 & (table.parent >= 0))[0][0]
    for bad in (child, np.nonzero(~depth0)[0][0]):                          # an orphan; a deeper node's unit
        done = np.zeros(table.num_units, dtype=bool)
        done[bad] = True
        with pytest.raises(ValueError, match="closed under parents"):
            plan_prefill(tree, packed, "bound", D, torch.device("cpu"), done=done)
    done = depth0 & (table.step == 0)
    plan = plan_prefill(tree, packed, "bound", D, torch.device("cpu"), done=done)
    full = plan_prefill(tree, packed, "bound", D, torch.device("cpu"))
    assert plan.work + plan.done_work == full.work and plan.done_work == 3
    assert sorted(u for us in plan.step_units for u in us.tolist()) == np.nonzero(~done)[0].tolist()
