"""Grading of polar's lm-eval tasks (loaded by lm-eval from the YAMLs: ``!function utils.NAME``).

``process_results`` grades a generated answer exactly as ``polar eval`` does:
:func:`polar.extract_answer` reads the answer out of the continuation and :func:`polar.is_correct`
compares it with the gold answer (exact numeric comparison, then math-verify).
"""
from polar.tasks import Problem, is_correct


def problem_of(doc: dict) -> Problem:
    """The :class:`polar.Problem` a task document was exported from."""
    return Problem(id=str(doc["id"]), question=doc["question"], answer=str(doc["answer"]), source=doc["source"],
                   level=doc.get("level"))


def process_results(doc: dict, results: list[str]) -> dict:
    """``exact_match``: 1.0 when the continuation's answer is correct (:func:`polar.is_correct`)."""
    return {"exact_match": float(is_correct(results[0], problem_of(doc)))}
