"""Running units of work (problems) on workers, with one writer.

A *worker* holds what is expensive to build (a loaded model) and turns a list of units into
records: ``worker.run(units) -> list[dict]`` (one record per unit, keyed like the results file).
A *factory* is a picklable callable that builds a worker (``factory() -> worker``), so a remote
process can build its own.

- :func:`run_local`: one worker in this process.
- :func:`run_ray`: N Ray actors, each building its worker once (on its GPU when it has one);
  the driver sends batches of units, keeps at most ``max_in_flight`` batches out (backpressure)
  and is the single writer of the :class:`~.records.ResultsFile`. An actor that dies (killed,
  out of memory) is restarted by Ray (``max_restarts``) and its unfinished batches are sent again;
  a unit that fails ``max_attempts`` times (its worker raised, or its actor died running it) is
  written as ``{"failed": True, "error": ...}`` instead of being retried forever; a task refused
  because its actor is restarting is simply sent again. A rerun skips every unit already in the
  file, except failed ones when the file's ``retry_failed`` is on (the default).
- :class:`ModelWorker`: the base of every worker that holds a loaded model: loads it once, on
  the device it is told (an actor given a GPU and no device: that GPU; else the CPU).

Both write records as they arrive (flush + fsync per batch), so killing the driver at any moment
loses nothing already written.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Protocol

import torch
from tqdm import tqdm

from .._checks import check_int
from ..errors import UserError
from ..models import load_model
from .records import ResultsFile, failure_record

logger = logging.getLogger(__name__)


class Worker(Protocol):
    def run(self, units: list[Any]) -> list[dict]: ...


def versions() -> dict[str, str]:
    """Versions of the packages that decide results (recorded with every results file)."""
    out = {}
    for dist in ("polar", "torch", "transformers"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "unknown"
    return out


def _ray_gpus() -> list:
    """GPU ids Ray assigned to this process (an actor started with ``num_gpus``), else ``[]``."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return []
    try:
        return list(ray.get_gpu_ids())
    except Exception:  # noqa: BLE001 - not inside a worker
        return []


def worker_device(device: str | None) -> str | None:
    """The device a worker loads its model on: ``device`` when given (``--device``); else the GPU
    Ray assigned to this actor, if any; else ``None`` (the CPU)."""
    if device is not None:
        return device
    return "cuda" if _ray_gpus() and torch.cuda.is_available() else None


class ModelWorker:
    """A worker holding one loaded model: ``model_name`` is loaded once, on ``device``
    (:func:`worker_device`), with ``threads`` torch threads; an already loaded ``model`` and
    ``tokenizer`` are used as they are. Subclasses implement :meth:`run`."""

    def __init__(self, model_name: str, device: str | None = None, threads: int | None = None,
                 model=None, tokenizer=None):
        check_int(threads, "threads", optional=True)
        if threads:
            torch.set_num_threads(threads)
        if model is None:
            model, tokenizer = load_model(model_name, device=worker_device(device))
        self.model, self.tokenizer = model, tokenizer
        self.model_name = model_name

    def run(self, units: list[Any]) -> list[dict]:  # pragma: no cover - an interface
        raise NotImplementedError


#: Units (problems) per task sent to a Ray actor, and per batch of a local run.
DEFAULT_UNITS_PER_TASK = 8


@dataclass
class RayOptions:
    """How :func:`run_ray` uses the cluster."""

    address: str | None = None      # cluster address ('auto', 'ray://host:10001'); None: start a local one
    workers: int = 2                # actors (each builds its worker, e.g. loads the model, once)
    gpus_per_worker: float = 0.0    # GPUs reserved per actor (0: CPU threads)
    cpus_per_worker: float = 1.0    # CPUs reserved per actor
    batch_units: int = DEFAULT_UNITS_PER_TASK  # units per task (--units-per-task)
    max_in_flight: int | None = None  # batches out at once (default 2 per actor)
    max_attempts: int = 3           # a unit failing this often is marked failed
    max_restarts: int = -1          # Ray restarts of a dead actor (-1: always)


def _batches(units: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(units[i:i + size]) for i in range(0, len(units), size)]


def run_local(units: Sequence[Any], worker: Worker, store: ResultsFile, batch_units: int = DEFAULT_UNITS_PER_TASK,
              desc: str = "units", key: Callable[[Any], str] = lambda u: str(u.id)) -> None:
    """Run the units ``store`` does not have done (:meth:`ResultsFile.is_done`) on ``worker``
    here, appending records as batches finish."""
    todo = [u for u in units if not store.is_done(key(u))]
    with tqdm(total=len(todo), desc=desc, unit="unit") as bar:
        for batch in _batches(todo, batch_units):
            store.append(worker.run(batch))
            bar.update(len(batch))


class _Actor:
    """Ray actor body: builds the worker once, then runs batches."""

    def __init__(self, factory: Callable[[], Worker]):
        self.worker = factory()

    def run(self, units: list[Any]) -> list[dict]:
        return self.worker.run(units)

    def pid(self) -> int:
        return os.getpid()


def _reason(err: BaseException) -> str:
    """One line: the worker's own exception when Ray wraps one, else Ray's error."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}".splitlines()[0]
    lines = [line for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[-1] if lines else ''}"


def run_ray(units: Sequence[Any], factory: Callable[[], Worker], store: ResultsFile, options: RayOptions,
            desc: str = "units", key: Callable[[Any], str] = lambda u: str(u.id)) -> dict:
    """Run the units ``store`` does not have done on Ray actors; returns counts ``{done, failed, retried}``.

    Needs the optional dependency ``ray`` (``pip install 'polar[ray]'``): :class:`polar.UserError` saying so."""
    try:
        import ray
        from ray.exceptions import ActorUnavailableError, RayActorError, RayError
    except ImportError as err:  # pragma: no cover - exercised where ray is absent
        raise UserError("--ray needs the optional dependency ray: pip install 'polar[ray]'") from err
    check_int(options.workers, "--workers")
    check_int(options.batch_units, "--units-per-task")
    if not ray.is_initialized():
        ray.init(address=options.address, log_to_driver=False, include_dashboard=False)
    actor_cls = ray.remote(num_cpus=options.cpus_per_worker, num_gpus=options.gpus_per_worker,
                           max_restarts=options.max_restarts, max_task_retries=0)(_Actor)
    actors = [actor_cls.remote(factory) for _ in range(options.workers)]
    todo = [u for u in units if not store.is_done(key(u))]
    pending: deque[tuple[list[Any], int]] = deque((b, 0) for b in _batches(todo, options.batch_units))
    limit = options.max_in_flight or 2 * options.workers
    in_flight: dict[Any, tuple[int, list[Any], int]] = {}
    load = [0] * len(actors)
    counts = {"done": 0, "failed": 0, "retried": 0}
    key_field = store.key
    with tqdm(total=len(todo), desc=desc, unit="unit") as bar:
        while pending or in_flight:
            while pending and len(in_flight) < limit:
                batch, attempts = pending.popleft()
                a = min(range(len(actors)), key=lambda i: load[i])
                in_flight[actors[a].run.remote(batch)] = (a, batch, attempts)
                load[a] += 1
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            ref = ready[0]
            a, batch, attempts = in_flight.pop(ref)
            load[a] -= 1
            try:
                records = ray.get(ref)
            except ActorUnavailableError:  # the actor is restarting: not the batch's fault, send it again
                counts["retried"] += 1
                pending.appendleft((batch, attempts))
                time.sleep(0.5)
                continue
            except (RayActorError, RayError) as err:
                reason = _reason(err)
                counts["retried"] += 1
                if len(batch) > 1:  # find the unit at fault: retry one unit per task
                    logger.warning("batch of %d failed on actor %d (%s); retrying unit by unit", len(batch), a, reason)
                    pending.extend(([u], attempts) for u in batch)
                elif attempts + 1 < options.max_attempts:
                    logger.warning("unit %s failed (%s); attempt %d of %d", key(batch[0]), reason, attempts + 2,
                                   options.max_attempts)
                    pending.append((batch, attempts + 1))
                else:
                    store.append([failure_record(key(batch[0]), reason, key_field)])
                    counts["failed"] += 1
                    bar.update(1)
                continue
            store.append(records)
            counts["done"] += len(records)
            bar.update(len(batch))
    for actor in actors:
        ray.kill(actor)
    return counts
