"""The search commands of the CLI: help examples and one-line user errors (exit status 2)."""
import json

import pytest

from polar.cli import build_parser, main

COMMANDS = ("search", "merge", "export", "analyze")


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert f"example: polar {command}" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["search", "--data", "synthetic:1:4", "--out", "{tmp}/r.jsonl", "--shard", "2/2"], "bad shard"),
    (["search", "--data", "synthetic:x:4", "--out", "{tmp}/r.jsonl"], "bad synthetic spec"),
    (["search", "--data", "{tmp}/missing.jsonl", "--out", "{tmp}/r.jsonl"], "not found"),
    (["search", "--data", "synthetic:1:4", "--out", "{tmp}/r.jsonl", "--sims", "-1"], "simulations"),
    (["search", "--data", "synthetic:1:4", "--out", "{tmp}/r.jsonl", "--min-length", "1.5"], "length bounds"),
    (["search", "--data", "synthetic:1:4", "--out", "{tmp}/r.jsonl", "--batch-size", "2"], "batch size"),
    (["search", "--data", "synthetic:1:4", "--out", "{tmp}/r.jsonl", "--max-active", "0"], "max_active"),
    (["search", "--data", "synthetic:1:4", "--out", "{tmp}/r.jsonl", "--prefix-cache-mb", "-1"], "prefix_cache_mb"),
    (["merge", "{tmp}/dup.jsonl", "{tmp}/dup.jsonl", "--out", "{tmp}/m.jsonl"], "appears twice"),
    (["merge", "{tmp}/missing.jsonl", "--out", "{tmp}/m.jsonl"], "not found"),
    (["export", "{tmp}/notsearch.jsonl", "--out", "{tmp}/e.json"], "not a search record"),
    (["analyze", "{tmp}/missing.jsonl", "--out", "{tmp}/a"], "not found"),
])
def test_user_errors_are_one_line(argv, message, tmp_path, capsys):
    (tmp_path / "dup.jsonl").write_text(json.dumps({
        "id": "a", "question": "q", "gt_ans": "1", "initial_score": 0.0, "final_valid_transitions": [],
        "final_invalid_transitions": [[0]]}) + "\n")
    (tmp_path / "notsearch.jsonl").write_text('{"id": "a"}\n')
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    out = capsys.readouterr()
    err = out.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"polar {argv[0]}: error:") and message in err[0], out.err
    assert not (tmp_path / "r.jsonl").exists()
