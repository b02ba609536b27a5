"""Metrics over a problem's graded candidates: pass@k (oracle: needs the gold answer) and maj@k
(majority vote of the candidates' answers: deployable), plus answer normalisation for voting."""
from __future__ import annotations

from collections.abc import Sequence

from ..errors import UserError
from ..tasks import Problem
from ..tasks.answers import parse_number
from ..tasks.grading import answers_equal, extract_answer, extract_choice


def candidate_answer(text: str | None, problem: Problem) -> str | None:
    """The answer a candidate's output gives: an option letter for multiple choice, else the
    extracted answer text (``None`` when there is none)."""
    if problem.choices:
        return extract_choice(text, len(problem.choices))
    return extract_answer(text)


def answer_correct(answer: str | None, problem: Problem) -> bool:
    """Whether an extracted answer equals the gold answer (as :func:`polar.tasks.is_correct` grades)."""
    if answer is None:
        return False
    if problem.choices:
        return answer == problem.answer.strip().upper()
    return answers_equal(answer, problem.answer)


def vote_key(answer: str) -> str:
    """Answers that are the same number vote together (``"1,000"`` and ``"1000.0"``)."""
    value = parse_number(answer)
    return f"#{value}" if value is not None else answer.strip()


def majority_answer(answers: Sequence[str | None], scores: Sequence[float] | None = None) -> str | None:
    """The most frequent non-empty answer; a tie goes to the answer of the best-scored candidate
    among the tied ones (then to the earliest). ``None`` when no candidate has an answer.

    >>> majority_answer(["4", "5", "5", None]), majority_answer(["4", "5"], [0.1, 0.9])
    ('5', '5')
    """
    scores = list(scores) if scores is not None else [0.0] * len(answers)
    if len(scores) != len(answers):
        raise UserError(f"{len(answers)} answers but {len(scores)} scores")
    groups: dict[str, list[int]] = {}
    for i, a in enumerate(answers):
        if a is not None and a.strip():
            groups.setdefault(vote_key(a), []).append(i)
    if not groups:
        return None
    best = max(groups.values(), key=lambda idx: (len(idx), max(scores[i] for i in idx), -idx[0]))
    return answers[max(best, key=lambda i: (scores[i], -i))]


def pass_at(correct: Sequence[bool], k: int) -> bool:
    """Some of the first ``k`` candidates is correct (candidates in the method's rank order)."""
    if k < 1:
        raise UserError(f"k must be >= 1, got {k}")
    return any(correct[:k])


def maj_at(answers: Sequence[str | None], scores: Sequence[float], k: int, problem: Problem) -> bool:
    """The majority answer of the first ``k`` candidates is correct."""
    return answer_correct(majority_answer(list(answers[:k]), list(scores[:k])), problem)
