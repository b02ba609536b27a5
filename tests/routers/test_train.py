"""Router training jobs: an interrupted training resumes to the same weights, a finished one is
reused, other settings are refused; checkpoints round-trip through ``load_router``; ``polar
train-router`` end to end on a tiny saved model; bad input gives a one-line error."""
import json
import signal
import sys

import pytest
import torch

import polar
from polar import cli
from polar.errors import UserError
from polar.routers import (DrLLMExample, DrLLMRouter, FlexiDepthRouter, LMExample, MindSkipConfig, MindSkipRouter,
                           RouterRun, RouterTrainConfig, fit_drllm, fit_gated, load_router, read_config)
from polar.runtime.adapters import get_adapter
from polar.testing import kill_after_lines, random_prompts, save_tiny_model, tiny_model


class Interrupted(Exception):
    pass


def _stop_at(step_to_stop):
    def hook(step, metrics):
        if step == step_to_stop:
            raise Interrupted
    return hook


def _drllm_examples(n=40, D=4):
    prompts = random_prompts(n, 128, 3, 8, 0)
    return [DrLLMExample(f"p{i}", tuple(p.tolist()), tuple((i + l) % 3 for l in range(D))) for i, p in enumerate(prompts)]


def _lm_examples(n=24):
    prompts = random_prompts(n, 128, 4, 9, 1)
    return [LMExample(f"q{i}", tuple(p.tolist()), len(p) - 2) for i, p in enumerate(prompts)]


def _same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


def test_an_interrupted_drllm_training_resumes_to_the_same_router(tmp_path):
    model = tiny_model("llama", num_layers=4)
    examples = _drllm_examples()
    tc = RouterTrainConfig(epochs=3, batch_size=8, save_every=2)  # 36 train examples: 5 steps per epoch
    whole = fit_drllm(model, examples, tmp_path / "whole", train_config=tc, progress=False)
    with pytest.raises(Interrupted):
        fit_drllm(model, examples, tmp_path / "cut", train_config=tc, progress=False, on_step=_stop_at(7))
    assert not (tmp_path / "cut" / "config.json").exists()
    steps = []
    resumed = fit_drllm(model, examples, tmp_path / "cut", train_config=tc, progress=False,
                        on_step=lambda s, m: steps.append(s))
    assert steps[0] == 7 and steps[-1] == 15  # resumed after step 6, the last saved state
    assert _same_state(whole, resumed)
    assert resumed.metadata["training"]["history"] == whole.metadata["training"]["history"]
    again = fit_drllm(model, examples, tmp_path / "cut", train_config=tc, progress=False,
                      on_step=_stop_at(1))  # finished: loaded, not retrained
    assert _same_state(again, whole)
    with pytest.raises(UserError, match="other settings.*train"):
        fit_drllm(model, examples, tmp_path / "cut", train_config=RouterTrainConfig(epochs=4), progress=False)


@pytest.mark.parametrize("kind", ["mindskip", "flexidepth"])
def test_an_interrupted_gated_training_resumes_to_the_same_router(tmp_path, kind):
    model = tiny_model("qwen3", num_layers=4)
    adapter = get_adapter(model)
    examples = _lm_examples()
    tc = RouterTrainConfig(epochs=2, batch_size=4, save_every=3, lr=1e-2)  # 22 train examples: 6 steps per epoch

    def fresh():
        if kind == "mindskip":
            return MindSkipRouter.for_model(adapter, MindSkipConfig(4, 64), seed=3)
        from polar.routers import FlexiDepthConfig
        return FlexiDepthRouter.for_model(adapter, FlexiDepthConfig(4, 64, 128, init_gate_logit=0.5), seed=3)

    whole = fit_gated(model, fresh(), examples, tmp_path / "whole", train_config=tc, progress=False)
    with pytest.raises(Interrupted):
        fit_gated(model, fresh(), examples, tmp_path / "cut", train_config=tc, progress=False, on_step=_stop_at(5))
    resumed = fit_gated(model, fresh(), examples, tmp_path / "cut", train_config=tc, progress=False)
    assert _same_state(whole, resumed)
    assert not _same_state(whole, fresh())  # training changed the router
    loaded = load_router(tmp_path / "cut", model)
    assert type(loaded) is type(whole) and _same_state(loaded, whole)
    batch = {"input_ids": torch.tensor([[5, 6, 7, 8]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    torch.testing.assert_close(polar.batched_execute(model, None, batch, router=loaded).logits,
                               polar.batched_execute(model, None, batch, router=whole).logits)


def test_load_router_checks_the_model(tmp_path):
    model = tiny_model("llama", num_layers=4)
    fit_drllm(model, _drllm_examples(), tmp_path / "d", train_config=RouterTrainConfig(epochs=1), progress=False)
    router = load_router(tmp_path / "d")
    assert isinstance(router, DrLLMRouter) and not router.training
    meta = read_config(tmp_path / "d")
    assert meta["kind"] == "drllm" and meta["base_model"]["num_layers"] == 4
    assert set(meta["training"]) >= {"settings", "versions", "history", "class_counts", "class_weights"}
    with pytest.raises(UserError, match="4 layers"):
        load_router(tmp_path / "d", tiny_model("llama", num_layers=5))
    with pytest.raises(UserError, match="not a router checkpoint"):
        load_router(tmp_path / "nothing")
    adapter = get_adapter(model)
    ms = MindSkipRouter.for_model(adapter, MindSkipConfig(4, 64))
    fit_gated(model, ms, _lm_examples(8), tmp_path / "m", train_config=RouterTrainConfig(epochs=1), progress=False)
    other = tiny_model("llama", num_layers=4)
    with torch.no_grad():
        other.model.layers[1].input_layernorm.weight.mul_(2)
    with pytest.raises(UserError, match="input norm"):
        load_router(tmp_path / "m", other)


# ----------------------------------------------------------------------------------- polar train-router


def _search_file(path, D=4, n=8, prompt_style="fewshot"):
    rows = []
    for i in range(n):
        valid = [list(range(D)), [l for l in range(D) if l != 1 + i % 2]] if i % 3 else [[0, 1, 0, 1, 2, 3]]
        rows.append({"id": f"s{i}", "question": f"What is {i} + 1?", "gt_ans": str(i + 1), "source": "synthetic",
                     "level": 1, "initial_score": 1.0, "final_valid_transitions": valid,
                     "final_invalid_transitions": [], "num_layers": D, "prompt_style": prompt_style,
                     "max_new_tokens": 50, "early_answer": True, "model": "tiny"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny") / "model"
    save_tiny_model(folder, num_layers=4)
    return folder


def test_train_router_drllm_from_search_results(tmp_path, tiny_folder, capsys):
    search = _search_file(tmp_path / "s.jsonl")
    out = tmp_path / "drllm"
    argv = ["train-router", "--kind", "drllm", "--search", str(search), "--model", str(tiny_folder), "--out", str(out),
            "--epochs", "2", "--batch-size", "2", "--seed", "1"]
    assert cli.main(argv) == 0
    meta = read_config(out)
    labels = meta["training"]["labels"]
    assert (labels["records"], labels["labelled"], labels["reordered"]) == (8, 5, 3)  # i % 3 == 0: a block repeat
    assert meta["training"]["prompt_style"] == "fewshot" and meta["training"]["versions"]["polar"]
    model, tok = polar.load_model(str(tiny_folder))
    router = load_router(out, model)
    result = polar.generate(model, tok, ["Q: What is 2 + 2?\nA:", "Q: x\nA:"], None, max_new_tokens=3, router=router)
    assert len(result.programs) == 2 and len(result.tokens) == 2
    assert cli.main(argv) == 0  # finished: reused
    assert "saved in" in capsys.readouterr().out


def test_a_killed_train_router_process_resumes_to_the_same_router(tmp_path, tiny_folder):
    """SIGKILL ``polar train-router`` after two epochs are logged; the rerun ends with the weights and
    history of an uninterrupted run."""
    search = _search_file(tmp_path / "s.jsonl", n=12)
    flags = ["--kind", "drllm", "--search", str(search), "--model", str(tiny_folder), "--epochs", "20",
             "--batch-size", "2", "--save-every", "3"]
    cut = tmp_path / "cut"
    rc = kill_after_lines([sys.executable, "-m", "polar.cli", "train-router", *flags, "--out", str(cut)],
                          cut / "train_log.jsonl", min_lines=2, timeout=120)
    assert rc == -signal.SIGKILL and not (cut / "config.json").exists()
    assert cli.main(["train-router", *flags, "--out", str(cut)]) == 0
    assert cli.main(["train-router", *flags, "--out", str(tmp_path / "whole")]) == 0
    a, b = load_router(cut), load_router(tmp_path / "whole")
    assert _same_state(a, b)
    assert a.metadata["training"]["history"] == b.metadata["training"]["history"]


@pytest.mark.parametrize("kind", ["mindskip", "flexidepth"])
def test_train_router_gated_from_data(tmp_path, tiny_folder, kind):
    out = tmp_path / kind
    argv = ["train-router", "--kind", kind, "--data", "synthetic:1:6:train", "--model", str(tiny_folder),
            "--out", str(out), "--epochs", "1", "--batch-size", "3", "--alpha", "0.01"]
    assert cli.main(argv) == 0
    meta = read_config(out)
    assert meta["kind"] == kind and meta["training"]["n_train"] + meta["training"]["n_val"] == 6
    assert meta["training"]["settings"]["data"] == ["synthetic:1:6:train"]
    model, tok = polar.load_model(str(tiny_folder))
    router = load_router(out, model)
    assert router.kind == kind
    polar.generate(model, tok, ["Q: What is 1 + 1?\nA:"], None, max_new_tokens=2, router=router)


@pytest.mark.parametrize("extra,message", [
    (["--kind", "drllm", "--data", "synthetic:1:4"], "--search"),
    (["--kind", "mindskip", "--search", "S.jsonl"], "--data"),
    (["--kind", "drllm", "--search", "missing.jsonl"], "not found"),
    (["--kind", "flexidepth", "--data", "synthetic:1:4", "--epochs", "0"], "epochs"),
    (["--kind", "mindskip", "--data", "nope:1:2"], ""),
    (["--kind", "drllm", "--search", "S6.jsonl"], "6-layer"),
    (["--kind", "drllm", "--search", "S.jsonl", "--prompt-style", "direct"], "fewshot"),
])
def test_bad_train_router_input_is_one_line(tmp_path, tiny_folder, capsys, extra, message):
    _search_file(tmp_path / "S.jsonl")
    _search_file(tmp_path / "S6.jsonl", D=6)
    argv = ["train-router", "--model", str(tiny_folder), "--out", str(tmp_path / "out")]
    argv += [a if not a.endswith(".jsonl") else str(tmp_path / a) for a in extra]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("polar train-router: error:") and message in err[0], err


def test_train_router_refuses_another_runs_folder(tmp_path, tiny_folder, capsys):
    search = _search_file(tmp_path / "s.jsonl")
    base = ["train-router", "--kind", "drllm", "--search", str(search), "--model", str(tiny_folder),
            "--out", str(tmp_path / "o"), "--batch-size", "4"]
    assert cli.main(base + ["--epochs", "1"]) == 0
    capsys.readouterr()
    assert cli.main(base + ["--epochs", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other settings" in err[0]


def test_router_run_is_checked_before_compute():
    with pytest.raises(UserError, match="unknown router kind"):
        RouterRun(kind="shortgpt", search=("a",))
    assert RouterRun(kind="mindskip", data=["synthetic:1:2"]).data == ("synthetic:1:2",)
