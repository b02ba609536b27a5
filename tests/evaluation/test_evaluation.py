"""polar.evaluation: metrics, ShortGPT, methods, the batched resumable run and its report."""
import json
import random

import pytest
import torch

import polar
import polar.tasks
from polar.evaluation import (BaseGreedy, BaseSampling, EvalConfig, RandomSegmentPrograms, RandomSingleEdits,
                              SearchOracle, StaticPrograms, best_static_programs, block_influence, majority_answer,
                              pass_at, run_eval, shortgpt_programs, single_edit, summarize, write_report)
from polar.evaluation import run as run_module
from polar.runtime import resume as resume_module
from polar.evaluation.metrics import maj_at
from polar.tasks import Problem
from polar.testing import tiny_model, tiny_tokenizer


def test_pass_at_k():
    assert pass_at([False, True, False], 1) is False
    assert pass_at([False, True, False], 2) is True
    assert pass_at([], 3) is False
    with pytest.raises(ValueError):
        pass_at([True], 0)


def test_majority_vote_ties_and_missing_answers():
    assert majority_answer(["4", "5", "5", None]) == "5"
    assert majority_answer([None, None]) is None
    assert majority_answer(["4", "5"], [0.1, 0.9]) == "5"  # tie: the better-scored candidate
    assert majority_answer(["4", "5"], [0.9, 0.1]) == "4"
    assert majority_answer(["4", "5"]) == "4"  # tie, equal scores: the earliest
    assert majority_answer(["1,000", "1000.0", "7"]) in ("1,000", "1000.0")  # same number votes together
    p = Problem(id="x", question="q", answer="5", source="t")
    assert maj_at(["5", "4", "4"], [0, 0, 0], 3, p) is False
    assert maj_at(["5", "4", "4"], [0, 0, 0], 1, p) is True
    assert maj_at([None, None, "5"], [0, 0, 0], 3, p) is True


def _tiny(num_layers=6, seed=3):
    return tiny_model("llama", seed=seed, num_layers=num_layers), tiny_tokenizer()


def test_shortgpt_removes_a_planted_identity_layer_first():
    model, tok = _tiny()
    with torch.no_grad():
        layer = model.model.layers[3]
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()  # layer 3 now returns its input: cos = 1, BI = 0
    bi = block_influence(model, tok, ["w5 w6 w7 w8", "w9 w10", "w11 w12 w13"])
    assert len(bi) == 6 and abs(bi[3]) < 1e-6 and min(bi[:3] + bi[4:]) > 1e-4
    progs = shortgpt_programs(bi, 3)
    assert progs[0] == polar.Program([0, 1, 2, 4, 5])
    assert [len(p) for p in progs] == [5, 4, 3] and all(3 not in p for p in progs)


def test_single_edits_and_random_methods_are_valid_and_seeded():
    rng = random.Random(0)
    for _ in range(50):
        p = single_edit(30, rng)
        assert 26 <= len(p) <= 34 and len(p) != 30
    problems = polar.synthetic(1, 4)
    a = RandomSingleEdits(30, seed=1).candidates(problems, 5)
    assert a == RandomSingleEdits(30, seed=1).candidates(problems, 5)
    assert all(len({c.program for c in row}) == 5 for row in a)
    b = RandomSegmentPrograms(30, seed=1).candidates(problems, 3)
    assert all(polar.in_space(c.program, 30) for row in b for c in row)


def test_best_static_programs_and_oracle_from_search_records():
    recs = [{"question": "What is 1 + 1?", "final_valid_transitions": [[0, 1], [0, 1, 1]], "final_invalid_transitions": [[1]]},
            {"question": "What is 2 + 2?", "final_valid_transitions": [[0, 1]], "final_invalid_transitions": [[0, 1, 1]]}]
    assert best_static_programs(recs, 2) == [polar.Program([0, 1]), polar.Program([0, 1, 1])]
    oracle = SearchOracle(recs)
    problems = [Problem(id="a", question="What is  1 + 1?", answer="2", source="s"),
                Problem(id="b", question="unsearched", answer="2", source="s")]
    cands = oracle.candidates(problems, 5)
    assert [list(c.program) for c in cands[0]] == [[0, 1], [0, 1, 1]] and cands[1] == []


def _methods(D):
    return [BaseGreedy(D), BaseSampling(D, 0.7), RandomSingleEdits(D, seed=0),
            StaticPrograms("shortgpt", [list(range(1, D)), list(range(2, D))])]


def test_every_candidate_runs_in_batched_calls_and_the_run_resumes(tmp_path, monkeypatch):
    model, tok = _tiny()
    D = model.config.num_hidden_layers
    calls = []
    real = run_module.generate

    def counting(model_, tok_, prompts, programs, *args, **kwargs):
        calls.append((len(programs), bool(kwargs.get("do_sample"))))
        return real(model_, tok_, prompts, programs, *args, **kwargs)

    monkeypatch.setattr(run_module, "generate", counting)
    monkeypatch.setattr(resume_module, "generate", counting)  # greedy rows run through polar.runtime.resume
    problems = [("synthetic:1:6", Problem(id=f"p{i}", question=f"w{5 + i} w{9 + i}", answer="3", source="synthetic", level=1))
                for i in range(6)]
    config = EvalConfig(model="tiny", data=["synthetic:1:6"], k=3, batch_size=64, max_new_tokens=3, chunk_problems=4)
    recs = run_eval(config, _methods(D)[:3], model, tok, tmp_path, problems=problems[:4])
    # chunk of 4 problems: greedy rows (1 base + 3 edits per problem, deduplicated) in one call, samples in one
    assert calls == [(16, False), (12, True)]
    assert len(recs) == 4 and all(len(r["methods"]["base_sample_t0.7"]) == 3 for r in recs)
    calls.clear()
    recs = run_eval(config, _methods(D)[:3], model, tok, tmp_path, problems=problems)  # resumes: only 2 new
    assert [n for n, _ in calls] == [8, 6] and len(recs) == 6
    lines = (tmp_path / "records.jsonl").read_text().splitlines()
    assert len(lines) == 6 and len({json.loads(x)["key"] for x in lines}) == 6
    with pytest.raises(ValueError, match="k=3|k="):
        run_eval(EvalConfig(model="tiny", data=["x"], k=2, max_new_tokens=3), _methods(D)[:3], model, tok, tmp_path,
                 problems=problems)


def test_greedy_outputs_equal_a_plain_generate_and_grades_are_real(tmp_path):
    model, tok = _tiny()
    D = model.config.num_hidden_layers
    problems = [("s", Problem(id=f"p{i}", question=f"w{5 + i} w7", answer="3", source="synthetic", level=2)) for i in range(3)]
    config = EvalConfig(model="tiny", data=["s"], k=2, max_new_tokens=4)
    methods = _methods(D)
    recs = run_eval(config, methods, model, tok, tmp_path, problems=problems)
    prompts = [polar.build_prompt(p, "fewshot") for _, p in problems]
    progs = [polar.Program(list(range(2, D)))] * 3
    rules = [polar.tasks.answer_rule("fewshot", p) for _, p in problems]  # the shared early-answer rule
    ref = polar.generate(model, tok, prompts, progs, 4, stop_strings=["\n"], stop_fn=lambda r, t: rules[r](t))
    for rec, text in zip(recs, ref.texts):
        cand = rec["methods"]["shortgpt"][1]
        assert cand["program"] == list(range(2, D)) and cand["output"] == text
        assert cand["correct"] == polar.is_correct(text, Problem(id="", question="", answer="3", source=""))
    summary = write_report(recs, 2, tmp_path / "report")
    assert {"L2", "all"} <= set(summary)
    assert summary["L2"]["base_greedy"]["layers"] == D
    assert summary["L2"]["shortgpt"]["layers"] == (D - 1 + D - 2) / 2
    assert "base_sample_best" in summary["L2"]
    for name in ("summary.json", "report.md", "pass_at_k.png", "accuracy_vs_layers.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0


def test_summarize_on_hand_made_records():
    def cand(correct, answer, layers=4):
        return {"correct": correct, "answer": answer, "score": 0.0, "layers": layers, "unique_layers": layers}
    recs = [
        {"id": "a", "question": "q", "gold": "5", "source": "synthetic", "level": 1,
         "methods": {"m": [cand(False, "4"), cand(True, "5"), cand(True, "5")], "o": []}},
        {"id": "b", "question": "q", "gold": "6", "source": "synthetic", "level": 1,
         "methods": {"m": [cand(False, "4", 2), cand(False, None, 2), cand(True, "6", 2)], "o": [cand(True, "6")]}},
    ]
    s = summarize(recs, 3)["L1"]
    assert s["m"]["pass@1"] == 0 and s["m"]["pass@2"] == 0.5 and s["m"]["pass@3"] == 1.0
    assert s["m"]["maj@3"] == 0.5  # a: 5 wins 2-1; b: 4 vs 6 tie, equal scores: the earlier (4) wins
    assert s["m"]["layers"] == 3.0
    assert s["o"]["n"] == 1 and s["o"]["problems"] == 2 and s["o"]["pass@1"] == 1.0
