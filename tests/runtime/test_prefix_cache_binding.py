"""A PrefixCache belongs to one model: another model, a freed one or edited weights are refused."""
import gc

import pytest
import torch

import polar
from polar.runtime import PrefixCache, weight_fingerprint
from polar.testing import tiny_model, tiny_tokenizer

PROMPTS = ["w5 w6 w7 w8 w9 w10", "w5 w6 w7 w8 w11"]


def _run(model, tok, cache):
    D = model.config.num_hidden_layers
    return polar.generate(model, tok, PROMPTS, [polar.full(D), list(range(1, D))], 2, prefix_cache=cache)


def test_a_cache_refuses_another_model_even_with_equal_weights():
    tok = tiny_tokenizer()
    a, b = tiny_model(seed=0, num_layers=3), tiny_model(seed=0, num_layers=3)
    cache = PrefixCache(1 << 22, a)
    assert cache.model is a
    first = _run(a, tok, cache)
    assert _run(a, tok, cache).tokens == first.tokens  # its own model: used (and the same tokens)
    with pytest.raises(ValueError, match="another model"):
        _run(b, tok, cache)


def test_a_cache_binds_on_first_use_and_refuses_in_place_weight_edits():
    tok = tiny_tokenizer()
    model = tiny_model(seed=1, num_layers=3)
    cache = PrefixCache(1 << 22)
    assert cache.model is None
    _run(model, tok, cache)
    assert cache.model is model
    with torch.no_grad():
        model.model.layers[2].mlp.down_proj.weight.mul_(2.0)  # an in-place edit keeps id(model)
    with pytest.raises(ValueError, match="weights .* changed"):
        _run(model, tok, cache)


def test_edits_through_data_and_casts_change_the_fingerprint():
    model = tiny_model(seed=2, num_layers=2)
    before = weight_fingerprint(model)
    model.model.layers[1].self_attn.o_proj.weight.data[0, 0] += 1.0  # .data: no version bump; element 0 is sampled
    assert weight_fingerprint(model) != before
    before = weight_fingerprint(model)
    model.double()
    assert weight_fingerprint(model) != before


def test_a_cache_whose_model_was_freed_refuses_a_new_one():
    tok = tiny_tokenizer()
    cache = PrefixCache(1 << 22, tiny_model(seed=3, num_layers=2))
    gc.collect()  # the model is gone; a new one may get its address
    with pytest.raises(ValueError, match="gone"):
        _run(tiny_model(seed=3, num_layers=2), tok, cache)
