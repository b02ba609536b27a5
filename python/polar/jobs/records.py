"""Append-only JSONL results files: one record per finished unit, failed units included.

Every long job (accuracy, search, sweep, evaluation) writes through :class:`ResultsFile`: each
record is appended as one JSON line and flushed + fsynced, so a kill loses nothing finished; a
rerun reads the finished keys back and skips them; a file written with other settings is refused.
A torn last line (a write killed midway) is ignored with a warning and rewritten by the rerun.

A unit that failed every attempt is written as a *failed record* ``{key, "failed": true,
"error": "..."}`` (:func:`failure_record`); it is part of every kind's schema. A rerun retries
failed units (``retry_failed``, the default) and appends their new record after the failed one;
the last record of a key wins. Readers (:func:`read_records`) skip failed records and report
them in one line (:func:`report_failed`).
"""
from __future__ import annotations

import gzip
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError, UserFileNotFoundError

logger = logging.getLogger(__name__)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename (never a torn file)."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class SettingsMismatchError(UserError):
    """The results file holds records written with other settings."""


def is_failed(record: Mapping[str, Any]) -> bool:
    """Whether ``record`` is a failed unit's record."""
    return bool(record.get("failed"))


def failure_record(unit_key: str, error: str, key_field: str = "id") -> dict:
    """The record written for a unit that failed every attempt."""
    return {key_field: unit_key, "failed": True, "error": error[-500:]}


class ResultsFile:
    """A JSONL file of per-unit records keyed by ``key`` (default ``"id"``).

    ``settings``: fields every record of this file must carry with these values (model, data,
    seed, ...); :meth:`append` adds them to each record, :meth:`load` refuses a file whose
    records disagree (:class:`SettingsMismatchError`, one line naming the field); failed records
    carry the settings too. ``retry_failed``: a failed unit counts as not done (:meth:`is_done`),
    so a rerun runs it again.
    """

    def __init__(self, path: str | os.PathLike, settings: Mapping[str, Any] | None = None, key: str = "id",
                 retry_failed: bool = True):
        self.path = Path(path)
        self.settings = dict(settings or {})
        self.key = key
        self.retry_failed = retry_failed
        self.records: dict[str, dict] = {}

    def load(self) -> dict[str, dict]:
        """Read the records (``{key: last record}``, failed ones included); checks settings.
        A missing file is empty."""
        self.records = {}
        if not self.path.is_file():
            return self.records
        for where, rec in _lines(self.path):
            for name, value in self.settings.items():
                if _normal(rec.get(name)) != _normal(value):
                    raise SettingsMismatchError(
                        f"{self.path} holds results with {name}={rec.get(name)!r}, this run has {value!r}; "
                        f"use another output file")
            if self.key not in rec:
                raise UserError(f"{where} has no {self.key!r} field; is {self.path} a results file of this kind?")
            self.records[str(rec[self.key])] = rec
        failed = self.failed()
        if failed:
            report_failed(failed, str(self.path), "retried" if self.retry_failed else "kept (--no-retry-failed)")
        return self.records

    def is_done(self, key: str) -> bool:
        """Whether unit ``key`` needs no run: it has a record, and it is not a failed one to retry."""
        rec = self.records.get(str(key))
        return rec is not None and not (self.retry_failed and is_failed(rec))

    def done(self) -> set[str]:
        """Keys of the units that need no run (see :meth:`is_done`)."""
        return {k for k in self.records if self.is_done(k)}

    def failed(self) -> list[str]:
        """Keys whose last record is a failed one."""
        return [k for k, r in self.records.items() if is_failed(r)]

    def append(self, records: Iterable[dict]) -> None:
        """Append records (settings added), one JSON line each, then flush and fsync."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        needs_newline = self.path.is_file() and self.path.stat().st_size > 0 and not _ends_with_newline(self.path)
        with open(self.path, "a", encoding="utf-8") as fh:
            if needs_newline:  # a torn last line: start a fresh line after it
                fh.write("\n")
            for rec in records:
                full = {**rec, **self.settings}
                fh.write(json.dumps(full) + "\n")
                self.records[str(full[self.key])] = full
            fh.flush()
            os.fsync(fh.fileno())


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def _normal(value: Any) -> Any:
    """JSON round trip, so tuples and lists compare equal."""
    return json.loads(json.dumps(value))


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.name.endswith(".gz") else open(path, encoding="utf-8")


def _lines(path: Path) -> Iterable[tuple[str, Any]]:
    """``("path:line", value)`` for every valid JSON line of a (plain or ``.gz``) file; torn
    lines are skipped with a warning."""
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield f"{path}:{lineno}", json.loads(line)
            except json.JSONDecodeError:
                logger.warning("%s:%d is not valid JSON (a killed write?); ignored", path, lineno)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """All valid lines of a JSONL file (torn lines skipped with a warning), failed records included."""
    return [rec for _, rec in _lines(Path(path))]


@dataclass
class FileRecords:
    """What :func:`read_records` read from one results file."""

    path: Path
    records: list[dict] = field(default_factory=list)        # the last record of each key, failed ones left out
    places: list[str] = field(default_factory=list)          # "path:line" of each record
    failed: list[str] = field(default_factory=list)          # keys whose last record is a failed one
    failed_errors: dict[str, str] = field(default_factory=dict)


def read_records(path: str | os.PathLike, key: str = "id", limit: int | None = None,
                 what: str = "results") -> FileRecords:
    """The records of one results file (plain or ``.gz`` JSONL), in the order their keys first
    appear: a failed record followed by a later record of its key (a retried unit) is replaced by
    it; a key whose last record is failed is left out and listed in ``failed``. ``limit``: only
    the first ``limit`` lines that hold a record (a file still growing can be frozen).

    Raises :class:`polar.UserFileNotFoundError` for a missing file and :class:`polar.UserError`
    for a line that is not a JSON object with ``key`` and for a key written twice by finished units."""
    path = Path(path)
    if not path.is_file():
        raise UserFileNotFoundError(f"{what} file not found: {path}")
    last: dict[str, tuple[str, dict]] = {}
    taken = 0
    for where, rec in _lines(path):
        if limit is not None and taken == limit:
            break
        taken += 1
        if not isinstance(rec, dict) or key not in rec:
            raise UserError(f"{where} is not a record of {what} (no {key!r} field)")
        k = str(rec[key])
        if k in last and not is_failed(last[k][1]) and not is_failed(rec):
            raise UserError(f"{key} {k!r} appears twice: {last[k][0]} and {where}")
        if k in last and not is_failed(last[k][1]) and is_failed(rec):
            continue  # a failed attempt after a finished one changes nothing
        last[k] = (where, rec)
    out = FileRecords(path)
    for k, (where, rec) in last.items():
        if is_failed(rec):
            out.failed.append(k)
            out.failed_errors[k] = str(rec.get("error", ""))
        else:
            out.records.append(rec)
            out.places.append(where)
    return out


def report_failed(keys: Sequence[str], where: str, action: str = "skipped; a rerun retries them") -> None:
    """One warning line naming the failed units (count and the first few keys)."""
    if not keys:
        return
    shown = ", ".join(map(str, keys[:5])) + (f", ... ({len(keys) - 5} more)" if len(keys) > 5 else "")
    logger.warning("%s: %d failed unit%s (%s) %s", where, len(keys), "s" if len(keys) != 1 else "", shown, action)


__all__ = ["FileRecords", "ResultsFile", "SettingsMismatchError", "failure_record", "is_failed", "read_jsonl",
           "read_records", "report_failed"]
