"""Program libraries for the sweep: a fixed list of entries run on every problem of a data set.

A library spec is a comma-separated list of parts, expanded in order (duplicates dropped, the
first kept):

- ``full``: the full program ``(0, .., D-1)``;
- ``skip:A-B`` / ``skip:A``: every single edit of the paper's space that skips one block of
  ``A..B`` consecutive layers (block size, then start layer);
- ``repeat:A-B`` / ``repeat:A``: every single edit that runs one block of ``A..B`` consecutive
  layers once more (``.., 3, 4, 3, 4, ..``);
- ``search:N``: the ``N`` programs valid on the most problems of the given search results (the
  full program and programs already in the library not counted; ties by program order);
- ``samples:T:N``: ``N`` temperature-``T`` samples of the full program (a sample entry; its
  seed comes from the run seed, the problem id, ``T`` and the sample index);
- ``file:PATH``: the programs of a JSON file (a list of lists of layer indices).

Example::

    >>> lib = build_library("full,skip:1,repeat:1", num_layers=4)
    >>> [e.name for e in lib][:3], lib[1].program
    (['full', 'skip 0', 'skip 1'], (1, 2, 3))
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import UserError, UserFileNotFoundError
from ..programs import full, validate_program

#: The library of ``polar sweep`` when none is given (see ``results/sweep/README.md`` for its size).
DEFAULT_LIBRARY = "full,skip:1-2,repeat:1-2,search:20"

_KINDS = ("full", "skip", "repeat", "search", "samples", "file")


@dataclass(frozen=True)
class LibraryEntry:
    """One column of a sweep: a program, greedy (``temperature None``) or one sample of it."""

    name: str                          # 'full', 'skip 3-4', 'repeat 7', 'search 2', 'T=0.7 #5', 'file 0'
    program: tuple[int, ...]           # layer indices
    temperature: float | None = None   # None: greedy decoding
    sample: int | None = None          # sample index (with temperature)

    @property
    def is_sample(self) -> bool:
        return self.temperature is not None


@dataclass(frozen=True)
class _Part:
    kind: str
    args: tuple


def parse_library(spec: str) -> list[_Part]:
    """The parts of a library spec (syntax only; no model needed); ``ValueError`` naming the part."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserError("empty library spec; e.g. 'full,skip:1-2,repeat:1-2,search:20'")
    parts = []
    for raw in spec.split(","):
        text = raw.strip()
        kind, _, rest = text.partition(":")
        if kind not in _KINDS:
            raise UserError(f"library part {text!r}: unknown kind {kind!r}; expected one of {', '.join(_KINDS)}")
        try:
            parts.append(_Part(kind, _args(kind, rest)))
        except ValueError as err:
            raise UserError(f"library part {text!r}: {err}") from None
    return parts


def _args(kind: str, rest: str) -> tuple:
    if kind == "full":
        if rest:
            raise UserError("'full' takes no argument")
        return ()
    if kind in ("skip", "repeat"):
        lo, sep, hi = rest.partition("-")
        a, b = _positive(lo), _positive(hi) if sep else _positive(lo)
        if a > b:
            raise UserError(f"block sizes {a}-{b} are empty")
        return (a, b)
    if kind == "search":
        return (_positive(rest),)
    if kind == "samples":
        t, _, n = rest.partition(":")
        try:
            temperature = float(t)
        except ValueError:
            raise UserError(f"temperature {t!r} is not a number") from None
        if not temperature > 0:
            raise UserError(f"temperature must be > 0, got {temperature}")
        return (temperature, _positive(n))
    if not rest:
        raise UserError("'file' needs a path: file:PATH")
    return (rest,)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UserError(f"{text!r} is not a positive integer") from None
    if value < 1:
        raise UserError(f"{value} is not a positive integer")
    return value


def single_edits(num_layers: int, kind: str, sizes: Iterable[int]) -> list[tuple[str, tuple[int, ...]]]:
    """``(name, program)`` of every single skip or repeat edit of the full program with a block
    of one of ``sizes`` layers, by size then start. A skip that would empty the program is left out."""
    out = []
    base = list(range(num_layers))
    for k in sizes:
        for start in range(0, num_layers - k + 1):
            block = base[start:start + k]
            name = f"{kind} {start}" if k == 1 else f"{kind} {start}-{start + k - 1}"
            if kind == "skip":
                program = base[:start] + base[start + k:]
            else:
                program = base[:start + k] + block + base[start + k:]
            if program:
                out.append((name, tuple(program)))
    return out


def most_valid_programs(search_records: Sequence[dict], n: int, exclude: Iterable[Sequence[int]] = ()) -> list[tuple[int, ...]]:
    """The ``n`` programs valid on the most problems of ``search_records`` (their
    ``final_valid_transitions``), each counted once per problem, without ``exclude``; ties by
    program order."""
    counts: Counter = Counter()
    for rec in search_records:
        counts.update({tuple(int(i) for i in p) for p in rec.get("final_valid_transitions", [])})
    skip = {tuple(p) for p in exclude}
    ranked = sorted((p for p in counts if p not in skip), key=lambda p: (-counts[p], p))
    return ranked[:n]


def build_library(spec: str, num_layers: int, search_records: Sequence[dict] = ()) -> list[LibraryEntry]:
    """Expand a library spec (module docstring) for a ``num_layers``-layer model.

    ``ValueError`` for a bad spec, a ``search:N`` part without search records (or with fewer than
    ``N`` programs to give), a program of a ``file:`` part that is not valid for the model."""
    entries: list[LibraryEntry] = []
    seen: set[tuple[int, ...]] = set()

    def add(name: str, program: Sequence[int]) -> None:
        key = tuple(int(i) for i in program)
        if key not in seen:
            seen.add(key)
            entries.append(LibraryEntry(name, key))

    for part in parse_library(spec):
        if part.kind == "full":
            add("full", full(num_layers))
        elif part.kind in ("skip", "repeat"):
            for name, program in single_edits(num_layers, part.kind, range(part.args[0], part.args[1] + 1)):
                add(name, program)
        elif part.kind == "search":
            if not search_records:
                raise UserError("library part 'search:N' needs search results (--from-search FILES)")
            top = most_valid_programs(search_records, part.args[0], exclude=seen | {tuple(full(num_layers))})
            if len(top) < part.args[0]:
                raise UserError(f"search results give only {len(top)} new valid programs, 'search:{part.args[0]}' "
                                 f"asks for {part.args[0]}")
            for i, program in enumerate(top):
                validate_program(program, num_layers, row=i)
                add(f"search {i}", program)
        elif part.kind == "samples":
            temperature, n = part.args
            entries += [LibraryEntry(f"T={temperature:g} #{i}", tuple(full(num_layers)), temperature, i) for i in range(n)]
        else:
            path = Path(part.args[0])
            if not path.is_file():
                raise UserFileNotFoundError(f"library file not found: {path}")
            programs = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(programs, list) or not programs:
                raise UserError(f"{path}: expected a non-empty JSON list of programs")
            for i, program in enumerate(programs):
                add(f"file {i}", validate_program(program, num_layers, row=i))
    return entries


def library_sha256(entries: Sequence[LibraryEntry]) -> str:
    """A fingerprint of a library (its entries in order): a sweep file holds one library only."""
    return hashlib.sha256(json.dumps([asdict(e) for e in entries]).encode()).hexdigest()


def library_to_json(entries: Sequence[LibraryEntry]) -> list[dict]:
    return [asdict(e) for e in entries]


def library_from_json(items: Sequence[dict]) -> list[LibraryEntry]:
    return [LibraryEntry(d["name"], tuple(d["program"]), d.get("temperature"), d.get("sample")) for d in items]
