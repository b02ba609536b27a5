"""`polar train` on hand-made search results with a tiny model's embeddings as the encoder."""
import json

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
