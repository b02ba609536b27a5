"""Shared fixtures of the search tests: a tiny random model, word problems it can read, and
evaluators that run that model for real but plant the reward."""
from collections import Counter

import pytest
import torch

from polar.search import GenerateEvaluator
from polar.tasks import Problem
from polar.testing import tiny_model, tiny_tokenizer

torch.set_num_threads(1)

#: Depth of the tiny test model.
TINY_LAYERS = 6


@pytest.fixture(scope="session")
def tiny():
    """``(model, tokenizer)``: a 6-layer random Llama and the word-level tokenizer."""
    return tiny_model("llama", seed=0, num_layers=TINY_LAYERS), tiny_tokenizer()


@pytest.fixture(scope="session")
def word_problems():
    """``make(n)``: ``n`` problems whose questions are words of the tiny tokenizer (so the tiny
    model sees real tokens and its word outputs settle the few-shot answer at once)."""
    def make(n: int, prefix: str = "p") -> list[Problem]:
        return [Problem(f"{prefix}{i}", " ".join(f"w{3 + (i * 7 + j * 13) % 120}" for j in range(5)), "5",
                        "words", level=1 + i % 2) for i in range(n)]
    return make


class CountingEvaluator:
    """Wraps an evaluator; counts every ``(problem id, program)`` it is asked to grade."""

    def __init__(self, inner):
        self.inner = inner
        self.num_layers = inner.num_layers
        self.seen = Counter()
        self.batches: list[int] = []

    def evaluate(self, items):
        self.batches.append(len(items))
        self.seen.update((p.id, tuple(prog)) for p, prog in items)
        return self.inner.evaluate(items)


@pytest.fixture
def planted(tiny):
    """``make(correct)``: a counting evaluator that generates with the tiny model (2 new tokens)
    and grades a program correct iff ``correct(problem, program)``."""
    model, tok = tiny

    def make(correct) -> CountingEvaluator:
        inner = GenerateEvaluator(model, tok, "fewshot", max_new_tokens=2,
                                  grade=lambda problem, program, text: bool(correct(problem, tuple(program))))
        return CountingEvaluator(inner)
    return make
