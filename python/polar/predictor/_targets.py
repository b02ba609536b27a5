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

The reference code's remedies against the all-keep collapse (``tianyi-lab/PoLar``, ``polar/data.py``
and ``polar/train.py``; training options of :class:`polar.predictor.TrainConfig`):

- length preference (``lenpref_beta``): program ``j`` weighs ``l_j = exp(-beta * len(program_j))``
  (times ``full_program_weight`` for the full program as above) in its problem's soft targets;
- per-problem normalisation (``per_problem_normalize``, on by default): the problem's weight in the
  batch loss is ``W = mean_j l_j`` (every problem counts about once); off, ``W = sum_j l_j`` (a
  problem with many valid programs counts as many times). Since the loss is linear in the targets,
  ``W * loss(soft targets)`` is the reference's sum of per-program losses; the batch loss is
  ``sum W loss / sum W`` (weights normalised to mean 1, as there). With ``beta = 0`` and
  normalisation ``W = 1``: the paper's loss;
- ``drop_full_if_shorter``: the full program leaves the targets of a problem that has a shorter
  valid program (it still counts as valid for top-1 agreement);
- ``full_valid`` records whether the full program is valid on the problem, for the anti-original
  penalty of ``_train.predictor_loss``.

:func:`records_from_sweep` turns a sweep's dense matrix into records (the correct program entries
are the valid programs; the full entry's grade is ``initial_score``).
"""
from __future__ import annotations

import hashlib
import math
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch

from .._checks import check_int
from ..errors import UserError
from ..search import read_results
from ..tasks import generation_setting
from ..programs import (DEFAULT_MAX_RUNS, CompactProgram, NotInSpaceError, Program, full, parse, segments,
                        validate_program)

logger = logging.getLogger(__name__)


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


#: The fields of a search record that training reads.
TRAINING_FIELDS: tuple[str, ...] = ("id", "question", "final_valid_transitions")


def load_search_results(paths: Sequence[str | os.PathLike] | str | os.PathLike,
                        limit: int | None = None, check_generation: bool = True) -> list[SearchRecord]:
    """Read search results files into records, in file order, with the search's own reader
    (:func:`polar.search.read_results`: JSONL, ``.gz`` or an exported ``merged_mcts_samples.json``;
    failed units skipped and named in one line); ``limit``: only the first ``limit`` records of
    each file (a file still growing can be frozen).

    With ``check_generation``, supervision generated under another setting than the one evaluation
    uses (:func:`polar.tasks.generation_setting` of the records' prompt style: token budget,
    early-answer rule) is refused in one line; records that do not say how they were generated
    (the reference's layout) are taken with one warning line.

    Raises :class:`polar.UserFileNotFoundError` for a missing file and :class:`polar.UserError`
    naming the file and line for a record without a string ``question``, an ``id`` or a list
    ``final_valid_transitions``, for an ``id`` seen twice, and for no records at all.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    check_int(limit, "limit", optional=True)
    placed = read_results(list(paths), same_settings=False, limit=limit, places=True, required=TRAINING_FIELDS)
    records = [_record(rec, where) for where, rec in placed]
    if check_generation:
        check_generation_settings([rec for _, rec in placed])
    return records


def check_generation_settings(records: Sequence[dict]) -> None:
    """:class:`polar.UserError` (one line) when some search record was generated under another
    setting than :func:`polar.tasks.generation_setting` of its prompt style (what evaluation uses);
    one warning line for records that do not record their setting."""
    unknown = 0
    for rec in records:
        style = rec.get("prompt_style")
        if style is None or "max_new_tokens" not in rec:
            unknown += 1
            continue
        want = generation_setting(style)
        got = (rec.get("max_new_tokens"), rec.get("early_answer", True))
        if got != (want.max_new_tokens, want.early_answer):
            raise UserError(f"search record {rec.get('id')!r} was generated with max_new_tokens={got[0]}, "
                            f"early_answer={got[1]}, but evaluation generates {style!r} prompts with "
                            f"max_new_tokens={want.max_new_tokens}, early_answer={want.early_answer}: "
                            f"its grades would not hold there; search again with the shared setting")
    if unknown:
        logger.warning("%d of %d search records do not record how they were generated (prompt_style, "
                       "max_new_tokens); taken as made under the evaluation's setting", unknown, len(records))


def recorded_depth(records: Sequence[SearchRecord]) -> int | None:
    """The model depth the records' settings give (``num_layers``), or ``None`` when none does."""
    for r in records:
        if r.settings.get("num_layers") is not None:
            return int(r.settings["num_layers"])
    return None


def _record(rec: Any, where: str) -> SearchRecord:
    if not isinstance(rec, dict):
        raise UserError(f"{where}: a record must be a JSON object")
    question, valid = rec.get("question"), rec.get("final_valid_transitions")
    if not isinstance(question, str) or not question.strip():
        raise UserError(f"{where}: missing or empty 'question'")
    if "id" not in rec:
        raise UserError(f"{where}: missing 'id'")
    if not isinstance(valid, list) or not all(isinstance(p, list) for p in valid):
        raise UserError(f"{where}: 'final_valid_transitions' must be a list of programs (lists of layer indices)")
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
    full_dropped: int = 0  # problems whose full program was dropped (drop_full_if_shorter)
    examples: dict[str, str] = field(default_factory=dict)  # one example message per kind of rejection

    def summary(self) -> str:
        return (f"{self.problems} problems: {self.with_targets} with targets, {self.no_valid_program} without a "
                f"usable valid program; {self.programs} valid programs: {self.used} used, {self.duplicates} "
                f"duplicates, {self.not_in_space} outside the compact space, {self.invalid} invalid for the depth; "
                f"full program down-weighted in {self.full_downweighted} problems"
                + (f", dropped in {self.full_dropped}" if self.full_dropped else ""))


@dataclass
class ProblemTargets:
    """Soft targets of one problem (see the module docstring)."""

    id: str
    question: str
    seg_target: torch.Tensor  # [D] float32 in [0, 1]
    op_target: torch.Tensor  # [D, max_runs + 1] float32 (column c: run c times); each row sums to seg_target[i]
    programs: frozenset[Program]  # the distinct in-space valid programs (for top-1 agreement)
    weight: float = 1.0  # W: the problem's weight in the batch loss (1 unless lenpref / no normalisation)
    full_valid: bool = True  # the full program is one of the problem's valid programs


def build_targets(records: Iterable[SearchRecord], num_layers: int, k_max: int, full_program_weight: float, *,
                  max_runs: int = DEFAULT_MAX_RUNS, lenpref_beta: float = 0.0, per_problem_normalize: bool = True,
                  drop_full_if_shorter: bool = False) -> tuple[list[ProblemTargets], TargetReport]:
    """Soft targets for every problem with a usable valid program, and the report of the rest.

    Programs are parsed with ``k_max`` and ``max_runs``; ``op_target`` has ``max_runs + 1`` columns.
    ``lenpref_beta``, ``per_problem_normalize``, ``drop_full_if_shorter``: see the module docstring.
    Raises ``ValueError`` for a ``max_runs`` that is not a positive int or a negative ``lenpref_beta``.
    """
    check_int(max_runs, "max_runs")
    if lenpref_beta < 0:
        raise UserError(f"lenpref_beta must be >= 0, got {lenpref_beta}")
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
        full_valid = full_program in parsed
        valid_set = frozenset(parsed)
        if shorter and full_valid and drop_full_if_shorter:
            del parsed[full_program]
            report.full_dropped += 1
        elif shorter and full_valid:
            report.full_downweighted += 1
        seg = torch.zeros(D)  # [D]
        ops = torch.zeros(D, max_runs + 1)  # [D, C]
        total = 0.0  # > 0: a full program weighted down always has a shorter program of weight 1
        length_weights = [math.exp(-lenpref_beta * len(p)) for p in parsed]
        for program, cp in parsed.items():
            w = full_program_weight if (shorter and program == full_program) else 1.0
            w *= math.exp(-lenpref_beta * len(program))
            total += w
            for (a, _), op in zip(segments(cp.z_seg), cp.ops):
                seg[a] += w
                ops[a, int(op)] += w
        report.used += len(parsed)
        report.with_targets += 1
        weight = sum(length_weights) / (len(length_weights) if per_problem_normalize else 1)
        out.append(ProblemTargets(rec.id, rec.question, seg / total, ops / total, valid_set, weight, full_valid))
    return out, report


def records_from_sweep(matrix) -> list[SearchRecord]:
    """Search-style records from a :class:`polar.search.SweepMatrix`: per problem, the program
    entries graded correct are the valid programs (sample entries left out) and the full
    program's grade, when the library has it, is ``initial_score``."""
    programs = [(j, e.program) for j, e in enumerate(matrix.entries) if not e.is_sample]
    out = []
    for i, rec in enumerate(matrix.records):
        D = int(rec.get("num_layers") or 1 + max(max(p) for _, p in programs))
        whole = tuple(range(D))
        valid = tuple(p for j, p in programs if matrix.correct[i, j])
        full_cols = [j for j, p in programs if p == whole]
        score = float(matrix.correct[i, full_cols[0]]) if full_cols else None
        settings = {"model": matrix.settings.get("model"), "num_layers": D}
        out.append(SearchRecord(str(rec["id"]), str(rec["question"]), valid, score, settings,
                                f"sweep:{rec.get('source')}/{rec['id']}"))
    return out
