"""`polar demo --quick` end to end on a tiny model, `polar ask`, and CLI error paths."""
import json

import pytest

from polar import cli, models
from polar.predictor._predictor import DEFAULT_CHECKPOINT
from polar.testing import save_tiny_model


def _planted_search_results(path, model_dir, D=6):
    """What search would write if one repeat program were valid for every problem."""
    import polar

    recs = [{"id": p.id, "question": p.question, "gt_ans": p.answer, "initial_score": 0.0, "num_layers": D,
             "model": str(model_dir), "final_valid_transitions": [[0, 1, 1, 2, 3, 4, 5]], "final_invalid_transitions": [],
             "programs_evaluated": 2, "valid_programs": 1, "simulations_run": 4}
            for p in polar.synthetic(1, 4, "train")]
    return recs


def test_demo_quick_on_a_random_model_runs_every_phase_and_says_it_learned_nothing(tmp_path, capsys):
    model_dir = tmp_path / "tiny"
    save_tiny_model(model_dir, num_layers=6)
    out = tmp_path / "demo"
    argv = ["demo", "--quick", "--model", str(model_dir), "--encoder", "llm", "--out", str(out), "--threads", "1"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| base_greedy |" in printed and "wall time" in printed and "no predictor was trained" in printed
    for rel in ("search/L1.jsonl", "eval/records.jsonl", "eval/report.md", "eval/summary.json", "eval/pass_at_k.png",
                "eval/accuracy_vs_layers.png"):
        assert (out / rel).is_file(), rel
    n_search = len((out / "search/L1.jsonl").read_text().splitlines())
    assert n_search == 4
    assert cli.main(argv) == 0  # a rerun reuses search results and evaluation
    assert len((out / "search/L1.jsonl").read_text().splitlines()) == n_search
    assert len((out / "eval/records.jsonl").read_text().splitlines()) == 4


def test_demo_with_valid_programs_trains_evaluates_polar_and_ask_uses_the_checkpoint(tmp_path, capsys):
    model_dir = tmp_path / "tiny"
    save_tiny_model(model_dir, num_layers=6)
    out = tmp_path / "demo"
    (out / "search").mkdir(parents=True)
    argv = ["demo", "--quick", "--model", str(model_dir), "--encoder", "llm", "--out", str(out), "--threads", "1"]
    # search results written beforehand (the demo resumes them): a planted valid program per problem
    from polar.search import SearchConfig, SearchRun
    run = SearchRun(model=str(model_dir), data="synthetic:1:4:train",
                    search=SearchConfig(space="skip+loop", simulations=4, seed=0))
    (out / "search" / "L1.jsonl").write_text("".join(
        json.dumps({**r, **run.settings()}) + "\n" for r in _planted_search_results(out, model_dir)))
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| polar |" in printed and "| base_greedy |" in printed
    assert (out / "predictor/model.safetensors").is_file()
    mtime = (out / "predictor/model.safetensors").stat().st_mtime
    assert cli.main(argv) == 0  # the checkpoint is reused
    assert (out / "predictor/model.safetensors").stat().st_mtime == mtime

    ckpt = str(out / "predictor")
    capsys.readouterr()
    assert cli.main(["ask", "w5 w6 w7", "--k", "2", "--checkpoint", ckpt, "--model", str(model_dir)]) == 0
    text = capsys.readouterr().out
    assert "rule: top1" in text and "answer:" in text and text.count("layers:") == 2  # polar.solve, no selection.json


@pytest.mark.parametrize("argv, message", [
    (["ask", "  ", "--checkpoint", "nowhere"], "empty"),
    (["eval", "--data", "synthetic:1:2", "--out", "x", "--methods", "polar"], "--checkpoint"),
    (["eval", "--data", "nosuchfile.jsonl", "--out", "x", "--methods", "base_greedy"], "nosuchfile"),
    (["train", "--search", "nosuchfile.jsonl", "--out", "x"], "nosuchfile"),
    (["accuracy", "--data", "synthetic:7:3"], "level"),
    (["demo", "--levels", "9", "--quick", "--out", "x", "--model", "nowhere-model"], "level"),
    (["accuracy", "--data", "synthetic:1:2", "--model", "nowhere-model"], "nowhere-model"),
    (["accuracy", "--data", "synthetic:1:2", "--device", "gpu9"], "unknown device"),
    (["search", "--data", "synthetic:1:2", "--out", "s.jsonl", "--device", "nonsense"], "unknown device"),
    (["ask", "What is 1 + 1?", "--device", "nonsense"], "unknown device"),
])
def test_user_errors_print_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError):
        cli.main(["--debug", "accuracy", "--data", "synthetic:7:3"])


@pytest.mark.skipif(not models.is_default_cached(), reason="the default model is not cached (polar.load_default())")
@pytest.mark.skipif(not (DEFAULT_CHECKPOINT / "config.json").is_file(), reason="this checkout ships no predictor checkpoint")
def test_ask_with_the_shipped_checkpoint(capsys):
    assert cli.main(["ask", "What is 23 + 41?", "--k", "3"]) == 0
    out = capsys.readouterr().out
    assert "rule:" in out and "answer:" in out and out.count("layers:") == 3


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_cuda_device_without_a_gpu_is_a_one_line_error(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["demo", "--quick", "--device", "cuda", "--out", "d"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA GPU" in err[0]


def test_device_cpu_runs(tmp_path):
    model_dir = tmp_path / "tiny"
    save_tiny_model(model_dir, num_layers=4)
    out = tmp_path / "acc.json"
    assert cli.main(["accuracy", "--model", str(model_dir), "--data", "synthetic:1:2", "--max-new-tokens", "2",
                     "--device", "cpu", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["n"] == 2
