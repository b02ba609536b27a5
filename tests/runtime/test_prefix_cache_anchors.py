"""Anchors of the prefix cache (:func:`polar.runtime.units.build_prompt_tree`): a depth-0 prompt
node that equals a cached anchor is looked up under that anchor, not split at a shorter anchor it
also extends, so its whole span is reused (issue 23: the ``0 < len(a) < e`` test lost it)."""
import numpy as np
import torch

from polar.runtime import PrefixCache, generate
from polar.runtime.units import build_prompt_tree
from polar.testing import padded_batch, tiny_model

D = 6


def _ids(*parts):
    return torch.tensor([t for p in parts for t in p])


def test_a_node_equal_to_an_anchor_stays_whole():
    rows = [_ids([5, 6, 7, 8, 9], [11]), _ids([5, 6, 7, 8, 9], [12])]
    batch = padded_batch(rows, "left")
    short, long = (5, 6, 7), (5, 6, 7, 8, 9)
    tree = build_prompt_tree(batch["input_ids"], batch["attention_mask"], [short, long])
    assert tree.end[0] == 5 and tree.depth[0] == 0                     # split after the longest: the node itself
    tree = build_prompt_tree(batch["input_ids"], batch["attention_mask"], [short])
    assert tree.end[0] == 3                                               # extends only the short one: split there
    assert np.array_equal(build_prompt_tree(batch["input_ids"], batch["attention_mask"], [long]).end,
                          build_prompt_tree(batch["input_ids"], batch["attention_mask"], []).end)


def test_nested_anchors_reuse_the_whole_node_with_the_same_tokens():
    model = tiny_model("llama", num_layers=D, seed=1)
    shots, more = [5, 6, 7, 8, 9, 10, 11], [20, 21, 22]
    X = shots + more                                                    # anchor 1: shots and the fixed words
    prompts_x = [_ids(X, [30]), _ids(X, [31, 32])]
    prompts_s = [_ids(shots, [40]), _ids(shots, [41, 42])]               # anchor 2: the shots alone
    programs = [list(range(D)), list(range(D - 1))]
    cache = PrefixCache(1 << 26, model)
    generate(model, None, padded_batch(prompts_x, "left"), programs, 3, prefix_cache=cache)
    generate(model, None, padded_batch(prompts_s, "left"), programs, 3, prefix_cache=cache)
    assert sorted(map(len, cache.anchors)) == [len(shots), len(X)]
    hits = cache.hits
    out = generate(model, None, padded_batch(prompts_x, "left"), programs, 3, prefix_cache=cache)
    units = D + (D - 1) - (D - 1)                                        # program prefixes of the two rows
    assert cache.hits - hits == units                                    # every unit of node X found ...
    assert out.prefill_work_cached == units * len(X)                     # ... over its whole span (not the shots')
    ref = generate(model, None, padded_batch(prompts_x, "left"), programs, 3)
    assert out.tokens == ref.tokens


def test_common_prefix_and_next_anchor():
    from polar.runtime import common_prefix, next_anchor

    assert common_prefix([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == (1, 2)
    assert common_prefix([[1, 2], [1, 2]]) == (1, 2) and common_prefix([[1], [2]]) == () and common_prefix([]) == ()
    assert next_anchor([[1, 2, 3, 4]], None) is None              # one prompt: no anchor (it would be all of it)
    assert next_anchor([[1, 2, 3, 4], [1, 2, 3, 4]], None) is None  # one distinct prompt
    assert next_anchor([[1, 2, 3, 4], [1, 2, 3, 9]], None) == (1, 2, 3)
    assert next_anchor([[1, 2, 3, 7]], (1, 2, 3)) == (1, 2, 3)      # a later single prompt extends it: kept
    assert next_anchor([[1, 2, 8]], (1, 2, 3)) == (1, 2)            # shortened to what both share
    assert next_anchor([[5, 6], [5, 7]], (1, 2)) == (1, 2)          # nothing shared: the anchor stays
