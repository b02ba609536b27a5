"""Search results files: reading them back, merging shards, exporting PoLar supervision.

- :func:`read_results`: the records of one or more search JSONL files, refusing a problem that
  appears twice and files whose settings differ.
- :func:`merge_results`: shard files -> one JSONL file (same records, same settings).
- :func:`export_supervision`: -> the PoLar reference's ``merged_mcts_samples.json``:
  ``{"samples": [{"question", "gt_ans", "initial_score", "final_valid_transitions",
  "final_invalid_transitions", "id", "level", "source"}, ...]}`` (programs as lists of layer
  indices), readable by :func:`polar.tasks.load_supervision` and the reference's loader.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from ..tasks import ResultsFile, read_jsonl
from ._run import SETTINGS_FIELDS

#: Fields every search record carries (besides the settings).
REQUIRED_FIELDS: tuple[str, ...] = ("id", "question", "gt_ans", "initial_score", "final_valid_transitions",
                                    "final_invalid_transitions")

#: Fields of one sample in ``merged_mcts_samples.json``.
EXPORT_FIELDS: tuple[str, ...] = ("id", "question", "gt_ans", "level", "source", "initial_score",
                                  "final_valid_transitions", "final_invalid_transitions")


def read_results(paths: Sequence[str | os.PathLike], same_settings: bool = True) -> list[dict]:
    """All records of the search results files ``paths``, in file order.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` (one line) for a file that
    is not a search results file, a problem id found twice (naming both places) and, with
    ``same_settings``, a setting that differs between records."""
    if not paths:
        raise ValueError("no results files given")
    records: list[dict] = []
    where: dict[str, str] = {}
    first: tuple[dict, str] | None = None
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"results file not found: {path}")
        for lineno, rec in enumerate(read_jsonl(path), start=1):
            missing = [f for f in REQUIRED_FIELDS if f not in rec]
            if missing:
                raise ValueError(f"{path}:{lineno} is not a search record (missing {', '.join(missing)})")
            place = f"{path}:{lineno}"
            pid = str(rec["id"])
            if pid in where:
                raise ValueError(f"problem {pid!r} appears twice: {where[pid]} and {place}")
            where[pid] = place
            if same_settings:
                if first is None:
                    first = ({f: rec.get(f) for f in SETTINGS_FIELDS}, place)
                for f, value in first[0].items():
                    if rec.get(f) != value:
                        raise ValueError(f"{place} has {f}={rec.get(f)!r} but {first[1]} has {value!r}; "
                                         f"only results of one run can be merged")
            records.append(rec)
    return records


def merge_results(paths: Sequence[str | os.PathLike], out: str | os.PathLike) -> int:
    """Join the shard files ``paths`` into a new JSONL file ``out``; returns the record count.
    Refuses an existing ``out``, duplicates and differing settings (``ValueError``)."""
    out = Path(out)
    if out.exists():
        raise ValueError(f"{out} exists; merge writes a new file")
    records = read_results(paths)
    settings = {f: records[0].get(f) for f in SETTINGS_FIELDS} if records else {}
    ResultsFile(out, settings).append(records)
    return len(records)


def export_supervision(paths: Sequence[str | os.PathLike], out: str | os.PathLike) -> int:
    """Write the records of ``paths`` as a PoLar ``merged_mcts_samples.json`` (see the module
    docstring; written to a temporary file and renamed); returns the sample count. Duplicates
    are refused (``ValueError``); files of different runs may be exported together."""
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
