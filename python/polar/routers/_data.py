"""Training examples of the routers and their batches.

- :class:`DrLLMExample`: a prompt's token ids and its label (runs per layer), from search records
  (:func:`drllm_examples`).
- :class:`LMExample`: prompt + gold answer token ids for the LM loss of MindSkip and FlexiDepth
  (:func:`lm_examples`); the prompt is tokenized exactly as :func:`polar.generate` tokenizes text
  (so the gates see at training what they see at inference) and the answer apart from it.
- :func:`collate`: right-padded ``[B, T]`` tensors.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Sequence

import torch

from ..tasks import Problem, build_prompt
from ._drllm import LabelledProblem

#: Target id of a column without LM loss.
IGNORE = -100


@dataclass(frozen=True)
class DrLLMExample:
    """``ids``: the prompt's tokens; ``label``: runs per layer ``[D]`` in ``{0, 1, 2}``."""

    id: str
    ids: tuple[int, ...]
    label: tuple[int, ...]


@dataclass(frozen=True)
class LMExample:
    """``ids``: prompt + answer tokens; the first ``prompt_len`` are the prompt (what a whole-sequence
    gate pools over, as at inference). The LM loss predicts the tokens from ``loss_from`` on
    (default ``prompt_len``: the answer), each from the column before it; ``targets`` (one per
    position, ``-100``: none) replaces that with explicit targets (e.g. a teacher's predictions)."""

    id: str
    ids: tuple[int, ...]
    prompt_len: int
    loss_from: int | None = None
    targets: tuple[int, ...] | None = None

    def target_ids(self) -> list[int]:
        """What column ``t`` predicts, per column (``-100``: no loss there)."""
        if self.targets is not None:
            if len(self.targets) != len(self.ids):
                raise ValueError(f"example {self.id!r}: {len(self.targets)} targets for {len(self.ids)} tokens")
            return list(self.targets)
        start = max(1, self.prompt_len if self.loss_from is None else self.loss_from)
        return [self.ids[t + 1] if t + 1 >= start and t + 1 < len(self.ids) else IGNORE for t in range(len(self.ids))]


def record_problem(rec: dict) -> Problem:
    """The :class:`polar.tasks.Problem` of a search record."""
    return Problem(id=str(rec["id"]), question=rec["question"], answer=str(rec.get("gt_ans", "")),
                   source=rec.get("source") or "", level=rec.get("level"), choices=rec.get("choices"))


def drllm_examples(labelled: Sequence[LabelledProblem], tokenizer, prompt_style: str) -> list[DrLLMExample]:
    """One example per labelled problem: its prompt in ``prompt_style``, tokenized as ``generate`` does."""
    problems = [record_problem(lp.record) for lp in labelled]
    prompts = [build_prompt(p, prompt_style, tokenizer) for p in problems]
    ids = tokenizer(prompts, padding=False)["input_ids"] if prompts else []
    return [DrLLMExample(p.id, tuple(x), lp.label) for p, x, lp in zip(problems, ids, labelled)]


def completion_text(problem: Problem, prompt_style: str) -> str:
    """The gold answer as the model should continue the prompt: ``" 42\\n"`` after the few-shot
    prompt's answer prefix (the shots' format, ``A: 42``), ``\\boxed{42}`` for the direct prompt."""
    if prompt_style == "fewshot":
        return f" {problem.answer}\n"
    return f"\\boxed{{{problem.answer}}}"


def lm_examples(problems: Sequence[Problem], tokenizer, prompt_style: str, max_tokens: int) -> list[LMExample]:
    """Prompt + gold answer examples; longer than ``max_tokens`` -> cut on the left (the shots)."""
    prompts = [build_prompt(p, prompt_style, tokenizer) for p in problems]
    prompt_ids = tokenizer(prompts, padding=False)["input_ids"] if prompts else []
    out = []
    for p, ids in zip(problems, prompt_ids):
        answer = tokenizer(completion_text(p, prompt_style), add_special_tokens=False)["input_ids"]
        ids, n = list(ids) + list(answer), len(ids)
        cut = max(0, len(ids) - max_tokens)
        out.append(LMExample(p.id, tuple(ids[cut:]), max(1, n - cut)))
    return out


def examples_sha256(examples: Sequence) -> str:
    """A hash of the examples' contents (recorded in the checkpoint; part of the resume settings)."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e.id, list(e.ids), list(getattr(e, "label", ())), getattr(e, "prompt_len", 0),
                             e.target_ids() if isinstance(e, LMExample) else []]).encode())
    return h.hexdigest()


def split_ids(ids: Sequence[str], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices ``(train, val)``: the ``int(val_fraction * n)`` examples with the smallest
    ``sha256(f"{seed}:{id}")`` are validation (stable under reordering)."""
    n_val = int(val_fraction * len(ids))
    order = sorted(range(len(ids)), key=lambda i: hashlib.sha256(f"{seed}:{ids[i]}".encode()).hexdigest())
    return sorted(order[n_val:]), sorted(order[:n_val])


@dataclass
class Batch:
    """Right-padded tensors of a batch, each ``[B, T]``: ``ids``, ``mask`` (real tokens), ``prompt``
    (prompt tokens) and ``targets`` (what each column predicts; :data:`IGNORE`: no loss)."""

    ids: torch.Tensor
    mask: torch.Tensor
    prompt: torch.Tensor
    targets: torch.Tensor

    def to(self, device) -> "Batch":
        return Batch(*(t.to(device) for t in (self.ids, self.mask, self.prompt, self.targets)))


def collate(examples: Sequence[DrLLMExample | LMExample], pad_id: int = 0) -> Batch:
    """Right-pad ``examples`` into a :class:`Batch` (a DR.LLM example is all prompt, no targets)."""
    T = max(len(e.ids) for e in examples)
    B = len(examples)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    targets = torch.full((B, T), IGNORE, dtype=torch.long)
    mask, prompt = torch.zeros(B, T, dtype=torch.long), torch.zeros(B, T, dtype=torch.long)
    for r, e in enumerate(examples):
        n = len(e.ids)
        ids[r, :n] = torch.tensor(e.ids, dtype=torch.long)
        mask[r, :n] = 1
        prompt[r, :getattr(e, "prompt_len", n)] = 1
        if isinstance(e, LMExample):
            targets[r, :n] = torch.tensor(e.target_ids(), dtype=torch.long)
    return Batch(ids, mask, prompt, targets)
