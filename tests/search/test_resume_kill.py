"""A search killed by SIGKILL mid-run leaves only whole lines; the rerun finishes the rest with
no duplicates and the same records as an uninterrupted run."""
import json
import signal
import sys

import pytest

from polar.cli import main
from polar.testing import kill_after_lines, tiny_model, tiny_tokenizer

PROBLEMS = 30
TIMING = ("wall_s", "batch_size", "shard", "versions")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-model")
    tiny_model("llama", seed=0, num_layers=6).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def args(model_dir, out) -> list[str]:
    return ["search", "--model", str(model_dir), "--data", f"synthetic:1:{PROBLEMS}:train", "--out", str(out),
            "--sims", "16", "--max-new-tokens", "4", "--batch-size", "16", "--threads", "1", "--seed", "3"]


def lines(path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def strip(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k not in TIMING}


def test_sigkill_then_resume(model_dir, tmp_path):
    clean = tmp_path / "clean.jsonl"
    assert main(args(model_dir, clean)) == 0
    expected = {r["id"]: strip(r) for r in map(json.loads, lines(clean))}
    assert len(expected) == PROBLEMS

    out = tmp_path / "killed.jsonl"
    rc = kill_after_lines([sys.executable, "-m", "polar.cli", *args(model_dir, out)], out)
    assert rc == -signal.SIGKILL, "the run finished before it could be killed"
    partial = lines(out)
    assert 3 <= len(partial) < PROBLEMS
    for line in partial:
        json.loads(line)  # every line parses

    assert main(args(model_dir, out)) == 0
    records = [json.loads(line) for line in lines(out)]
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == PROBLEMS
    assert {r["id"]: strip(r) for r in records} == expected
    # a rerun with other settings is refused with one line, exit status 2
    assert main(args(model_dir, out)[:-2] + ["--seed", "4"]) == 2
