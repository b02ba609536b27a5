"""`polar train` on hand-made search results with a tiny model's embeddings as the encoder."""
import json

import pytest

from polar import cli
from polar.testing import save_tiny_model


def test_polar_train_writes_a_checkpoint_and_reports_errors_in_one_line(tmp_path, capsys):
    save_tiny_model(tmp_path / "tiny", num_layers=6)
    D = 6
    recs = []
    for i in range(12):
        prog = list(range(D)) if i % 2 else [0, 1, 1, 2, 3, 4, 5]
        recs.append({"id": f"p{i}", "question": f"w{5 + i} w{6 + i}", "gt_ans": "1", "initial_score": float(i % 2),
                     "final_valid_transitions": [prog], "final_invalid_transitions": [], "model": str(tmp_path / "tiny"),
                     "num_layers": D})
    search = tmp_path / "search.jsonl"
    search.write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = tmp_path / "ckpt"
    argv = ["train", "--search", str(search), "--out", str(out), "--encoder", "llm", "--model", str(tmp_path / "tiny"),
            "--epochs", "2", "--batch-size", "4", "--threads", "1"]
    assert cli.main(argv) == 0
    assert (out / "model.safetensors").is_file() and json.loads((out / "config.json").read_text())
    capsys.readouterr()
    assert cli.main(["train", "--search", str(tmp_path / "missing.jsonl"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing.jsonl" in err


def test_polar_train_max_runs(tmp_path, capsys):
    """--max-runs 5 keeps programs that run a block up to 5 times (polar search's default
    --max-repeats 4); the default 2 counts them as outside the compact space."""
    save_tiny_model(tmp_path / "tiny", num_layers=6)
    recs = []
    for i in range(8):
        prog = [0, 1] + [2, 3] * 5 + [4, 5] if i % 2 else [0, 1, 1, 2, 3, 4, 5]
        recs.append({"id": f"p{i}", "question": f"w{5 + i} w{6 + i}", "gt_ans": "1", "initial_score": 0.0,
                     "final_valid_transitions": [prog], "final_invalid_transitions": [],
                     "model": str(tmp_path / "tiny"), "num_layers": 6})
    search = tmp_path / "search.jsonl"
    search.write_text("".join(json.dumps(r) + "\n" for r in recs))
    base = ["train", "--search", str(search), "--encoder", "llm", "--model", str(tmp_path / "tiny"), "--epochs", "1",
            "--batch-size", "4", "--threads", "1"]
    for max_runs, used in ((5, 8), (2, 4)):
        out = tmp_path / f"ckpt{max_runs}"
        argv = base + ["--out", str(out)] + (["--max-runs", str(max_runs)] if max_runs != 2 else [])
        assert cli.main(argv) == 0
        meta = json.loads((out / "config.json").read_text())
        assert meta["predictor"]["max_runs"] == max_runs and meta["training"]["targets"]["used"] == used
    capsys.readouterr()
    assert cli.main(base + ["--out", str(tmp_path / "bad"), "--max-runs", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max-runs must be a positive int" in err[0]
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--max-runs" in help_text and "--max-repeats + 1" in help_text


def test_polar_train_limit_reads_the_first_records_of_each_file(tmp_path):
    save_tiny_model(tmp_path / "tiny", num_layers=6)
    recs = [{"id": f"p{i}", "question": f"w{5 + i} w{6 + i}", "gt_ans": "1", "initial_score": 0.0,
             "final_valid_transitions": [[0, 1, 1, 2, 3, 4, 5]], "final_invalid_transitions": [],
             "model": str(tmp_path / "tiny"), "num_layers": 6} for i in range(10)]
    search = tmp_path / "search.jsonl"
    search.write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = tmp_path / "ckpt"
    assert cli.main(["train", "--search", str(search), "--out", str(out), "--encoder", "llm", "--model",
                     str(tmp_path / "tiny"), "--epochs", "1", "--batch-size", "4", "--threads", "1", "--limit", "6"]) == 0
    training = json.loads((out / "config.json").read_text())["training"]
    assert training["targets"]["problems"] == 6 and training["data_files"] == {str(search): "first 6 records"}
