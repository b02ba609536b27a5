"""DR.LLM: window pooling, labels from search records, class weights and focal loss against hand
computations; teacher-forced features against a plain loop; per-row decisions; a planted rule."""
import math

import pytest
import torch

import polar
from polar.routers import (DrLLMConfig, DrLLMExample, DrLLMRouter, RouterTrainConfig, class_weights,
                           drllm_features, fit_drllm, focal_loss, label_problems, program_label, window_means)
from polar.testing import padded_batch, random_prompts, tiny_model


def test_window_means_by_hand():
    # row 0: 10 real tokens (left padding 2) -> windows [0 1 2] [3 4] [5 6 7] [8 9]; row 1: 3 tokens -> 3 windows
    hidden = torch.zeros(2, 12, 1)
    hidden[0, 2:, 0] = torch.arange(10, dtype=torch.float)
    hidden[1, :3, 0] = torch.tensor([4.0, 6.0, 11.0])
    hidden[1, 3:, 0] = 100.0  # pads: never read
    mask = torch.zeros(2, 12, dtype=torch.long)
    mask[0, 2:] = 1
    mask[1, :3] = 1
    means, valid = window_means(hidden, mask, 4)
    assert means[0, :, 0].tolist() == [1.0, 3.5, 6.0, 8.5]
    assert means[1, :3, 0].tolist() == [4.0, 6.0, 11.0] and means[1, 3, 0] == 0
    assert valid.tolist() == [[True] * 4, [True, True, True, False]]


def test_labels_by_hand():
    records = [
        {"id": "a", "final_valid_transitions": [[0, 1, 2, 3, 4, 5], [0, 1, 3, 4, 5], [0, 1, 2, 4, 5]]},
        {"id": "b", "final_valid_transitions": [[0, 1, 2, 2, 2, 3, 4, 5]]},  # layer 2 three times: clipped
        {"id": "c", "final_valid_transitions": []},
        {"id": "d", "final_valid_transitions": [[0, 1, 2, 3, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5, 5, 5, 5]]},  # block repeat
        {"id": "e", "final_valid_transitions": [[0, 1, 1, 2, 3, 4, 5], [0, 2, 3, 4, 5]]},
    ]
    labelled, report = label_problems(records, 6)
    assert [(lp.record["id"], lp.label) for lp in labelled] == [
        ("a", (1, 1, 0, 1, 1, 1)), ("b", (1, 1, 2, 1, 1, 1)), ("e", (1, 0, 1, 1, 1, 1))]
    assert (report.records, report.labelled, report.no_valid, report.reordered, report.clipped) == (5, 3, 1, 1, 1)
    assert report.class_counts == [2, 15, 1]
    assert program_label([0, 1, 1, 3], 4) == ([1, 2, 0, 1], False)
    assert program_label([0, 1, 0, 1], 4) == (None, False)
    with pytest.raises(ValueError, match="outside"):
        label_problems([{"id": "x", "final_valid_transitions": [[0, 9]]}], 6)


def test_class_weights_and_focal_loss_by_hand():
    beta = 0.999
    counts = [2, 15, 1]
    inv = [(1 - beta) / (1 - beta ** n) for n in counts]
    want = [3 * x / sum(inv) for x in inv]
    got = class_weights(counts, beta)
    assert got.tolist() == pytest.approx(want, rel=1e-6)
    assert class_weights([0, 4, 4], beta).tolist() == pytest.approx([0.0, 1.0, 1.0])
    assert class_weights([5, 1, 9], 0.0).tolist() == pytest.approx([1.0, 1.0, 1.0])

    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0], [-0.3, 1.2, 0.4]])
    targets = torch.tensor([0, 2, 1])
    w = torch.tensor(want)
    total = 0.0
    for row, y in zip(logits.tolist(), targets.tolist()):
        p = math.exp(row[y]) / sum(math.exp(v) for v in row)
        total += want[y] * (1 - p) ** 2 * -math.log(p)
    assert float(focal_loss(logits, targets, w, gamma=2.0)) == pytest.approx(total / 3, rel=1e-6)
    ce = torch.nn.functional.cross_entropy(logits, targets)
    assert float(focal_loss(logits, targets, None, gamma=0.0)) == pytest.approx(float(ce), rel=1e-6)


@torch.no_grad()
def test_teacher_forced_features_follow_the_label_program():
    """The states entering each layer are those of the label program (skips and repeats), from a plain loop."""
    model = tiny_model("qwen2", num_layers=6)
    label = (1, 1, 0, 2, 1, 0)  # program 0 1 3 3 4
    ids = random_prompts(1, 128, 11, 11, 3)[0]
    example = DrLLMExample("x", tuple(ids.tolist()), label)
    feats, valid = drllm_features(model, [example, DrLLMExample("y", (5, 6, 7), (1,) * 6)], windows=4)
    base = model.model
    h = base.embed_tokens(ids[None])
    pos = torch.arange(len(ids))[None]
    cs = base.rotary_emb(h, pos)
    mask = torch.full((len(ids), len(ids)), torch.finfo(h.dtype).min).triu(1)[None, None]
    for layer in range(6):
        want, _ = window_means(h, torch.ones(1, len(ids)), 4)
        assert torch.allclose(feats[0, layer], want[0], atol=1e-5), layer
        for _ in range(label[layer]):
            h = base.layers[layer](h, attention_mask=mask, position_ids=pos, position_embeddings=cs)
            h = h[0] if isinstance(h, tuple) else h
    assert valid.tolist() == [[True] * 4, [True, True, True, False]]


@torch.no_grad()
def test_decisions_are_per_row_whatever_the_padding():
    model = tiny_model("llama", num_layers=4)
    torch.manual_seed(0)
    router = DrLLMRouter(DrLLMConfig(num_layers=4, hidden_size=64, windows=3))
    prompts = random_prompts(5, 128, 2, 9, 1)
    alone = [polar.batched_execute(model, None, p[None], router=router).programs[0] for p in prompts]
    assert len({tuple(p) for p in alone}) > 1  # the random routers do not all agree
    for side in ("left", "right"):
        out = polar.batched_execute(model, None, padded_batch(prompts, side), router=router)
        assert [list(p) for p in out.programs] == [list(p) for p in alone]


def test_drllm_learns_a_planted_rule(toy, tmp_path):
    """Skip layer 3 iff the marker token is in the prompt: >= 90% on held-out prompts, routed by the engine."""
    model = toy.sharp_model()
    train = [DrLLMExample(f"t{i}", tuple(p.tolist()), tuple(0 if (l == 3 and has) else 1 for l in range(toy.D)))
             for i, (p, has) in enumerate(toy.marked_prompts(256, 0, lo=6, hi=12))]
    tc = RouterTrainConfig(epochs=15, batch_size=16, lr=1e-2, val_fraction=0.0, save_every=10_000)
    router = fit_drllm(model, train, tmp_path / "drllm", train_config=tc, progress=False)
    test = toy.marked_prompts(128, 1, lo=6, hi=12)
    out = polar.batched_execute(model, None, padded_batch([p for p, _ in test], "left"), router=router)
    hits = [(3 not in program) == has for program, (_, has) in zip(out.programs, test)]
    assert sum(hits) / len(hits) >= 0.9
    kept = [all(l in program for l in (0, 1, 2, 4, 5)) for program in out.programs]
    assert sum(kept) / len(kept) >= 0.9
