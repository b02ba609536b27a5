"""Search results -> per-problem training targets (paper section 3.2).

A search results file (JSONL, one record per problem, written by ``polar search``) holds
``id``, ``question``, ``gt_ans``, ``initial_score`` (1.0 if the full program answered correctly),
``final_valid_transitions`` (programs that graded correct), ``final_invalid_transitions``, and
settings. Every valid program becomes the canonical compact representation of
``polar.programs.parse`` (segments of at most ``k_max`` layers, each run at most ``max_runs``
times: a search that repeats blocks up to ``max_repeats`` extra times needs
``max_runs = max_repeats + 1`` to keep all of them); programs outside the space or invalid for
the depth are counted in a :class:`TargetReport`, never silently dropped. A problem with no
usable valid program contributes nothing.

Each problem's programs are averaged into soft targets, one weight per program (1.0; the full
program gets ``full_program_weight`` when the problem has a valid program shorter than ``D``),
normalised per problem so that every problem counts once:

    seg_target[i]    = sum_j w_j z_j[i] / sum_j w_j                         [D]
    op_target[i, c]  = sum_j w_j [z_j[i] = 1 and op_j(i) = c] / sum_j w_j   [D, max_runs + 1]

With these, the soft-target loss of ``_train.predictor_loss`` equals the weighted mean over the
problem's programs of (BCE on every boundary + CE on the op at every segment start) / D.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from .._checks import check_int
from ..programs import (DEFAULT_MAX_RUNS, CompactProgram, NotInSpaceError, Program, full, parse, segments,
                        validate_program)


@dataclass(frozen=True)
class SearchRecord:
    """One problem of a search results file (only what training reads)."""

    id: str  # unique problem id
    question: str  # the question text the predictor sees
    valid_programs: tuple[tuple[int, ...], ...]  # programs that graded correct, as found
    initial_score: float | None = None  # 1.0 if the full program graded correct, 0.0 if not
    settings: dict[str, Any] = field(default_factory=dict, compare=False)  # the search run's settings
    source: str = ""  # "file:line" the record came from


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def load_search_results(paths: Sequence[str | os.PathLike] | str | os.PathLike,
                        limit: int | None = None) -> list[SearchRecord]:
    """Read search results files (JSONL, ``.gz`` allowed) into records, in file order;
    ``limit``: only the first ``limit`` records of each file (a file still growing can be frozen).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file and line
    for a line that is not a JSON object with a string ``question``, an ``id`` and a list
    ``final_valid_transitions``, or for an ``id`` seen twice.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    check_int(limit, "limit", optional=True)
    records: list[SearchRecord] = []
    seen: dict[str, str] = {}
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"search results file not found: {path}")
        taken = 0
        with _open_text(path) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                if limit is not None and taken == limit:
                    break
                taken += 1
                where = f"{path}:{n}"
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{where}: not JSON ({e.msg})") from None
                records.append(_record(rec, where))
                rid = records[-1].id
                if rid in seen:
                    raise ValueError(f"{where}: problem id {rid!r} already read at {seen[rid]}")
                seen[rid] = where
    return records


def _record(rec: Any, where: str) -> SearchRecord:
    if not isinstance(rec, dict):
        raise ValueError(f"{where}: a record must be a JSON object")
    question, valid = rec.get("question"), rec.get("final_valid_transitions")
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"{where}: missing or empty 'question'")
    if "id" not in rec:
        raise ValueError(f"{where}: missing 'id'")
    if not isinstance(valid, list) or not all(isinstance(p, list) for p in valid):
        raise ValueError(f"{where}: 'final_valid_transitions' must be a list of programs (lists of layer indices)")
    score = rec.get("initial_score")
    settings = rec.get("settings")
    if not isinstance(settings, dict):  # polar search writes its settings into every record
        settings = {k: rec[k] for k in ("model", "num_layers") if k in rec}
    return SearchRecord(
        id=str(rec["id"]),
        question=question,
        valid_programs=tuple(tuple(p) for p in valid),
        initial_score=float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else None,
        settings=settings,
        source=where,
    )


@dataclass
class TargetReport:
    """What happened to the supervision (counts over all records)."""

    problems: int = 0  # records read
    with_targets: int = 0  # problems with at least one usable valid program
    no_valid_program: int = 0  # problems without any usable valid program (contribute nothing)
    programs: int = 0  # valid programs listed (plus full programs implied by initial_score == 1)
    used: int = 0  # distinct programs turned into targets
    duplicates: int = 0  # repeated programs within one problem (counted once)
    not_in_space: int = 0  # valid programs without a compact representation (reordering, > max_runs runs, ...)
    invalid: int = 0  # programs that are not programs of this depth (empty, index out of range)
    full_from_initial_score: int = 0  # full programs added because initial_score == 1 but they were not listed
    full_downweighted: int = 0  # problems whose full program got full_program_weight
    examples: dict[str, str] = field(default_factory=dict)  # one example message per kind of rejection

    def summary(self) -> str:
        return (f"{self.problems} problems: {self.with_targets} with targets, {self.no_valid_program} without a "
                f"usable valid program; {self.programs} valid programs: {self.used} used, {self.duplicates} "
                f"duplicates, {self.not_in_space} outside the compact space, {self.invalid} invalid for the depth; "
                f"full program down-weighted in {self.full_downweighted} problems")


@dataclass
class ProblemTargets:
    """Soft targets of one problem (see the module docstring)."""

    id: str
    question: str
    seg_target: torch.Tensor  # [D] float32 in [0, 1]
    op_target: torch.Tensor  # [D, max_runs + 1] float32 (column c: run c times); each row sums to seg_target[i]
    programs: frozenset[Program]  # the distinct in-space valid programs (for top-1 agreement)


def build_targets(records: Iterable[SearchRecord], num_layers: int, k_max: int, full_program_weight: float, *,
                  max_runs: int = DEFAULT_MAX_RUNS) -> tuple[list[ProblemTargets], TargetReport]:
    """Soft targets for every problem with a usable valid program, and the report of the rest.

    Programs are parsed with ``k_max`` and ``max_runs``; ``op_target`` has ``max_runs + 1`` columns.
    Raises ``ValueError`` for a ``max_runs`` that is not a positive int.
    """
    check_int(max_runs, "max_runs")
    D = num_layers
    full_program = full(D)
    report = TargetReport()
    out: list[ProblemTargets] = []
    for rec in records:
        report.problems += 1
        listed = list(rec.valid_programs)
        if rec.initial_score == 1.0 and full_program not in {tuple(p) for p in listed}:
            listed.append(tuple(full_program))
            report.full_from_initial_score += 1
        report.programs += len(listed)
        parsed: dict[Program, CompactProgram] = {}
        for raw in listed:
            try:
                program = validate_program(list(raw), D, max_length=4 * D)
                cp = parse(program, D, k_max, max_runs=max_runs)
            except NotInSpaceError as e:
                report.not_in_space += 1
                report.examples.setdefault("not_in_space", f"{rec.source}: {e}")
                continue
            except (ValueError, TypeError) as e:
                report.invalid += 1
                report.examples.setdefault("invalid", f"{rec.source}: {e}")
                continue
            if program in parsed:
                report.duplicates += 1
                continue
            parsed[program] = cp
        if not parsed:
            report.no_valid_program += 1
            continue
        shorter = any(len(p) < D for p in parsed)
        if shorter and full_program in parsed:
            report.full_downweighted += 1
        seg = torch.zeros(D)  # [D]
        ops = torch.zeros(D, max_runs + 1)  # [D, C]
        total = 0.0  # > 0: a full program weighted down always has a shorter program of weight 1
        for program, cp in parsed.items():
            w = full_program_weight if (shorter and program == full_program) else 1.0
            total += w
            for (a, _), op in zip(segments(cp.z_seg), cp.ops):
                seg[a] += w
                ops[a, int(op)] += w
        report.used += len(parsed)
        report.with_targets += 1
        out.append(ProblemTargets(rec.id, rec.question, seg / total, ops / total, frozenset(parsed)))
    return out, report
