"""MindSkip and FlexiDepth learn planted rules with the LM loss alone, on a sharp tiny model
(``conftest.sharp_model``): the targets come from a teacher that follows the rule, and the
trained router must follow it on held-out inputs (>= 90%)."""
import torch

import polar
from polar.routers import (FlexiDepthConfig, FlexiDepthRouter, LMExample, MindSkipConfig, MindSkipRouter,
                           RouterTrainConfig, fit_gated, forward_hidden)
from polar.runtime.routing import LayerGates
from polar.routers._data import collate
from polar.testing import padded_batch

LAYER_MS = 3  # MindSkip: close this layer's attention iff the prompt holds the marker
LAYER_FD = 4  # FlexiDepth: marker tokens skip this layer


def test_mindskip_learns_to_close_a_gate_iff_the_marker_is_in_the_prompt(toy, sharp, tmp_path):
    model, adapter = sharp
    train = toy.marked_prompts(256, 0)
    batch = padded_batch([p for p, _ in train], "left")
    teacher = toy.AttentionTeacher([has for _, has in train], LAYER_MS)
    gold = polar.generate(model, None, batch, None, max_new_tokens=8, router=teacher, eos_token_id=[])
    examples = [LMExample(f"t{i}", tuple(p.tolist()) + tuple(gold.tokens[i]), len(p)) for i, (p, _) in enumerate(train)]
    router = MindSkipRouter.for_model(adapter, MindSkipConfig(toy.D, 64), seed=0)  # gates on layers 0..4
    tc = RouterTrainConfig(epochs=8, batch_size=16, lr=1e-2, val_fraction=0.0, save_every=10_000)
    router = fit_gated(model, router, examples, tmp_path / "ms", train_config=tc, progress=False)
    test = toy.marked_prompts(128, 1)
    out = polar.batched_execute(model, None, padded_batch([p for p, _ in test], "left"), router=router)
    closed = out.attention_gates[:, LAYER_MS] == 0
    hits = [bool(c) == has for c, (_, has) in zip(closed, test)]
    assert sum(hits) / len(hits) >= 0.9
    assert float(out.attention_gates[:, [0, 1, 2, 4]].mean()) >= 0.8  # the other gates stay (mostly) open


def test_flexidepth_learns_to_skip_marker_tokens(toy, sharp, tmp_path):
    model, adapter = sharp

    def examples(n, seed):
        seqs = toy.marked_sequences(n, seed)
        b = collate([LMExample(str(i), tuple(s.tolist()), len(s)) for i, s in enumerate(seqs)])
        run = b.ids != toy.MARK  # the teacher: marker tokens skip LAYER_FD (identity), the rest run it
        with torch.no_grad():
            h = forward_hidden(adapter, b.ids, b.mask, gates=lambda l, x: LayerGates(
                token=run, token_adapter=lambda y: y) if l == LAYER_FD else None)
            t = adapter.logits(h).argmax(-1)
        return [LMExample(f"e{seed}-{i}", tuple(s.tolist()), len(s), targets=tuple(t[i, :len(s)].tolist()))
                for i, s in enumerate(seqs)]

    router = FlexiDepthRouter.for_model(adapter, FlexiDepthConfig(toy.D, 64, 128), seed=0)  # layers 3..5
    tc = RouterTrainConfig(epochs=8, batch_size=16, lr=1e-2, val_fraction=0.0, save_every=10_000)
    router = fit_gated(model, router, examples(256, 0), tmp_path / "fd", train_config=tc, progress=False)
    test = collate([LMExample(str(i), tuple(s.tolist()), len(s)) for i, s in enumerate(toy.marked_sequences(128, 1))])
    entering = {}
    with torch.no_grad():
        forward_hidden(adapter, test.ids, test.mask, gates=lambda l, h: router.gates(l, h, test.mask),
                       on_layer=entering.__setitem__)
    real = test.mask.bool()
    skips = ~router.gates(LAYER_FD, entering[LAYER_FD], test.mask).token
    assert float((skips == (test.ids == toy.MARK))[real].float().mean()) >= 0.9
    for layer in (3, 5):  # no reason to skip elsewhere
        assert float(router.gates(layer, entering[layer], test.mask).token[real].float().mean()) >= 0.9
