"""``polar eval``'s execution plan (one generated row per distinct (prompt, program, temperature,
seed), the run's prefix cache, unsettled greedy rows continued at the end of the chunk) writes the
records of the earlier plan (``EvalConfig.legacy_rows``) and of each method run on its own."""
import json

import pytest

from polar.evaluation import BaseGreedy, BaseSampling, EvalConfig, RandomSingleEdits, StaticPrograms, run_eval
from polar.evaluation import run as run_module
from polar.evaluation.methods import Candidate, Method
from polar.programs import Program, full
from polar.tasks import Problem
from polar.testing import tiny_model, tiny_tokenizer

D = 6
TIMING = ("wall_s", "overhead_s")


class FullFirst(Method):
    """A predictor stand-in: the full program first, then two edits."""

    name = "polar"

    def candidates(self, problems, k):
        return [[Candidate(full(D), 0.0, 0.0), Candidate(Program(list(range(1, D))), 0.0, -1.0),
                 Candidate(Program(list(range(D)) + [D - 1]), 0.0, -2.0)][:k] for _ in problems]


def _methods():
    return [FullFirst(), BaseGreedy(D), BaseSampling(D, 0.7),
            StaticPrograms("best_static", [list(range(D)), list(range(D - 1)), list(range(1, D))]),
            RandomSingleEdits(D, seed=1)]


def _problems():
    out = [("s", Problem(id=f"p{i}", question=f"w{5 + i} w{9 + 2 * i}", answer="3", source="synthetic", level=1))
           for i in range(5)]
    # the same question twice (another id and gold): one prompt, so its greedy rows run once for both
    out.append(("s", Problem(id="twin", question="w5 w9", answer="4", source="synthetic", level=1)))
    return out


def _records(out_dir):
    lines = [json.loads(x) for x in (out_dir / "records.jsonl").read_text().splitlines() if x.strip()]
    return {r["key"]: {k: v for k, v in r.items() if k not in TIMING} for r in lines}


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("llama", num_layers=D, seed=3), tiny_tokenizer()


@pytest.mark.parametrize("early", [True, False])
def test_new_plan_writes_the_records_of_the_legacy_plan_and_of_each_method_alone(tiny, tmp_path, monkeypatch, early):
    model, tok = tiny
    monkeypatch.setattr(run_module, "DEFER_TOKENS", 2)  # most rows are cut and continued at the chunk's end
    rows_run, continued = [], []
    real = run_module.advance

    def counting(model_, tok_, rows, *args, **kwargs):
        (rows_run if kwargs.get("cut_after") else continued).append(sum(not r.done for r in rows))
        return real(model_, tok_, rows, *args, **kwargs)

    monkeypatch.setattr(run_module, "advance", counting)
    caches = []
    real_cache = run_module.RunCache

    def keep(*args):
        caches.append(real_cache(*args))
        return caches[-1]

    monkeypatch.setattr(run_module, "RunCache", keep)
    config = dict(model="tiny", data=["s"], k=3, max_new_tokens=7, early_answer=early, chunk_problems=3, batch_size=8)
    problems = _problems()
    run_eval(EvalConfig(**config), _methods(), model, tok, tmp_path / "new", problems=problems)
    new = _records(tmp_path / "new")
    # one greedy row per distinct (prompt, program) of a chunk: the full program of polar, base_greedy and
    # best_static is one row
    distinct = 0
    for c in range(0, len(problems), 3):
        chunk = [p for _, p in problems[c:c + 3]]
        cands = [m.candidates(chunk, 3) for m in _methods()]
        distinct += len({(chunk[i].question, tuple(x.program)) for per in cands for i, row in enumerate(per)
                         for x in row if x.temperature == 0})
    assert sum(rows_run) == distinct < sum(len(r) for m in _methods() if not m.name.startswith("base_sample")
                                           for r in m.candidates([p for _, p in problems], 3))
    assert caches[0].cache.hits > 0 and caches[0].anchor
    assert (sum(continued) > 0) == (not early)  # without the early-answer rule every row runs past 2 tokens
    run_eval(EvalConfig(**config, legacy_rows=True), _methods(), model, tok, tmp_path / "old", problems=problems)
    assert new == _records(tmp_path / "old")
    run_eval(EvalConfig(**config, prefix_cache_mb=0), _methods(), model, tok, tmp_path / "nocache", problems=problems)
    assert new == _records(tmp_path / "nocache")
    for m in _methods():  # each method alone, the earlier plan
        run_eval(EvalConfig(**config, legacy_rows=True), [m], model, tok, tmp_path / m.name, problems=problems)
        alone = _records(tmp_path / m.name)
        assert {k: r["methods"][m.name] for k, r in new.items()} == {k: r["methods"][m.name] for k, r in alone.items()}


def test_the_twin_problem_shares_its_prompts_rows_within_a_chunk(tiny, tmp_path, monkeypatch):
    model, tok = tiny
    rows_run = []
    real = run_module.advance

    def counting(model_, tok_, rows, *args, **kwargs):
        rows_run.append(sum(not r.done for r in rows) if kwargs.get("cut_after") else 0)
        return real(model_, tok_, rows, *args, **kwargs)

    monkeypatch.setattr(run_module, "advance", counting)
    problems = _problems()
    config = EvalConfig(model="tiny", data=["s"], k=3, max_new_tokens=5, chunk_problems=len(problems), batch_size=64)
    recs = run_eval(config, [BaseGreedy(D), FullFirst()], model, tok, tmp_path, problems=problems)
    assert sum(rows_run) == 5 * 3  # 6 problems, 5 distinct prompts, 3 distinct programs each
    twin, p0 = recs[-1], recs[0]
    assert [c["output"] for c in twin["methods"]["polar"]] == [c["output"] for c in p0["methods"]["polar"]]


def test_polar_mix_is_polars_first_programs_then_base_samplings_own_samples(tiny, tmp_path, monkeypatch):
    from polar.evaluation import MixedCandidates
    from polar.errors import UserError

    model, tok = tiny
    sampled = []
    real = run_module._generate_groups

    def counting(keys, groups, rows, *args, **kwargs):
        sampled.extend(k for k in keys if kwargs.get("do_sample"))
        yield from real(keys, groups, rows, *args, **kwargs)

    monkeypatch.setattr(run_module, "_generate_groups", counting)
    class Budgeted(Method):
        """A predictor stand-in whose choice depends on k (as a layer budget makes it): asked for
        fewer candidates, it ranks others first."""

        name = "polar"

        def candidates(self, problems, k):
            progs = [full(D), Program(list(range(1, D))), Program(list(range(D)) + [D - 1])]
            progs = progs if k >= 3 else progs[::-1]
            return [[Candidate(p, 0.0, -float(i)) for i, p in enumerate(progs[:k])] for _ in problems]

    problems = _problems()
    config = dict(model="tiny", data=["s"], k=3, max_new_tokens=6, chunk_problems=4, batch_size=8)
    base = [Budgeted(), BaseSampling(D, 0.7)]
    run_eval(EvalConfig(**config), base, model, tok, tmp_path / "base", problems=problems)
    rows_without = len(sampled)
    sampled.clear()
    for m in (0, 1, 2, 3):
        mix = MixedCandidates(Budgeted(), D, m, 0.7)
        run_eval(EvalConfig(**config, mix=f"{m}:0.7"), base + [mix], model, tok, tmp_path / f"m{m}", problems=problems)
        assert len(sampled) == rows_without  # the mix's samples are base sampling's rows: none added
        sampled.clear()
        for key, rec in _records(tmp_path / f"m{m}").items():
            cands = rec["methods"]["polar_mix"]
            assert len(cands) == 3
            assert cands[:m] == rec["methods"]["polar"][:m]
            mine = [{k: v for k, v in c.items() if k != "score"} for c in cands[m:]]
            theirs = [{k: v for k, v in c.items() if k != "score"} for c in rec["methods"]["base_sample_t0.7"][:3 - m]]
            assert mine == theirs
            assert [c["score"] for c in cands] == sorted((c["score"] for c in cands), reverse=True)
    with pytest.raises(UserError):
        MixedCandidates(FullFirst(), D, -1, 0.7)
    with pytest.raises(UserError):
        MixedCandidates(FullFirst(), D, 2, 0.0)


@pytest.mark.parametrize("argv,message", [
    (["--mix", "two:0.7", "--checkpoint", "x"], "expected M:T"),
    (["--mix", "2:0", "--checkpoint", "x"], "expected M:T"),
    (["--mix=-1:0.7", "--checkpoint", "x"], "expected M:T"),
    (["--methods", "polar_mix", "--checkpoint", "x"], "needs --mix"),
    (["--methods", "polar_mix", "--mix", "2:0.7"], "needs --checkpoint"),
])
def test_polar_mix_cli_errors_are_one_line_before_any_model_load(tmp_path, capsys, monkeypatch, argv, message):
    from polar import cli

    monkeypatch.setattr(cli, "load_model", lambda *a, **k: pytest.fail("model loaded before the error"))
    assert cli.main(["eval", "--data", "synthetic:1:2", "--out", str(tmp_path / "e"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
