"""Search runs: batching, records, resume, settings, shards, merge and export."""
import json

import pytest

from polar.search import (SearchConfig, SearchRun, export_supervision, merge_results, parse_shard, read_results,
                          run_search, select_shard, shard_of)
from polar.jobs import SettingsMismatchError, read_jsonl
from polar.tasks import load_supervision

TIMING = ("wall_s", "batch_size", "shard", "versions")


def strip(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k not in TIMING}


def make_run(**kw) -> SearchRun:
    search = SearchConfig(**{"space": "skip+loop", "simulations": 7, "seed": 1, **kw.pop("search", {})})
    return SearchRun(**{"model": "tiny", "data": "words", "batch_size": 16, "max_new_tokens": 2, "progress": False,
                        "search": search, **kw})


def reward(problem, program):
    return (sum(program) + int(problem.id[1:])) % 4 == 0


def test_one_generate_call_per_round_fills_the_batch(planted, word_problems, tmp_path):
    ev = planted(reward)
    summary = run_search(make_run(), tmp_path / "r.jsonl", evaluator=ev, problems=word_problems(8))
    stats = ev.inner.stats
    assert summary["programs_evaluated_now"] == 8 * 8 == stats.rows
    assert stats.calls == len(ev.batches) == len(stats.rows_per_call)
    assert max(stats.rows_per_call) == 16 and stats.calls <= 64 // 16 + 2  # full batches but the tail
    assert stats.generated_tokens <= stats.rows + stats.finish_reasons["length"]  # rows stop at once (rule)
    assert stats.finish_reasons["rule"] > 0


def test_summary_reports_the_prefix_cache(planted, word_problems, tmp_path):
    ev = planted(reward).inner  # the GenerateEvaluator itself (keeps a prefix cache by default)
    summary = run_search(make_run(), tmp_path / "r.jsonl", evaluator=ev, problems=word_problems(8))
    cache = summary["prefix_cache"]
    assert cache["units_found"] == ev.prefix_cache.hits > 0 and cache["units_computed"] == ev.prefix_cache.misses > 0
    assert 0 < cache["mb_held"] <= 4096


def test_records_resume_and_settings(planted, word_problems, tmp_path):
    out = tmp_path / "r.jsonl"
    problems = word_problems(6)
    run_search(make_run(), out, evaluator=planted(reward), problems=problems[:4])
    recs = read_jsonl(out)
    assert sorted(r["id"] for r in recs) == ["p0", "p1", "p2", "p3"]
    r = recs[0]
    for field in ("id", "question", "gt_ans", "level", "initial_score", "final_valid_transitions",
                  "final_invalid_transitions", "simulations_run", "programs_evaluated", "valid_programs", "wall_s",
                  "model", "data", "space", "simulations", "seed", "batch_size", "prompt_style", "min_length",
                  "max_length", "versions"):
        assert field in r, field
    assert r["programs_evaluated"] == 8 == len(r["final_valid_transitions"]) + len(r["final_invalid_transitions"])
    assert r["simulations_run"] == 7 == r["simulations"]
    assert r["valid_programs"] == len(r["final_valid_transitions"])
    full = list(range(6))
    assert r["initial_score"] == float(full in r["final_valid_transitions"])
    # rerun: only the new problems are searched, nothing is written twice
    ev = planted(reward)
    summary = run_search(make_run(batch_size=8), out, evaluator=ev, problems=problems)
    assert summary["searched_now"] == 2 and {p for p, _ in ev.seen} == {"p4", "p5"}
    ids = [r["id"] for r in read_jsonl(out)]
    assert sorted(ids) == [f"p{i}" for i in range(6)]
    with pytest.raises(SettingsMismatchError):
        run_search(make_run(search={"simulations": 8}), out, evaluator=planted(reward), problems=problems)


def test_shards_are_disjoint_complete_and_merge_to_the_unsharded_run(planted, word_problems, tmp_path):
    ids = [f"problem-{i}" for i in range(300)]
    owners = [shard_of(i, 3) for i in ids]
    assert owners == [shard_of(i, 3) for i in ids]  # deterministic
    assert all(300 / 3 * 0.7 < owners.count(k) < 300 / 3 * 1.3 for k in range(3))
    problems = word_problems(9)
    parts = [select_shard(problems, (k, 3)) for k in range(3)]
    assert sorted(p.id for part in parts for p in part) == sorted(p.id for p in problems)
    assert select_shard(problems, None) == problems
    assert parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)

    whole = tmp_path / "whole.jsonl"
    run_search(make_run(), whole, evaluator=planted(reward), problems=problems)
    shards = []
    for k in range(3):
        shards.append(tmp_path / f"shard{k}.jsonl")
        run_search(make_run(shard=(k, 3), batch_size=4 + 4 * k), shards[-1], evaluator=planted(reward),
                   problems=problems)
    merged = tmp_path / "merged.jsonl"
    assert merge_results(shards, merged) == 9
    by_id = {r["id"]: strip(r) for r in read_jsonl(whole)}
    assert {r["id"]: strip(r) for r in read_jsonl(merged)} == by_id

    with pytest.raises(ValueError, match="appears twice"):
        merge_results([shards[0], shards[0]], tmp_path / "dup.jsonl")
    with pytest.raises(ValueError, match="exists"):
        merge_results(shards, merged)
    other = tmp_path / "other.jsonl"
    run_search(make_run(search={"seed": 2}), other, evaluator=planted(reward), problems=word_problems(1, "q"))
    with pytest.raises(ValueError, match="seed"):
        merge_results([shards[0], other], tmp_path / "mixed.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"id": 1}\n')
    with pytest.raises(ValueError, match="not a search record"):
        read_results([tmp_path / "bad.jsonl"])


def test_export_writes_the_reference_layout(planted, word_problems, tmp_path):
    out = tmp_path / "r.jsonl"
    run_search(make_run(), out, evaluator=planted(reward), problems=word_problems(3))
    path = tmp_path / "merged_mcts_samples.json"
    assert export_supervision([out], path) == 3
    data = json.loads(path.read_text())
    sample = data["samples"][0]
    assert {"question", "gt_ans", "initial_score", "final_valid_transitions",
            "final_invalid_transitions"} <= set(sample)
    loaded = {s.problem.id: s for s in load_supervision(path)}
    for rec in read_jsonl(out):
        s = loaded[rec["id"]]
        assert s.problem.question == rec["question"] and s.problem.answer == rec["gt_ans"]
        assert s.valid_programs == rec["final_valid_transitions"]
        assert s.invalid_programs == rec["final_invalid_transitions"]
        assert s.initial_score == rec["initial_score"]
    with pytest.raises(ValueError, match="appears twice"):
        export_supervision([out, out], tmp_path / "x.json")
