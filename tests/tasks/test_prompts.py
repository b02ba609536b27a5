import pytest

from polar.tasks.problem import Problem
from polar.tasks.grading import extract_answer, is_correct
from polar.tasks.prompts import ANSWER_PREFIX, FEWSHOT_EXAMPLES, PROMPT_STYLES, build_prompt, stop_strings

P = Problem(id="p", question="What is 3 + 4?", answer="7", source="test")
MC = Problem(id="m", question="Pick one.", answer="B", source="test", choices=["red", "blue", "green"])


class ChatTokenizer:
    chat_template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is True
        body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return body + "<|im_start|>assistant\n"


class PlainTokenizer:
    chat_template = None


def test_styles():
    assert set(PROMPT_STYLES) == {"fewshot", "direct"}
    with pytest.raises(ValueError, match="unknown prompt style"):
        build_prompt(P, "cot")
    with pytest.raises(ValueError):
        stop_strings("cot")


def test_fewshot_prompt_shape():
    text = build_prompt(P, "fewshot")
    assert text.endswith(f"Q: {P.question}\n{ANSWER_PREFIX}")
    for question, answer in FEWSHOT_EXAMPLES:
        assert f"Q: {question}\n{ANSWER_PREFIX} {answer}\n\n" in text
    # the shots themselves grade correctly with the grader's rules
    for question, answer in FEWSHOT_EXAMPLES:
        assert extract_answer(f" {answer}\n\nQ: next") == answer
    assert build_prompt(P, "fewshot", tokenizer=ChatTokenizer()) == text  # no chat template for few-shot


def test_direct_prompt_uses_chat_template():
    chat = build_prompt(P, "direct", tokenizer=ChatTokenizer())
    assert chat.startswith("<|im_start|>user\nWhat is 3 + 4?\n") and chat.endswith("<|im_start|>assistant\n")
    assert "\\boxed{ANSWER}" in chat
    plain = build_prompt(P, "direct", tokenizer=PlainTokenizer())
    assert plain == build_prompt(P, "direct") and "<|im_start|>" not in plain and "\\boxed" in plain


def test_multiple_choice_prompts():
    for style in PROMPT_STYLES:
        text = build_prompt(MC, style)
        assert "A. red\nB. blue\nC. green" in text
    assert "\\boxed{LETTER}" in build_prompt(MC, "direct")
    assert is_correct(" B", MC) and is_correct("\\boxed{B}", MC)
