"""polar.solve: top1 equals running the top program alone, vote ties, the gate (threshold chosen on a
hand-made validation set, fallbacks run only where needed), auto from selection.json."""
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import polar
from polar.evaluation.solve import (choose_rule, gate_pick, load_selection, rule_answers, save_selection, solve)
from polar.search import DEFAULT_MAX_NEW_TOKENS, LibraryEntry, SweepMatrix
from polar.search._sweep import answer_logprobs
from polar.tasks import Problem, answer_rule, build_prompt, stop_strings
from polar.testing import tiny_model

solve_module = sys.modules["polar.evaluation.solve"]  # (polar.evaluation.solve is the function)
torch.set_num_threads(1)
D = 6
FULL = tuple(range(D))
EDITS = [FULL, (0, 1, 2, 2, 3, 4, 5), (0, 2, 3, 4, 5), (0, 1, 3, 4, 5), (0, 1, 2, 3, 5)]


def numeric_tokenizer():
    """A word-level tokenizer whose tokens are the numbers 0..124 (so the tiny model answers numbers)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{str(i - 3): i for i in range(3, 128)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("llama", seed=3, num_layers=D), numeric_tokenizer()


class SegmentStub:
    """The segment predictor's interface: ``predict(questions, k)`` -> predictions (.program, .score)."""

    def __init__(self, programs=EDITS):
        self.programs = programs

    def predict(self, questions, k):
        return [[SimpleNamespace(program=list(p), score=1.0 - 0.1 * j) for j, p in enumerate(self.programs[:k])]
                for _ in questions]


class ScorerStub:
    """The scorer's interface: entries, predict_proba, select (plain ranking here)."""

    def __init__(self, proba_rows):
        self.entries = [LibraryEntry(f"e{j}", p) for j, p in enumerate(EDITS)]
        self.proba_rows = np.asarray(proba_rows, dtype=float)

    def predict_proba(self, questions, llm_features=None):
        return np.tile(self.proba_rows, (len(questions), 1)) if self.proba_rows.ndim == 1 else self.proba_rows

    def select(self, row, k):
        return [int(j) for j in np.argsort(-np.asarray(row), kind="stable")[:k]]


QUESTIONS = ["What is 1 + 2 ?", "What is 30 + 4 ?", "What is 5 + 60 ?"]


@pytest.mark.parametrize("predictor", [SegmentStub(EDITS[::-1]), ScorerStub([0.1, 0.2, 0.9, 0.3, 0.4])])
def test_top1_equals_running_the_top_program_alone(tiny, predictor):
    model, tok = tiny
    sols = polar.solve(model, tok, QUESTIONS, predictor, k=3, select="top1")
    top = EDITS[-1] if isinstance(predictor, SegmentStub) else EDITS[2]
    for q, sol in zip(QUESTIONS, sols):
        p = Problem(id="x", question=q, answer="", source="solve")
        rule = answer_rule("fewshot", p)
        g = polar.generate(model, tok, [build_prompt(p, "fewshot", tok)], [list(top)], DEFAULT_MAX_NEW_TOKENS,
                           stop_strings=stop_strings("fewshot"), stop_fn=lambda r, t: rule(t))
        assert sol.rule == "top1" and sol.chosen == 0
        assert sol.candidates[0].program == top and sol.text == g.texts[0]
        assert sol.answer == polar.extract_answer(g.texts[0]) and sol.answer is not None
        assert sol.candidates[0].logprob_first == pytest.approx(answer_logprobs(tok, g.tokens[0], g.token_logprobs[0])[0])
        assert sol.executed_layers == len(top)  # only the top program ran
        assert [c.ran for c in sol.candidates] == [True, False, False]


def test_vote_runs_all_candidates_in_one_call(tiny, monkeypatch):
    model, tok = tiny
    calls = []
    real = solve_module.generate
    monkeypatch.setattr(solve_module, "generate", lambda *a, **kw: calls.append(len(a[2])) or real(*a, **kw))
    sols = solve(model, tok, QUESTIONS, SegmentStub(), k=5, select="vote")
    assert calls == [15]
    assert all(s.executed_layers == sum(len(p) for p in EDITS) for s in sols)
    assert all(c.ran for s in sols for c in s.candidates)


class FakeGeneration:
    """Replaces polar.generate: each row's text is planned by its program (the tokenizer still
    computes the confidence from made-up tokens)."""

    def __init__(self, texts_by_program, logprob_by_program):
        self.texts, self.lps, self.rows = texts_by_program, logprob_by_program, []

    def __call__(self, model, tok, prompts, programs, max_new_tokens, **kw):
        self.rows.append(len(prompts))
        texts, tokens, lps = [], [], []
        for prompt, prog in zip(prompts, programs):
            key = (prompt.rsplit("Q:", 1)[-1], tuple(prog))
            text = self.texts[key]
            texts.append(text)
            tokens.append(tok(text.strip(), add_special_tokens=False)["input_ids"])
            lps.append([self.lps.get(key, -0.1)] * len(tokens[-1]))
        return SimpleNamespace(texts=texts, tokens=tokens, token_logprobs=lps)


def plan(texts: dict, lps: dict | None = None):
    """``{(question, program): text}`` keyed by the prompt's last question."""
    fix = lambda d: {(f" {q}\nA:", p): v for (q, p), v in d.items()}
    return FakeGeneration(fix(texts), fix(lps or {}))


def test_vote_ties_go_to_the_best_scored_answer(tiny, monkeypatch):
    model, tok = tiny
    q = "What is 2 + 2 ?"
    answers = ["3", "4", "4", "3", "7"]  # 3 and 4 tie two to two
    fake = plan({(q, p): f" {a}\n" for p, a in zip(EDITS, answers)})
    monkeypatch.setattr(solve_module, "generate", fake)
    # scores by rank: candidate 0 (answer 3) is the best scored -> 3
    sol = solve(model, tok, [q], SegmentStub(), k=5, select="vote")[0]
    assert sol.answer == "3" and sol.chosen == 0
    # the scorer puts the first '4' (entry 1) on top -> 4, the tie's best-scored candidate
    sol = solve(model, tok, [q], ScorerStub([0.5, 0.9, 0.2, 0.6, 0.1]), k=5, select="vote")[0]
    assert sol.answer == "4" and sol.candidates[sol.chosen].program == EDITS[1]
    # the same tie among the first four candidates (4, 3, 3, 4 in the scorer's order)
    sol = solve(model, tok, [q], ScorerStub([0.5, 0.9, 0.2, 0.6, 0.1]), k=4, select="vote")[0]
    assert sol.answer == "4" and sol.chosen == 0
    # a strict majority wins over a better-scored single answer (7 scored 0.9; 3 twice)
    sol = solve(model, tok, [q], ScorerStub([0.5, 0.1, 0.2, 0.6, 0.9]), k=3, select="vote")[0]
    assert [c.answer for c in sol.candidates] == ["7", "3", "3"] and sol.answer == "3" and sol.chosen == 1


def test_gate_keeps_a_confident_full_program_and_runs_fallbacks_only_where_needed(tiny, monkeypatch):
    model, tok = tiny
    sure, unsure = "What is 1 + 1 ?", "What is 9 + 9 ?"
    texts = {}
    for q in (sure, unsure):
        for p, a in zip(EDITS, ["5", "18", "6", "7", "8"]):
            texts[(q, p)] = f" {a}\n"
    fake = plan(texts, {(sure, FULL): -0.1, (unsure, FULL): -2.0})
    monkeypatch.setattr(solve_module, "generate", fake)
    scorer = ScorerStub([0.3, 0.2, 0.1, 0.9, 0.4])  # best other: entry 3 (answer 7), full not on top
    sols = solve(model, tok, [sure, unsure], scorer, k=3, select="gate", threshold=-1.0)
    assert fake.rows == [2, 2]  # the full program for both, then 2 others for the unsure one only
    a, b = sols
    assert a.candidates[0].program == FULL and a.answer == "5" and not a.fell_back and a.chosen == 0
    assert a.executed_layers == D and a.confidence == pytest.approx(-0.1)
    assert b.fell_back and b.answer == "7" and b.candidates[b.chosen].program == EDITS[3]
    assert b.executed_layers == D + len(EDITS[3]) + len(EDITS[4])
    with pytest.raises(ValueError, match="threshold"):
        solve(model, tok, [sure], scorer, k=3, select="gate")


def test_gate_pick_rules():
    assert gate_pick(-0.5, "3", [("4", 0.9)], -1.0) == (0, False)
    assert gate_pick(-1.5, "3", [("4", 0.2), ("5", 0.9), (None, 1.0)], -1.0) == (2, True)
    assert gate_pick(None, "3", [("4", 0.2)], -1.0) == (1, True)       # no confidence: fall back
    assert gate_pick(float("nan"), None, [(None, 0.2)], -1.0) == (None, True)
    assert gate_pick(-5.0, "3", [(None, 0.2)], -1.0) == (0, True)      # nothing else answers: keep full


# --- the rule chosen on validation --------------------------------------------------------------


def hand_matrix():
    """6 validation problems, library (full, A, B): the full program is right exactly when it is
    confident (first-token log-prob >= -0.3); A is right on the others; B never."""
    entries = [LibraryEntry("full", FULL), LibraryEntry("A", EDITS[1]), LibraryEntry("B", EDITS[2])]
    conf = [-0.1, -0.2, -0.3, -1.5, -2.0, -2.5]
    records, answers, correct, lp = [], [], [], []
    for i, c in enumerate(conf):
        gold = str(10 + i)
        sure = c >= -0.3
        row = [gold if sure else "99", "98" if sure else gold, "97"]
        records.append({"id": f"v{i}", "question": f"q{i}", "gt_ans": gold, "source": "synthetic", "level": 1})
        answers.append(row)
        correct.append([a == gold for a in row])
        lp.append([c, -1.0, -1.0])
    return SweepMatrix(records, entries, np.array(correct), answers, np.array(lp), np.array(lp),
                       np.full((6, 3), 2), {})


def test_gate_threshold_chosen_on_a_hand_made_validation_set(tmp_path):
    m = hand_matrix()
    proba = np.tile([0.5, 0.4, 0.1], (6, 1))  # top1 = the full program
    choice = choose_rule(m, proba, k=2)
    assert choice["candidates"]["top1"]["accuracy"] == pytest.approx(0.5)
    assert choice["rule"] == "gate" and choice["threshold"] == pytest.approx(-0.3)
    assert choice["val_accuracy"] == 1.0
    assert choice["val_layers"] == pytest.approx(D + 0.5 * len(EDITS[1]))  # half the problems fall back
    ra = rule_answers(m, proba, 2)
    assert ra["vote"].mean() == pytest.approx(0.5)  # full and A disagree: the tie goes to the full program
    # stored beside a checkpoint and used by select='auto'
    save_selection(tmp_path, choice)
    assert load_selection(tmp_path)["threshold"] == pytest.approx(-0.3)
    with pytest.raises(FileNotFoundError):
        load_selection(tmp_path / "nothing")
    with pytest.raises(ValueError):
        save_selection(tmp_path, {"rule": "best"})


def test_choose_rule_prefers_the_cheaper_rule_on_ties():
    m = hand_matrix()
    m.correct[:, 0] = True  # the full program always right: top1 and gate tie at 100%
    for i in range(6):
        m.answers[i][0] = m.records[i]["gt_ans"]
    choice = choose_rule(m, np.tile([0.5, 0.4, 0.1], (6, 1)), k=2)
    assert choice["rule"] == "top1" and choice["threshold"] is None
    assert choose_rule(m, np.tile([0.5, 0.4, 0.1], (6, 1)), k=2, rules=("gate",))["threshold"] == -1e30


def test_choose_rule_keeps_within_the_layer_budget():
    m = hand_matrix()
    proba = np.tile([0.5, 0.4, 0.1], (6, 1))
    # within D + 1.2 layers the gate may fall back on one problem only (the least confident, +7/6 layers)
    choice = choose_rule(m, proba, k=2, max_layers=D + 1.2)
    assert choice["rule"] == "gate" and choice["threshold"] == pytest.approx(-2.0)
    assert choice["val_accuracy"] == pytest.approx(4 / 6) and choice["val_layers"] == pytest.approx(D + 7 / 6)
    choice = choose_rule(m, proba, k=2, max_layers=D + 1)  # no fallback fits: the gate ties top1, top1 is kept
    assert choice["rule"] == "top1" and choice["max_layers"] == D + 1
    assert choose_rule(m, proba, k=2)["max_layers"] == 2 * D  # default: k full programs
    assert choose_rule(m, proba, k=2, max_layers=1)["rule"] == "top1"  # none within: the cheapest


def test_auto_uses_the_stored_rule(tiny, tmp_path, monkeypatch):
    model, tok = tiny
    q = "What is 3 + 3 ?"
    fake = plan({(q, p): f" {a}\n" for p, a in zip(EDITS, ["1", "6", "2", "3", "4"])}, {(q, FULL): -3.0})
    monkeypatch.setattr(solve_module, "generate", fake)
    save_selection(tmp_path, {"rule": "gate", "threshold": -1.0, "k": 3})
    scorer = ScorerStub([0.9, 0.8, 0.1, 0.2, 0.3])
    sol = solve(model, tok, [q], scorer, k=3, select="auto", selection=tmp_path)[0]
    assert sol.rule == "gate" and sol.threshold == -1.0 and sol.answer == "6"
    scorer.selection = {"rule": "top1"}
    assert solve(model, tok, [q], scorer, k=3, select="auto")[0].answer == "1"
    with pytest.raises(ValueError, match="auto"):
        solve(model, tok, [q], SegmentStub(), k=3, select="auto")
    with pytest.raises(ValueError, match="select"):
        solve(model, tok, [q], SegmentStub(), k=3, select="best")
    with pytest.raises(ValueError):
        solve(model, tok, [q], SegmentStub(), k=0, select="top1")
    with pytest.raises(ValueError, match="predictor"):
        solve(model, tok, [q], object(), k=3, select="top1")
