"""CLI ``--data`` specs (one parser): ``PATH``, ``FORMAT:PATH`` or ``synthetic:LEVEL:N[:SPLIT[:SEED]]``."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .formats import FORMAT_ALIASES, FORMATS, LoadReport, load
from .problem import Problem
from .levels import synthetic


@dataclass(frozen=True)
class DataSpec:
    """A parsed ``--data`` spec: a file (``path``, ``format`` or ``None`` to detect) or synthetic
    problems (``level``, ``n``, ``split``, ``seed``)."""

    text: str
    path: str | None = None
    format: str | None = None
    level: int | None = None
    n: int | None = None
    split: str = "test"
    seed: int = 0

    @property
    def is_synthetic(self) -> bool:
        return self.level is not None


def parse_spec(spec: str) -> DataSpec:
    """Parse a ``--data`` argument; ``ValueError`` with a one-line reason for a malformed one.

    - ``PATH``: a data file, format detected;
    - ``FORMAT:PATH``: a data file of a named format (``gsm8k:/data/test.jsonl``); a path that
      exists as written wins over a ``FORMAT:`` reading;
    - ``synthetic:LEVEL:N`` (test split, seed 0), or ``synthetic:LEVEL:N:SPLIT[:SEED]``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("empty data spec; expected PATH, FORMAT:PATH or synthetic:LEVEL:N[:SPLIT[:SEED]]")
    if spec.startswith("synthetic:"):
        parts = spec.split(":")
        if len(parts) not in (3, 4, 5):
            raise ValueError(f"bad synthetic spec {spec!r}; expected synthetic:LEVEL:N[:SPLIT[:SEED]]")
        try:
            level, n = int(parts[1]), int(parts[2])
            seed = int(parts[4]) if len(parts) == 5 else 0
        except ValueError as err:
            raise ValueError(f"bad synthetic spec {spec!r}; LEVEL, N and SEED are integers") from err
        split = parts[3] if len(parts) >= 4 else "test"
        return DataSpec(spec, level=level, n=n, split=split, seed=seed)
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
        problems: list[Problem] = synthetic(ds.level, ds.n, split=ds.split, seed=ds.seed)
        return (problems, None) if report else problems
    return load(ds.path, format=ds.format, report=report)


__all__ = ["DataSpec", "LoadReport", "parse_spec", "resolve"]
