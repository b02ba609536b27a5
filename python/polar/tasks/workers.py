"""Running units of work (problems) on workers, with one writer (DESIGN.md section 8).

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
  because its actor is restarting is simply sent again. A rerun skips every unit already in the file.

Both write records as they arrive (flush + fsync per batch), so killing the driver at any moment
loses nothing already written.
"""
from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tqdm import tqdm

from .records import ResultsFile

logger = logging.getLogger(__name__)


class Worker(Protocol):
    def run(self, units: list[Any]) -> list[dict]: ...


@dataclass
class RayOptions:
    """How :func:`run_ray` uses the cluster."""

    address: str | None = None      # cluster address ('auto', 'ray://host:10001'); None: start a local one
    workers: int = 2                # actors (each builds its worker, e.g. loads the model, once)
    gpus_per_worker: float = 0.0    # GPUs reserved per actor (0: CPU threads)
    cpus_per_worker: float = 1.0    # CPUs reserved per actor
    batch_units: int = 4            # units per task
    max_in_flight: int | None = None  # batches out at once (default 2 per actor)
    max_attempts: int = 3           # a unit failing this often is marked failed
    max_restarts: int = -1          # Ray restarts of a dead actor (-1: always)


def _batches(units: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(units[i:i + size]) for i in range(0, len(units), size)]


def run_local(units: Sequence[Any], worker: Worker, store: ResultsFile, batch_units: int = 8,
              desc: str = "units", key: Callable[[Any], str] = lambda u: str(u.id)) -> None:
    """Run the units not yet in ``store`` on ``worker`` here, appending records as batches finish."""
    todo = [u for u in units if key(u) not in store.records]
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


def failure_record(unit_key: str, error: str, key_field: str = "id") -> dict:
    """The record written for a unit that failed every attempt."""
    return {key_field: unit_key, "failed": True, "error": error[-500:]}


def run_ray(units: Sequence[Any], factory: Callable[[], Worker], store: ResultsFile, options: RayOptions,
            desc: str = "units", key: Callable[[Any], str] = lambda u: str(u.id)) -> dict:
    """Run the units not yet in ``store`` on Ray actors; returns counts ``{done, failed, retried}``.

    Needs the optional dependency ``ray`` (``pip install 'polar[ray]'``): ``ImportError`` saying so."""
    try:
        import ray
        from ray.exceptions import ActorUnavailableError, RayActorError, RayError
    except ImportError as err:  # pragma: no cover - exercised where ray is absent
        raise ImportError("--ray needs the optional dependency ray: pip install 'polar[ray]'") from err
    if options.workers < 1 or options.batch_units < 1:
        raise ValueError("--workers and the batch size must be >= 1")
    if not ray.is_initialized():
        ray.init(address=options.address, log_to_driver=False, include_dashboard=False)
    actor_cls = ray.remote(num_cpus=options.cpus_per_worker, num_gpus=options.gpus_per_worker,
                           max_restarts=options.max_restarts, max_task_retries=0)(_Actor)
    actors = [actor_cls.remote(factory) for _ in range(options.workers)]
    todo = [u for u in units if key(u) not in store.records]
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
