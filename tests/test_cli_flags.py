"""Every flag of the core subcommands, given a valid non-default value, changes exactly what it
should in the configuration the command hands its stage (the stage functions are replaced by
recorders, so this runs in seconds). Swapping two flags' destinations fails a row here."""
import argparse
import json
import types
from pathlib import Path

import pytest

from polar import cli
from polar.predictor import SearchRecord
from polar.testing import tiny_model, tiny_tokenizer


class Calls(dict):
    """The last call of each replaced stage function: ``{name: (args, kwargs)}``."""

    def arg(self, name, i=None, key=None):
        args, kwargs = self[name]
        return kwargs[key] if key is not None else args[i]


@pytest.fixture
def calls(monkeypatch, tmp_path):
    got = Calls()
    model, tok = tiny_model(num_layers=4), tiny_tokenizer()

    def rec(name, result=None):
        def fn(*args, **kwargs):
            got[name] = (args, kwargs)
            return result(*args, **kwargs) if callable(result) else result
        monkeypatch.setattr(cli, name, fn)

    rec("_threads")
    rec("run_accuracy", {"by_group": {}})
    rec("format_table", "")
    rec("load_model", (model, tok))
    rec("load_search_results", [SearchRecord("a", "q", ((0, 1),), settings={"num_layers": 4})])
    rec("model_depth", 4)
    rec("train_from_files", types.SimpleNamespace(num_parameters=lambda: 0))
    monkeypatch.setattr(cli, "EmbeddingEncoder", types.SimpleNamespace(from_model=lambda *a: "ENCODER"))
    rec("read_results", [{"id": "s"}])
    rec("read_sweep", "SWEEP")
    rec("_load_predictor", "PREDICTOR")
    rec("build_methods", [])
    rec("run_eval", [])
    rec("write_report", {})
    rec("markdown_table", "")
    rec("ask", "ANSWER")
    rec("format_ask", "")
    rec("run_demo", types.SimpleNamespace(summary={}, trained=True, wall_s=0.0))
    rec("demo_table", "")
    rec("run_search", {})
    rec("train_router", None)
    rec("read_router_config", lambda folder: {"kind": "drllm"})
    rec("load_router", "ROUTER")
    rec("run_sweep", {})
    rec("merge_results", 0)
    rec("export_supervision", 0)

    def fake_analyze(inputs, out):
        Path(out).mkdir(parents=True, exist_ok=True)
        Path(out, "findings.md").write_text("findings")
        return {"plots": []}
    rec("analyze", fake_analyze)
    got.tmp = tmp_path
    return got


def _ray(name):
    return lambda c: (c.arg(name, key="ray") or None)


ACC = ["accuracy", "--data", "synthetic:1:2", "--out", "OUT/acc.json"]
TRAIN = ["train", "--search", "S.jsonl", "--out", "OUT/ckpt"]
EVAL = ["eval", "--data", "synthetic:1:2", "--out", "OUT/eval", "--methods", "base_greedy"]
EVAL_DEFAULT = ["eval", "--data", "synthetic:1:2", "--out", "OUT/eval", "--checkpoint", "CK"]  # default --methods
ASK = ["ask", "What is 1 + 1?"]
DEMO = ["demo"]
SEARCH = ["search", "--data", "synthetic:1:2", "--out", "OUT/s.jsonl"]
TRR = ["train-router", "--kind", "drllm", "--search", "S.jsonl", "--out", "OUT/r"]
TRR_LM = ["train-router", "--kind", "mindskip", "--data", "synthetic:1:2", "--out", "OUT/r"]
SWEEP = ["sweep", "--data", "synthetic:1:2", "--out", "OUT/w.jsonl"]

acc_cfg = lambda c: c.arg("run_accuracy", 0)  # noqa: E731
train_kw = lambda c, k: c.arg("train_from_files", key=k)  # noqa: E731
eval_cfg = lambda c: c.arg("run_eval", 0)  # noqa: E731
demo_cfg = lambda c: c.arg("run_demo", 0)  # noqa: E731
search_run = lambda c: c.arg("run_search", 0)  # noqa: E731
sweep_run = lambda c: c.arg("run_sweep", 0)  # noqa: E731
trr_run = lambda c: c.arg("train_router", 0)  # noqa: E731

#: (subcommand argv, extra flags, what they change, expected value)
ROWS = [
    (ACC, ["--model", "M"], lambda c: acc_cfg(c).model, "M"),
    (ACC, ["--data", "synthetic:2:3"], lambda c: acc_cfg(c).data, "synthetic:2:3"),
    (ACC, ["--prompt-style", "direct"], lambda c: acc_cfg(c).prompt_style, "direct"),
    (ACC, ["--limit", "7"], lambda c: acc_cfg(c).limit, 7),
    (ACC, ["--batch-size", "3"], lambda c: acc_cfg(c).batch_size, 3),
    (ACC, ["--max-new-tokens", "9"], lambda c: acc_cfg(c).max_new_tokens, 9),
    (ACC, ["--out", "OUT/other.json"], lambda c: Path(c.arg("run_accuracy", 1)).name, "other.jsonl"),
    (ACC, ["--results", "OUT/r.jsonl"], lambda c: Path(c.arg("run_accuracy", 1)).name, "r.jsonl"),
    (ACC, ["--threads", "3"], lambda c: c.arg("_threads", 0), 3),
    (ACC, ["--device", "cpu"], lambda c: acc_cfg(c).device, "cpu"),

    (TRAIN, ["--search", "A.jsonl", "B.jsonl"], lambda c: c.arg("train_from_files", 0), ["A.jsonl", "B.jsonl"]),
    (TRAIN, ["--out", "OUT/c2"], lambda c: Path(c.arg("train_from_files", 1)).name, "c2"),
    (TRAIN, ["--encoder", "llm"], lambda c: train_kw(c, "encoder"), "ENCODER"),
    (TRAIN, ["--encoder", "some/folder"], lambda c: c.arg("train_from_files", 2)["encoder"], "some/folder"),
    (TRAIN, ["--encoder", "llm", "--model", "M"], lambda c: c.arg("load_model", 0), "M"),
    (TRAIN, ["--epochs", "3"], lambda c: train_kw(c, "train_config").epochs, 3),
    (TRAIN, ["--batch-size", "5"], lambda c: train_kw(c, "train_config").batch_size, 5),
    (TRAIN, ["--lr", "0.5"], lambda c: train_kw(c, "train_config").lr, 0.5),
    (TRAIN, ["--seed", "4"], lambda c: train_kw(c, "seed"), 4),
    (TRAIN, ["--limit", "6"], lambda c: train_kw(c, "limit"), 6),
    (TRAIN, ["--max-runs", "5"], lambda c: c.arg("train_from_files", 2)["max_runs"], 5),
    (TRAIN, ["--anti-original-lambda", "0.25"], lambda c: train_kw(c, "train_config").anti_original_lambda, 0.25),
    (TRAIN, ["--lenpref-beta", "0.75"], lambda c: train_kw(c, "train_config").lenpref_beta, 0.75),
    (TRAIN, ["--no-per-problem-normalize"], lambda c: train_kw(c, "train_config").per_problem_normalize, False),
    (TRAIN, ["--drop-full-if-shorter"], lambda c: train_kw(c, "train_config").drop_full_if_shorter, True),
    (TRAIN, ["--threads", "2"], lambda c: c.arg("_threads", 0), 2),
    (TRAIN, ["--encoder", "llm", "--device", "cpu"], lambda c: c.arg("load_model", key="device"), "cpu"),

    (EVAL, ["--model", "M"], lambda c: eval_cfg(c).model, "M"),
    (EVAL, ["--data", "synthetic:2:1"], lambda c: eval_cfg(c).data, ["synthetic:1:2", "synthetic:2:1"]),
    (EVAL, ["--checkpoint", "CK"], lambda c: (eval_cfg(c).checkpoint, c.arg("build_methods", key="predictor")),
     ("CK", "PREDICTOR")),
    (EVAL, ["--methods", "base_greedy", "random_segment"], lambda c: c.arg("build_methods", 0),
     ["base_greedy", "random_segment"]),
    (EVAL, ["--methods", "drllm", "--routers", "R"],
     lambda c: (eval_cfg(c).routers, c.arg("build_methods", key="routers"), c.arg("build_methods", 0)),
     (["R"], {"drllm": "ROUTER"}, ["drllm"])),
    (EVAL_DEFAULT, ["--routers", "R"], lambda c: c.arg("build_methods", 0), list(cli.DEFAULT_METHODS) + ["drllm"]),
    (EVAL_DEFAULT, ["--mix", "2:0.7"],
     lambda c: (eval_cfg(c).mix, c.arg("build_methods", key="mix"), c.arg("build_methods", 0)[-1]),
     ("2:0.7", (2, 0.7), "polar_mix")),
    (EVAL, ["--search", "S1.jsonl"], lambda c: (c.arg("read_results", 0), c.arg("build_methods", key="search_records")),
     (["S1.jsonl"], [{"id": "s"}])),
    (EVAL, ["--train-sweep", "T1.jsonl", "T2.jsonl"],
     lambda c: (c.arg("read_sweep", 0), c.arg("build_methods", key="train_sweep")), (["T1.jsonl", "T2.jsonl"], "SWEEP")),
    (EVAL, ["--train-data", "synthetic:1:3:train"], lambda c: len(c.arg("build_methods", key="shortgpt_problems")), 3),
    (EVAL, ["--k", "2"], lambda c: (eval_cfg(c).k, c.arg("build_methods", key="k")), (2, 2)),
    (EVAL, ["--limit", "1"], lambda c: eval_cfg(c).limit, 1),
    (EVAL, ["--prompt-style", "direct"], lambda c: (eval_cfg(c).prompt_style, c.arg("build_methods", key="prompt_style")),
     ("direct", "direct")),
    (EVAL, ["--max-new-tokens", "11"], lambda c: eval_cfg(c).max_new_tokens, 11),
    (EVAL, ["--batch-size", "3"], lambda c: eval_cfg(c).batch_size, 3),
    (EVAL, ["--prefix-cache-mb", "5"], lambda c: eval_cfg(c).prefix_cache_mb, 5),
    (EVAL, ["--seed", "8"], lambda c: (eval_cfg(c).seed, c.arg("build_methods", key="seed")), (8, 8)),
    (EVAL, ["--out", "OUT/e2"], lambda c: Path(c.arg("run_eval", 4)).name, "e2"),
    (EVAL, ["--no-retry-failed"], lambda c: c.arg("run_eval", key="retry_failed"), False),
    (EVAL, ["--ray"], lambda c: type(c.arg("run_eval", key="ray")).__name__, "RayOptions"),
    (EVAL + ["--ray"], ["--address", "auto"], lambda c: c.arg("run_eval", key="ray").address, "auto"),
    (EVAL + ["--ray"], ["--workers", "5"], lambda c: c.arg("run_eval", key="ray").workers, 5),
    (EVAL + ["--ray"], ["--gpus-per-worker", "0.5"], lambda c: c.arg("run_eval", key="ray").gpus_per_worker, 0.5),
    (EVAL + ["--ray"], ["--units-per-task", "3"], lambda c: c.arg("run_eval", key="ray").batch_units, 3),
    (EVAL, ["--threads", "2"], lambda c: c.arg("run_eval", key="threads"), 2),
    (EVAL, ["--device", "cpu"], lambda c: (eval_cfg(c).device, c.arg("load_model", key="device")), ("cpu", "cpu")),

    (ASK, ["--k", "2"], lambda c: c.arg("ask", key="k"), 2),
    (ASK, ["--checkpoint", "CK"], lambda c: c.arg("_load_predictor", 0), "CK"),
    (ASK, ["--model", "M"], lambda c: c.arg("load_model", 0), "M"),
    (ASK, ["--select", "vote"], lambda c: c.arg("ask", key="select"), "vote"),
    (ASK, ["--prompt-style", "direct"], lambda c: c.arg("ask", key="prompt_style"), "direct"),
    (ASK, ["--threads", "2"], lambda c: c.arg("_threads", 0), 2),
    (ASK, ["--device", "cpu"], lambda c: c.arg("load_model", key="device"), "cpu"),

    (DEMO, ["--out", "OUT/d2"], lambda c: Path(c.arg("run_demo", 1)).name, "d2"),
    (DEMO, ["--quick"], lambda c: demo_cfg(c).train_problems, cli.DemoConfig.quick().train_problems),
    (DEMO, ["--model", "M"], lambda c: demo_cfg(c).model, "M"),
    (DEMO, ["--levels", "3", "4"], lambda c: list(demo_cfg(c).levels), [3, 4]),
    (DEMO, ["--train-problems", "5"], lambda c: demo_cfg(c).train_problems, 5),
    (DEMO, ["--sims", "7"], lambda c: demo_cfg(c).simulations, 7),
    (DEMO, ["--test-problems", "6"], lambda c: demo_cfg(c).test_problems, 6),
    (DEMO, ["--k", "4"], lambda c: demo_cfg(c).k, 4),
    (DEMO, ["--encoder", "llm"], lambda c: demo_cfg(c).encoder, "llm"),
    (DEMO, ["--batch-size", "9"], lambda c: demo_cfg(c).batch_size, 9),
    (DEMO, ["--seed", "3"], lambda c: demo_cfg(c).seed, 3),
    (DEMO, ["--threads", "2"], lambda c: c.arg("run_demo", key="threads"), 2),
    (DEMO, ["--device", "cpu"], lambda c: demo_cfg(c).device, "cpu"),

    (SEARCH, ["--model", "M"], lambda c: search_run(c).model, "M"),
    (SEARCH, ["--data", "synthetic:3:1"], lambda c: search_run(c).data, "synthetic:3:1"),
    (SEARCH, ["--out", "OUT/t.jsonl"], lambda c: Path(c.arg("run_search", 1)).name, "t.jsonl"),
    (SEARCH, ["--space", "loop"], lambda c: search_run(c).search.space, "loop"),
    (SEARCH, ["--sims", "5"], lambda c: search_run(c).search.simulations, 5),
    (SEARCH, ["--seed", "6"], lambda c: search_run(c).search.seed, 6),
    (SEARCH, ["--batch-size", "17"], lambda c: search_run(c).batch_size, 17),
    (SEARCH, ["--limit", "4"], lambda c: search_run(c).limit, 4),
    (SEARCH, ["--shard", "1/3"], lambda c: search_run(c).shard, (1, 3)),
    (SEARCH, ["--prompt-style", "direct"], lambda c: search_run(c).prompt_style, "direct"),
    (SEARCH, ["--max-new-tokens", "12"], lambda c: search_run(c).max_new_tokens, 12),
    (SEARCH, ["--no-early-answer"], lambda c: search_run(c).early_answer, False),
    (SEARCH, ["--leaves", "3"], lambda c: search_run(c).search.leaves_per_round, 3),
    (SEARCH, ["--max-active", "2"], lambda c: c.arg("run_search", key="max_active"), 2),
    (SEARCH, ["--prefix-cache-mb", "7"], lambda c: c.arg("run_search", key="prefix_cache_mb"), 7),
    (SEARCH, ["--no-retry-failed"], lambda c: c.arg("run_search", key="retry_failed"), False),
    (SEARCH, ["--max-block", "3"], lambda c: search_run(c).search.max_block, 3),
    (SEARCH, ["--max-repeats", "2"], lambda c: search_run(c).search.max_repeats, 2),
    (SEARCH, ["--min-length", "0.6"], lambda c: search_run(c).search.min_length, 0.6),
    (SEARCH, ["--max-length", "1.7"], lambda c: search_run(c).search.max_length, 1.7),
    (SEARCH, ["--exploration", "0.123"], lambda c: search_run(c).search.exploration, 0.123),
    (SEARCH, ["--length-penalty", "0.456"], lambda c: search_run(c).search.length_penalty, 0.456),
    (SEARCH, ["--widening", "2.5"], lambda c: search_run(c).search.widening, 2.5),
    (SEARCH, ["--ray"], lambda c: type(c.arg("run_search", key="ray")).__name__, "RayOptions"),
    (SEARCH + ["--ray"], ["--address", "auto"], lambda c: c.arg("run_search", key="ray").address, "auto"),
    (SEARCH + ["--ray"], ["--workers", "3"], lambda c: c.arg("run_search", key="ray").workers, 3),
    (SEARCH + ["--ray"], ["--gpus-per-worker", "1"], lambda c: c.arg("run_search", key="ray").gpus_per_worker, 1.0),
    (SEARCH + ["--ray"], ["--units-per-task", "2"], lambda c: c.arg("run_search", key="ray").batch_units, 2),
    (SEARCH, ["--threads", "2"], lambda c: c.arg("run_search", key="threads"), 2),
    (SEARCH, ["--device", "cpu"], lambda c: search_run(c).device, "cpu"),

    (SWEEP, ["--model", "M"], lambda c: sweep_run(c).model, "M"),
    (SWEEP, ["--data", "synthetic:3:1"], lambda c: sweep_run(c).data, "synthetic:3:1"),
    (SWEEP, ["--library", "full,skip:1-1"], lambda c: sweep_run(c).library, "full,skip:1-1"),
    (SWEEP, ["--from-search", "S.jsonl"], lambda c: (c.arg("read_results", 0), c.arg("run_sweep", 2)),
     (["S.jsonl"], [{"id": "s"}])),
    (SWEEP, ["--out", "OUT/w2.jsonl"], lambda c: Path(c.arg("run_sweep", 1)).name, "w2.jsonl"),
    (SWEEP, ["--seed", "5"], lambda c: sweep_run(c).seed, 5),
    (SWEEP, ["--batch-size", "13"], lambda c: sweep_run(c).batch_size, 13),
    (SWEEP, ["--limit", "2"], lambda c: sweep_run(c).limit, 2),
    (SWEEP, ["--shard", "0/2"], lambda c: sweep_run(c).shard, (0, 2)),
    (SWEEP, ["--prompt-style", "direct"], lambda c: sweep_run(c).prompt_style, "direct"),
    (SWEEP, ["--max-new-tokens", "14"], lambda c: sweep_run(c).max_new_tokens, 14),
    (SWEEP, ["--no-early-answer"], lambda c: sweep_run(c).early_answer, False),
    (SWEEP, ["--prefix-cache-mb", "3"], lambda c: c.arg("run_sweep", key="prefix_cache_mb"), 3),
    (SWEEP, ["--ray"], lambda c: type(c.arg("run_sweep", key="ray")).__name__, "RayOptions"),
    (SWEEP + ["--ray"], ["--address", "auto"], lambda c: c.arg("run_sweep", key="ray").address, "auto"),
    (SWEEP + ["--ray"], ["--workers", "4"], lambda c: c.arg("run_sweep", key="ray").workers, 4),
    (SWEEP + ["--ray"], ["--gpus-per-worker", "0.25"], lambda c: c.arg("run_sweep", key="ray").gpus_per_worker, 0.25),
    (SWEEP + ["--ray"], ["--units-per-task", "5"], lambda c: c.arg("run_sweep", key="ray").batch_units, 5),
    (SWEEP, ["--no-retry-failed"], lambda c: c.arg("run_sweep", key="retry_failed"), False),
    (SWEEP, ["--threads", "2"], lambda c: c.arg("run_sweep", key="threads"), 2),
    (SWEEP, ["--device", "cpu"], lambda c: sweep_run(c).device, "cpu"),

    (TRR_LM, ["--kind", "flexidepth"], lambda c: trr_run(c).kind, "flexidepth"),
    (TRR, ["--search", "A.jsonl", "B.jsonl"], lambda c: trr_run(c).search, ("A.jsonl", "B.jsonl")),
    (TRR_LM, ["--data", "synthetic:2:1"], lambda c: trr_run(c).data, ("synthetic:1:2", "synthetic:2:1")),
    (TRR, ["--out", "OUT/r2"], lambda c: Path(c.arg("train_router", 1)).name, "r2"),
    (TRR, ["--model", "M"], lambda c: trr_run(c).model, "M"),
    (TRR, ["--prompt-style", "direct"], lambda c: trr_run(c).prompt_style, "direct"),
    (TRR, ["--limit", "3"], lambda c: trr_run(c).limit, 3),
    (TRR, ["--epochs", "3"], lambda c: trr_run(c).train.epochs, 3),
    (TRR, ["--batch-size", "5"], lambda c: trr_run(c).train.batch_size, 5),
    (TRR, ["--lr", "0.5"], lambda c: trr_run(c).train.lr, 0.5),
    (TRR_LM, ["--alpha", "0.25"], lambda c: trr_run(c).train.alpha, 0.25),
    (TRR, ["--save-every", "7"], lambda c: trr_run(c).train.save_every, 7),
    (TRR, ["--seed", "4"], lambda c: trr_run(c).seed, 4),
    (TRR, ["--threads", "2"], lambda c: c.arg("_threads", 0), 2),
    (TRR, ["--device", "cpu"], lambda c: trr_run(c).device, "cpu"),

    (["merge", "--out", "OUT/m.jsonl", "A.jsonl"], ["B.jsonl"], lambda c: c.arg("merge_results", 0),
     ["A.jsonl", "B.jsonl"]),
    (["merge", "A.jsonl", "--out", "OUT/m.jsonl"], ["--out", "OUT/m2.jsonl"],
     lambda c: Path(c.arg("merge_results", 1)).name, "m2.jsonl"),
    (["export", "--out", "OUT/x.json", "A.jsonl"], ["B.jsonl"], lambda c: c.arg("export_supervision", 0),
     ["A.jsonl", "B.jsonl"]),
    (["export", "A.jsonl", "--out", "OUT/x.json"], ["--out", "OUT/x2.json"],
     lambda c: Path(c.arg("export_supervision", 1)).name, "x2.json"),
    (["analyze", "--out", "OUT/an", "A.jsonl"], ["B.jsonl"], lambda c: c.arg("analyze", 0), ["A.jsonl", "B.jsonl"]),
    (["analyze", "A.jsonl", "--out", "OUT/an"], ["--out", "OUT/an2"], lambda c: Path(c.arg("analyze", 1)).name, "an2"),
]

#: Flags tested elsewhere: the scorer's (tests/predictor/test_scorer.py), data export (lm-eval tests).
ELSEWHERE = {"train": {"--head", "--sweep", "--val-sweep", "--features", "--deploy-k"},
             "data": {"--export-lm-eval", "--gsm8k", "--mawps", "--asdiv"}}
COVERED = ("accuracy", "train", "eval", "ask", "demo", "search", "sweep", "merge", "export", "analyze", "data",
           "train-router")


def _argv(argv, tmp):
    return [a.replace("OUT", str(tmp)) for a in argv]


@pytest.mark.parametrize("base,extra,get,expected", ROWS, ids=[f"{r[0][0]} {' '.join(r[1])}" for r in ROWS])
def test_a_flag_changes_what_it_should(calls, base, extra, get, expected):
    assert cli.main(_argv(base, calls.tmp)) == 0
    try:
        before = get(calls)
    except KeyError:  # the base command line does not call that stage at all
        before = None
    calls.clear()
    assert cli.main(_argv(base + extra, calls.tmp)) == 0
    after = get(calls)
    assert after == expected, (after, expected)
    assert before != expected, f"{extra} leaves {before!r} unchanged: the flag is the default or not wired"


def test_data_flags(capsys):
    assert cli.main(["data", "--data", "synthetic:1:5"]) == 0
    assert len([x for x in capsys.readouterr().out.splitlines() if x.startswith("{")]) == 3  # --show default
    assert cli.main(["data", "--data", "synthetic:1:5", "--show", "1"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert len(lines) == 1 and lines[0]["level"] == 1
    assert cli.main(["data", "--data", "synthetic:2:5", "--show", "1"]) == 0
    assert json.loads([x for x in capsys.readouterr().out.splitlines() if x.startswith("{")][0])["level"] == 2


def test_the_ask_question_is_passed(calls):
    assert cli.main(["ask", "What is 2 + 5?"]) == 0
    assert calls.arg("ask", 0) == "What is 2 + 5?"


def test_every_flag_of_the_covered_subcommands_has_a_row():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    tested: dict[str, set] = {}
    for base, extra, _, _ in ROWS:
        tested.setdefault(base[0], set()).update(a for a in extra if a.startswith("--"))
        tested[base[0]].update(a for a in base[1:] if a == "--ray")
    tested["data"] = {"--data", "--show"}
    for name in COVERED:
        flags = {a.option_strings[0] for a in sub.choices[name]._actions
                 if a.option_strings and not isinstance(a, argparse._HelpAction)}
        flags -= ELSEWHERE.get(name, set())
        # required flags of the base command line count as exercised when their row changes them
        missing = flags - tested.get(name, set())
        assert not missing, f"polar {name}: no test row for {sorted(missing)}"
