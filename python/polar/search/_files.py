"""Search results files: the one reader of search records, merging shards, exporting PoLar supervision.

The search record (one JSON line per problem, :func:`polar.search.problem_record` plus the run's
settings, :data:`SETTINGS_FIELDS`) has the fields :data:`REQUIRED_FIELDS` and more; a failed unit's
record ``{"id", "failed": true, "error"}`` is part of the schema.

- :func:`read_results`: the records of one or more search files (JSONL, ``.gz`` allowed, or the
  exported ``merged_mcts_samples.json`` layout), every consumer's reader (merge, export, analyze,
  training, the evaluation's static baselines): failed units skipped and reported in one line; a
  problem that appears twice and (optionally) files whose settings differ are refused.
- :func:`merge_results`: shard files -> one JSONL file (same records, same settings).
- :func:`export_supervision`: -> the PoLar reference's ``merged_mcts_samples.json``:
  ``{"samples": [{"question", "gt_ans", "initial_score", "final_valid_transitions",
  "final_invalid_transitions", "id", "level", "source"}, ...]}`` (programs as lists of layer
  indices), readable by :func:`polar.tasks.load_supervision`, :func:`read_results` and the
  reference's loader.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from ..errors import UserError, UserFileNotFoundError
from ..jobs import ResultsFile, read_records, report_failed
from ..tasks import load_supervision
from ._run import SETTINGS_FIELDS

#: Fields every search record carries (besides the settings).
REQUIRED_FIELDS: tuple[str, ...] = ("id", "question", "gt_ans", "initial_score", "final_valid_transitions",
                                    "final_invalid_transitions")

#: Fields of one sample in ``merged_mcts_samples.json``.
EXPORT_FIELDS: tuple[str, ...] = ("id", "question", "gt_ans", "level", "source", "initial_score",
                                  "final_valid_transitions", "final_invalid_transitions")


def _exported(path: Path) -> list[tuple[str, dict]]:
    """The samples of a ``merged_mcts_samples.json`` file as search records (no settings)."""
    samples = load_supervision(path)
    return [(f"{path}:sample {i}", {
        "id": s.problem.id, "question": s.problem.question, "gt_ans": s.problem.answer, "source": s.problem.source,
        "level": s.problem.level, "initial_score": s.initial_score,
        "final_valid_transitions": s.valid_programs, "final_invalid_transitions": s.invalid_programs})
        for i, s in enumerate(samples)]


def read_results(paths: Sequence[str | os.PathLike], same_settings: bool = True,
                 limit: int | None = None, places: bool = False,
                 required: Sequence[str] = REQUIRED_FIELDS) -> list[dict] | list[tuple[str, dict]]:
    """All records of the search results files ``paths``, in file order (see the module docstring).

    ``limit``: only the first ``limit`` lines of each file (a file a search still appends to is
    frozen). Failed units are left out, with one warning line naming them (a retried unit's later
    record replaces its failed one). Raises :class:`polar.UserFileNotFoundError` for a missing file
    and :class:`polar.UserError` (one line) for no paths, a file that is not a search results
    file, no records at all, a problem id found twice (naming both places) and, with
    ``same_settings``, a setting that differs between records. ``places``: ``(place, record)``
    pairs instead, ``place`` being ``"file:line"``. ``required``: the fields a record must have
    (a consumer that reads fewer, like training, may ask for fewer)."""
    if not paths:
        raise UserError("no search results files given")
    records: list[tuple[str, dict]] = []
    where: dict[str, str] = {}
    first: tuple[dict, str] | None = None
    failed: list[str] = []
    for path in map(Path, paths):
        if path.suffix == ".json":
            if not path.is_file():
                raise UserFileNotFoundError(f"search results file not found: {path}")
            placed = _exported(path)[:limit] if limit is not None else _exported(path)
        else:
            got = read_records(path, limit=limit, what="search results")
            placed = list(zip(got.places, got.records))
            failed += got.failed
        for place, rec in placed:
            missing = [f for f in required if f not in rec]
            if missing:
                raise UserError(f"{place} is not a search record (missing {', '.join(missing)})")
            pid = str(rec["id"])
            if pid in where:
                raise UserError(f"problem {pid!r} appears twice: {where[pid]} and {place}")
            where[pid] = place
            if same_settings:
                if first is None:
                    first = ({f: rec.get(f) for f in SETTINGS_FIELDS}, place)
                for f, value in first[0].items():
                    if rec.get(f) != value:
                        raise UserError(f"{place} has {f}={rec.get(f)!r} but {first[1]} has {value!r}; "
                                        f"only results of one run can be merged")
            records.append((place, rec))
    names = ", ".join(map(str, paths))
    report_failed(failed, names)
    if not records:
        more = f" ({len(failed)} failed units only)" if failed else ""
        raise UserError(f"no search records in {names}{more}")
    return records if places else [rec for _, rec in records]


def merge_results(paths: Sequence[str | os.PathLike], out: str | os.PathLike) -> int:
    """Join the shard files ``paths`` into a new JSONL file ``out``; returns the record count.
    Failed units are left out (named in one warning line; a search into ``out`` retries them).
    Refuses an existing ``out``, duplicates and differing settings (:class:`polar.UserError`)."""
    out = Path(out)
    if out.exists():
        raise UserError(f"{out} exists; merge writes a new file")
    records = read_results(paths)
    settings = {f: records[0].get(f) for f in SETTINGS_FIELDS} if records else {}
    ResultsFile(out, settings).append(records)
    return len(records)


def export_supervision(paths: Sequence[str | os.PathLike], out: str | os.PathLike) -> int:
    """Write the records of ``paths`` as a PoLar ``merged_mcts_samples.json`` (see the module
    docstring; written to a temporary file and renamed); returns the sample count. Failed units
    are left out (named in one warning line); duplicates are refused (:class:`polar.UserError`);
    files of different runs may be exported together."""
    records = read_results(paths, same_settings=False)
    samples = [{f: rec.get(f) for f in EXPORT_FIELDS} for rec in records]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"samples": samples}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, out)
    return len(samples)
