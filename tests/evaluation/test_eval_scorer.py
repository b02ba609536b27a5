"""`polar eval` and `polar ask` with a scorer checkpoint: the scorer method's candidates, best_static
from a training sweep (the set cover), answer@k of polar.solve's rule from the records, the gate's
executed layers, and the first-answer-token log-probability in the records."""
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from polar import cli
from polar.evaluation import read_eval_records
from polar.evaluation.report import answer_at_k, summarize
from polar.evaluation.solve import save_selection
from polar.predictor import Scorer, ScorerTrainConfig, static_cover, train_scorer_from_files
from polar.search import build_library, read_sweep
from polar.tasks import build_prompt, resolve
from polar.testing import save_tiny_model, write_sweep_file

torch.set_num_threads(1)

D = 6
SPEC = "full,skip:1,repeat:1"


def write_sweep(path: Path, entries, records) -> Path:
    """A sweep file in polar sweep's format (records + settings, and its .library.json)."""
    settings = {"model": "tiny", "data": "planted", "library": SPEC, "prompt_style": "fewshot",
                "max_new_tokens": 8, "early_answer": True, "seed": 0}
    return write_sweep_file(path, entries, records, settings, spec=SPEC)


def planted_records(entries, n: int, seed: int) -> list[dict]:
    """Program j correct iff the word w(10 + j) is in the question (plus a little noise); the
    questions use the tiny tokenizer's vocabulary."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        j = rng.randrange(len(entries))
        q = " ".join(f"w{rng.randrange(30, 120)}" for _ in range(3)) + f" w{10 + j}"
        cells = []
        for c in range(len(entries)):
            ok = c == j or rng.random() < 0.1
            ans = "7" if ok else str(rng.choice([1, 2, 3]))
            cells.append((f" {ans}\n", ans, int(ok), -rng.random(), -0.5, 2))
        rec = {"id": f"p{seed}-{i}", "question": q, "gt_ans": "7", "source": "planted", "level": None,
               "choices": None, "num_layers": D}
        for f, vals in zip(("texts", "answers", "correct", "logprob_first", "logprob_mean", "new_tokens"), zip(*cells)):
            rec[f] = list(vals)
        out.append(rec)
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_scorer")
    save_tiny_model(root / "tiny", num_layers=D)
    entries = build_library(SPEC, D)
    train = write_sweep(root / "train.jsonl", entries, planted_records(entries, 40, 0))
    model, tok = cli.load_model(str(root / "tiny"))
    train_scorer_from_files([train], root / "scorer", features="llm", config={"llm_last_tokens": 2, "d": 16},
                            train_config=ScorerTrainConfig(epochs=5), model=model, tokenizer=tok,
                            cache_dir=root / "cache", progress=False)
    return {"root": root, "model_dir": root / "tiny", "train": train, "scorer": root / "scorer", "model": model,
            "tok": tok}


def test_eval_with_a_scorer_checkpoint_and_best_static_from_a_train_sweep(setup, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["eval", "--model", str(setup["model_dir"]), "--checkpoint", str(setup["scorer"]), "--data", "synthetic:1:3",
            "--methods", "polar", "base_greedy", "best_static", "--train-sweep", str(setup["train"]), "--k", "3",
            "--max-new-tokens", "6", "--threads", "1", "--out", str(out)]
    assert cli.main(argv) == 0
    records = read_eval_records(out)
    assert len(records) == 3
    # the scorer method: Scorer.select's top-k on each question, scored by the predicted probability
    scorer = Scorer.load(setup["scorer"])
    problems = resolve("synthetic:1:3")
    prompts = [build_prompt(p, "fewshot", setup["tok"]) for p in problems]
    proba = scorer.predict_proba([p.question for p in problems],
                                 llm_features=scorer.compute_llm_features(setup["model"], setup["tok"], prompts))
    for rec, row in zip(records, proba):
        want = [list(scorer.entries[j].program) for j in scorer.select(row, 3)]
        got = rec["methods"]["polar"]
        assert [c["program"] for c in got] == want
        np.testing.assert_allclose([c["score"] for c in got], [row[j] for j in scorer.select(row, 3)], rtol=1e-6)
        for c in got + rec["methods"]["base_greedy"]:
            assert "logprob_first" in c and (c["logprob_first"] is None or c["logprob_first"] <= 0)
    # best_static: the set cover on the training matrix
    m = read_sweep(setup["train"])
    cover = [list(m.entries[j].program) for j in static_cover(m.correct, 3)]
    assert all([c["program"] for c in rec["methods"]["best_static"]] == cover for rec in records)
    report = (out / "report.md").read_text()
    assert "set cover on the training sweep matrix" in report and "answer@3" in report
    summary = json.loads((out / "summary.json").read_text())
    # answer@k with top1 (no selection.json) is pass@1 of the top candidate; it runs one program
    polar = summary["all"]["polar"]
    assert summary["_selection"]["rule"] == "top1" and polar["answer_rule"] == "top1"
    assert polar["answer@3"] == polar["pass@1"]
    assert polar["answer_layers"] == np.mean([rec["methods"]["polar"][0]["layers"] for rec in records])
    assert "answer@3" not in summary["all"]["base_greedy"]
    assert "best_static" in summary["_definitions"] and "set cover" in summary["_definitions"]["best_static"]

    # without --train-sweep and without --search: best_static cannot be defined
    capsys.readouterr()
    bad = [a for a in argv if a != str(setup["train"]) and a != "--train-sweep"]
    assert cli.main(bad[:-1] + [str(tmp_path / "other")]) == 2
    assert "--train-sweep" in capsys.readouterr().err


def test_eval_answer_at_k_uses_the_checkpoints_selection(setup, tmp_path):
    ckpt = tmp_path / "scorer"
    ckpt.mkdir()
    for f in setup["scorer"].iterdir():
        (ckpt / f.name).write_bytes(f.read_bytes())
    save_selection(ckpt, {"rule": "vote", "threshold": None, "k": 2})
    out = tmp_path / "eval"
    assert cli.main(["eval", "--model", str(setup["model_dir"]), "--checkpoint", str(ckpt), "--data", "synthetic:1:2",
                     "--methods", "polar", "--k", "2", "--max-new-tokens", "6", "--threads", "1",
                     "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["_selection"]["rule"] == "vote" and summary["all"]["polar"]["answer_rule"] == "vote"
    records = read_eval_records(out)
    assert summary["all"]["polar"]["answer_layers"] == np.mean(
        [sum(c["layers"] for c in r["methods"]["polar"]) for r in records])


def _cand(program, correct, answer, score, lp="missing"):
    c = {"program": list(program), "temperature": 0.0, "score": score, "output": "", "answer": answer,
         "correct": correct, "layers": len(program), "unique_layers": len(set(program))}
    if lp != "missing":
        c["logprob_first"] = lp
    return c


FULL, SKIP, REP = tuple(range(D)), (0, 1, 3, 4, 5), (0, 1, 2, 2, 3, 4, 5)


def _record(i, polar, greedy=None):
    return {"key": f"x::{i}", "id": str(i), "data": "x", "source": "planted", "level": None, "question": f"q{i}",
            "gold": "7", "methods": {"polar": polar, **({"base_greedy": greedy} if greedy else {})}}


def test_gate_runs_the_full_program_and_the_others_only_below_the_threshold():
    gate = {"rule": "gate", "threshold": -1.0}
    confident = _record(0, [_cand(SKIP, True, "7", 0.9, -0.5), _cand(FULL, False, "3", 0.5, -0.2),
                            _cand(REP, True, "7", 0.4, -0.1)])
    unsure = _record(1, [_cand(SKIP, True, "7", 0.9, -0.5), _cand(FULL, False, "3", 0.5, -2.0),
                         _cand(REP, False, "2", 0.4, -0.1)])
    # the full program is not among the method's candidates: its run comes from base_greedy's
    borrowed = _record(2, [_cand(SKIP, False, "2", 0.9, -0.5), _cand(REP, True, "7", 0.8, -0.1)],
                       greedy=[_cand(FULL, True, "7", 0.0, -0.1)])
    # an old record without logprob_first: no confidence, so the gate falls back
    old = _record(3, [_cand(FULL, False, "3", 0.9), _cand(SKIP, True, "7", 0.5)])
    k = 3
    assert answer_at_k(confident, "polar", k, gate, D) == (False, D)                   # kept: the full program's answer
    assert answer_at_k(unsure, "polar", k, gate, D) == (True, D + len(SKIP) + len(REP))  # fell back: best-scored other
    assert answer_at_k(borrowed, "polar", k, gate, D) == (True, D)
    assert answer_at_k(old, "polar", k, gate, D) == (True, D + len(SKIP))
    assert answer_at_k(old, "polar", k, {"rule": "top1"}, D) == (False, D)
    assert answer_at_k(unsure, "polar", k, {"rule": "vote"}, D) == (True, len(SKIP) + D + len(REP))  # tie: best score
    s = summarize([confident, unsure, borrowed, old], k, gate, D)["all"]["polar"]
    assert s[f"answer@{k}"] == 0.75 and s["answer_n"] == 4
    assert s["answer_layers"] == (D + (D + len(SKIP) + len(REP)) + D + (D + len(SKIP))) / 4
    # without the depth, the gate finds the full program through base_greedy's candidate; none: not counted
    s = summarize([borrowed, old], k, gate)["all"]["polar"]
    assert s["answer_n"] == 1 and s[f"answer@{k}"] == 1.0


def test_committed_evaluation_records_still_summarize():
    path = Path(__file__).resolve().parents[2] / "results" / "eval" / "test_k5"
    if not (path / "records.jsonl").is_file():
        pytest.skip("no committed evaluation records")
    records = read_eval_records(path)[:50]
    s = summarize(records, 5)["all"]
    assert "polar" not in s or s["polar"]["answer@5"] == s["polar"]["pass@1"]


def test_ask_with_a_scorer_checkpoint(setup, tmp_path, capsys):
    argv = ["ask", "w5 w6 w12", "--k", "3", "--checkpoint", str(setup["scorer"]), "--model", str(setup["model_dir"]),
            "--threads", "1"]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "rule: top1" in text and "default: top1" in text and text.count("layers:") == 3
    assert text.count("not run") == 2 and text.count("<- chosen") <= 1
    assert cli.main(argv + ["--select", "vote"]) == 0
    text = capsys.readouterr().out
    assert "rule: vote" in text and "not run" not in text
    assert cli.main(argv + ["--select", "gate"]) == 2  # no threshold chosen on validation
    assert "threshold" in capsys.readouterr().err
    ckpt = tmp_path / "scorer"
    ckpt.mkdir()
    for f in setup["scorer"].iterdir():
        (ckpt / f.name).write_bytes(f.read_bytes())
    save_selection(ckpt, {"rule": "gate", "threshold": 1e30, "k": 3})  # always falls back
    argv[5] = str(ckpt)
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "rule: gate" in text and "selection.json" in text and "not run" not in text


def test_scorer_checkpoints_are_detected_and_the_method_travels_without_its_model(setup, tmp_path, capsys):
    import pickle

    from polar.evaluation import ScorerMethod

    assert cli.checkpoint_format(str(setup["scorer"])) == "polar-scorer"
    assert cli.checkpoint_format("default") == "polar-scorer"  # the shipped predictor: the one best on validation
    assert cli.checkpoint_format("default-segments") == "segments"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"format": "polar-scorer", "version": 1}))
    assert cli.main(["ask", "w5 w6", "--checkpoint", str(broken), "--model", str(setup["model_dir"])]) == 2
    assert "model.safetensors" in capsys.readouterr().err
    method = ScorerMethod(Scorer.load(setup["scorer"]), model=setup["model"], tokenizer=setup["tok"])
    copy = pickle.loads(pickle.dumps(method))
    assert copy.model is None and copy.scorer.entries == method.scorer.entries
    copy.bind(setup["model"], setup["tok"])
    problems = resolve("synthetic:1:2")
    assert copy.candidates(problems, 2) == method.candidates(problems, 2)
