"""``polar ask``: predict programs for one question, run them, and vote.

Every predicted program is run (one batched ``generate`` call), its answer extracted; the
majority answer (ties to the better-scored program) is the deployable answer.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..tasks import Problem, build_prompt, extract_answer, stop_strings
from .accuracy import DEFAULT_MAX_NEW_TOKENS, generate_texts
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

    ``ValueError`` for an empty question or ``k < 1``."""
    if not question or not question.strip():
        raise ValueError("the question is empty")
    if k < 1:
        raise ValueError(f"--k must be >= 1, got {k}")
    preds = predictor.predict([question], k=k)[0]
    prompt = build_prompt(Problem(id="ask", question=question, answer="", source="ask"), prompt_style, tokenizer)
    texts = generate_texts(model, tokenizer, [prompt] * len(preds), max_new_tokens or DEFAULT_MAX_NEW_TOKENS[prompt_style],
                           stop_strings(prompt_style), programs=[p.program for p in preds])
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
