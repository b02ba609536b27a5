"""Programs of layers (docs/architecture.md sections 2-3): the first stage, importing nothing else of polar.

- :mod:`.program`: :class:`Program`, :func:`full`, validation (``ValueError`` naming the row).
- :mod:`.compact`: the compact segment space (boundary mask + one run count per segment), its
  decoder :func:`build`, the canonical parser :func:`parse` and sampling.
- :mod:`.text`: programs typed as text (``full``, ``0-5 5 6-29``, ``0-3:keep 4-5:skip ...``).
"""
from .compact import (DEFAULT_K_MAX, DEFAULT_MAX_RUNS, CompactProgram, NotInSpaceError, Op, build, in_space,
                      parse, random_compact, segments)
from .program import Program, full, validate_program, validate_programs
from .text import parse_program_text, program_text

__all__ = [
    "DEFAULT_K_MAX", "DEFAULT_MAX_RUNS", "CompactProgram", "NotInSpaceError", "Op", "Program", "build", "full",
    "in_space", "parse", "parse_program_text", "program_text", "random_compact", "segments", "validate_program",
    "validate_programs",
]
