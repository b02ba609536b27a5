"""The training forward and the gated routers against plain references: with every gate open they
equal the base model; a closed MindSkip gate equals dropping that layer's attention; the engine
(``batched_execute`` / ``generate`` with ``router=``) equals the training forward."""
import pytest
import torch

import polar
from polar.routers import (FlexiDepthConfig, FlexiDepthRouter, MindSkipConfig, MindSkipRouter, forward_hidden,
                           lm_loss)
from polar.runtime.adapters import get_adapter
from polar.runtime.masks import token_positions
from polar.testing import ARCHITECTURES, padded_batch, random_prompts, tiny_model


def _mindskip(model, layers=(), threshold=0.5, gate=None, seed=0):
    adapter = get_adapter(model)
    config = MindSkipConfig(adapter.num_layers, int(model.config.hidden_size), layers=layers, threshold=threshold,
                            norm_eps=model.config.rms_norm_eps)
    router = MindSkipRouter.for_model(adapter, config, seed=seed)
    if gate is not None:
        with torch.no_grad():
            router.gate.fill_(gate)
    return router


def _flexidepth(model, init_gate_logit, seed=0):
    adapter = get_adapter(model)
    c = model.config
    config = FlexiDepthConfig(adapter.num_layers, c.hidden_size, c.intermediate_size, init_gate_logit=init_gate_logit,
                              norm_eps=c.rms_norm_eps)
    router = FlexiDepthRouter.for_model(adapter, config, seed=seed)
    with torch.no_grad():  # a non-zero adapter, so that skipped tokens differ from the identity
        for m in router.layer_routers:
            m.adapter_out.weight.normal_(0, 0.05)
    return router


@torch.no_grad()
def test_training_forward_equals_the_hf_forward(arch_model):
    adapter = get_adapter(arch_model)
    batch = padded_batch(random_prompts(3, 128, 3, 9, 0), "left")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    mine = adapter.logits(forward_hidden(adapter, ids, mask))
    ref = arch_model(**batch, position_ids=token_positions(mask)).logits
    real = mask.bool()
    torch.testing.assert_close(mine[real], ref[real], rtol=1e-5, atol=1e-5)
    targets = torch.full_like(ids, -100)
    targets[:, -3:-1] = ids[:, -2:]
    loss, n = lm_loss(adapter, forward_hidden(adapter, ids, mask), targets)
    want = torch.nn.functional.cross_entropy(ref[:, -3:-1].reshape(-1, ref.shape[-1]), ids[:, -2:].reshape(-1))
    assert n == 6 and float(loss) == pytest.approx(float(want), rel=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("arch", ["llama", "qwen3", "mistral"])
def test_mindskip_all_gates_open_equals_the_base_model(arch):
    model = tiny_model(arch, num_layers=5)
    router = _mindskip(model, gate=0.0)  # sigmoid(0) = 0.5 >= threshold: open
    batch = padded_batch(random_prompts(4, 128, 3, 9, 2), "left")
    routed = polar.batched_execute(model, None, batch, router=router, all_positions=True)
    base = polar.batched_execute(model, polar.full(5), batch, all_positions=True)
    assert bool((routed.attention_gates[:, list(router.config.layers)] == 1).all())
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(routed.logits[real], base.logits[real], rtol=1e-5, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_a_closed_mindskip_gate_drops_that_layers_attention(toy, arch):
    """Layer 2's gate closed for every row (threshold above sigmoid(0)): each row equals a plain loop
    without layer 2's attention; a random router's mixed per-row gates equal the same reference."""
    model = tiny_model(arch, num_layers=5)
    prompts = random_prompts(4, 128, 3, 9, 3)
    batch = padded_batch(prompts, "left")
    closed = _mindskip(model, layers=(2,), threshold=0.9, gate=0.0)
    out = polar.batched_execute(model, None, batch, router=closed)
    assert out.attention_gates[:, 2].tolist() == [0.0] * 4
    for r, p in enumerate(prompts):
        torch.testing.assert_close(out.logits[r], toy.reference_gated(model, p, {2})[-1], rtol=1e-4, atol=1e-5)
    mixed = _mindskip(model, seed=5)
    out = polar.batched_execute(model, None, batch, router=mixed)
    g = out.attention_gates
    assert 0 < float(g[:, :4].mean()) < 1  # some gates open, some closed
    for r, p in enumerate(prompts):
        shut = {l for l in range(5) if g[r, l] == 0}
        torch.testing.assert_close(out.logits[r], toy.reference_gated(model, p, shut)[-1], rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_mindskip_generation_keeps_the_prompts_gates(toy):
    """Decoding reuses the gates decided over the prompt: greedy tokens equal recomputing the plain
    reference (those layers' attention dropped) on the whole prefix at every step."""
    model = tiny_model("qwen2", num_layers=5)
    prompts = random_prompts(3, 128, 3, 7, 4)
    router = _mindskip(model, seed=5)
    out = polar.generate(model, None, padded_batch(prompts, "left"), None, max_new_tokens=5, router=router,
                         eos_token_id=[])
    for r, p in enumerate(prompts):
        shut = {l for l in range(5) if out.attention_gates[r, l] == 0}
        seq = p.tolist()
        for _ in range(5):
            seq.append(int(toy.reference_gated(model, torch.tensor(seq), shut)[-1].argmax()))
        assert out.tokens[r] == seq[len(p):]


@torch.no_grad()
@pytest.mark.parametrize("arch", ["llama", "qwen2_moe", "mistral"])
def test_flexidepth_all_gates_open_equals_the_base_model(arch):
    model = tiny_model(arch, num_layers=5)
    router = _flexidepth(model, init_gate_logit=100.0)  # g = 1 for every token
    batch = padded_batch(random_prompts(4, 128, 3, 9, 6), "right")
    routed = polar.batched_execute(model, None, batch, router=router, all_positions=True)
    base = polar.batched_execute(model, polar.full(5), batch, all_positions=True)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(routed.logits[real], base.logits[real], rtol=1e-5, atol=1e-5)
    adapter = get_adapter(model)
    mine = adapter.logits(forward_hidden(adapter, batch["input_ids"], batch["attention_mask"],
                                         gates=lambda l, h: router.gates(l, h, batch["attention_mask"])))
    torch.testing.assert_close(mine[real], base.logits[real], rtol=1e-5, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("arch", ["llama", "qwen3_moe"])
def test_flexidepth_engine_equals_the_training_forward(arch):
    """Mixed token gates (g around 0.5): the engine's logits equal the training forward's."""
    model = tiny_model(arch, num_layers=6)
    router = _flexidepth(model, init_gate_logit=0.0, seed=1)
    batch = padded_batch(random_prompts(4, 128, 4, 10, 7), "left")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    adapter = get_adapter(model)
    opened = []

    def gates(layer, hidden):
        g = router.gates(layer, hidden, mask)
        if g is not None:
            opened.append(g.token[mask.bool()].float().mean())
        return g

    mine = adapter.logits(forward_hidden(adapter, ids, mask, gates=gates))
    assert 0.05 < float(torch.stack(opened).mean()) < 0.95
    routed = polar.batched_execute(model, None, batch, router=router, all_positions=True)
    real = mask.bool()
    torch.testing.assert_close(routed.logits[real], mine[real], rtol=1e-4, atol=1e-5)
