"""A search run (``polar search``): many trees, batched rounds, one JSON line per finished problem.

The driver keeps a pool of trees. Each round it asks every tree that fits for its next leaves
(:meth:`Tree.propose`: the root alone in a tree's first round, then up to ``leaves_per_round``),
starts new trees from the queue while the batch has room, grades the whole batch with ONE
:meth:`Evaluator.evaluate` call of at most ``batch_size`` rows and feeds the grades back.
A tree's rounds are atomic (all its leaves go into one call), so each tree, and so each
record, is the same whatever the batch size or the other problems. With an evaluator that
carries unsettled rows into its next call (:meth:`GenerateEvaluator.evaluate_some` with
``defer_tokens``), a tree whose round still has rows running waits for them before it proposes again, and the
carried rows count toward the next call's ``batch_size``: the trees are the same; only the order
in which they finish (the file's order of records) may change.

Every finished problem is appended at once to a :class:`polar.jobs.ResultsFile` (flush +
fsync) with the PoLar supervision fields (``question``, ``gt_ans``, ``initial_score``,
``final_valid_transitions``, ``final_invalid_transitions``) and the run's settings (the
generation setting included: ``prompt_style``, ``max_new_tokens``, ``early_answer``); a rerun
skips finished problems and retries failed ones, and a file written with other settings is refused. ``shard=(i, n)``
keeps the problems whose id hashes to ``i`` modulo ``n``.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .._checks import check_int
from ..errors import UserError
from ..jobs import ModelWorker, RayOptions, ResultsFile, run_ray, versions
from ..models import load_model
from ..runtime import prefix_cache_bytes
from ..tasks import DEFAULT_PROMPT_STYLE, PROMPT_STYLES, Problem, resolve
from ._evaluate import DEFAULT_MAX_NEW_TOKENS, DEFAULT_PREFIX_CACHE_MB, Evaluator, GenerateEvaluator
from ._mcts import SearchConfig, Tree

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchRun:
    """Settings of one search run besides the tree search's own (:class:`SearchConfig`)."""

    model: str = "default"                     # 'default', a local folder or a cached hub id
    data: str = ""                             # --data spec
    prompt_style: str = DEFAULT_PROMPT_STYLE   # polar.tasks.PROMPT_STYLES
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    early_answer: bool = True                  # stop rows once the graded answer is final
    batch_size: int = 64                       # rows per generate call (does not change results)
    limit: int | None = None                   # first N problems of the data (before sharding)
    shard: tuple[int, int] | None = None       # (i, n): this run's 1/n of the problems
    search: SearchConfig = field(default_factory=SearchConfig)
    progress: bool = True                      # tqdm bar
    device: str | None = None                  # where the model runs (default CPU); not a result setting

    def validate(self) -> "SearchRun":
        """``self`` if the settings are usable, else ``ValueError`` naming the field."""
        self.search.validate()
        if self.prompt_style not in PROMPT_STYLES:
            raise UserError(f"unknown prompt style {self.prompt_style!r}; expected one of {PROMPT_STYLES}")
        if self.batch_size < self.search.leaves_per_round:
            raise UserError(f"batch size {self.batch_size} is smaller than leaves per round "
                            f"{self.search.leaves_per_round}")
        check_int(self.max_new_tokens, "max_new_tokens")
        check_int(self.limit, "limit", minimum=0, optional=True)
        if self.shard is not None:
            i, n = self.shard
            if not (n >= 1 and 0 <= i < n):
                raise UserError(f"bad shard {i}/{n}; expected I/N with 0 <= I < N")
        return self

    def settings(self) -> dict:
        """The fields a results file must agree on (checked on resume and merge)."""
        return {"model": self.model, "data": self.data, "prompt_style": self.prompt_style,
                "max_new_tokens": self.max_new_tokens, "early_answer": self.early_answer,
                **dataclasses.asdict(self.search)}


#: Fields of a search record that are run settings (same value in every line of a file).
SETTINGS_FIELDS: tuple[str, ...] = tuple(SearchRun().settings())


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``; ``ValueError`` otherwise."""
    head, sep, tail = text.partition("/")
    try:
        i, n = int(head), int(tail)
    except ValueError:
        i, n = -1, 0
    if not sep or not (n >= 1 and 0 <= i < n):
        raise UserError(f"bad shard {text!r}; expected I/N with 0 <= I < N, e.g. 0/4")
    return i, n


def shard_of(problem_id: str, num_shards: int) -> int:
    """The shard (``0 .. num_shards-1``) that owns a problem: a hash of its id, so the partition
    is the same on every machine and for any order or subset of the data."""
    digest = hashlib.sha256(problem_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def select_shard(problems: list[Problem], shard: tuple[int, int] | None) -> list[Problem]:
    """The problems of shard ``(i, n)`` in their order (all of them for ``None``)."""
    if shard is None:
        return list(problems)
    i, n = shard
    return [p for p in problems if shard_of(p.id, n) == i]


def problem_record(problem: Problem, tree: Tree, wall_s: float) -> dict:
    """The JSON record of a finished tree (settings are added by the results file)."""
    nodes = tree.evaluated()
    valid = [list(n.program) for n in nodes if n.correct]
    return {
        "id": problem.id, "question": problem.question, "gt_ans": problem.answer,
        "source": problem.source, "level": problem.level, "choices": problem.choices,
        "num_layers": tree.num_layers,
        "initial_score": 1.0 if tree.root.correct else 0.0,
        "final_valid_transitions": valid,
        "final_invalid_transitions": [list(n.program) for n in nodes if not n.correct],
        "simulations_run": tree.simulations, "programs_evaluated": len(nodes), "valid_programs": len(valid),
        "exhausted": tree.root.exhausted,
        "wall_s": round(wall_s, 3),  # from the tree's first round to its last (batches are shared)
    }


@dataclass
class _Active:
    problem: Problem
    tree: Tree
    started: float


def search_problems(problems: list[Problem], evaluator: Evaluator, config: SearchConfig, batch_size: int,
                    on_finish=None, progress: bool = False, max_active: int | None = None) -> dict[str, Tree]:
    """Search every problem with batched rounds (see the module docstring); ``on_finish(problem,
    tree, wall_s)`` is called as each tree finishes. Returns ``{problem id: tree}``.

    ``max_active``: at most this many trees in progress at once (None: as many as fill the
    batches). Trees are seeded per problem and never share a node, so the trees do not depend on
    it; a cap makes problems finish (and get written) steadily instead of all near the end, so a
    killed run loses less, at the price of less full batches when trees propose few leaves.
    ``progress``: a bar of problems done, with programs/s, the valid-program rate and, when the
    evaluator keeps a prefix cache, the share of prefix units it found there (``prefix_reuse``).
    """
    config.validate()
    check_int(max_active, "max_active", optional=True)
    repeated = [pid for pid, n in Counter(p.id for p in problems).items() if n > 1]
    if repeated:
        raise UserError(f"problem id {repeated[0]!r} appears twice in the data")
    if batch_size < config.leaves_per_round:
        raise UserError(f"batch size {batch_size} is smaller than leaves per round {config.leaves_per_round}")
    queue = deque(problems)
    active: deque[_Active] = deque()
    trees: dict[str, Tree] = {}
    evaluated = valid = 0
    # an evaluator that carries unsettled rows into its next call (GenerateEvaluator.evaluate_some)
    deferring = bool(getattr(evaluator, "defer_tokens", None)) and hasattr(evaluator, "evaluate_some")
    start = time.perf_counter()
    bar = tqdm(total=len(problems), desc="search", unit="problem", disable=not progress)
    try:
        while queue or active:
            batch: list[tuple[_Active, object]] = []
            served, waiting, blocked = [], [], []
            room = batch_size - (evaluator.carried if deferring else 0)  # carried rows are rows of the call
            for item in active:
                if item.tree.pending:  # some rows of its round are still being generated
                    blocked.append(item)
                    continue
                if len(batch) + item.tree.max_proposals(config.leaves_per_round) > room:
                    waiting.append(item)
                    continue
                batch += [(item, node) for node in item.tree.propose(config.leaves_per_round)]
                served.append(item)
            while queue and not waiting and len(batch) < room and (
                    max_active is None or len(served) + len(waiting) + len(blocked) < max_active):
                problem = queue.popleft()
                item = _Active(problem, Tree(problem.id, evaluator.num_layers, config), time.perf_counter())
                trees[problem.id] = item.tree
                batch += [(item, node) for node in item.tree.propose(config.leaves_per_round)]
                served.append(item)
            if deferring:
                graded = [(item, node, correct) for (item, node), correct in
                          evaluator.evaluate_some([((item, node), item.problem, node.program) for item, node in batch])]
            else:
                grades = evaluator.evaluate([(item.problem, node.program) for item, node in batch]) if batch else []
                graded = [(item, node, correct) for (item, node), correct in zip(batch, grades)]
            for item, node, correct in graded:
                item.tree.record(node, correct)
            evaluated += len(graded)
            valid += sum(correct for *_, correct in graded)
            active = deque(waiting)
            for item in blocked + served:
                if item.tree.finished:
                    if on_finish is not None:
                        on_finish(item.problem, item.tree, time.perf_counter() - item.started)
                    bar.update(1)
                else:
                    active.append(item)
            elapsed = max(time.perf_counter() - start, 1e-9)
            postfix = {"programs_per_s": f"{evaluated / elapsed:.2f}", "valid": f"{valid / max(evaluated, 1):.3f}"}
            cache = getattr(evaluator, "prefix_cache", None)
            if cache is not None and cache.hits + cache.misses:  # share of prefix units found in the cache
                postfix["prefix_reuse"] = f"{cache.hits / (cache.hits + cache.misses):.2f}"
            bar.set_postfix(postfix)
    finally:
        bar.close()
    return trees


class SearchWorker(ModelWorker):
    """Searches batches of problems with its own model (a :class:`polar.jobs.ModelWorker`): built
    once per Ray actor, on ``run.device`` (``--device``), else on the actor's GPU when it has one."""

    def __init__(self, run: SearchRun, threads: int | None = None, extra: dict | None = None,
                 prefix_cache_mb: int = DEFAULT_PREFIX_CACHE_MB):
        super().__init__(run.model, run.device, threads)
        self.run_settings, self.extra = run, dict(extra or {})
        self.evaluator = GenerateEvaluator(self.model, self.tokenizer, run.prompt_style, run.max_new_tokens,
                                           run.early_answer, prefix_cache_mb=prefix_cache_mb)

    def run(self, problems: list[Problem]) -> list[dict]:
        records: list[dict] = []
        search_problems(problems, self.evaluator, self.run_settings.search, self.run_settings.batch_size,
                        on_finish=lambda p, tree, wall: records.append({**problem_record(p, tree, wall), **self.extra}))
        return records


def run_search(run: SearchRun, out: str | Path, evaluator: Evaluator | None = None,
               problems: list[Problem] | None = None, ray: RayOptions | None = None,
               threads: int | None = None, max_active: int | None = None,
               prefix_cache_mb: int = DEFAULT_PREFIX_CACHE_MB, retry_failed: bool = True) -> dict:
    """Search the problems of ``run.data`` (or ``problems``), appending one record per finished
    problem to ``out`` and skipping those already there (failed ones are searched again unless
    ``retry_failed`` is off); returns a summary.

    ``evaluator``: default a :class:`GenerateEvaluator` on ``run.model`` (loaded only when some
    problem is left). Raises ``ValueError`` for bad settings or data and
    :class:`polar.jobs.SettingsMismatchError` when ``out`` holds other settings, before any
    model is loaded. ``ray``: run the problems on Ray actors instead (:func:`polar.jobs.run_ray`;
    each actor loads the model once and searches batches of ``ray.batch_units`` problems; trees are
    seeded per problem, so the records equal a local run's); ``threads`` per actor.
    ``max_active``: at most this many problems in progress at once (see :func:`search_problems`;
    not a setting of the results: the records do not depend on it). ``prefix_cache_mb``: memory
    for the few-shot prefix's states kept across rounds, per process (:class:`GenerateEvaluator`;
    not a setting of the results either).
    """
    run.validate()
    check_int(max_active, "max_active", optional=True)
    prefix_cache_bytes(prefix_cache_mb)  # bad flags fail before any model is loaded
    if problems is None:
        problems = resolve(run.data)
    if run.limit is not None:
        problems = problems[: run.limit]
    problems = select_shard(problems, run.shard)
    store = ResultsFile(out, run.settings(), retry_failed=retry_failed)
    store.load()
    todo = [p for p in problems if not store.is_done(p.id)]
    where = f" (shard {run.shard[0]}/{run.shard[1]})" if run.shard else ""
    logger.info("%d problems%s, %d already in %s, %d to search", len(problems), where, len(problems) - len(todo),
                out, len(todo))
    extra = {"batch_size": run.batch_size, "shard": f"{run.shard[0]}/{run.shard[1]}" if run.shard else None,
             "versions": versions()}

    def write(problem: Problem, tree: Tree, wall_s: float) -> None:
        store.append([{**problem_record(problem, tree, wall_s), **extra}])

    if todo and ray is not None:  # the actors load the model; this process only writes
        start = time.perf_counter()
        run_ray(todo, functools.partial(SearchWorker, run, threads, extra, prefix_cache_mb), store, ray, desc="search")
        searched = [p for p in todo if not store.records[p.id].get("failed")]
        return _summary(out, problems, searched, store, time.perf_counter() - start)
    if todo and evaluator is None:
        model, tokenizer = load_model(run.model, device=run.device)
        evaluator = GenerateEvaluator(model, tokenizer, run.prompt_style, run.max_new_tokens, run.early_answer,
                                      prefix_cache_mb=prefix_cache_mb)
    start = time.perf_counter()  # search time only (the model is loaded)
    if todo:
        search_problems(todo, evaluator, run.search, run.batch_size, on_finish=write, progress=run.progress,
                        max_active=max_active)
    summary = _summary(out, problems, todo, store, time.perf_counter() - start)
    cache = getattr(evaluator, "prefix_cache", None)
    if cache is not None:  # prefix units found in / computed and added to the cross-round cache
        summary["prefix_cache"] = {"units_found": cache.hits, "units_computed": cache.misses,
                                   "evictions": cache.evictions, "mb_held": round(cache.nbytes / 2**20, 1)}
    return summary


def _summary(out, problems: list[Problem], todo: list[Problem], store: ResultsFile, elapsed: float) -> dict:
    records = [store.records[p.id] for p in problems if p.id in store.records and not store.records[p.id].get("failed")]
    new = [store.records[p.id] for p in todo]
    evaluated = sum(r["programs_evaluated"] for r in new)
    return {
        "out": str(out), "problems": len(problems), "searched_now": len(todo), "elapsed_s": round(elapsed, 2),
        "failed": sum(1 for p in problems if store.records.get(p.id, {}).get("failed")),
        "programs_evaluated_now": evaluated, "programs_per_s": round(evaluated / elapsed, 3) if elapsed > 0 else None,
        "base_accuracy": sum(r["initial_score"] for r in records) / len(records) if records else None,
        "oracle_accuracy": sum(bool(r["valid_programs"]) for r in records) / len(records) if records else None,
        "valid_program_rate": (sum(r["valid_programs"] for r in records)
                               / max(1, sum(r["programs_evaluated"] for r in records))),
    }
