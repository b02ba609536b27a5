"""``polar ask``: predict programs for one question, run them, and vote.

Every predicted program is run (one batched ``generate`` call), its answer extracted; the
majority answer (ties to the better-scored program) is the deployable answer.
"""
from __future__ import annotations

from dataclasses import dataclass

from .._checks import check_int
from ..errors import UserError
from ..tasks import Problem, build_prompt, extract_answer, generation_setting
from .accuracy import generate_texts
from .metrics import majority_answer


@dataclass
class AskAnswer:
    """One predicted program's run: ``compact`` as segment ops, ``program`` as a layer list."""

    compact: str
    program: list[int]
    score: float
    output: str
    answer: str | None


@dataclass
class AskResult:
    question: str
    answers: list[AskAnswer]
    majority: str | None
    layers_executed: int        # summed over the k programs (prompt + answer tokens each)
    num_layers: int


def ask(question: str, model, tokenizer, predictor, k: int = 5, prompt_style: str = "fewshot",
        max_new_tokens: int | None = None) -> AskResult:
    """Predict ``k`` programs for ``question``, run each (one batched call), return answers and the vote.

    Generation follows the prompt style's setting (:func:`polar.tasks.generation_setting`).
    :class:`polar.UserError` for an empty question or ``k < 1``."""
    if not question or not question.strip():
        raise UserError("the question is empty")
    check_int(k, "--k")
    setting = generation_setting(prompt_style)
    preds = predictor.predict([question], k=k)[0]
    problem = Problem(id="ask", question=question, answer="", source="ask")
    prompt = build_prompt(problem, prompt_style, tokenizer)
    texts = generate_texts(model, tokenizer, [prompt] * len(preds), max_new_tokens or setting.max_new_tokens,
                           list(setting.stop_strings), programs=[p.program for p in preds],
                           problems=[problem] * len(preds) if setting.early_answer else None, prompt_style=prompt_style)
    answers = [AskAnswer(repr(p.compact), list(p.program), float(p.score), text.strip(), extract_answer(text))
               for p, text in zip(preds, texts)]
    return AskResult(question, answers, majority_answer([a.answer for a in answers], [a.score for a in answers]),
                     sum(len(a.program) for a in answers), model.config.num_hidden_layers)


def format_ask(result: AskResult) -> str:
    """A readable report of :func:`ask`'s result."""
    D = result.num_layers
    lines = [f"Q: {result.question}"]
    for i, a in enumerate(result.answers, 1):
        lines.append(f"{i}. score {a.score:.2f}, {len(a.program)} layers ({len(a.program) - D:+d} vs full): "
                     f"answer {a.answer!r}")
        lines.append(f"   segments: {a.compact}")
        lines.append(f"   layers:   {a.program}")
    lines.append(f"majority answer: {result.majority!r}   layers executed per token: "
                 f"{result.layers_executed} over {len(result.answers)} programs "
                 f"(mean {result.layers_executed / max(1, len(result.answers)):.1f}, full = {D})")
    return "\n".join(lines)
