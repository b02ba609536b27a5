"""``polar.solve``: one deployable answer per question from ``k`` predicted programs.

pass@k needs the gold answer (some candidate is right); a deployed system must *pick* one answer
without it (docs/architecture.md section 12). :func:`solve` asks a predictor for ``k`` candidate programs
per question, runs them with the search's generation setting (greedy, budget
:data:`polar.search.DEFAULT_MAX_NEW_TOKENS`, the prompt style's stop strings, the early-answer
rule :func:`polar.tasks.answer_rule`), and turns the candidates into one answer by a *rule*:

- ``top1``: the answer of the top-ranked program (only that program is run);
- ``vote``: the majority answer of the ``k`` candidates; a tie goes to the best-scored candidate
  among the tied answers (:func:`polar.evaluation.metrics.majority_answer`);
- ``gate``: the full program's answer, unless its confidence (the log-probability of its first
  answer token, :func:`polar.search._sweep.answer_logprobs`) is below ``threshold`` or it gives no
  answer; then the answer of the best-scored other candidate that gives one. The full program
  runs first for every question (one call); the ``k - 1`` others run only for the questions that
  fall back (a second call), so a confident question costs one program;
- ``auto``: the rule and threshold chosen on validation data (:func:`choose_rule`), stored with
  the predictor in ``selection.json`` (:func:`save_selection` / :func:`load_selection`).

Predictors (duck-typed, no import of their classes):

- a *scorer* (``polar.predictor.Scorer``): ``.entries`` (library entries with ``.program``),
  ``.predict_proba(questions, llm_features=None) -> [n, L]`` and ``.select(proba_row, k) ->
  list[int]`` (expected-pass@k order); a candidate's score is its predicted probability;
- the paper's segment predictor (``polar.Predictor``): ``.predict(questions, k)`` -> lists of
  predictions with ``.program`` and ``.score``.

Example::

    model, tok = polar.load_default()
    sol = polar.solve(model, tok, ["What is 23 + 41?"], predictor, k=5, select="vote")[0]
    sol.answer, sol.rule, sol.executed_layers, [c.answer for c in sol.candidates]
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._checks import check_int
from ..errors import UserError, UserFileNotFoundError
from ..programs import full
from ..runtime import generate
from ..search._evaluate import DEFAULT_MAX_NEW_TOKENS
from ..search._sweep import answer_logprobs
from ..tasks import DEFAULT_PROMPT_STYLE, Problem, answer_rule, build_prompt, stop_strings
from .methods import is_scorer
from .metrics import answer_correct, candidate_answer, majority_answer

#: The answer rules of :func:`solve` (``auto`` reads one of the others from ``selection.json``).
RULES: tuple[str, ...] = ("top1", "vote", "gate")
SELECTS: tuple[str, ...] = RULES + ("auto",)
#: Where :func:`save_selection` puts the chosen rule in a checkpoint folder.
SELECTION_FILE = "selection.json"


@dataclass
class SolveCandidate:
    """One candidate program of a question. ``text``/``answer``/``logprob_first`` are ``None``
    when the rule did not need to run it (``ran`` False)."""

    program: tuple[int, ...]
    score: float                     # the predictor's score (scorer: P(correct)); higher is better
    text: str | None = None
    answer: str | None = None
    logprob_first: float | None = None  # log-probability of the first answer token
    ran: bool = False


@dataclass
class Solution:
    """The deployable answer of one question.

    ``candidates``: the ``k`` candidates in the predictor's rank order (for ``gate`` the full
    program first); ``chosen``: the index of the candidate whose answer was taken (``None`` when no
    candidate gave one); ``executed_layers``: the sum of ``len(program)`` over the candidates run
    (layers applied per token); ``rule``: the rule applied (``auto`` resolved); ``threshold``: the
    gate's threshold (``None`` for other rules); ``confidence``: the full program's first-answer-token
    log-probability (gate only)."""

    question: str
    answer: str | None
    text: str | None
    candidates: list[SolveCandidate]
    executed_layers: int
    rule: str
    chosen: int | None = None
    threshold: float | None = None
    confidence: float | None = None
    fell_back: bool = False


# ----------------------------------------------------------------------------- candidates


def ranked_candidates(predictor, questions: Sequence[str], k: int, num_layers: int,
                      llm_features=None) -> list[list[tuple[tuple[int, ...], float]]]:
    """``(program, score)`` of the ``k`` candidates per question, in the predictor's order.

    Scorer: ``select(proba_row, k)`` over its library, score = predicted probability. Segment
    predictor: its top-``k`` predictions (distinct programs), score = its ranking score."""
    if is_scorer(predictor):
        proba = np.asarray(predictor.predict_proba(list(questions), llm_features=llm_features), dtype=float)
        if proba.shape != (len(questions), len(predictor.entries)):
            raise ValueError(f"predict_proba gave shape {proba.shape}, expected {(len(questions), len(predictor.entries))}")
        out = []
        for row in proba:
            picks = list(predictor.select(row, k))[:k]
            out.append([(tuple(int(i) for i in predictor.entries[j].program), float(row[j])) for j in picks])
        return out
    if hasattr(predictor, "predict"):
        preds = predictor.predict(list(questions), k=k)
        out = []
        for row in preds:
            seen, cands = set(), []
            for p in row:
                prog = tuple(int(i) for i in p.program)
                if prog not in seen:
                    seen.add(prog)
                    cands.append((prog, float(getattr(p, "score", 0.0))))
            out.append(cands[:k])
        return out
    raise UserError(f"{type(predictor).__name__} is not a predictor: it needs predict_proba/select/entries "
                     "(a scorer) or predict (the segment predictor)")


def _gate_candidates(cands: list[tuple[tuple[int, ...], float]], k: int, num_layers: int
                     ) -> list[tuple[tuple[int, ...], float]]:
    """The full program first, then the ``k - 1`` best others (in the predictor's order)."""
    base = tuple(full(num_layers))
    mine = dict(cands)
    score = mine.get(base, max((s for _, s in cands), default=0.0))
    return [(base, score)] + [c for c in cands if c[0] != base][: k - 1]


# ----------------------------------------------------------------------------- selection files


def save_selection(directory: str | Path, choice: dict) -> Path:
    """Write a :func:`choose_rule` result to ``directory/selection.json`` (beside a checkpoint)."""
    if choice.get("rule") not in RULES:
        raise UserError(f"selection rule must be one of {RULES}, got {choice.get('rule')!r}")
    path = Path(directory) / SELECTION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(choice, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def load_selection(directory: str | Path) -> dict:
    """The rule stored by :func:`save_selection`; ``FileNotFoundError`` when there is none."""
    path = Path(directory)
    path = path if path.name == SELECTION_FILE else path / SELECTION_FILE
    if not path.is_file():
        raise UserFileNotFoundError(f"no {SELECTION_FILE} in {path.parent}: choose a rule on validation data "
                                f"(polar.evaluation.choose_rule + save_selection) or pass select='top1'/'vote'/'gate'")
    choice = json.loads(path.read_text(encoding="utf-8"))
    if choice.get("rule") not in RULES:
        raise UserError(f"{path}: rule {choice.get('rule')!r} is not one of {RULES}")
    return choice


def _resolve_selection(predictor, selection) -> dict:
    if isinstance(selection, dict):
        return selection
    if selection is not None:
        return load_selection(selection)
    stored = getattr(predictor, "selection", None)
    if not isinstance(stored, dict):
        stored = (getattr(predictor, "metadata", None) or {}).get("selection")
    if isinstance(stored, dict):
        return stored
    for attr in ("directory", "checkpoint_dir", "path"):
        folder = getattr(predictor, attr, None)
        if folder is not None and (Path(folder) / SELECTION_FILE).is_file():
            return load_selection(folder)
    raise UserError("select='auto' needs a chosen rule: pass selection=DICT or a checkpoint folder with "
                     f"{SELECTION_FILE}, or a predictor with a .selection dict")


# ----------------------------------------------------------------------------- answer rules


def gate_pick(confidence: float | None, full_answer: str | None, others: Sequence[tuple[str | None, float]],
              threshold: float) -> tuple[int | None, bool]:
    """The gate's choice: ``(index, fell_back)``, index 0 the full program and ``1 + i`` the
    ``i``-th of ``others`` (``(answer, score)`` pairs); the full program is kept when it has an
    answer and ``confidence >= threshold`` (a missing or NaN confidence falls back); else the
    best-scored other with an answer (earliest on ties), else the full program's answer if any."""
    conf = -math.inf if confidence is None or (isinstance(confidence, float) and math.isnan(confidence)) else confidence
    if full_answer is not None and conf >= threshold:
        return 0, False
    best = None
    for i, (ans, score) in enumerate(others):
        if ans is not None and (best is None or score > others[best][1]):
            best = i
    if best is not None:
        return 1 + best, True
    return (0 if full_answer is not None else None), True


def _vote_pick(answers: Sequence[str | None], scores: Sequence[float]) -> int | None:
    winner = majority_answer(list(answers), list(scores))
    if winner is None:
        return None
    tied = [i for i, a in enumerate(answers) if a == winner]
    return max(tied, key=lambda i: (scores[i], -i))


def solve(model, tokenizer, questions: Sequence[str | Problem], predictor, k: int = 5, select: str = "auto",
          prompt_style: str = DEFAULT_PROMPT_STYLE, *, threshold: float | None = None,
          selection: dict | str | Path | None = None, llm_features=None,
          max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, early_answer: bool = True,
          prefix_cache=None) -> list[Solution]:
    """One :class:`Solution` per question (module docstring for the rules).

    ``questions``: strings or :class:`polar.Problem` (multiple-choice problems answer with a
    letter). ``predictor``: a scorer or the segment predictor. ``select``: ``top1``, ``vote``,
    ``gate`` or ``auto``; ``threshold``: the gate's threshold for ``select="gate"`` (default: the
    stored one from ``selection``, else 0.0 would be arbitrary, so it is required); ``selection``:
    a :func:`choose_rule` dict or a folder holding ``selection.json`` (for ``auto``; else the
    predictor's ``.selection``, ``.metadata["selection"]`` or its checkpoint folder).
    ``llm_features``: passed to the scorer's ``predict_proba`` (default: computed by the scorer's
    ``compute_llm_features`` on the prompts when its config uses LLM features). Candidates of all questions run in one :func:`polar.generate` call
    (``gate``: one for the full programs, one for the fallbacks).

    Raises :class:`polar.UserError` (a ``ValueError``) for ``k < 1``, an unknown rule, a gate
    without threshold, an empty question, or a predictor of neither kind."""
    check_int(k, "k")
    if select not in SELECTS:
        raise UserError(f"unknown select rule {select!r}; expected one of {SELECTS}")
    problems = [q if isinstance(q, Problem) else Problem(id=f"q{i}", question=q, answer="", source="solve")
                for i, q in enumerate(questions)]
    if isinstance(questions, str) or any(not p.question or not p.question.strip() for p in problems):
        raise UserError("questions must be a list of non-empty questions")
    rule = select
    if select == "auto":
        choice = _resolve_selection(predictor, selection)
        rule, threshold = choice["rule"], choice.get("threshold")
    elif select == "gate" and threshold is None:
        if selection is not None or getattr(predictor, "selection", None) is not None:
            threshold = _resolve_selection(predictor, selection).get("threshold")
    if rule == "gate" and threshold is None:
        raise UserError("select='gate' needs a threshold (threshold=..., or a selection chosen on validation)")
    if not problems:
        return []
    D = model.config.num_hidden_layers
    prompts = [build_prompt(p, prompt_style, tokenizer) for p in problems]
    if llm_features is None and is_scorer(predictor) and getattr(getattr(predictor, "config", None), "uses_llm", False):
        llm_features = predictor.compute_llm_features(model, tokenizer, prompts)  # the full program's prefill
    ranked = ranked_candidates(predictor, [p.question for p in problems], k, D, llm_features)
    if rule == "gate":
        ranked = [_gate_candidates(c, k, D) for c in ranked]
    cands = [[SolveCandidate(prog, score) for prog, score in row] for row in ranked]
    if any(not row for row in cands):
        raise UserError("the predictor gave no candidate for some question")
    runner = _Runner(model, tokenizer, problems, prompts, prompt_style, max_new_tokens, early_answer, prefix_cache)

    if rule == "top1":
        runner.run([(i, 0) for i in range(len(problems))], cands)
    elif rule == "vote":
        runner.run([(i, j) for i, row in enumerate(cands) for j in range(len(row))], cands)
    else:
        runner.run([(i, 0) for i in range(len(problems))], cands)
        low = [i for i, row in enumerate(cands)
               if gate_pick(row[0].logprob_first, row[0].answer, [], threshold)[1]]
        runner.run([(i, j) for i in low for j in range(1, len(cands[i]))], cands)

    out = []
    for p, row in zip(problems, cands):
        fell_back, confidence = False, None
        if rule == "top1":
            chosen = 0 if row[0].answer is not None else None
        elif rule == "vote":
            chosen = _vote_pick([c.answer for c in row], [c.score for c in row])
        else:
            confidence = row[0].logprob_first
            chosen, fell_back = gate_pick(confidence, row[0].answer,
                                          [(c.answer, c.score) for c in row[1:]], threshold)
        pick = row[chosen] if chosen is not None else row[0]
        out.append(Solution(p.question, pick.answer if chosen is not None else None, pick.text, row,
                            sum(len(c.program) for c in row if c.ran), rule, chosen,
                            threshold if rule == "gate" else None, confidence, fell_back))
    return out


class _Runner:
    """Runs ``(question, candidate)`` cells in one :func:`polar.generate` call per :meth:`run`."""

    def __init__(self, model, tokenizer, problems, prompts, style, max_new_tokens, early_answer, prefix_cache):
        self.model, self.tokenizer, self.problems, self.prompts = model, tokenizer, problems, prompts
        self.style, self.max_new_tokens, self.early_answer = style, max_new_tokens, early_answer
        self.prefix_cache = prefix_cache

    def run(self, cells: list[tuple[int, int]], cands: list[list[SolveCandidate]]) -> None:
        if not cells:
            return
        rules = [answer_rule(self.style, self.problems[i]) for i, _ in cells]
        result = generate(self.model, self.tokenizer, [self.prompts[i] for i, _ in cells],
                          [list(cands[i][j].program) for i, j in cells], self.max_new_tokens,
                          stop_strings=stop_strings(self.style),
                          stop_fn=(lambda r, text: rules[r](text)) if self.early_answer else None,
                          prefix_cache=self.prefix_cache)
        for r, (i, j) in enumerate(cells):
            c = cands[i][j]
            c.text = result.texts[r]
            c.answer = candidate_answer(c.text, self.problems[i])
            c.logprob_first = answer_logprobs(self.tokenizer, result.tokens[r], result.token_logprobs[r])[0]
            c.ran = True


# ----------------------------------------------------------------------------- choosing the rule


def full_column(entries: Sequence, num_layers: int | None = None) -> int:
    """The column of the full program (greedy) in a library: ``(0, .., D-1)`` for ``num_layers``
    ``D``, or (``D`` unknown) the longest entry of the form ``(0, 1, .., n-1)`` (a skip of the last
    layers is shorter; a repeat is never of that form). ``ValueError`` when there is none."""
    best = None
    for j, e in enumerate(entries):
        prog = tuple(e.program)
        if getattr(e, "temperature", None) is None and prog == tuple(range(len(prog))) and \
                (num_layers is None or len(prog) == num_layers) and (best is None or len(prog) > len(entries[best].program)):
            best = j
    if best is None:
        raise UserError("the library has no full program: the gate needs it")
    return best


def _plain_select(row: np.ndarray, k: int) -> list[int]:
    return [int(j) for j in np.argsort(-row, kind="stable")[:k]]


def rule_answers(matrix, proba: np.ndarray, k: int, select: Callable[[np.ndarray, int], list[int]] | None = None,
                 columns: Sequence[int] | None = None, orders: Sequence[Sequence[int]] | None = None) -> dict:
    """What each rule would answer on a sweep matrix, without running anything.

    ``matrix``: a :class:`polar.search.SweepMatrix`; ``proba`` ``[P, L']``: the predictor's
    probabilities over ``columns`` of the matrix (default: all, ``L' = L``); ``select``: the
    predictor's ``(proba_row, k) -> indices into proba_row`` (default: the ``k`` highest);
    ``orders``: instead of ``select``, each row's candidates (indices into its ``proba`` row, best
    first; negative entries are ignored).
    Returns ``{"top1": correct [P] bool, "vote": [P] bool, "gate_conf": [P] float (full's
    first-token log-probability, -inf for none), "gate_keep": [P] bool (full correct),
    "gate_fallback": [P] bool (the best-scored other's answer correct), "full_has_answer": [P],
    "layers_top1"/"layers_vote"/"layers_full"/"layers_others": [P] int}`` from which
    :func:`gate_correct` gives the gate's grades at any threshold."""
    select = select or _plain_select
    columns = list(range(len(matrix.entries))) if columns is None else list(columns)
    proba = np.asarray(proba, dtype=float)
    if proba.shape != (len(matrix.records), len(columns)):
        raise ValueError(f"proba has shape {proba.shape}, expected {(len(matrix.records), len(columns))}")
    fcol = full_column(matrix.entries)
    P = len(matrix.records)
    out = {name: np.zeros(P, dtype=bool) for name in ("top1", "vote", "gate_keep", "gate_fallback", "full_has_answer")}
    out["gate_conf"] = np.full(P, -np.inf)
    for name in ("layers_top1", "layers_vote", "layers_full", "layers_others"):
        out[name] = np.zeros(P, dtype=int)
    for i, rec in enumerate(matrix.records):
        problem = _problem_of(rec)
        picks = [int(j) for j in orders[i] if j >= 0][:k] if orders is not None else list(select(proba[i], k))[:k]
        cols = [columns[j] for j in picks]
        answers = [matrix.answers[i][c] for c in cols]
        scores = [float(proba[i][j]) for j in picks]
        out["top1"][i] = bool(matrix.correct[i, cols[0]])
        out["layers_top1"][i] = len(matrix.entries[cols[0]].program)
        v = _vote_pick(answers, scores)
        out["vote"][i] = v is not None and answer_correct(answers[v], problem)
        out["layers_vote"][i] = sum(len(matrix.entries[c].program) for c in cols)
        # gate: the full program, then the k - 1 best others in the predictor's order
        others = [(c, s) for c, s in zip(cols, scores) if c != fcol][: k - 1]
        full_answer = matrix.answers[i][fcol]
        lp = matrix.logprob_first[i, fcol]
        out["gate_conf"][i] = -np.inf if np.isnan(lp) else lp
        out["full_has_answer"][i] = full_answer is not None
        out["gate_keep"][i] = bool(matrix.correct[i, fcol])
        pick, _ = gate_pick(None, None, [(matrix.answers[i][c], s) for c, s in others], 0.0)
        if pick is not None:
            out["gate_fallback"][i] = answer_correct(matrix.answers[i][others[pick - 1][0]], problem)
        else:  # no other answers: the gate falls back to the full program's answer
            out["gate_fallback"][i] = out["gate_keep"][i]
        out["layers_full"][i] = len(matrix.entries[fcol].program)
        out["layers_others"][i] = sum(len(matrix.entries[c].program) for c, _ in others)
    return out


def gate_correct(ra: dict, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """``(correct [P], fell_back [P])`` of the gate at ``threshold`` from :func:`rule_answers`."""
    fell_back = ~ra["full_has_answer"] | (ra["gate_conf"] < threshold)
    return np.where(fell_back, ra["gate_fallback"], ra["gate_keep"]), fell_back


def choose_rule(val_matrix, proba_val: np.ndarray, k: int, select: Callable[[np.ndarray, int], list[int]] | None = None,
                columns: Sequence[int] | None = None, rules: Sequence[str] = RULES,
                orders: Sequence[Sequence[int]] | None = None, max_layers: float | None = None) -> dict:
    """The rule (and, for the gate, the threshold) with the highest accuracy on validation data,
    among those whose mean executed layers per question stay within ``max_layers`` (default: ``k``
    full programs, the cost of running ``k`` base candidates; the cheapest rule when none does).

    ``val_matrix``: the validation split's :class:`polar.search.SweepMatrix`; ``proba_val``
    ``[P, L']`` the predictor's probabilities on it (over ``columns``; default all entries);
    ``select``: the predictor's top-``k`` rule (e.g. ``Scorer.select``), or ``orders`` its
    precomputed candidates per row (as in :func:`rule_answers`). Gate thresholds tried:
    ``-inf`` (never fall back), every distinct confidence of the full program on the split, and
    ``+inf`` (always fall back); fallback when ``confidence < threshold``. Ties: the cheaper choice
    (fewer mean executed layers), then the order ``top1, gate, vote``, then the lower threshold.

    Returns ``{"rule", "threshold" (None unless gate), "k", "val_accuracy", "val_layers",
    "val_problems", "candidates": {rule: {"accuracy", "layers", "threshold"}}}`` (JSON-ready; the
    infinite thresholds are written as ``-1e30`` / ``1e30``)."""
    check_int(k, "k")
    unknown = [r for r in rules if r not in RULES]
    if unknown or not rules:
        raise UserError(f"rules must be among {RULES}, got {list(rules)}")
    ra = rule_answers(val_matrix, proba_val, k, select, columns, orders)
    P = len(val_matrix.records)
    budget = float(k * len(val_matrix.entries[full_column(val_matrix.entries)].program)) if max_layers is None \
        else float(max_layers)
    found: dict[str, dict] = {}
    if "top1" in rules:
        found["top1"] = {"accuracy": float(ra["top1"].mean()), "layers": float(ra["layers_top1"].mean()), "threshold": None}
    if "vote" in rules:
        found["vote"] = {"accuracy": float(ra["vote"].mean()), "layers": float(ra["layers_vote"].mean()), "threshold": None}
    if "gate" in rules:
        best = None
        confs = ra["gate_conf"][np.isfinite(ra["gate_conf"])]
        for t in [-math.inf] + sorted(set(float(c) for c in confs)) + [math.inf]:
            correct, fb = gate_correct(ra, t)
            layers = float((ra["layers_full"] + np.where(fb, ra["layers_others"], 0)).mean())
            cand = (layers <= budget, float(correct.mean()), -layers, -t)
            if best is None or cand > best[0]:
                best = (cand, t, layers)
        found["gate"] = {"accuracy": best[0][1], "layers": best[2], "threshold": _finite(best[1])}
    order = {"top1": 0, "gate": 1, "vote": 2}
    rule = max(found, key=lambda r: (found[r]["layers"] <= budget, found[r]["accuracy"] if found[r]["layers"] <= budget
                                     else -found[r]["layers"], -found[r]["layers"], -order[r]))
    return {"rule": rule, "threshold": found[rule]["threshold"], "k": k, "val_accuracy": found[rule]["accuracy"],
            "val_layers": found[rule]["layers"], "val_problems": P, "max_layers": budget, "candidates": found}


def _finite(t: float) -> float:
    return max(-1e30, min(1e30, t))


def _problem_of(rec: dict) -> Problem:
    return Problem(id=str(rec.get("id")), question=rec.get("question", ""), answer=str(rec.get("gt_ans", "")),
                   source=rec.get("source", ""), level=rec.get("level"), choices=rec.get("choices"))


__all__ = ["RULES", "SELECTS", "SELECTION_FILE", "Solution", "SolveCandidate", "choose_rule", "full_column",
           "gate_correct", "gate_pick", "load_selection", "ranked_candidates", "rule_answers", "save_selection",
           "solve"]
