"""The program-library sweep: library specs, records equal to separate polar.generate calls,
sample seeds independent of batching, resume after SIGKILL, shards, reading matrices back."""
import gzip
import json
import random
import shutil
import signal
import sys

import numpy as np
import pytest

from polar.cli import main
from polar.runtime import generate
from polar.search import (SweepRun, build_library, most_valid_programs, parse_library, read_sweep, run_sweep,
                          single_edits)
from polar.search._sweep import answer_logprobs, library_path, sample_seed
from polar.jobs import SettingsMismatchError, read_jsonl
from polar.tasks import answer_rule, build_prompt, is_correct, stop_strings
from polar.testing import kill_after_lines, tiny_model, tiny_tokenizer

from .conftest import TINY_LAYERS

TIMING = ("wall_s", "batch_size", "shard", "versions")
LOGPROBS = ("logprob_first", "logprob_mean")


def strip(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k not in TIMING + LOGPROBS}


def same_logprobs(a: dict, b: dict) -> bool:
    """Log-probabilities agree up to float rounding (other batch shapes round differently)."""
    return all(a[i][f] == pytest.approx(b[i][f], abs=1e-4, nan_ok=True) for i in a for f in LOGPROBS)


# --- libraries ----------------------------------------------------------------------------------

def test_single_edits_cover_every_block_once():
    D = 6
    skips = single_edits(D, "skip", [1, 2])
    repeats = single_edits(D, "repeat", [1, 2])
    assert len(skips) == len(repeats) == 6 + 5
    assert dict(skips)["skip 2-3"] == (0, 1, 4, 5)
    assert dict(repeats)["repeat 2-3"] == (0, 1, 2, 3, 2, 3, 4, 5)
    assert dict(repeats)["repeat 0"] == (0, 0, 1, 2, 3, 4, 5)
    assert single_edits(1, "skip", [1]) == []  # would leave an empty program


def test_build_library_orders_dedups_and_counts():
    D = 5
    search = [{"final_valid_transitions": [[0, 1, 2, 3, 4], [0, 2, 3, 4], [0, 1, 1, 2, 3, 4]]},
              {"final_valid_transitions": [[0, 2, 3, 4], [0, 1, 3, 3, 4]]},
              {"final_valid_transitions": [[0, 1, 3, 3, 4], [0, 2, 3, 4]]}]
    lib = build_library("full,skip:1-2,search:2,samples:0.7:3", D, search)
    names = [e.name for e in lib]
    assert names[0] == "full" and lib[0].program == (0, 1, 2, 3, 4)
    assert len([n for n in names if n.startswith("skip")]) == 5 + 4
    # the most valid program (0,2,3,4) is 'skip 1', already in the library: the next two are taken
    assert [e.program for e in lib if e.name.startswith("search")] == [(0, 1, 3, 3, 4), (0, 1, 1, 2, 3, 4)]
    samples = [e for e in lib if e.is_sample]
    assert [(e.temperature, e.sample, e.program) for e in samples] == [(0.7, i, (0, 1, 2, 3, 4)) for i in range(3)]
    assert len({e.program for e in lib if not e.is_sample}) == len(lib) - 3  # no duplicate program
    assert most_valid_programs(search, 1) == [(0, 2, 3, 4)]


@pytest.mark.parametrize("spec, message", [
    ("", "empty library"), ("full,bogus", "unknown kind 'bogus'"), ("skip:3-1", "empty"),
    ("skip:x", "not a positive integer"), ("samples:0:4", "temperature must be > 0"),
    ("search:0", "not a positive integer"), ("full:1", "takes no argument"), ("file:", "needs a path"),
])
def test_bad_library_specs_name_the_part(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_library(spec)


def test_library_needs_search_records_and_valid_file_programs(tmp_path):
    with pytest.raises(ValueError, match="needs search results"):
        build_library("full,search:3", 4)
    with pytest.raises(ValueError, match="only 1 new valid programs"):
        build_library("search:3", 4, [{"final_valid_transitions": [[0, 1, 3]]}])
    path = tmp_path / "lib.json"
    path.write_text(json.dumps([[0, 1], [0, 9]]))
    with pytest.raises(ValueError, match="row 1"):
        build_library(f"file:{path}", 4)
    path.write_text(json.dumps([[0, 1], [3, 2, 1]]))
    assert [e.program for e in build_library(f"full,file:{path}", 4)] == [(0, 1, 2, 3), (0, 1), (3, 2, 1)]


def test_answer_logprobs_pick_the_answer_tokens():
    tok = tiny_tokenizer()
    ids = tok(" w5 w6\n w7", add_special_tokens=False)["input_ids"]
    lps = [-0.5 * (i + 1) for i in range(len(ids))]
    first, mean = answer_logprobs(tok, ids, lps)
    assert first == lps[0]
    assert answer_logprobs(tok, [], []) == (None, None)


# --- runs ---------------------------------------------------------------------------------------

LIBRARY = "full,skip:1-2,repeat:1,samples:0.8:3"


def make_run(**kw) -> SweepRun:
    return SweepRun(**{"model": "tiny", "data": "words", "library": LIBRARY, "max_new_tokens": 3, "batch_size": 40,
                       "progress": False, "seed": 5, **kw})


def test_sweep_entries_equal_separate_generate_calls(tiny, word_problems, tmp_path):
    model, tok = tiny
    problems = word_problems(5)
    run = make_run()
    summary = run_sweep(run, tmp_path / "s.jsonl", model=model, tokenizer=tok, problems=problems, prefix_cache_mb=64)
    entries = build_library(LIBRARY, TINY_LAYERS)
    assert summary["entries"] == len(entries) == 1 + 6 + 5 + 6 + 3
    assert summary["prefix_cache"]["units_found"] > 0  # the shots' states were reused across calls
    m = read_sweep(tmp_path / "s.jsonl")
    assert m.correct.shape == (5, len(entries)) and [e.name for e in m.entries] == [e.name for e in entries]
    rng = random.Random(0)
    pairs = [(rng.randrange(5), rng.randrange(len(entries))) for _ in range(8)] + [(0, len(entries) - 1), (3, 0)]
    for i, j in pairs:
        p, e = problems[i], entries[j]
        rule = answer_rule("fewshot", p)
        g = generate(model, tok, [build_prompt(p, "fewshot", tok)], [list(e.program)], 3,
                     do_sample=e.is_sample, temperature=e.temperature or 1.0,
                     seed=[sample_seed(5, p.id, e.temperature, e.sample)] if e.is_sample else None,
                     stop_strings=stop_strings("fewshot"), stop_fn=lambda r, t: rule(t), share_prefix=False)
        rec = m.records[i]
        assert rec["texts"][j] == g.texts[0], (i, e.name)
        assert rec["correct"][j] == int(is_correct(g.texts[0], p))
        assert rec["new_tokens"][j] == len(g.tokens[0])
        first, mean = answer_logprobs(tok, g.tokens[0], g.token_logprobs[0])
        if first is None:
            assert np.isnan(m.logprob_first[i, j])
        else:
            assert m.logprob_first[i, j] == pytest.approx(first, abs=1e-4)
            assert m.logprob_mean[i, j] == pytest.approx(mean, abs=1e-4)


def test_records_do_not_depend_on_batching_or_shards(tiny, word_problems, tmp_path):
    model, tok = tiny
    problems = word_problems(6)
    run_sweep(make_run(batch_size=200), tmp_path / "a.jsonl", model=model, tokenizer=tok, problems=problems)
    run_sweep(make_run(batch_size=1), tmp_path / "b.jsonl", model=model, tokenizer=tok, problems=problems,
              prefix_cache_mb=0)
    for i in range(3):
        run_sweep(make_run(shard=(i, 3)), tmp_path / f"s{i}.jsonl", model=model, tokenizer=tok, problems=problems)
    full_a = {r["id"]: r for r in read_sweep(tmp_path / "a.jsonl").records}
    full_b = {r["id"]: r for r in read_sweep(tmp_path / "b.jsonl").records}
    a = {k: strip(r) for k, r in full_a.items()}
    b = {k: strip(r) for k, r in full_b.items()}
    shards = [read_sweep(tmp_path / f"s{i}.jsonl").ids for i in range(3)]
    assert a == b and same_logprobs(full_a, full_b)
    assert sorted(sum(shards, [])) == sorted(a) and sum(map(len, shards)) == 6  # a partition
    joined = read_sweep([tmp_path / f"s{i}.jsonl" for i in range(3)])
    assert {r["id"]: strip(r) for r in joined.records} == a


def test_resume_skips_finished_and_refuses_other_settings(tiny, word_problems, tmp_path):
    model, tok = tiny
    out = tmp_path / "r.jsonl"
    run_sweep(make_run(), out, model=model, tokenizer=tok, problems=word_problems(3))
    summary = run_sweep(make_run(), out, model=model, tokenizer=tok, problems=word_problems(5))
    assert summary["swept_now"] == 2 and len(read_sweep(out).records) == 5
    with pytest.raises(SettingsMismatchError, match="seed"):
        run_sweep(make_run(seed=6), out, model=model, tokenizer=tok, problems=word_problems(5))
    with pytest.raises(SettingsMismatchError, match="library"):
        run_sweep(make_run(library="full,skip:1"), out, model=model, tokenizer=tok, problems=word_problems(5))


def test_read_sweep_gzip_failed_units_and_errors(tiny, word_problems, tmp_path):
    model, tok = tiny
    out = tmp_path / "g.jsonl"
    run_sweep(make_run(), out, model=model, tokenizer=tok, problems=word_problems(3))
    with open(out, "a") as fh:
        fh.write(json.dumps({"id": "p9", "failed": True, "error": "boom"}) + "\n")
    gz = tmp_path / "g.jsonl.gz"
    with open(out, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert library_path(gz) == library_path(out)
    assert read_sweep(gz).ids == read_sweep(out).ids == ["p0", "p1", "p2"]
    with pytest.raises(ValueError, match="appears twice"):
        read_sweep([out, gz])
    other = tmp_path / "o.jsonl"
    run_sweep(make_run(library="full,skip:1"), other, model=model, tokenizer=tok, problems=word_problems(2))
    with pytest.raises(ValueError, match="another library"):
        read_sweep([out, other])
    with pytest.raises(FileNotFoundError, match="not found"):
        read_sweep(tmp_path / "missing.jsonl")


# --- the command line, SIGKILL and resume ---------------------------------------------------------

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-sweep-model")
    tiny_model("llama", seed=0, num_layers=TINY_LAYERS).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def cli_args(model_dir, out, n=24) -> list[str]:
    return ["sweep", "--model", str(model_dir), "--data", f"synthetic:1:{n}:train", "--out", str(out),
            "--library", "full,skip:1-3,repeat:1-3", "--max-new-tokens", "4", "--batch-size", "16",
            "--threads", "1", "--seed", "2"]


def lines(path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_sigkill_then_resume(model_dir, tmp_path):
    clean = tmp_path / "clean.jsonl"
    assert main(cli_args(model_dir, clean)) == 0
    expected = {r["id"]: strip(r) for r in map(json.loads, lines(clean))}
    assert len(expected) == 24

    out = tmp_path / "killed.jsonl"
    rc = kill_after_lines([sys.executable, "-m", "polar.cli", *cli_args(model_dir, out)], out)
    assert rc == -signal.SIGKILL, "the sweep finished before it could be killed"
    assert 3 <= len(lines(out)) < 24

    assert main(cli_args(model_dir, out)) == 0
    records = read_jsonl(out)  # a line torn by the kill is skipped (and was written again)
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == 24
    assert {r["id"]: strip(r) for r in records} == expected
    assert main(cli_args(model_dir, out)[:-2] + ["--seed", "3"]) == 2  # other settings: one-line error


def test_cli_refuses_a_bad_library_before_loading(tmp_path, capsys):
    assert main(["sweep", "--data", "synthetic:1:4", "--library", "full,skip:0", "--out", str(tmp_path / "x.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "skip:0" in err and len(err.strip().splitlines()) == 1


def test_sweep_on_ray_equals_a_local_run(model_dir, tmp_path):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'polar[ray]')")
    base = ["sweep", "--model", str(model_dir), "--data", "synthetic:1:6:train", "--library",
            "full,skip:1,repeat:1,samples:1:2", "--max-new-tokens", "3", "--threads", "1", "--seed", "4"]
    assert main(base + ["--out", str(tmp_path / "local.jsonl")]) == 0
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert main(base + ["--out", str(tmp_path / "ray.jsonl"), "--ray", "--workers", "2",
                            "--units-per-task", "2"]) == 0
    finally:
        ray.shutdown()
    local = {r["id"]: r for r in read_sweep(tmp_path / "local.jsonl").records}
    remote = {r["id"]: r for r in read_sweep(tmp_path / "ray.jsonl").records}
    assert len(local) == 6
    assert {k: strip(r) for k, r in local.items()} == {k: strip(r) for k, r in remote.items()}
    assert same_logprobs(local, remote)
