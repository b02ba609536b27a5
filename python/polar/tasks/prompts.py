"""Prompts: how a :class:`Problem` becomes the text the model continues.

Two styles (``PROMPT_STYLES``); the style is a parameter recorded with every result:

- ``"fewshot"``: four worked shots in plain text, ``Q: <question>\\nA: <answer>``, ending in the
  answer prefix ``A:`` so the model's continuation starts with its answer. Small models such as
  SmolLM2-135M follow this format; no chat template is applied. The grader reads the first number
  (or option letter) at the start of the continuation.
- ``"direct"``: the paper's direct prompt: the question and an instruction to give only the final
  answer as ``\\boxed{ANSWER}``, wrapped in the tokenizer's chat template (user turn, generation
  prompt) when the tokenizer has one. The grader reads the last ``\\boxed{...}``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError
from .problem import Problem

PROMPT_STYLES: tuple[str, ...] = ("fewshot", "direct")
DEFAULT_PROMPT_STYLE = "fewshot"

#: The text that ends a few-shot prompt; the model's answer follows it.
ANSWER_PREFIX = "A:"
QUESTION_PREFIX = "Q:"

#: Worked shots of the few-shot prompt: (question, answer).
FEWSHOT_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("What is 2 + 3?", "5"),
    ("What is 14 + 7?", "21"),
    ("Tom has 4 apples and buys 6 more. How many apples does he have now?", "10"),
    ("What is 9 + 6?", "15"),
)

DIRECT_INSTRUCTION = "Answer directly with only the final answer, formatted as \\boxed{ANSWER}."
DIRECT_INSTRUCTION_CHOICES = (
    "Answer directly with only the letter of the correct option, formatted as \\boxed{LETTER}."
)

CHOICE_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def format_question(problem: Problem) -> str:
    """The problem's question, followed by its lettered options for a multiple-choice problem."""
    text = problem.question.strip()
    if problem.choices:
        if len(problem.choices) > len(CHOICE_LETTERS):
            raise UserError(f"problem {problem.id}: {len(problem.choices)} choices, at most {len(CHOICE_LETTERS)}")
        options = "\n".join(f"{CHOICE_LETTERS[i]}. {c}" for i, c in enumerate(problem.choices))
        text = f"{text}\nOptions:\n{options}"
    return text


def fewshot_prompt(problem: Problem) -> str:
    """Plain-text four-shot prompt ending in the answer prefix (``...\\nA:``)."""
    shots = "".join(f"{QUESTION_PREFIX} {q}\n{ANSWER_PREFIX} {a}\n\n" for q, a in FEWSHOT_EXAMPLES)
    # Newlines inside a question would look like the end of the shot: keep the question on its lines
    # but never let it end the prompt in anything other than the answer prefix.
    return f"{shots}{QUESTION_PREFIX} {format_question(problem)}\n{ANSWER_PREFIX}"


def direct_prompt(problem: Problem, tokenizer=None) -> str:
    """The direct prompt: question + instruction; chat template applied when the tokenizer has one."""
    instruction = DIRECT_INSTRUCTION_CHOICES if problem.choices else DIRECT_INSTRUCTION
    content = f"{format_question(problem)}\n{instruction}"
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
    return f"{content}\n"


def build_prompt(problem: Problem, style: str = DEFAULT_PROMPT_STYLE, tokenizer=None) -> str:
    """The prompt text for ``problem`` in ``style`` (one of ``PROMPT_STYLES``).

    ``tokenizer`` is used only by ``"direct"`` (its chat template). Raises ``ValueError`` for an
    unknown style.
    """
    if style == "fewshot":
        return fewshot_prompt(problem)
    if style == "direct":
        return direct_prompt(problem, tokenizer)
    _check_style(style)
    raise AssertionError(style)  # pragma: no cover


@dataclass(frozen=True)
class GenerationSetting:
    """How answers are generated for a prompt style, the same in every stage (search, sweep,
    evaluation, ask): at most ``max_new_tokens`` new tokens, stop after one of ``stop_strings``
    and, with ``early_answer``, as soon as the graded answer can no longer change
    (:func:`polar.tasks.answer_rule`). Search and evaluation therefore grade under one rule;
    results files record ``prompt_style``, ``max_new_tokens`` and ``early_answer``."""

    max_new_tokens: int
    stop_strings: tuple[str, ...]
    early_answer: bool = True

    def as_record(self) -> dict:
        """The fields a results file records (the stop strings follow from the prompt style)."""
        return {"max_new_tokens": self.max_new_tokens, "early_answer": self.early_answer}


#: The one generation setting per prompt style (50 tokens: the PoLar reference's search budget;
#: with the early-answer rule few rows reach it).
GENERATION_SETTINGS: dict[str, GenerationSetting] = {
    "fewshot": GenerationSetting(50, ("\n",)),
    "direct": GenerationSetting(50, ()),
}


def _check_style(style: str) -> None:
    if style not in PROMPT_STYLES:
        raise UserError(f"unknown prompt style {style!r}; expected one of {PROMPT_STYLES}")


def generation_setting(style: str) -> GenerationSetting:
    """The :class:`GenerationSetting` of ``style`` (:class:`polar.UserError` for an unknown style)."""
    _check_style(style)
    return GENERATION_SETTINGS[style]


def stop_strings(style: str) -> list[str]:
    """Strings after which generation for ``style`` may stop (the answer is complete)."""
    return list(generation_setting(style).stop_strings)
