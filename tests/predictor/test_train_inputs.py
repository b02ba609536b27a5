"""`polar train` on supervision as users have it: the reference's layout (no depth: taken from
--model), an empty file, supervision generated under another setting than evaluation's."""
import json

import pytest

from polar.cli import main
from polar.testing import save_tiny_model

D = 5


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny5")
    save_tiny_model(folder, num_layers=D)
    return folder


def _samples(n=8):
    return [{"id": f"s{i}", "question": f"What is {i} + 2?", "gt_ans": str(i + 2), "initial_score": 0.0,
             "final_valid_transitions": [[0, 1, 3, 4], [0, 1, 1, 2, 3, 4]], "final_invalid_transitions": [[0]]}
            for i in range(n)]


def test_the_reference_layout_takes_the_depth_from_the_model(tmp_path, model_dir, capsys):
    path = tmp_path / "merged_mcts_samples.json"
    path.write_text(json.dumps({"samples": _samples()}))
    out = tmp_path / "ckpt"
    assert main(["train", "--search", str(path), "--model", str(model_dir), "--encoder", "llm", "--out", str(out),
                 "--epochs", "1", "--threads", "1"]) == 0
    assert "trained predictor" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["llm"]["num_layers"] == D and config["predictor"]["num_layers"] == D


def test_an_empty_file_says_no_records(tmp_path, capsys):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    assert main(["train", "--search", str(path), "--out", str(tmp_path / "ckpt")]) == 2
    err = capsys.readouterr().err
    assert "no search records" in err and len(err.strip().splitlines()) == 1


def test_supervision_under_another_generation_setting_is_refused(tmp_path, capsys):
    path = tmp_path / "short.jsonl"
    path.write_text("".join(json.dumps({**s, "num_layers": D, "prompt_style": "fewshot", "max_new_tokens": 8,
                                        "early_answer": True}) + "\n" for s in _samples(3)))
    assert main(["train", "--search", str(path), "--out", str(tmp_path / "ckpt")]) == 2
    err = capsys.readouterr().err
    assert "max_new_tokens=8" in err and "max_new_tokens=50" in err and len(err.strip().splitlines()) == 1
