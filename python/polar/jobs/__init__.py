"""Jobs: resumable results files and the runners that fill them (local, Ray), one writer each.

- :mod:`.records`: :class:`ResultsFile` (append-only JSONL, settings checked, failed units
  retried by a rerun), :func:`read_records` (the one low-level reader: failed records skipped and
  reported), :func:`failure_record`, :func:`write_atomic` (checkpoint files: temporary file,
  fsync, rename).
- :mod:`.workers`: :func:`run_local`, :func:`run_ray` (:class:`RayOptions`), :class:`ModelWorker`
  (the model loaded once, on the device it is told), :func:`versions`.

Each kind of results file has one schema and one reader in the stage that owns it: search
records (:func:`polar.search.read_results`), sweep records (:func:`polar.search.read_sweep`) and
evaluation records (:func:`polar.evaluation.read_eval_records`); a failed record
``{key, "failed", "error"}`` is part of every schema.
"""
from .records import (FileRecords, ResultsFile, SettingsMismatchError, failure_record, is_failed, read_jsonl,
                      read_records, report_failed, write_atomic)
from .workers import DEFAULT_UNITS_PER_TASK, ModelWorker, RayOptions, Worker, run_local, run_ray, versions, worker_device

__all__ = [
    "DEFAULT_UNITS_PER_TASK", "FileRecords", "ModelWorker", "RayOptions", "ResultsFile", "SettingsMismatchError",
    "Worker", "failure_record", "is_failed", "read_jsonl", "read_records", "report_failed", "run_local", "run_ray",
    "versions", "worker_device", "write_atomic",
]
