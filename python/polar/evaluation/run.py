"""``polar eval``: every method on the same problems in one resumable run.

Problems are taken in chunks; for a chunk, the candidates of all methods and problems are run
together through :func:`polar.generate` (greedy rows in one call per ``batch_size`` rows, sampled
rows grouped by temperature), graded, and one record per problem is appended to
``OUT/records.jsonl`` (a rerun skips finished problems; other settings are refused). Identical
greedy rows of one problem (the same program under two methods) run once and count for both:
greedy decoding is deterministic, so this is the same execution, not a cached verdict.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import transformers
from tqdm import tqdm

from ..models import load_model
from ..runtime import generate
from ..tasks import Problem, ResultsFile, build_prompt, resolve, stop_strings
from ..tasks.workers import RayOptions, run_ray
from .accuracy import DEFAULT_MAX_NEW_TOKENS
from .methods import (BaseGreedy, BaseSampling, Candidate, Method, PolarMethod, RandomSegmentPrograms,
                      RandomSingleEdits, SearchOracle, StaticPrograms, best_static_programs)
from .shortgpt import block_influence, shortgpt_programs
from .metrics import candidate_answer, answer_correct

logger = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """Settings of one evaluation run (recorded with every record)."""

    model: str = "default"                 # model name or folder
    data: list[str] = field(default_factory=list)  # --data specs, evaluated in order
    k: int = 5                             # candidates per method (pass@1..k, maj@k)
    batch_size: int = 64                   # rows per generate call
    prompt_style: str = "fewshot"
    max_new_tokens: int | None = None      # None: the style's default
    seed: int = 0                          # sampling and random-program seeds
    limit: int | None = None               # first N problems of each spec
    chunk_problems: int = 16               # problems whose candidates run together
    checkpoint: str | None = None          # predictor checkpoint (recorded)


@dataclass
class _Row:
    problem: int        # index into the chunk
    method: str
    rank: int
    candidate: Candidate


def _versions() -> dict:
    return {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()}


def load_problems(config: EvalConfig) -> list[tuple[str, Problem]]:
    """``(spec, problem)`` for every spec, each cut to ``limit``. Errors before any model load."""
    if not config.data:
        raise ValueError("give at least one --data spec")
    if config.k < 1:
        raise ValueError(f"--k must be >= 1, got {config.k}")
    out = []
    for spec in config.data:
        problems = resolve(spec)
        out += [(spec, p) for p in (problems[: config.limit] if config.limit is not None else problems)]
    return out


class EvalWorker:
    """Evaluates batches of ``(spec, problem)`` units with its own model (a Ray actor's worker)."""

    def __init__(self, config: EvalConfig, methods: Sequence[Method], threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        self.model, self.tokenizer = load_model(config.model)
        if torch.cuda.is_available():
            self.model = self.model.to("cuda")
        self.config, self.methods = config, list(methods)

    def run(self, units: list[tuple[str, Problem]]) -> list[dict]:
        max_new = self.config.max_new_tokens or DEFAULT_MAX_NEW_TOKENS[self.config.prompt_style]
        start = time.perf_counter()
        seed = int(hashlib.sha256(_key(*units[0]).encode()).hexdigest()[:8], 16) + self.config.seed
        records = _run_chunk(units, self.methods, self.model, self.tokenizer, self.config, max_new,
                             stop_strings(self.config.prompt_style), seed)
        for rec in records:
            rec["wall_s"] = round((time.perf_counter() - start) / len(units), 4)
        return records


def run_eval(config: EvalConfig, methods: Sequence[Method], model, tokenizer, out_dir: str | Path,
             problems: list[tuple[str, Problem]] | None = None, ray: RayOptions | None = None,
             threads: int | None = None) -> list[dict]:
    """Run ``methods`` on the problems of ``config.data``; returns all records (old and new).
    ``ray``: on Ray actors (:class:`EvalWorker`, ``ray.batch_units`` problems per task, this process
    the single writer); sampled candidates then depend on how problems were grouped.

    Raises ``ValueError`` for bad settings and :class:`~polar.tasks.SettingsMismatchError` when
    ``out_dir/records.jsonl`` holds another run's results."""
    problems = load_problems(config) if problems is None else problems
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be distinct, got {names}")
    max_new = config.max_new_tokens or DEFAULT_MAX_NEW_TOKENS[config.prompt_style]
    settings = {"model": config.model, "prompt_style": config.prompt_style, "max_new_tokens": max_new,
                "k": config.k, "seed": config.seed, "method_names": names, "checkpoint": config.checkpoint}
    store = ResultsFile(Path(out_dir) / "records.jsonl", settings, key="key")
    done = store.load()
    todo = [(s, p) for s, p in problems if _key(s, p) not in done]
    logger.info("%d problems, %d already done, %d to run", len(problems), len(problems) - len(todo), len(todo))
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "config.json").write_text(json.dumps({**asdict(config), **settings, "versions": _versions()},
                                                          indent=2) + "\n")
    if ray is not None and todo:
        run_ray(todo, functools.partial(EvalWorker, config, list(methods), threads), store, ray, desc="eval",
                key=lambda unit: _key(*unit))
        return [store.records[_key(s, p)] for s, p in problems]
    stop = stop_strings(config.prompt_style)
    with tqdm(total=len(todo), desc="eval", unit="problem") as bar:
        for c in range(0, len(todo), config.chunk_problems):
            chunk = todo[c:c + config.chunk_problems]
            start = time.perf_counter()
            records = _run_chunk(chunk, methods, model, tokenizer, config, max_new, stop, seed=config.seed + c)
            wall = (time.perf_counter() - start) / len(chunk)
            for rec in records:
                rec["wall_s"] = round(wall, 4)
            store.append(records)
            bar.update(len(chunk))
    return [store.records[_key(s, p)] for s, p in problems]


def _key(spec: str, problem: Problem) -> str:
    return f"{spec}::{problem.id}"


def _run_chunk(chunk, methods, model, tokenizer, config, max_new, stop, seed) -> list[dict]:
    problems = [p for _, p in chunk]
    rows: list[_Row] = []
    overhead = {}
    for m in methods:
        before = m.overhead_s
        for i, cands in enumerate(m.candidates(problems, config.k)):
            rows += [_Row(i, m.name, r, c) for r, c in enumerate(cands[: config.k])]
        overhead[m.name] = (m.overhead_s - before) / len(problems)
    prompts = [build_prompt(p, config.prompt_style, tokenizer) for p in problems]
    outputs = _execute(rows, prompts, model, tokenizer, config.batch_size, max_new, stop, seed)
    records = []
    for i, (spec, problem) in enumerate(chunk):
        by_method: dict[str, list[dict]] = {m.name: [] for m in methods}
        for row, text in zip(rows, outputs):
            if row.problem != i:
                continue
            answer = candidate_answer(text, problem)
            by_method[row.method].append({
                "program": list(row.candidate.program), "temperature": row.candidate.temperature,
                "score": row.candidate.score, "output": text, "answer": answer,
                "correct": answer_correct(answer, problem), "layers": len(row.candidate.program),
                "unique_layers": len(set(row.candidate.program))})
        records.append({"key": _key(spec, problem), "id": problem.id, "data": spec, "source": problem.source,
                        "level": problem.level, "question": problem.question, "gold": problem.answer,
                        "methods": by_method, "overhead_s": {k: round(v, 5) for k, v in overhead.items() if v}})
    return records


def _execute(rows: list[_Row], prompts: list[str], model, tokenizer, batch_size: int, max_new: int,
             stop: list[str], seed: int) -> list[str]:
    """Output text of every row: greedy rows deduplicated per (problem, program), then all rows of
    one temperature in ``generate`` calls of ``batch_size`` rows."""
    texts: list[str | None] = [None] * len(rows)
    groups: dict[tuple, list[int]] = {}
    for j, row in enumerate(rows):
        c = row.candidate
        key = (c.temperature, row.problem, tuple(c.program)) if c.temperature == 0 else (c.temperature, j)
        groups.setdefault(key, []).append(j)
    by_temp: dict[float, list[tuple]] = {}
    for key in groups:
        by_temp.setdefault(key[0], []).append(key)
    for temp, keys in sorted(by_temp.items()):
        for b in range(0, len(keys), batch_size):
            part = keys[b:b + batch_size]
            firsts = [rows[groups[k][0]] for k in part]
            out = generate(model, tokenizer, [prompts[r.problem] for r in firsts], [r.candidate.program for r in firsts],
                           max_new, stop_strings=stop, do_sample=temp > 0, temperature=temp if temp > 0 else 1.0,
                           seed=_seed(seed, temp, b))
            for k, text in zip(part, out.texts):
                for j in groups[k]:
                    texts[j] = text
    return texts  # type: ignore[return-value]


def _seed(seed: int, temp: float, b: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{temp}/{b}".encode()).digest()[:4], "big")


#: Method names ``polar eval --methods`` accepts (``base_sample`` expands to one per temperature).
METHOD_NAMES = ("polar", "base_greedy", "base_sample", "shortgpt", "best_static", "random_single_edit",
                "random_segment", "oracle")
DEFAULT_TEMPERATURES = (0.3, 0.7, 1.0)


def build_methods(names: Sequence[str], model, tokenizer, *, k: int, seed: int = 0, predictor=None,
                  search_records: Sequence[dict] = (), shortgpt_problems: Sequence[Problem] = (),
                  prompt_style: str = "fewshot", temperatures: Sequence[float] = DEFAULT_TEMPERATURES) -> list[Method]:
    """The methods named in ``names`` (see :data:`METHOD_NAMES`), checked before any compute:
    ``polar`` needs a predictor, ``best_static`` / ``oracle`` need search results, ``shortgpt``
    needs training problems (its Block Influence is measured on their prompts)."""
    unknown = [n for n in names if n not in METHOD_NAMES]
    if unknown:
        raise ValueError(f"unknown method {unknown[0]!r}; expected some of {METHOD_NAMES}")
    if "polar" in names and predictor is None:
        raise ValueError("method 'polar' needs a predictor checkpoint (--checkpoint)")
    if {"best_static", "oracle"} & set(names) and not search_records:
        raise ValueError("methods 'best_static' and 'oracle' need search results (--search)")
    if "shortgpt" in names and not shortgpt_problems:
        raise ValueError("method 'shortgpt' needs training problems for Block Influence (--train-data)")
    D = model.config.num_hidden_layers
    methods: list[Method] = []
    for name in names:
        if name == "polar":
            methods.append(PolarMethod(predictor))
        elif name == "base_greedy":
            methods.append(BaseGreedy(D))
        elif name == "base_sample":
            methods += [BaseSampling(D, t) for t in temperatures]
        elif name == "shortgpt":
            prompts = [build_prompt(p, prompt_style, tokenizer) for p in shortgpt_problems]
            methods.append(StaticPrograms("shortgpt", shortgpt_programs(block_influence(model, tokenizer, prompts), k)))
        elif name == "best_static":
            methods.append(StaticPrograms("best_static", best_static_programs(search_records, k)))
        elif name == "random_single_edit":
            methods.append(RandomSingleEdits(D, seed))
        elif name == "random_segment":
            methods.append(RandomSegmentPrograms(D, seed))
        elif name == "oracle":
            methods.append(SearchOracle(search_records))
    return methods
