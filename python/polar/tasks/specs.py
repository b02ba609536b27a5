"""CLI ``--data`` specs (one parser): ``PATH``, ``FORMAT:PATH``, ``synthetic:LEVEL:N[:SPLIT[:SEED]]``
or ``words:N[:SPLIT[:SEED]]``."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .formats import FORMAT_ALIASES, FORMATS, LoadReport, load
from .problem import Problem
from .levels import synthetic
from .words import word_problems


@dataclass(frozen=True)
class DataSpec:
    """A parsed ``--data`` spec: a file (``path``, ``format`` or ``None`` to detect), synthetic
    arithmetic (``level``, ``n``, ``split``, ``seed``) or word problems (``words``, ``n``, ...)."""

    text: str
    path: str | None = None
    format: str | None = None
    level: int | None = None
    n: int | None = None
    split: str = "test"
    seed: int = 0
    words: bool = False

    @property
    def is_synthetic(self) -> bool:
        return self.level is not None or self.words


def parse_spec(spec: str) -> DataSpec:
    """Parse a ``--data`` argument; ``ValueError`` with a one-line reason for a malformed one.

    - ``PATH``: a data file, format detected;
    - ``FORMAT:PATH``: a data file of a named format (``gsm8k:/data/test.jsonl``); a path that
      exists as written wins over a ``FORMAT:`` reading;
    - ``synthetic:LEVEL:N`` (test split, seed 0), or ``synthetic:LEVEL:N:SPLIT[:SEED]``;
    - ``words:N[:SPLIT[:SEED]]``: templated word problems (:mod:`.words`).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise UserError("empty data spec; expected PATH, FORMAT:PATH or synthetic:LEVEL:N[:SPLIT[:SEED]]")
    if spec.startswith("synthetic:"):
        parts = spec.split(":")
        if len(parts) not in (3, 4, 5):
            raise UserError(f"bad synthetic spec {spec!r}; expected synthetic:LEVEL:N[:SPLIT[:SEED]]")
        try:
            level, n = int(parts[1]), int(parts[2])
            seed = int(parts[4]) if len(parts) == 5 else 0
        except ValueError as err:
            raise UserError(f"bad synthetic spec {spec!r}; LEVEL, N and SEED are integers") from err
        split = parts[3] if len(parts) >= 4 else "test"
        return DataSpec(spec, level=level, n=n, split=split, seed=seed)
    if spec.startswith("words:"):
        parts = spec.split(":")
        if len(parts) not in (2, 3, 4):
            raise UserError(f"bad words spec {spec!r}; expected words:N[:SPLIT[:SEED]]")
        try:
            n, seed = int(parts[1]), int(parts[3]) if len(parts) == 4 else 0
        except ValueError as err:
            raise UserError(f"bad words spec {spec!r}; N and SEED are integers") from err
        return DataSpec(spec, n=n, split=parts[2] if len(parts) >= 3 else "test", seed=seed, words=True)
    head, sep, rest = spec.partition(":")
    if sep and head.strip().lower() in set(FORMATS) | set(FORMAT_ALIASES) and not Path(spec).exists():
        return DataSpec(spec, path=rest, format=head)
    return DataSpec(spec, path=spec)


def resolve(spec: str | DataSpec, report: bool = False):
    """Problems for a ``--data`` spec (see :func:`parse_spec`); with ``report`` also the file's
    :class:`LoadReport` (``None`` for synthetic specs). Errors as :func:`parse_spec`, :func:`load`
    and :func:`synthetic`."""
    ds = parse_spec(spec) if isinstance(spec, str) else spec
    if ds.is_synthetic:
        problems: list[Problem] = (word_problems(ds.n, split=ds.split, seed=ds.seed) if ds.words
                                   else synthetic(ds.level, ds.n, split=ds.split, seed=ds.seed))
        return (problems, None) if report else problems
    return load(ds.path, format=ds.format, report=report)


__all__ = ["DataSpec", "LoadReport", "parse_spec", "resolve"]
