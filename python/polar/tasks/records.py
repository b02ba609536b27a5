"""Append-only JSONL results files (DESIGN.md section 8): one record per finished unit.

Every long job (accuracy, search, evaluation) writes through :class:`ResultsFile`: each record
is appended as one JSON line and flushed + fsynced, so a kill loses nothing finished; a rerun
reads the finished ids back and skips them; a file written with other settings is refused.
A torn last line (a write killed midway) is ignored with a warning and rewritten by the rerun.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class SettingsMismatchError(ValueError):
    """The results file holds records written with other settings."""


class ResultsFile:
    """A JSONL file of per-unit records keyed by ``key`` (default ``"id"``).

    ``settings``: fields every record of this file must carry with these values (model, data,
    seed, ...); :meth:`append` adds them to each record, :meth:`load` refuses a file whose
    records disagree (:class:`SettingsMismatchError`, one line naming the field).
    """

    def __init__(self, path: str | os.PathLike, settings: Mapping[str, Any] | None = None, key: str = "id"):
        self.path = Path(path)
        self.settings = dict(settings or {})
        self.key = key
        self.records: dict[str, dict] = {}

    def load(self) -> dict[str, dict]:
        """Read finished records (``{key: record}``); checks settings. A missing file is empty."""
        self.records = {}
        if not self.path.is_file():
            return self.records
        lines = self.path.read_text(encoding="utf-8").splitlines()
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("%s:%d is not valid JSON (a killed write?); ignored", self.path, lineno)
                continue
            for field, value in self.settings.items():
                if _normal(rec.get(field)) != _normal(value):
                    raise SettingsMismatchError(
                        f"{self.path} holds results with {field}={rec.get(field)!r}, this run has {value!r}; "
                        f"use another output file")
            self.records[str(rec[self.key])] = rec
        return self.records

    def done(self) -> set[str]:
        return set(self.records)

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


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """All valid records of a JSONL file (torn lines skipped with a warning)."""
    out = []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                logger.warning("%s:%d is not valid JSON; ignored", path, lineno)
    return out
