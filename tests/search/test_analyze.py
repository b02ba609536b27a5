"""The analyzer's numbers on a hand-made results file (D = 10)."""
import json

import pytest

from polar.cli import main
from polar.search import SearchConfig, SearchRun, analyze

FULL = list(range(10))
SKIP_8 = [0, 1, 2, 5, 6, 7, 8, 9]              # skips 3..4
SKIP_9 = [0, 1, 2, 3, 4, 5, 6, 7, 9]           # skips 8
DROP_0 = list(range(1, 10))
LOOP_11 = [0, 1, 2, 3, 3, 4, 5, 6, 7, 8, 9]    # repeats 3
LOOP_12 = [0, 1, 2, 3, 4, 5, 4, 5, 6, 7, 8, 9]  # repeats 4..5
WEIRD = [0, 1, 2, 3, 3, 3, 4, 5, 6, 7, 8, 9]    # layer 3 three times: outside the compact space


def record(pid, initial, valid, invalid, space):
    settings = SearchRun(data="hand", search=SearchConfig(space=space)).settings()
    return {"id": pid, "question": f"q {pid}", "gt_ans": "1", "source": "synthetic", "level": 1, "num_layers": 10,
            "initial_score": initial, "final_valid_transitions": valid, "final_invalid_transitions": invalid,
            "simulations_run": len(valid) + len(invalid) - 1, "programs_evaluated": len(valid) + len(invalid),
            "valid_programs": len(valid), "wall_s": 0.1, **settings}


@pytest.fixture
def files(tmp_path):
    skip = [record("a", 1.0, [FULL, SKIP_8], [SKIP_9], "skip"),
            record("b", 1.0, [FULL], [DROP_0], "skip"),
            record("c", 0.0, [SKIP_9], [FULL], "skip"),
            record("d", 0.0, [], [FULL, DROP_0], "skip")]
    loop = [record("a", 1.0, [FULL, LOOP_11, WEIRD], [], "loop"),
            record("c", 0.0, [LOOP_12], [FULL], "loop")]
    paths = []
    for name, recs in (("skip", skip), ("loop", loop)):
        paths.append(tmp_path / f"{name}.jsonl")
        paths[-1].write_text("".join(json.dumps(r) + "\n" for r in recs))
    return paths


def test_spaces_are_compared_on_common_problems_by_default(files, tmp_path):
    summary = analyze(files, tmp_path / "common")
    g = summary["groups"]["synthetic L1"]
    assert g["skip"]["n"] == g["loop"]["n"] == 2 and summary["left_out"]["synthetic L1"] == 2
    md = (tmp_path / "common" / "findings.md").read_text()
    assert "| synthetic L1 | 2 |" in md and "records left out: 2" in md


def test_numbers(files, tmp_path):
    summary = analyze(files, tmp_path / "out", common_only=False)
    skip, loop = summary["groups"]["synthetic L1"]["skip"], summary["groups"]["synthetic L1"]["loop"]
    assert (skip["n"], skip["base"], skip["oracle"], skip["gain"]) == (4, 0.5, 0.75, 0.25)
    assert (skip["correct_with_shorter"], skip["wrong_corrected"], skip["wrong_corrected_shorter"]) == (0.5, 0.5, 0.5)
    assert skip["budgets"] == {"0.90": 0.5, "0.95": 0.5, "1.00": 0.75, "1.05": 0.75, "1.10": 0.75, "1.15": 0.75}
    assert skip["accuracy_by_length"] == {
        "8": {"valid": 1, "evaluated": 1, "accuracy": 1.0},
        "9": {"valid": 1, "evaluated": 4, "accuracy": 0.25},
        "10": {"valid": 2, "evaluated": 4, "accuracy": 0.5}}
    assert skip["segment_lengths"] == {"skip": {"1": 1, "2": 1}, "repeat": {}}
    assert skip["valid_programs"] == 2 and skip["runs_per_looped_layer"] == {}

    assert (loop["n"], loop["base"], loop["oracle"], loop["gain"]) == (2, 0.5, 1.0, 0.5)
    assert (loop["correct_with_shorter"], loop["wrong_corrected"], loop["wrong_corrected_shorter"]) == (0.0, 1.0, 0.0)
    assert loop["budgets"]["1.10"] == 0.5 and loop["budgets"]["1.15"] == 0.5
    assert loop["segment_lengths"] == {"skip": {}, "repeat": {"1": 1, "2": 1}}
    assert loop["runs_per_looped_layer"] == {"2": 3, "3": 1} and loop["outside_compact_space"] == 1

    out = tmp_path / "out"
    md = (out / "findings.md").read_text()
    assert "| synthetic L1 | 4 | 50.0 | 75.0 (+25.0) | 100.0 (+50.0) |" in md
    for png in ("budget_accuracy.png", "accuracy_vs_layers.png", "valid_program_histograms.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "findings.json").read_text())["groups"]["synthetic L1"]["skip"]["n"] == 4


def test_cli_and_errors(files, tmp_path, capsys):
    assert main(["analyze", *map(str, files), "--out", str(tmp_path / "cli")]) == 0
    assert "Table 1" in capsys.readouterr().out
    assert main(["analyze", str(files[0]), str(files[0]), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("polar analyze: error:") and "twice" in err and "\n" not in err
