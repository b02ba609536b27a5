"""``polar eval``: every method on the same problems in one resumable run.

Problems are taken in chunks; for a chunk, the candidates of all methods and problems are run
together through :func:`polar.generate` (greedy rows in calls of ``batch_size`` rows, a
problem's rows together, sampled rows grouped by temperature) under the prompt style's
generation setting (:func:`polar.tasks.generation_setting`: the search's token budget, stop
strings and early-answer rule), graded, and one record per problem is appended to
``OUT/records.jsonl`` (a rerun skips finished problems and retries failed ones; other settings
are refused). One row is generated per distinct (prompt, program, temperature, sampling seed)
and every candidate that asks for it reads it (base greedy, the full program among the best
static programs and the predictor's full-program candidate are one row): greedy decoding is
deterministic, so this is the same execution, not a cached verdict. One
:class:`polar.runtime.PrefixCache` serves the whole run (``prefix_cache_mb``), anchored at the
prompts' common token prefix (the few-shot shots), so each program prefix runs over the shots
once per run instead of once per call; greedy rows still unsettled after
:data:`DEFER_TOKENS` tokens of their call are continued together at the end of the chunk
(:func:`polar.runtime.resume.advance`: the same tokens) instead of decoding alone at the end of
each call. ``EvalConfig.legacy_rows`` runs the earlier plan (no cache, no continuation, rows in
method order; greedy rows deduplicated per problem and program), for tests and benchmarks: the
records are the same.

Router rows (``Candidate.router``: MindSkip, FlexiDepth, :class:`.methods.GatedRouter`) run through
``generate(model, tok, prompts, None, ..., router=R)``, grouped by (router, temperature) in calls
of ``batch_size`` rows under the same generation setting and row seeds, without prefix sharing or
the prefix cache (a routed call uses neither); one row per distinct (router, prompt, temperature,
seed), never merged with a plain program row. DR.LLM's rows are plain program rows (its decided
programs, :class:`.methods.RouterPrograms`).

Sampling is reproducible: every sampled row draws from its own generator, seeded from
``(seed, problem id, method, candidate rank)`` (:func:`row_seed`; a candidate's ``seed_of`` names
another method's candidate, whose row it then is: ``polar_mix``'s samples are base sampling's), so
a problem's records are the same whatever the batch size, the chunking, a kill and rerun, ``--limit``, or Ray.

The evaluation record (:data:`RECORD_FIELDS`, plus the run settings and ``wall_s``,
``overhead_s``): ``methods`` maps each method name to its candidates, each ``{program,
temperature, score, output, answer, correct, layers, unique_layers, logprob_first}`` (``logprob_first``:
the log-probability of the candidate's first answer token, :func:`polar.search._sweep.answer_logprobs`,
``None`` when it gave no answer token; records written before it existed lack the field, read as
``None``); router rows add ``executed_layers`` (FlexiDepth: the mean layers per processed token run
in full, ``GenerationResult.token_layers``; else the program length; the report's ``layers`` read
it instead of ``layers``) and, with attention gates, ``attention_open`` (the share of the ``D``
attention sub-layers run); a candidate the method could not run as chosen adds ``fallback: true``
(DR.LLM's empty program, run as the full program). A failed unit's record is
``{"key", "failed": true, "error"}``. :func:`read_eval_records` is the one reader.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from .._checks import check_int
from ..errors import UserError
from ..jobs import ModelWorker, RayOptions, ResultsFile, read_records, report_failed, run_ray, versions
from ..runtime import PrefixCache, generate, next_anchor, prefix_cache_bytes
from ..runtime.resume import ResumableRow, advance, row_text
from ..tasks import Problem, answer_rule, build_prompt, generation_setting, resolve
from .methods import (ROUTER_SAMPLE_TEMPERATURE, BaseGreedy, BaseSampling, Candidate, GatedRouter, Method,
                      MixedCandidates, PolarMethod, RandomSegmentPrograms, RandomSingleEdits, RouterPrograms, ScorerMethod,
                      SearchOracle, StaticPrograms, best_static_programs, is_scorer, sweep_static_programs)
from ..search._evaluate import DEFAULT_PREFIX_CACHE_MB
from ..search._sweep import answer_logprobs
from .shortgpt import block_influence, shortgpt_programs
from .metrics import candidate_answer, answer_correct

logger = logging.getLogger(__name__)

#: Fields of every evaluation record (besides the settings and the timings).
RECORD_FIELDS: tuple[str, ...] = ("key", "id", "data", "source", "level", "question", "gold", "methods")


@dataclass
class EvalConfig:
    """Settings of one evaluation run (recorded with every record)."""

    model: str = "default"                 # model name or folder
    data: list[str] = field(default_factory=list)  # --data specs, evaluated in order
    k: int = 5                             # candidates per method (pass@1..k, maj@k)
    batch_size: int = 64                   # rows per generate call (does not change results)
    prompt_style: str = "fewshot"
    max_new_tokens: int | None = None      # None: the style's generation setting (the search's)
    early_answer: bool | None = None       # None: the style's generation setting (on)
    seed: int = 0                          # sampling and random-program seeds
    limit: int | None = None               # first N problems of each spec
    chunk_problems: int = 16               # problems whose candidates run together (does not change results)
    checkpoint: str | None = None          # predictor checkpoint (recorded)
    routers: list[str] = field(default_factory=list)  # router checkpoints of the router methods (recorded)
    mix: str | None = None                 # polar_mix's "M:T" (M programs, then T samples; recorded)
    device: str | None = None              # where the model runs (Ray actors too); not a result setting
    prefix_cache_mb: int = DEFAULT_PREFIX_CACHE_MB  # the run's PrefixCache (0: none; does not change results)
    legacy_rows: bool = False              # the earlier execution plan (tests, benchmarks; same results)

    def generation(self) -> tuple[int, bool]:
        """``(max_new_tokens, early_answer)`` of this run: the style's setting unless overridden."""
        setting = generation_setting(self.prompt_style)
        return (setting.max_new_tokens if self.max_new_tokens is None else self.max_new_tokens,
                setting.early_answer if self.early_answer is None else self.early_answer)

    def settings(self, method_names: Sequence[str]) -> dict:
        """The fields every record of the run's file carries (checked on resume); ``routers`` only
        when some are given (files written before it existed resume as before)."""
        max_new, early = self.generation()
        out = {"model": self.model, "prompt_style": self.prompt_style, "max_new_tokens": max_new,
               "early_answer": early, "k": self.k, "seed": self.seed, "method_names": list(method_names),
               "checkpoint": self.checkpoint}
        if self.routers:
            out["routers"] = [str(r) for r in self.routers]
        if self.mix:
            out["mix"] = self.mix
        return out


@dataclass
class _Row:
    problem: int        # index into the chunk
    method: str
    rank: int
    candidate: Candidate


def row_seed(seed: int, problem_id: str, method: str, rank: int) -> int:
    """The generator seed of candidate ``rank`` of ``method`` on a problem (independent of the batch,
    the chunk, the run's cut and the machine)."""
    digest = hashlib.sha256(f"{seed}/{problem_id}/{method}/{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _row_seed(config: EvalConfig, problem: Problem, row: _Row) -> int:
    """:func:`row_seed` of a sampled row: its candidate's ``seed_of`` (method, rank), else its own."""
    method, rank = row.candidate.seed_of or (row.method, row.rank)
    return row_seed(config.seed, problem.id, method, rank)


def load_problems(config: EvalConfig) -> list[tuple[str, Problem]]:
    """``(spec, problem)`` for every spec, each cut to ``limit``. Errors before any model load."""
    if not config.data:
        raise UserError("give at least one --data spec")
    check_int(config.k, "--k")
    check_int(config.batch_size, "--batch-size")
    check_int(config.chunk_problems, "chunk_problems")
    check_int(config.limit, "--limit", minimum=0, optional=True)
    check_int(config.generation()[0], "--max-new-tokens")
    prefix_cache_bytes(config.prefix_cache_mb)
    out = []
    for spec in config.data:
        problems = resolve(spec)
        out += [(spec, p) for p in (problems[: config.limit] if config.limit is not None else problems)]
    return out


class EvalWorker(ModelWorker):
    """Evaluates batches of ``(spec, problem)`` units with its own model (a Ray actor's
    :class:`polar.jobs.ModelWorker`, on ``config.device``, else the actor's GPU if it has one)."""

    def __init__(self, config: EvalConfig, methods: Sequence[Method], threads: int | None = None):
        super().__init__(config.model, config.device, threads)
        self.config, self.methods = config, list(methods)
        self.cache = RunCache(self.model, config)

    def run(self, units: list[tuple[str, Problem]]) -> list[dict]:
        self.cache.declare(self.tokenizer, [build_prompt(p, self.config.prompt_style, self.tokenizer) for _, p in units])
        return _timed_chunk(units, self.methods, self.model, self.tokenizer, self.config, self.cache)


class RunCache:
    """The run's :class:`polar.runtime.PrefixCache` (``None`` with ``prefix_cache_mb=0`` or
    ``legacy_rows``) and its anchor: the longest common token prefix of every prompt declared so
    far (the few-shot shots and the question's fixed words), so that a call's prompts split there
    and their shots' states are found under one anchor whatever problems the call holds."""

    def __init__(self, model, config: EvalConfig):
        budget = 0 if config.legacy_rows else prefix_cache_bytes(config.prefix_cache_mb)
        self.cache = PrefixCache(budget, model) if budget else None
        self.anchor: tuple[int, ...] | None = None

    def declare(self, tokenizer, prompts: Sequence[str]) -> PrefixCache | None:
        """Shorten the anchor to the common token prefix of ``prompts`` and the anchor before
        (a single distinct prompt keeps it); returns the cache."""
        if self.cache is None:
            return None
        self.anchor = next_anchor(tokenizer(list(prompts), padding=False)["input_ids"], self.anchor)
        if self.anchor:
            self.cache.root(self.anchor, create=True)
        return self.cache


def read_eval_records(path: str | os.PathLike) -> list[dict]:
    """The records of an evaluation file (``OUT/records.jsonl``, or its folder), in file order;
    failed units are left out and named in one warning line."""
    path = Path(path)
    if path.is_dir():
        path = path / "records.jsonl"
    got = read_records(path, key="key", what="evaluation records")
    report_failed(got.failed, str(path))
    return got.records


def run_eval(config: EvalConfig, methods: Sequence[Method], model, tokenizer, out_dir: str | Path,
             problems: list[tuple[str, Problem]] | None = None, ray: RayOptions | None = None,
             threads: int | None = None, retry_failed: bool = True) -> list[dict]:
    """Run ``methods`` on the problems of ``config.data``; returns the records of every problem
    (old and new) in order, failed units left out (named in one warning line; a rerun retries them
    unless ``retry_failed`` is off). ``ray``: on Ray actors (:class:`EvalWorker`,
    ``ray.batch_units`` problems per task, this process the single writer); the records equal a
    local run's.

    Raises :class:`polar.UserError` for bad settings and :class:`~polar.jobs.SettingsMismatchError`
    when ``out_dir/records.jsonl`` holds another run's results."""
    problems = load_problems(config) if problems is None else problems
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise UserError(f"method names must be distinct, got {names}")
    settings = config.settings(names)
    store = ResultsFile(Path(out_dir) / "records.jsonl", settings, key="key", retry_failed=retry_failed)
    store.load()
    todo = [(s, p) for s, p in problems if not store.is_done(_key(s, p))]
    logger.info("%d problems, %d already done, %d to run", len(problems), len(problems) - len(todo), len(todo))
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "config.json").write_text(json.dumps({**asdict(config), **settings, "versions": versions()},
                                                          indent=2) + "\n")
    if ray is not None and todo:
        run_ray(todo, functools.partial(EvalWorker, config, list(methods), threads), store, ray, desc="eval",
                key=lambda unit: _key(*unit))
    elif todo:
        cache = RunCache(model, config)
        cache.declare(tokenizer, [build_prompt(p, config.prompt_style, tokenizer) for _, p in todo])
        with tqdm(total=len(todo), desc="eval", unit="problem") as bar:
            for c in range(0, len(todo), config.chunk_problems):
                chunk = todo[c:c + config.chunk_problems]
                store.append(_timed_chunk(chunk, methods, model, tokenizer, config, cache))
                bar.update(len(chunk))
    records = [store.records.get(_key(s, p)) for s, p in problems]
    failed = [_key(s, p) for (s, p), r in zip(problems, records) if r is None or r.get("failed")]
    report_failed(failed, str(store.path), "left out of the report" + ("; a rerun retries them" if retry_failed else ""))
    return [r for r in records if r is not None and not r.get("failed")]


def _key(spec: str, problem: Problem) -> str:
    return f"{spec}::{problem.id}"


def _timed_chunk(chunk, methods, model, tokenizer, config: EvalConfig, cache: RunCache | None = None) -> list[dict]:
    start = time.perf_counter()
    records = _run_chunk(chunk, methods, model, tokenizer, config, cache)
    wall = (time.perf_counter() - start) / len(chunk)
    for rec in records:
        rec["wall_s"] = round(wall, 4)
    return records


def _run_chunk(chunk, methods, model, tokenizer, config: EvalConfig, cache: RunCache | None = None) -> list[dict]:
    problems = [p for _, p in chunk]
    rows: list[_Row] = []
    overhead = {}
    for m in methods:
        if hasattr(m, "bind"):
            m.bind(model, tokenizer)
        before = m.overhead_s
        for i, cands in enumerate(m.candidates(problems, config.k)):
            rows += [_Row(i, m.name, r, c) for r, c in enumerate(cands[: config.k])]
        overhead[m.name] = (m.overhead_s - before) / len(problems)
    prompts = [build_prompt(p, config.prompt_style, tokenizer) for p in problems]
    routers = {m.name: m.router for m in methods if isinstance(m, GatedRouter)}
    if config.legacy_rows:
        outputs, logprobs, extras = _execute_legacy(rows, problems, prompts, model, tokenizer, config, routers)
    else:
        prefix_cache = cache.declare(tokenizer, prompts) if cache is not None else None
        outputs, logprobs, extras = _execute(rows, problems, prompts, model, tokenizer, config, prefix_cache,
                                             routers)
    records = []
    for i, (spec, problem) in enumerate(chunk):
        by_method: dict[str, list[dict]] = {m.name: [] for m in methods}
        for row, text, lp, extra in zip(rows, outputs, logprobs, extras):
            if row.problem != i:
                continue
            answer = candidate_answer(text, problem)
            by_method[row.method].append({
                "program": list(row.candidate.program), "temperature": row.candidate.temperature,
                "score": row.candidate.score, "output": text, "answer": answer,
                "correct": answer_correct(answer, problem), "layers": len(row.candidate.program),
                "unique_layers": len(set(row.candidate.program)), "logprob_first": lp, **extra,
                **({"fallback": True} if row.candidate.fallback else {})})
        records.append({"key": _key(spec, problem), "id": problem.id, "data": spec, "source": problem.source,
                        "level": problem.level, "question": problem.question, "gold": problem.answer,
                        "methods": by_method, "overhead_s": {k: round(v, 5) for k, v in overhead.items() if v}})
    return records


#: Greedy rows still unfinished after this many tokens of their call are continued together at the
#: end of the chunk (their answer has not settled; 95% of the sweeps' rows settle within 6 tokens;
#: bench/eval_speed.py measured 6 slightly faster than 8).
DEFER_TOKENS = 6


def _first_logprob(tokenizer, tokens, logprobs) -> float | None:
    """The first answer token's log-probability of a generated row (rounded as records store it)."""
    lp = answer_logprobs(tokenizer, tokens, logprobs)[0]
    return None if lp is None else round(float(lp), 5)


def _generate_groups(keys: list[tuple], groups: dict[tuple, list[int]], rows: list[_Row], prompts: list[str],
                     rules, model, tokenizer, config: EvalConfig, seeds=None, router=None, **generate_kwargs):
    """One :func:`polar.generate` row per key (its group's first row), in calls of ``batch_size``
    keys, with the run's token budget, stop strings and, where ``rules`` (one per problem, or
    ``None``), the early-answer rule as ``stop_fn``. ``seeds(part, firsts)`` gives a call's row
    seeds; with ``router`` the rows run under it (``programs=None``). Yields ``(key, result, row
    index in the result)``."""
    max_new = config.generation()[0]
    stop = list(generation_setting(config.prompt_style).stop_strings)
    for b in range(0, len(keys), config.batch_size):
        part = keys[b:b + config.batch_size]
        firsts = [rows[groups[k][0]] for k in part]
        stop_fn = (lambda i, text, firsts=firsts: rules[firsts[i].problem](text)) if rules is not None else None
        programs = None if router is not None else [r.candidate.program for r in firsts]
        kwargs = {"router": router} if router is not None else {}
        out = generate(model, tokenizer, [prompts[r.problem] for r in firsts], programs, max_new, stop_strings=stop,
                       stop_fn=stop_fn, seed=seeds(part, firsts) if seeds is not None else None, **kwargs,
                       **generate_kwargs)
        for r, k in enumerate(part):
            yield k, out, r


def _execute(rows: list[_Row], problems: list[Problem], prompts: list[str], model, tokenizer,
             config: EvalConfig, prefix_cache: PrefixCache | None = None, routers: dict | None = None
             ) -> tuple[list[str], list[float | None], list[dict]]:
    """Output text, first-answer-token log-probability and router statistics (``{}`` for program
    rows) of every row (see the module docstring): one generated row per distinct (prompt,
    program, temperature, seed); greedy ones a problem's rows together in calls of ``batch_size``
    (rows unfinished after :data:`DEFER_TOKENS` tokens continued together afterwards), sampled
    ones per temperature, each from its own generator (:func:`row_seed`); router rows by
    :func:`_execute_routed` (``routers``: method name -> router)."""
    max_new, early = config.generation()
    stop = list(generation_setting(config.prompt_style).stop_strings)
    rules = [answer_rule(config.prompt_style, p) if early else None for p in problems]
    groups: dict[tuple, list[int]] = {}
    routed: list[int] = []
    for j, row in enumerate(rows):
        c, problem = row.candidate, problems[row.problem]
        if c.router is not None:
            routed.append(j)
            continue
        seed = _row_seed(config, problem, row) if c.temperature > 0 else None
        groups.setdefault((c.temperature, prompts[row.problem], bool(problem.choices), tuple(c.program), seed),
                          []).append(j)
    texts: list[str | None] = [None] * len(rows)
    firsts_lp: list[float | None] = [None] * len(rows)

    def fan_out(key: tuple, text: str, tokens, logprobs) -> None:
        lp = _first_logprob(tokenizer, tokens, logprobs)
        for j in groups[key]:
            texts[j], firsts_lp[j] = text, lp

    ids = tokenizer(list(prompts), padding=False)["input_ids"]
    greedy = sorted((k for k in groups if k[0] == 0), key=lambda k: (rows[groups[k][0]].problem, k[3]))
    runs: dict[tuple, ResumableRow] = {}
    for b in range(0, len(greedy), config.batch_size):
        part = greedy[b:b + config.batch_size]
        firsts = [rows[groups[k][0]] for k in part]
        batch = [ResumableRow(list(ids[r.problem]), list(r.candidate.program), rules[r.problem]) for r in firsts]
        advance(model, tokenizer, batch, max_new, stop, cut_after=DEFER_TOKENS, prefix_cache=prefix_cache)
        runs.update(zip(part, batch))
    tail = [r for r in runs.values() if not r.done]
    for b in range(0, len(tail), config.batch_size):
        advance(model, tokenizer, tail[b:b + config.batch_size], max_new, stop, prefix_cache=prefix_cache)
    for k, r in runs.items():
        fan_out(k, row_text(tokenizer, r, stop), r.tokens, r.token_logprobs)
    for temp in sorted({k[0] for k in groups if k[0] > 0}):
        keys = [k for k in groups if k[0] == temp]
        for k, out, r in _generate_groups(keys, groups, rows, prompts, rules if early else None, model, tokenizer,
                                          config, seeds=lambda part, firsts: [k[4] for k in part], do_sample=True,
                                          temperature=temp, prefix_cache=prefix_cache):
            fan_out(k, out.texts[r], out.tokens[r], out.token_logprobs[r])
    extras: list[dict] = [{} for _ in rows]
    for j, (text, lp, extra) in _execute_routed(routed, rows, problems, prompts, model, tokenizer, config,
                                                routers or {}).items():
        texts[j], firsts_lp[j], extras[j] = text, lp, extra
    return texts, firsts_lp, extras  # type: ignore[return-value]


def _execute_routed(routed: list[int], rows: list[_Row], problems: list[Problem], prompts: list[str], model,
                    tokenizer, config: EvalConfig, routers: dict) -> dict[int, tuple[str, float | None, dict]]:
    """``{row index: (text, first-answer-token log-probability, statistics)}`` of the router rows
    ``routed``: one generated row per distinct (router, prompt, temperature, seed), in
    ``generate(..., router=R)`` calls of ``batch_size`` rows per (router, temperature), with the
    run's generation setting and row seeds. Statistics: ``executed_layers`` (the mean layers per
    processed token run in full under token gates, else the program length) and, with attention
    gates, ``attention_open`` (the mean of the row's ``[D]`` attention gates)."""
    if not routed:
        return {}
    early = config.generation()[1]
    rules = [answer_rule(config.prompt_style, p) for p in problems] if early else None
    groups: dict[tuple, list[int]] = {}
    for j in routed:
        row = rows[j]
        c, problem = row.candidate, problems[row.problem]
        if c.router not in routers:
            raise UserError(f"method {row.method!r} asks for router {c.router!r}, which no GatedRouter method holds")
        seed = _row_seed(config, problem, row) if c.temperature > 0 else None
        groups.setdefault((c.router, c.temperature, prompts[row.problem], bool(problem.choices), seed), []).append(j)
    out_rows: dict[int, tuple[str, float | None, dict]] = {}
    for name, temp in sorted({k[:2] for k in groups}):
        keys = [k for k in groups if k[:2] == (name, temp)]
        for k, out, r in _generate_groups(keys, groups, rows, prompts, rules, model, tokenizer, config,
                                          seeds=(lambda part, firsts: [k[4] for k in part]) if temp > 0 else None,
                                          router=routers[name], do_sample=temp > 0,
                                          temperature=temp if temp > 0 else 1.0):
            lp = _first_logprob(tokenizer, out.tokens[r], out.token_logprobs[r])
            layers = out.token_layers[r] if out.token_layers is not None else len(out.programs[r])
            extra = {"executed_layers": round(float(layers), 4)}
            if out.attention_gates is not None:
                extra["attention_open"] = round(float(out.attention_gates[r].mean()), 4)
            for j in groups[k]:
                out_rows[j] = (out.texts[r], lp, dict(extra))
    return out_rows


def _execute_legacy(rows: list[_Row], problems: list[Problem], prompts: list[str], model, tokenizer,
                    config: EvalConfig, routers: dict | None = None
                    ) -> tuple[list[str], list[float | None], list[dict]]:
    """The earlier plan (``EvalConfig.legacy_rows``): output text and first-answer-token log-probability of every row: greedy rows deduplicated per (problem, program), then all rows of
    one temperature in ``generate`` calls of ``batch_size`` rows; a sampled row draws from its own
    generator (:func:`row_seed`). Router rows as in :func:`_execute` (:func:`_execute_routed`)."""
    early = config.generation()[1]
    rules = [answer_rule(config.prompt_style, p) for p in problems] if early else None
    texts: list[str | None] = [None] * len(rows)
    firsts_lp: list[float | None] = [None] * len(rows)
    groups: dict[tuple, list[int]] = {}
    routed = [j for j, row in enumerate(rows) if row.candidate.router is not None]
    for j, row in enumerate(rows):
        c = row.candidate
        if c.router is not None:
            continue
        key = (c.temperature, row.problem, tuple(c.program)) if c.temperature == 0 else (c.temperature, j)
        groups.setdefault(key, []).append(j)
    by_temp: dict[float, list[tuple]] = {}
    for key in groups:
        by_temp.setdefault(key[0], []).append(key)
    def seeds(part, firsts):
        return [_row_seed(config, problems[r.problem], r) for r in firsts]

    for temp, keys in sorted(by_temp.items()):
        for k, out, r in _generate_groups(keys, groups, rows, prompts, rules, model, tokenizer, config,
                                          seeds=seeds if temp > 0 else None, do_sample=temp > 0,
                                          temperature=temp if temp > 0 else 1.0):
            lp = _first_logprob(tokenizer, out.tokens[r], out.token_logprobs[r])
            for j in groups[k]:
                texts[j], firsts_lp[j] = out.texts[r], lp
    extras: list[dict] = [{} for _ in rows]
    for j, (text, lp, extra) in _execute_routed(routed, rows, problems, prompts, model, tokenizer, config,
                                                routers or {}).items():
        texts[j], firsts_lp[j], extras[j] = text, lp, extra
    return texts, firsts_lp, extras  # type: ignore[return-value]


#: The online-router methods (docs/architecture.md section 15): each needs a router checkpoint of its kind.
ROUTER_METHODS = ("drllm", "mindskip", "flexidepth")
#: ``polar eval --methods``'s default (without ``--routers``): every method but the router ones.
DEFAULT_METHODS = ("polar", "base_greedy", "base_sample", "shortgpt", "best_static", "random_single_edit",
                   "random_segment", "oracle")
#: Method names ``polar eval --methods`` accepts (``base_sample`` expands to one per temperature;
#: ``polar_mix`` needs ``--mix M:T``).
METHOD_NAMES = DEFAULT_METHODS + ROUTER_METHODS + ("polar_mix",)
DEFAULT_TEMPERATURES = (0.3, 0.7, 1.0)

_ROUTER_DEFINITIONS = {
    "drllm": ("DR.LLM router: per problem the program it decides over the prompt (skip / run / repeat per layer), "
              "run as a program; candidate 1 greedy, candidates 2..k T={t:g} samples under the router's decisions "
              "(the same program); a problem whose decided program is empty runs the full program instead "
              "(`fallback` in summary.json: the share of such candidates)"),
    "mindskip": ("MindSkip router: generate(router=) with attention gates decided over the prompt; candidate 1 "
                 "greedy, candidates 2..k T={t:g} samples under the router's decisions; `layers` = D (every layer "
                 "runs), `attention_open` = % of the D attention sub-layers run"),
    "flexidepth": ("FlexiDepth router: generate(router=) with per-token layer gates; candidate 1 greedy, candidates "
                   "2..k T={t:g} samples under the router's decisions; `layers` = mean layers per processed token "
                   "(prompt and generated) run in full"),
}


def build_methods(names: Sequence[str], model, tokenizer, *, k: int, seed: int = 0, predictor=None,
                  search_records: Sequence[dict] = (), shortgpt_problems: Sequence[Problem] = (),
                  prompt_style: str = "fewshot", temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
                  train_sweep=None, routers: dict | None = None, batch_size: int = 64,
                  mix: tuple[int, float] | None = None) -> list[Method]:
    """The methods named in ``names`` (see :data:`METHOD_NAMES`), checked before any compute:
    ``polar`` needs a predictor (the segment predictor, or a scorer: its :meth:`Scorer.select`
    top-k), ``oracle`` needs search results, ``best_static`` a training sweep matrix
    (``train_sweep``, a :class:`polar.search.SweepMatrix`: the static set cover on it, as the
    learnability study defines best static) or else search results (the programs most often valid
    in search), ``shortgpt`` needs training problems (its Block Influence is measured on their
    prompts), ``drllm`` / ``mindskip`` / ``flexidepth`` a router of that kind in ``routers``
    (``{kind: router}``, e.g. :func:`polar.routers.load_router`; a router with a ``kind``
    attribute must have that kind): :class:`RouterPrograms` (DR.LLM's decided programs, routed in
    calls of ``batch_size`` prompts) and :class:`GatedRouter`; ``polar_mix`` the predictor and ``mix``
    (``(m, T)``: :class:`MixedCandidates`, polar's first ``m`` candidates, then ``base_sample_t{T}``'s
    samples). Each method's ``definition`` says
    which definition it uses where there are several."""
    unknown = [n for n in names if n not in METHOD_NAMES]
    if unknown:
        raise UserError(f"unknown method {unknown[0]!r}; expected some of {METHOD_NAMES}")
    routers = dict(routers or {})
    for name in (n for n in ROUTER_METHODS if n in names):
        if name not in routers:
            raise UserError(f"method {name!r} needs a {name} router checkpoint (--routers; polar train-router "
                            f"--kind {name})")
        kind = getattr(routers[name], "kind", name)
        if kind != name:
            raise UserError(f"method {name!r} got a {kind} router; expected a {name} one")
    for name in ("polar", "polar_mix"):
        if name in names and predictor is None:
            raise UserError(f"method {name!r} needs a predictor checkpoint (--checkpoint)")
    if "polar_mix" in names and mix is None:
        raise UserError("method 'polar_mix' needs --mix M:T (M programs, then samples at temperature T)")
    if "oracle" in names and not search_records:
        raise UserError("method 'oracle' needs search results (--search)")
    if "best_static" in names and not search_records and train_sweep is None:
        raise UserError("method 'best_static' needs a training sweep (--train-sweep) or search results (--search)")
    if "shortgpt" in names and not shortgpt_problems:
        raise UserError("method 'shortgpt' needs training problems for Block Influence (--train-data)")
    D = model.config.num_hidden_layers
    methods: list[Method] = []

    def polar_method() -> Method:
        if is_scorer(predictor):
            m = ScorerMethod(predictor, model=model, tokenizer=tokenizer, prompt_style=prompt_style)
            m.definition = "scorer: Scorer.select top-k (expected pass@k)"
        else:
            m = PolarMethod(predictor)
            m.definition = "segment predictor: top-k predictions"
        return m

    for name in names:
        if name == "polar":
            methods.append(polar_method())
        elif name == "polar_mix":
            m = MixedCandidates(polar_method(), D, *mix)
            m.definition = (f"polar's first {mix[0]} candidates, then samples of the full program at T={mix[1]:g} "
                            f"(base_sample_t{mix[1]:g}'s own samples: same seeds, same rows) up to k")
            methods.append(m)
        elif name == "base_greedy":
            methods.append(BaseGreedy(D))
        elif name == "base_sample":
            methods += [BaseSampling(D, t) for t in temperatures]
        elif name == "shortgpt":
            prompts = [build_prompt(p, prompt_style, tokenizer) for p in shortgpt_problems]
            methods.append(StaticPrograms("shortgpt", shortgpt_programs(block_influence(model, tokenizer, prompts), k)))
        elif name == "best_static":
            if train_sweep is not None:
                m = StaticPrograms("best_static", sweep_static_programs(train_sweep, k))
                m.definition = (f"set cover on the training sweep matrix ({len(train_sweep.records)} problems x "
                                f"{len(train_sweep.entries)} entries; polar.predictor.static_cover)")
            else:
                m = StaticPrograms("best_static", best_static_programs(search_records, k))
                m.definition = "the programs most often valid in search results (no --train-sweep given)"
            methods.append(m)
        elif name == "random_single_edit":
            methods.append(RandomSingleEdits(D, seed))
        elif name == "random_segment":
            methods.append(RandomSegmentPrograms(D, seed))
        elif name == "oracle":
            methods.append(SearchOracle(search_records))
        elif name in ROUTER_METHODS:
            if name == "drllm":
                m = RouterPrograms(routers[name], model, tokenizer, name=name, prompt_style=prompt_style,
                                   batch_size=batch_size)
            else:
                m = GatedRouter(routers[name], D, name)
            m.definition = _ROUTER_DEFINITIONS[name].format(t=ROUTER_SAMPLE_TEMPERATURE)
            methods.append(m)
    return methods
