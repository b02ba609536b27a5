"""A failed unit's record ({"id", "failed", "error"}) is part of every results schema: merge,
export, analyze, train and the evaluation report finish and name it; a rerun retries it."""
import json

import pytest

from polar.cli import main
from polar.evaluation import BaseGreedy, EvalConfig, read_eval_records, run_eval, summarize
from polar.jobs import ResultsFile, failure_record
from polar.search import SearchConfig, SearchRun, read_results, run_search
from polar.tasks import Problem
from polar.testing import save_tiny_model

D = 6
FULL = list(range(D))
SKIP = [0, 1, 2, 4, 5]
LOOP = [0, 1, 2, 2, 3, 4, 5]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny6")
    save_tiny_model(folder, num_layers=D)
    return folder


def _search_file(tmp_path, model_dir):
    settings = {**SearchRun(model=str(model_dir), data="hand", search=SearchConfig(space="skip+loop")).settings()}
    def rec(pid, valid):
        return {"id": pid, "question": f"What is {len(pid)} + {pid[-1]}?", "gt_ans": "1", "source": "synthetic",
                "level": 1, "num_layers": D, "initial_score": 0.0, "final_valid_transitions": valid,
                "final_invalid_transitions": [FULL], "simulations_run": 2, "programs_evaluated": 1 + len(valid),
                "valid_programs": len(valid), "wall_s": 0.1, **settings}
    lines = [rec(f"p{i}", [SKIP, LOOP] if i % 2 else [SKIP]) for i in range(8)]
    lines.insert(3, {**failure_record("bad-unit", "RuntimeError: out of memory"), **settings})
    lines.insert(5, {**failure_record("retried", "RuntimeError: once"), **settings})
    lines.append(rec("retried", [LOOP]))  # the rerun's record replaces its failure
    path = tmp_path / "search.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def test_merge_export_analyze_and_train_skip_and_name_failed_units(tmp_path, model_dir, capsys, caplog):
    path = _search_file(tmp_path, model_dir)
    recs = read_results([path])
    assert [r["id"] for r in recs] == ["p0", "p1", "p2", "p3", "retried", "p4", "p5", "p6", "p7"]
    assert next(r for r in recs if r["id"] == "retried")["final_valid_transitions"] == [LOOP]

    assert main(["merge", str(path), "--out", str(tmp_path / "merged.jsonl")]) == 0
    assert "1 failed unit (bad-unit)" in caplog.text
    caplog.clear()
    assert len((tmp_path / "merged.jsonl").read_text().splitlines()) == 9

    assert main(["export", str(path), "--out", str(tmp_path / "samples.json")]) == 0
    assert "bad-unit" in caplog.text
    caplog.clear()
    assert len(json.loads((tmp_path / "samples.json").read_text())["samples"]) == 9

    assert main(["analyze", str(path), "--out", str(tmp_path / "analysis")]) == 0
    assert "bad-unit" in caplog.text
    caplog.clear()

    assert main(["train", "--search", str(path), "--out", str(tmp_path / "ckpt"), "--encoder", "llm",
                 "--model", str(model_dir), "--epochs", "1", "--threads", "1"]) == 0
    assert "bad-unit" in caplog.text and "trained predictor" in capsys.readouterr().out


def test_a_file_of_failed_units_only_says_so(tmp_path, capsys):
    path = tmp_path / "failed.jsonl"
    path.write_text(json.dumps(failure_record("x", "boom")) + "\n")
    assert main(["merge", str(path), "--out", str(tmp_path / "m.jsonl")]) == 2
    assert "no search records" in capsys.readouterr().err


def test_a_search_rerun_retries_failed_units_unless_told_not_to(tmp_path, planted, word_problems):
    problems = word_problems(3)
    run = SearchRun(data="words", search=SearchConfig(space="skip", simulations=2), progress=False)
    out = tmp_path / "s.jsonl"
    ResultsFile(out, run.settings()).append([failure_record(problems[1].id, "RuntimeError: boom")])
    kept = run_search(run, out, evaluator=planted(lambda p, prog: False), problems=problems, retry_failed=False)
    assert kept["searched_now"] == 2 and kept["failed"] == 1
    again = run_search(run, out, evaluator=planted(lambda p, prog: False), problems=problems)
    assert again["searched_now"] == 1 and again["failed"] == 0
    assert {r["id"] for r in read_results([out])} == {p.id for p in problems}


def test_the_evaluation_report_and_rerun_handle_failed_units(tmp_path):
    from polar import load_model
    from polar.testing import tiny_model, tiny_tokenizer

    model, tok = tiny_model(num_layers=3), tiny_tokenizer()
    problems = [("s", Problem(id=f"q{i}", question=f"w{5 + i} w9", answer="3", source="synthetic", level=1))
                for i in range(3)]
    config = EvalConfig(model="tiny", data=["s"], k=1, max_new_tokens=2)
    methods = [BaseGreedy(3)]
    store = ResultsFile(tmp_path / "records.jsonl", config.settings(["base_greedy"]), key="key")
    store.append([failure_record("s::q1", "RuntimeError: boom", "key")])
    recs = run_eval(config, methods, model, tok, tmp_path, problems=problems, retry_failed=False)
    assert [r["id"] for r in recs] == ["q0", "q2"]  # the failed unit is left out, not a KeyError
    assert summarize(read_jsonl_all(tmp_path), 1)["all"]["base_greedy"]["n"] == 2  # failed record in the list
    assert [r["id"] for r in read_eval_records(tmp_path)] == ["q0", "q2"]
    recs = run_eval(config, methods, model, tok, tmp_path, problems=problems)  # retried
    assert [r["id"] for r in recs] == ["q0", "q1", "q2"]
    assert sorted(r["id"] for r in read_eval_records(tmp_path)) == ["q0", "q1", "q2"]
    del load_model


def read_jsonl_all(folder):
    from polar.jobs import read_jsonl

    return read_jsonl(folder / "records.jsonl")
