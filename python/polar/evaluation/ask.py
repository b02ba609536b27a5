"""``polar ask``: predict programs for one question, run them, and answer with :func:`polar.solve`.

The predictor (the shipped segment predictor or a scorer checkpoint) proposes ``k`` candidate
programs; :func:`polar.evaluation.solve.solve` runs the ones its rule needs and picks one answer.
``select="auto"`` (the default) uses the rule stored with the checkpoint (``selection.json``,
chosen on validation data); a checkpoint without one answers with ``top1`` (the rule ``polar
eval``'s ``answer@k`` uses then too), and the result says so.
"""
from __future__ import annotations

from dataclasses import dataclass

from .._checks import check_int
from ..errors import UserError
from ..programs import parse, program_text
from .solve import SELECTS, Solution, _resolve_selection, solve

#: The rule ``select="auto"`` falls back to when the predictor has no stored selection.
AUTO_FALLBACK = {"rule": "top1", "threshold": None}


@dataclass
class AskAnswer:
    """One candidate program: ``program`` as a layer list; ``output``/``answer`` ``None`` when the
    rule did not run it."""

    compact: str
    program: list[int]
    score: float
    output: str | None
    answer: str | None
    ran: bool = True
    chosen: bool = False


@dataclass
class AskResult:
    question: str
    answers: list[AskAnswer]
    answer: str | None          # the deployable answer (the rule's choice)
    rule: str                   # the rule applied (auto resolved)
    layers_executed: int        # summed over the programs the rule ran
    num_layers: int
    select: str = "auto"        # what was asked for
    threshold: float | None = None
    confidence: float | None = None
    rule_source: str = ""       # where the rule came from ("selection.json", "default: top1", "--select")

    @property
    def majority(self) -> str | None:  # the old name of the deployable answer
        return self.answer


def resolve_rule(predictor, select: str = "auto") -> tuple[dict | None, str]:
    """``(selection dict or None, where it came from)`` for :func:`solve`: ``auto`` reads the
    predictor's stored rule, else falls back to :data:`AUTO_FALLBACK`; an explicit rule (and the
    gate's stored threshold, when there is one) is passed through."""
    if select not in SELECTS:
        raise UserError(f"unknown select rule {select!r}; expected one of {SELECTS}")
    try:
        stored = _resolve_selection(predictor, None)
    except (UserError, FileNotFoundError):
        stored = None
    if select == "auto":
        return (stored, "selection.json") if stored is not None else (dict(AUTO_FALLBACK), "default: top1")
    if select == "gate" and (stored is None or stored.get("threshold") is None):
        raise UserError("--select gate needs a threshold chosen on validation data (the checkpoint's "
                        "selection.json); this predictor has none")
    return stored, "--select"


def ask(question: str, model, tokenizer, predictor, k: int = 5, prompt_style: str = "fewshot",
        max_new_tokens: int | None = None, select: str = "auto") -> AskResult:
    """Predict ``k`` programs for ``question`` and answer by :func:`polar.solve` with rule ``select``.

    :class:`polar.UserError` for an empty question, ``k < 1`` or an unknown rule."""
    if not question or not question.strip():
        raise UserError("the question is empty")
    check_int(k, "--k")
    selection, source = resolve_rule(predictor, select)
    rule = "auto" if select == "auto" else select
    kwargs = {} if max_new_tokens is None else {"max_new_tokens": max_new_tokens}
    sol: Solution = solve(model, tokenizer, [question], predictor, k=k, select=rule, prompt_style=prompt_style,
                          selection=selection, **kwargs)[0]
    D = model.config.num_hidden_layers
    answers = []
    for i, c in enumerate(sol.candidates):
        answers.append(AskAnswer(_compact(c.program, D), list(c.program), float(c.score),
                                 c.text.strip() if c.text is not None else None, c.answer, c.ran, i == sol.chosen))
    return AskResult(question, answers, sol.answer, sol.rule, sol.executed_layers, D, select, sol.threshold,
                     sol.confidence, source)


def _compact(program, num_layers: int) -> str:
    try:
        return repr(parse(list(program), num_layers))
    except ValueError:  # not in the compact space (e.g. a repeat of more runs)
        return program_text(program)


def format_ask(result: AskResult) -> str:
    """A readable report of :func:`ask`'s result: the candidates, the rule and the chosen answer."""
    D = result.num_layers
    lines = [f"Q: {result.question}"]
    for i, a in enumerate(result.answers, 1):
        got = f"answer {a.answer!r}" if a.ran else "not run"
        mark = "  <- chosen" if a.chosen else ""
        lines.append(f"{i}. score {a.score:.2f}, {len(a.program)} layers ({len(a.program) - D:+d} vs full): {got}{mark}")
        lines.append(f"   segments: {a.compact}")
        lines.append(f"   layers:   {a.program}")
    rule = result.rule + (f" (threshold {result.threshold:.3g}, full-program confidence "
                          f"{result.confidence if result.confidence is None else round(result.confidence, 3)})"
                          if result.rule == "gate" else "")
    ran = sum(a.ran for a in result.answers)
    lines.append(f"rule: {rule}   [select {result.select}; {result.rule_source}]")
    lines.append(f"answer: {result.answer!r}   layers executed per token: {result.layers_executed} over {ran} "
                 f"program{'s' if ran != 1 else ''} run (full = {D})")
    return "\n".join(lines)
