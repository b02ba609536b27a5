"""`polar eval` end to end on a tiny model: train a predictor, evaluate every method, report files."""
import json

from polar import cli
from polar.testing import save_tiny_model


def test_polar_eval_runs_every_method_and_writes_the_report(tmp_path, capsys):
    D = 6
    model_dir = tmp_path / "tiny"
    save_tiny_model(model_dir, num_layers=D)
    recs = [{"id": f"p{i}", "question": f"What is {i} + 1?", "gt_ans": str(i + 1), "initial_score": 0.0,
             "final_valid_transitions": [[0, 1, 1, 2, 3, 4, 5], [0, 2, 3, 4, 5]], "final_invalid_transitions": [[0, 1]],
             "model": str(model_dir), "num_layers": D} for i in range(10)]
    search = tmp_path / "search.jsonl"
    search.write_text("".join(json.dumps(r) + "\n" for r in recs))
    ckpt = tmp_path / "ckpt"
    assert cli.main(["train", "--search", str(search), "--out", str(ckpt), "--encoder", "llm", "--model", str(model_dir),
                     "--epochs", "1", "--threads", "1"]) == 0
    out = tmp_path / "eval"
    argv = ["eval", "--model", str(model_dir), "--checkpoint", str(ckpt), "--data", "synthetic:1:3",
            "--data", "synthetic:2:2", "--search", str(search), "--train-data", "synthetic:1:4:train",
            "--k", "2", "--max-new-tokens", "3", "--out", str(out), "--threads", "1"]
    assert cli.main(argv) == 0
    for name in ("records.jsonl", "report.md", "summary.json", "pass_at_k.png", "accuracy_vs_layers.png", "config.json"):
        assert (out / name).is_file(), name
    lines = (out / "records.jsonl").read_text().splitlines()
    assert len(lines) == 5
    rec = json.loads(lines[0])
    expected = {"polar", "base_greedy", "base_sample_t0.3", "base_sample_t0.7", "base_sample_t1", "shortgpt", "best_static",
                "random_single_edit", "random_segment", "search_oracle"}
    assert set(rec["methods"]) == expected
    assert len(rec["methods"]["polar"]) == 2 and len(rec["methods"]["base_greedy"]) == 1
    # both valid on all 10 problems: the shorter first
    assert [c["program"] for c in rec["methods"]["best_static"]] == [[0, 2, 3, 4, 5], [0, 1, 1, 2, 3, 4, 5]]
    summary = json.loads((out / "summary.json").read_text())
    assert {"L1", "L2", "all"} <= set(summary) and "polar" in summary["L1"]
    assert cli.main(argv) == 0  # a rerun resumes: nothing new
    assert len((out / "records.jsonl").read_text().splitlines()) == 5
    capsys.readouterr()
    assert cli.main(argv[:-4] + ["--k", "3", "--out", str(out)]) == 2  # other settings: refused in one line
    assert "k=" in capsys.readouterr().err
