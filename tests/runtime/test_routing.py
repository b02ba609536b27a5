"""Online routing (docs/architecture.md section 15): routers, gates and replay, against plain references.

Exactness: with ``policy="lowest"`` and ``share_prefix=False`` the executor's waves are the routed
engine's waves (layer order, the same rows), so logits are compared with ``torch.equal``; against
the default settings (other batch shapes) and the unpadded per-row references, within ``TOL``.
"""
import pytest
import torch

import polar
from polar.errors import UserError
from polar.runtime import LayerGates, ReplayRouter, get_adapter
from polar.runtime.adapters import layer_sliding_window
from polar.runtime.routing import decisions_of, program_of
from polar.testing import padded_batch, random_prompts, routable_programs, tiny_model, tiny_tokenizer

TOL = 1e-4


class LinearRouter:
    """Decides from the masked mean of the hidden states: argmax of a random linear map to 3
    classes (layer 0 always runs, so no program is empty)."""

    def __init__(self, num_layers: int, d: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(num_layers, d, 3, generator=g)

    def decide(self, layer, hidden, attention_mask):
        m = attention_mask[..., None].to(hidden.dtype)                     # [B, T, 1]
        pooled = (hidden * m).sum(1) / m.sum(1)                             # [B, d]
        out = (pooled @ self.w[layer]).argmax(-1)                           # [B]
        return out.clamp(min=1) if layer == 0 else out


class GateRouter:
    """Runs every layer once; gives the layers in ``attention`` a fixed attention gate value (or a
    per-row value from the pooled hidden state with ``from_hidden``) and the layers in ``token``
    token gates ``x @ v > 0`` (all open with ``open_tokens``) with a linear adapter."""

    def __init__(self, d, attention=(), value=1.0, token=(), open_tokens=False, from_hidden=False, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.attention, self.value, self.token = set(attention), value, set(token)
        self.open_tokens, self.from_hidden = open_tokens, from_hidden
        self.v = torch.randn(d, generator=g)
        self.u = torch.randn(d, generator=g)
        self.a = torch.randn(d, d, generator=g) / d ** 0.5

    def decide(self, layer, hidden, attention_mask):
        return torch.ones(hidden.shape[0], dtype=torch.long)

    def attention_gate(self, hidden, attention_mask):
        B = hidden.shape[0]
        if not self.from_hidden:
            return torch.full((B,), self.value)
        m = attention_mask[..., None].to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1)                             # [B, d]
        return (pooled @ self.u > 0).float()

    def token_gate(self, hidden):
        if self.open_tokens:
            return torch.ones(hidden.shape[:2], dtype=torch.bool)
        return hidden @ self.v > 0                                          # [B, T]

    def adapter(self, x):
        return x + torch.tanh(x @ self.a)

    def gates(self, layer, hidden, attention_mask):
        att = self.attention_gate(hidden, attention_mask) if layer in self.attention else None
        tok = self.token_gate(hidden) if layer in self.token else None
        if att is None and tok is None:
            return None
        return LayerGates(attention=att, token=tok, token_adapter=None if tok is None else self.adapter)


def gated_reference_forward(model, ids: torch.Tensor, attention: dict[int, float], router: GateRouter | None = None):
    """Logits ``[T, V]`` of one unpadded sequence through every layer once, built from the layers'
    parts: layer ``l`` in ``attention`` multiplies its attention output by ``attention[l]``; layers in
    ``router.token`` use its token gates and adapter. Also returns the full layers per token."""
    adapter = get_adapter(model)
    base = model.model
    ids = ids.reshape(1, -1)
    T = ids.shape[1]
    hidden = base.embed_tokens(ids)
    pos = torch.arange(T)[None]
    cos_sin = base.rotary_emb(hidden, pos)
    i = torch.arange(T)
    dist = i[:, None] - i[None, :]
    full_runs = 0
    for layer_idx, layer in enumerate(base.layers):
        window = layer_sliding_window(model.config, layer_idx)
        allowed = (dist >= 0) if window is None else (dist >= 0) & (dist < window)
        mask = torch.zeros(T, T).masked_fill(~allowed, torch.finfo(hidden.dtype).min)[None, None]
        x = hidden
        a = adapter.call_attention(layer_idx, layer.input_layernorm(x), mask, pos, cos_sin, None)
        h = x + attention.get(layer_idx, 1.0) * a
        m = layer.mlp(layer.post_attention_layernorm(h))
        y = h + (m[0] if isinstance(m, tuple) else m)
        if router is not None and layer_idx in router.token:
            keep = router.token_gate(x)                                      # [1, T]
            y = torch.where(keep[..., None], y, router.adapter(x))
            full_runs += int(keep.sum())
        else:
            full_runs += T
        hidden = y
    return model.lm_head(base.norm(hidden))[0], full_runs / T


def greedy_reference(model, ids: torch.Tensor, new: int, attention: dict[int, float], router=None) -> list[int]:
    """Greedy decoding recomputing the whole prefix with :func:`gated_reference_forward` each step."""
    seq, out = ids.tolist(), []
    for _ in range(new):
        tok = int(gated_reference_forward(model, torch.tensor(seq), attention, router)[0][-1].argmax())
        out.append(tok)
        seq.append(tok)
    return out


# --- replaying programs ------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["hf", "fused"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_replay_router_gives_batched_execute_logits(arch_model, side, backend):
    model = arch_model
    D = model.config.num_hidden_layers
    prompts = random_prompts(9, model.config.vocab_size, 1, 10, seed=11)
    programs = routable_programs(D, 9, seed=12)
    assert any(2 in decisions_of(p, D) for p in programs) and any(0 in decisions_of(p, D) for p in programs)
    batch = padded_batch(prompts, side)
    routed = polar.batched_execute(model, None, batch, router=ReplayRouter(programs), all_positions=True,
                                   backend=backend)
    same_waves = polar.batched_execute(model, programs, batch, policy="lowest", share_prefix=False,
                                       all_positions=True, backend=backend)
    assert routed.programs == [polar.Program(p) for p in programs]
    assert routed.num_waves == same_waves.num_waves
    assert torch.equal(routed.logits, same_waves.logits)
    default = polar.batched_execute(model, programs, batch, backend=backend)
    last = polar.batched_execute(model, None, batch, router=ReplayRouter(programs), backend=backend)
    assert (last.logits - default.logits).abs().max() <= TOL
    assert last.executed_layers == [len(p) for p in programs] and last.work == last.work_unshared
    assert last.attention_gates is None and last.token_layers is None
    real = batch["attention_mask"].bool()
    for r in (0, 4):
        ref = polar.reference_forward(model, programs[r], prompts[r])
        assert (routed.logits[r][real[r]] - ref).abs().max() <= TOL


@pytest.mark.parametrize("backend", ["hf", "fused"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_replay_router_gives_generate_tokens(arch_model, side, backend):
    model = arch_model
    D = model.config.num_hidden_layers
    prompts = random_prompts(6, model.config.vocab_size, 2, 9, seed=13)
    programs = routable_programs(D, 6, seed=14)
    batch = padded_batch(prompts, side)
    routed = polar.generate(model, None, batch, None, 6, router=ReplayRouter(programs), backend=backend)
    plain = polar.generate(model, None, batch, programs, 6, policy="lowest", share_prefix=False, backend=backend)
    shared = polar.generate(model, None, batch, programs, 6, backend=backend)
    assert routed.tokens == plain.tokens == shared.tokens
    assert routed.programs == plain.programs
    assert routed.prefill_waves == plain.prefill_waves and routed.decode_waves == plain.decode_waves
    assert routed.cache_entries == plain.cache_entries and routed.decode_work == plain.decode_work
    assert routed.prefill_work == plain.prefill_work


def test_replay_router_broadcasts_one_program_and_refuses_bad_ones():
    model = tiny_model("llama", seed=2)
    batch = padded_batch(random_prompts(3, 128, 2, 6, seed=1), "left")
    out = polar.batched_execute(model, None, batch, router=ReplayRouter(polar.Program([0, 0, 3, 5])))
    ref = polar.batched_execute(model, polar.Program([0, 0, 3, 5]), batch)
    assert out.programs == [polar.Program([0, 0, 3, 5])] * 3
    assert (out.logits - ref.logits).abs().max() <= TOL
    with pytest.raises(UserError, match="row 1.*after layer"):
        ReplayRouter([[0, 1], [2, 1]])
    with pytest.raises(UserError, match="more than 2"):
        ReplayRouter([[1, 1, 1]])
    with pytest.raises(UserError, match="2 programs, the batch has 3"):
        polar.batched_execute(model, None, batch, router=ReplayRouter([[0], [1]]))


def test_decisions_and_programs_round_trip():
    assert decisions_of([0, 1, 1, 3], 4) == [1, 2, 0, 1]
    assert program_of([1, 2, 0, 1]) == polar.Program([0, 1, 1, 3])
    for p in routable_programs(7, 20, seed=3):
        assert list(program_of(decisions_of(p, 7))) == p


# --- routers that decide from hidden states ----------------------------------------------------

@pytest.mark.parametrize("side", ["left", "right"])
def test_routed_generation_equals_replaying_its_programs(arch_model, side):
    model = arch_model
    D, d = model.config.num_hidden_layers, model.config.hidden_size
    prompts = random_prompts(8, model.config.vocab_size, 2, 10, seed=15)
    batch = padded_batch(prompts, side)
    router = LinearRouter(D, d, seed=16)
    routed = polar.generate(model, None, batch, None, 6, router=router)
    counts = [decisions_of(p, D) for p in routed.programs]
    assert any(0 in c for c in counts) and any(2 in c for c in counts)  # the router skips and repeats
    assert len({tuple(p) for p in routed.programs}) > 1                 # and decides per row
    replay = polar.generate(model, None, batch, routed.programs, 6)
    assert routed.tokens == replay.tokens
    executed = polar.batched_execute(model, None, batch, router=router)
    assert executed.programs == routed.programs
    # decisions do not depend on the padding: each row alone decides the same program
    for r in (0, 3):
        alone = polar.batched_execute(model, None, prompts[r][None], router=router)
        assert alone.programs[0] == routed.programs[r]


def test_a_row_that_skips_every_layer_gets_the_empty_program():
    model = tiny_model("qwen2", seed=3)
    prompts = random_prompts(3, 128, 2, 7, seed=2)
    batch = padded_batch(prompts, "right")

    class SkipRow1:
        def decide(self, layer, hidden, attention_mask):
            return torch.tensor([1, 0, 2])

    out = polar.batched_execute(model, None, batch, router=SkipRow1(), all_positions=True)
    assert out.programs[1] == polar.Program([]) and out.executed_layers[1] == 0
    with torch.inference_mode():
        plain = model.lm_head(model.model.norm(model.model.embed_tokens(batch["input_ids"][1])))
    assert torch.equal(out.logits[1], plain)
    gen = polar.generate(model, None, batch, None, 4, router=SkipRow1())
    with torch.inference_mode():  # without layers a token's logits depend on that token only
        toks = [int(batch["input_ids"][1][batch["attention_mask"][1].bool()][-1])]
        for _ in range(4):
            toks.append(int(model.lm_head(model.model.norm(model.model.embed_tokens(torch.tensor(toks[-1])))).argmax()))
        toks = toks[1:]
    assert gen.tokens[1] == toks


# --- gates -------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["hf", "fused"])
def test_open_attention_gates_equal_the_base_model(arch_model, backend):
    model = arch_model
    D, d = model.config.num_hidden_layers, model.config.hidden_size
    batch = padded_batch(random_prompts(5, model.config.vocab_size, 2, 9, seed=17), "left")
    router = GateRouter(d, attention=range(D), value=1.0)
    gated = polar.batched_execute(model, None, batch, router=router, all_positions=True, backend=backend)
    base = polar.batched_execute(model, polar.full(D), batch, all_positions=True, share_prefix=False,
                                 backend=backend)
    assert torch.equal(gated.logits, base.logits)
    assert torch.equal(gated.attention_gates, torch.ones(5, D))
    gen = polar.generate(model, None, batch, None, 5, router=router, backend=backend)
    assert gen.tokens == polar.generate(model, None, batch, polar.full(D), 5, backend=backend).tokens


@pytest.mark.parametrize("side", ["left", "right"])
def test_closed_attention_gate_drops_that_layers_attention(arch_model, side):
    model = arch_model
    D, d = model.config.num_hidden_layers, model.config.hidden_size
    prompts = random_prompts(4, model.config.vocab_size, 2, 9, seed=18)
    batch = padded_batch(prompts, side)
    router = GateRouter(d, attention=[2], value=0.0)
    out = polar.batched_execute(model, None, batch, router=router, all_positions=True)
    real = batch["attention_mask"].bool()
    expected = torch.ones(4, D)
    expected[:, 2] = 0
    assert torch.equal(out.attention_gates, expected)
    with torch.inference_mode():
        for r, p in enumerate(prompts):
            ref, _ = gated_reference_forward(model, p, {2: 0.0})
            assert (out.logits[r][real[r]] - ref).abs().max() <= TOL
            full = polar.reference_forward(model, list(range(D)), p)
            assert (ref - full).abs().max() > 1e-3                           # the gate matters
    gen = polar.generate(model, None, batch, None, 5, router=router)
    with torch.inference_mode():
        for r in (0, 3):
            assert gen.tokens[r] == greedy_reference(model, prompts[r], 5, {2: 0.0})


def test_attention_gates_decided_over_the_prompt_are_reused_in_decode():
    model = tiny_model("qwen3", seed=4)
    D, d = model.config.num_hidden_layers, model.config.hidden_size
    prompts = random_prompts(8, 128, 3, 9, seed=19)
    batch = padded_batch(prompts, "left")
    router = GateRouter(d, attention=[1, 3, 4], from_hidden=True, seed=5)
    gen = polar.generate(model, None, batch, None, 6, router=router)
    gates = gen.attention_gates
    assert gates.shape == (8, D) and 0 < gates[:, [1, 3, 4]].mean() < 1   # rows differ
    with torch.inference_mode():
        for r, p in enumerate(prompts):
            fixed = {layer: float(gates[r, layer]) for layer in (1, 3, 4)}
            assert gen.tokens[r] == greedy_reference(model, p, 6, fixed), f"row {r}"


@pytest.mark.parametrize("backend", ["hf", "fused"])
def test_open_token_gates_equal_the_base_model(arch_model, backend):
    model = arch_model
    D, d = model.config.num_hidden_layers, model.config.hidden_size
    batch = padded_batch(random_prompts(5, model.config.vocab_size, 2, 9, seed=20), "right")
    router = GateRouter(d, token=range(D // 2, D), open_tokens=True)
    gated = polar.batched_execute(model, None, batch, router=router, all_positions=True, backend=backend)
    base = polar.batched_execute(model, polar.full(D), batch, all_positions=True, share_prefix=False,
                                 backend=backend)
    assert torch.equal(gated.logits, base.logits)
    assert gated.token_layers == [float(D)] * 5 and gated.attention_gates is None
    gen = polar.generate(model, None, batch, None, 5, router=router, backend=backend)
    assert gen.tokens == polar.generate(model, None, batch, polar.full(D), 5, backend=backend).tokens
    assert gen.token_layers == [float(D)] * 5


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen3_moe"])
def test_token_gates_match_a_no_cache_reference(arch):
    model = tiny_model(arch, seed=5)
    D, d = model.config.num_hidden_layers, model.config.hidden_size
    prompts = random_prompts(5, 128, 3, 10, seed=21)
    batch = padded_batch(prompts, "left")
    router = GateRouter(d, attention=[1], value=0.5, token=range(D // 2, D), seed=6)
    out = polar.batched_execute(model, None, batch, router=router, all_positions=True)
    real = batch["attention_mask"].bool()
    with torch.inference_mode():
        for r, p in enumerate(prompts):
            ref, layers = gated_reference_forward(model, p, {1: 0.5}, router)
            assert (out.logits[r][real[r]] - ref).abs().max() <= TOL
            assert out.token_layers[r] == pytest.approx(layers)
    assert min(out.token_layers) < D                                         # some tokens skip
    gen = polar.generate(model, None, batch, None, 5, router=router)
    with torch.inference_mode():
        for r, p in enumerate(prompts):
            assert gen.tokens[r] == greedy_reference(model, p, 5, {1: 0.5}, router), f"row {r}"
            fed = torch.cat([p, torch.tensor(gen.tokens[r][:-1])])              # every token the engine ran
            _, layers = gated_reference_forward(model, fed, {1: 0.5}, router)
            assert gen.token_layers[r] == pytest.approx(layers)


# --- errors ------------------------------------------------------------------------------------

class Returns:
    def __init__(self, value, at=0, gates=None):
        self.value, self.at, self.gate_value = value, at, gates

    def decide(self, layer, hidden, attention_mask):
        return self.value if layer == self.at else torch.ones(hidden.shape[0], dtype=torch.long)


class WithGates(Returns):
    def gates(self, layer, hidden, attention_mask):
        return self.gate_value if layer == self.at else None


@pytest.mark.parametrize("router, match", [
    (Returns(torch.ones(2, dtype=torch.long), at=3), r"layer 3 returned shape \(2,\); expected \[3\]"),
    (Returns(torch.ones(3), at=1), "layer 1 returned dtype torch.float32"),
    (Returns(torch.ones(3, dtype=torch.bool)), "layer 0 returned dtype torch.bool"),
    (Returns(torch.tensor([1, 3, 0]), at=2), "layer 2: row 1 got 3"),
    (Returns(torch.tensor([1, -1, 0])), "layer 0: row 1 got -1"),
    (Returns([1, 1, 1]), "layer 0 returned list"),
    (object(), "has no decide"),
    (WithGates(None, gates=LayerGates(attention=torch.ones(2)), at=4), r"gates for layer 4: attention is \(2,\)"),
    (WithGates(None, gates=LayerGates(token=torch.zeros(3, 7, dtype=torch.bool))), "no token_adapter"),
    (WithGates(None, gates=LayerGates(token=torch.ones(3, 7))), "token has dtype torch.float32"),
    (WithGates(None, gates="open"), "expected polar.LayerGates or None"),
])
def test_bad_router_output_raises_naming_the_layer(router, match):
    model = tiny_model("llama", seed=6)
    batch = padded_batch(random_prompts(3, 128, 7, 7, seed=3), "left")
    if isinstance(router, WithGates):
        router.value = torch.ones(3, dtype=torch.long)
    with pytest.raises(UserError, match=match):
        polar.batched_execute(model, None, batch, router=router)
    with pytest.raises(UserError, match=match):
        polar.generate(model, None, batch, None, 2, router=router)


def test_programs_and_router_together_or_neither_raise():
    model = tiny_model("llama", seed=6)
    ids = torch.randint(3, 128, (2, 5))
    router = ReplayRouter([[0], [1]])
    with pytest.raises(UserError, match="not both"):
        polar.batched_execute(model, [[0], [1]], ids, router=router)
    with pytest.raises(UserError, match="not both"):
        polar.generate(model, None, ids, [[0], [1]], 2, router=router)
    with pytest.raises(UserError, match="or a router"):
        polar.batched_execute(model, None, ids)
    with pytest.raises(UserError, match="or a router"):
        polar.generate(model, None, ids, None, 2)
    with pytest.raises(UserError, match="prefix_cache"):
        polar.generate(model, None, ids, None, 2, router=router, prefix_cache=polar.runtime.PrefixCache(1 << 20))


def test_routed_text_generation_with_stop_strings():
    model, tok = tiny_model("llama", seed=7), tiny_tokenizer()
    texts = ["w5 w6 w7", "w9 w10", "w11 w12 w13 w14"]
    router = LinearRouter(6, 64, seed=8)
    routed = polar.generate(model, tok, texts, None, 6, router=router, stop_strings=["w20"])
    replay = polar.generate(model, tok, texts, routed.programs, 6, stop_strings=["w20"])
    assert routed.texts == replay.texts and routed.finish_reasons == replay.finish_reasons
