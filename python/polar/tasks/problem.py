"""Task records: :class:`Problem` and :class:`Supervision` (imports nothing else of polar)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Problem:
    """One task instance. ``answer`` is the gold answer as text (a number, LaTeX, or for
    multiple-choice problems the option letter); ``choices`` holds the options' texts."""

    id: str
    question: str
    answer: str
    source: str
    level: int | None = None
    choices: list[str] | None = None


@dataclass
class Supervision:
    """A PoLar supervision sample: the problem and the programs found valid / invalid for it."""

    problem: Problem
    valid_programs: list[list[int]]
    invalid_programs: list[list[int]] = field(default_factory=list)
    initial_score: float | None = None
