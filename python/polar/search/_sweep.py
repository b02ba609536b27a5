"""The program-library sweep (``polar sweep``): every library entry on every problem of a data set.

Search finds programs per problem; the sweep measures which programs work *across* problems: a
dense (problem x entry) matrix of generated texts, extracted answers, grades and the answer's
log-probability under the entry's program (its first answer token, and the mean over the answer's
tokens). Entries are programs (greedy) or temperature samples of the full program
(:mod:`._library`).

Generation is the search's setting for the prompt style (:class:`GenerateEvaluator`: budget
``max_new_tokens``, the style's stop strings, the early-answer rule), so sweep and search grades
agree. Rows of several problems go into one :func:`polar.runtime.generate` call (greedy entries
together, each temperature apart); shared-prefix execution computes a state shared by several
rows once, and one :class:`polar.runtime.PrefixCache` for the whole run keeps the few-shot
prefix's states per program prefix, so after the first call only the question and the answer
are computed. A sample's seed is a hash of ``(seed, problem id, temperature, index)``, so it does
not depend on the batch, the shard or a restart.

One JSON line per finished problem (:class:`polar.tasks.ResultsFile`: resumable, settings
checked), the library itself beside it in ``<out>.library.json``. :func:`read_sweep` loads one or
more files into a :class:`SweepMatrix`.
"""
from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .._checks import check_int
from ..errors import UserError, UserFileNotFoundError
from ..models import load_model, model_depth
from ..runtime import PrefixCache, generate, next_anchor, prefix_cache_bytes
from ..jobs import ModelWorker, RayOptions, ResultsFile, read_jsonl, run_ray
from ..jobs import versions as _versions
from ..tasks import (DEFAULT_PROMPT_STYLE, PROMPT_STYLES, Problem, answer_rule, build_prompt,
                     extract_answer, is_correct, resolve, stop_strings)
from ._evaluate import DEFAULT_MAX_NEW_TOKENS, DEFAULT_PREFIX_CACHE_MB
from ._library import DEFAULT_LIBRARY, LibraryEntry, build_library, library_from_json, library_sha256, library_to_json, parse_library
from ._run import select_shard

logger = logging.getLogger(__name__)

#: Per-entry fields of a sweep record (lists in library order).
ENTRY_FIELDS: tuple[str, ...] = ("texts", "answers", "correct", "logprob_first", "logprob_mean", "new_tokens")


@dataclass(frozen=True)
class SweepRun:
    """Settings of one sweep (the first six are recorded in every record and checked on resume)."""

    model: str = "default"                     # 'default', a local folder or a cached hub id
    data: str = ""                             # --data spec
    library: str = DEFAULT_LIBRARY             # library spec (polar.search._library)
    prompt_style: str = DEFAULT_PROMPT_STYLE   # polar.tasks.PROMPT_STYLES
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS  # the search's budget
    early_answer: bool = True                  # stop rows once the graded answer is final (as the search)
    seed: int = 0                              # seeds of the sample entries
    batch_size: int = 256                      # rows per generate call (does not change results)
    limit: int | None = None                   # first N problems of the data (before sharding)
    shard: tuple[int, int] | None = None       # (i, n): this run's 1/n of the problems
    progress: bool = True
    device: str | None = None

    def validate(self) -> "SweepRun":
        if self.prompt_style not in PROMPT_STYLES:
            raise UserError(f"unknown prompt style {self.prompt_style!r}; expected one of {PROMPT_STYLES}")
        parse_library(self.library)
        check_int(self.max_new_tokens, "max_new_tokens")
        check_int(self.batch_size, "batch_size")
        check_int(self.limit, "limit", minimum=0, optional=True)
        if self.shard is not None and not (self.shard[1] >= 1 and 0 <= self.shard[0] < self.shard[1]):
            raise UserError(f"bad shard {self.shard[0]}/{self.shard[1]}; expected I/N with 0 <= I < N")
        return self

    def settings(self, entries: Sequence[LibraryEntry]) -> dict:
        return {"model": self.model, "data": self.data, "library": self.library,
                "library_sha256": library_sha256(entries), "prompt_style": self.prompt_style,
                "max_new_tokens": self.max_new_tokens, "early_answer": self.early_answer, "seed": self.seed}


def sample_seed(seed: int, problem_id: str, temperature: float, index: int) -> int:
    """The generator seed of sample ``index`` at ``temperature`` on a problem (batch-independent)."""
    digest = hashlib.sha256(f"{seed}/{problem_id}/{temperature!r}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def answer_logprobs(tokenizer, tokens: Sequence[int], logprobs: Sequence[float]) -> tuple[float | None, float | None]:
    """``(first, mean)`` log-probability of the answer's tokens: the generated tokens that carry
    text other than whitespace, up to the first newline after content (EOS and the stop newline
    excluded); ``(None, None)`` when there are none."""
    picked: list[float] = []
    for tok, lp in zip(tokens, logprobs):
        piece = tokenizer.decode([tok], skip_special_tokens=True)
        if picked and "\n" in piece:
            if piece.split("\n", 1)[0].strip():
                picked.append(lp)
            break
        if piece.strip():
            picked.append(lp)
    if not picked:
        return None, None
    return picked[0], sum(picked) / len(picked)


class Sweeper(ModelWorker):
    """Runs a library on problems with one loaded model (a :class:`polar.jobs.ModelWorker`):
    ``run(problems) -> records`` (one per problem, with ``extra`` but without the run settings).
    Loads ``run.model`` on ``run.device`` (else a Ray actor's GPU) unless ``model`` is given."""

    def __init__(self, run: SweepRun, entries: Sequence[LibraryEntry], prefix_cache_mb: int = DEFAULT_PREFIX_CACHE_MB,
                 extra: dict | None = None, threads: int | None = None, model=None, tokenizer=None):
        budget = prefix_cache_bytes(prefix_cache_mb)
        super().__init__(run.model, run.device, threads, model=model, tokenizer=tokenizer)
        self.entries, self.run_settings = list(entries), run
        self.extra = dict(extra or {})  # fields added to every record (batch size, shard, versions)
        self.num_layers = self.model.config.num_hidden_layers
        self.prefix_cache = PrefixCache(budget, model=self.model) if budget else None
        self.groups: dict[float | None, list[int]] = {}  # temperature (None: greedy) -> entry indices
        for j, e in enumerate(self.entries):
            self.groups.setdefault(e.temperature, []).append(j)
        self.programs_run = 0
        self.anchor: tuple[int, ...] | None = None

    def declare_anchor(self, problems: Sequence[Problem]) -> None:
        """Tell the prefix cache where the prompts' common part ends (the few-shot shots and the
        question's fixed words): the longest common token prefix of these prompts and of the
        anchor declared before. A call with a single prompt would otherwise cache the whole
        prompt, which no other problem extends."""
        if self.prefix_cache is None:
            return
        seqs = self.tokenizer([build_prompt(p, self.run_settings.prompt_style, self.tokenizer) for p in problems],
                              padding=False)["input_ids"]
        self.anchor = next_anchor(seqs, self.anchor)
        if self.anchor:
            self.prefix_cache.root(self.anchor, create=True)

    def problems_per_call(self) -> int:
        return max(1, self.run_settings.batch_size // max(len(v) for v in self.groups.values()))

    def run(self, problems: list[Problem]) -> list[dict]:
        self.declare_anchor(problems)
        per_call = self.problems_per_call()
        out: list[dict] = []
        for i in range(0, len(problems), per_call):
            out += self._run_chunk(problems[i:i + per_call])
        return out

    def _run_chunk(self, problems: list[Problem]) -> list[dict]:
        run, tok = self.run_settings, self.tokenizer
        start = time.perf_counter()
        prompts = [build_prompt(p, run.prompt_style, tok) for p in problems]
        L = len(self.entries)
        cells: list[list[tuple] | None] = [[None] * L for _ in problems]
        for temperature, cols in self.groups.items():
            rows = [(i, j) for i in range(len(problems)) for j in cols]
            rules = [answer_rule(run.prompt_style, problems[i]) for i, _ in rows]
            sampled = temperature is not None
            seeds = [sample_seed(run.seed, problems[i].id, temperature, self.entries[j].sample) for i, j in rows] \
                if sampled else None
            result = generate(self.model, tok, [prompts[i] for i, _ in rows],
                              [list(self.entries[j].program) for _, j in rows], run.max_new_tokens,
                              do_sample=sampled, temperature=temperature or 1.0, seed=seeds,
                              stop_strings=stop_strings(run.prompt_style),
                              stop_fn=(lambda r, text: rules[r](text)) if run.early_answer else None,
                              prefix_cache=self.prefix_cache)
            for r, (i, j) in enumerate(rows):
                text = result.texts[r]
                first, mean = answer_logprobs(tok, result.tokens[r], result.token_logprobs[r])
                cells[i][j] = (text, extract_answer(text), int(is_correct(text, problems[i])),
                               _round(first), _round(mean), len(result.tokens[r]))
            self.programs_run += len(rows)
        wall = (time.perf_counter() - start) / len(problems)
        records = []
        for p, row in zip(problems, cells):
            rec = {"id": p.id, "question": p.question, "gt_ans": p.answer, "source": p.source, "level": p.level,
                   "choices": p.choices, "num_layers": self.num_layers}
            for f, values in zip(ENTRY_FIELDS, zip(*row)):
                rec[f] = list(values)
            rec["wall_s"] = round(wall, 3)  # the chunk's time, shared evenly by its problems
            records.append({**rec, **self.extra})
        return records


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 5)


def library_path(out: str | Path) -> Path:
    """Where the library of a sweep file is written: ``<out>.library.json`` (``.gz`` dropped)."""
    out = Path(out)
    name = out.name[:-3] if out.name.endswith(".gz") else out.name
    return out.with_name(name + ".library.json")


def _write_library(out: Path, run: SweepRun, entries: Sequence[LibraryEntry]) -> None:
    path = library_path(out)
    body = {"spec": run.library, "sha256": library_sha256(entries), "entries": library_to_json(entries)}
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("sha256") != body["sha256"]:
            raise UserError(f"{path} holds another library (sha256 {old.get('sha256', '?')[:12]}); "
                             f"use another output file")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body) + "\n", encoding="utf-8")


def run_sweep(run: SweepRun, out: str | Path, search_records: Sequence[dict] = (), model=None, tokenizer=None,
              problems: list[Problem] | None = None, ray: RayOptions | None = None, threads: int | None = None,
              prefix_cache_mb: int = DEFAULT_PREFIX_CACHE_MB, retry_failed: bool = True) -> dict:
    """Sweep the library of ``run`` over the problems of ``run.data`` (or ``problems``), appending
    one record per finished problem to ``out`` and skipping those already there; returns a summary
    (problems, entries, programs/s, accuracy per entry of the first few).

    ``search_records``: search results for a ``search:N`` library part. ``model``/``tokenizer``:
    an already loaded model (default: load ``run.model``). A problem recorded as failed is swept
    again unless ``retry_failed`` is off. Raises ``ValueError`` for bad settings,
    data or library and :class:`polar.tasks.SettingsMismatchError` when ``out`` holds another run.
    """
    run.validate()
    prefix_cache_bytes(prefix_cache_mb)
    if problems is None:
        problems = resolve(run.data)
    if run.limit is not None:
        problems = problems[: run.limit]
    problems = select_shard(problems, run.shard)
    depth = model.config.num_hidden_layers if model is not None else model_depth(run.model)
    entries = build_library(run.library, depth, search_records)
    store = ResultsFile(out, run.settings(entries), retry_failed=retry_failed)
    store.load()
    _write_library(Path(out), run, entries)
    todo = [p for p in problems if not store.is_done(p.id)]
    logger.info("%d problems, %d already in %s, %d to sweep with %d entries", len(problems),
                len(problems) - len(todo), out, len(todo), len(entries))
    extra = {"batch_size": run.batch_size, "shard": f"{run.shard[0]}/{run.shard[1]}" if run.shard else None,
             "versions": _versions()}
    start = time.perf_counter()
    sweeper = None
    if todo and ray is not None:  # each actor builds its own Sweeper; this process is the only writer
        run_ray(todo, functools.partial(Sweeper, run, entries, prefix_cache_mb, extra, threads), store, ray,
                desc="sweep")
    elif todo:
        if model is None:
            model, tokenizer = load_model(run.model, device=run.device)
        sweeper = Sweeper(run, entries, prefix_cache_mb, extra, model=model, tokenizer=tokenizer)
        sweeper.declare_anchor(todo)
        per_call = sweeper.problems_per_call()
        with tqdm(total=len(todo), desc="sweep", unit="problem", disable=not run.progress) as bar:
            for i in range(0, len(todo), per_call):
                chunk = todo[i:i + per_call]
                store.append(sweeper.run(chunk))  # (the anchor is already the common prefix of all)
                bar.update(len(chunk))
                elapsed = max(time.perf_counter() - start, 1e-9)
                bar.set_postfix(programs_per_s=f"{sweeper.programs_run / elapsed:.2f}")
    elapsed = time.perf_counter() - start
    records = [store.records[p.id] for p in problems if p.id in store.records and not store.records[p.id].get("failed")]
    correct = np.array([r["correct"] for r in records], dtype=bool).reshape(len(records), len(entries))
    summary = {"out": str(out), "problems": len(problems), "swept_now": len(todo), "entries": len(entries),
               "elapsed_s": round(elapsed, 2),
               "programs_per_s": round(len(todo) * len(entries) / elapsed, 3) if todo and elapsed > 0 else None,
               "failed": sum(1 for p in problems if store.records.get(p.id, {}).get("failed")),
               "full_accuracy": float(correct[:, 0].mean()) if records else None,
               "library_oracle": float(correct.any(1).mean()) if records else None}
    if sweeper is not None and sweeper.prefix_cache is not None:
        c = sweeper.prefix_cache
        summary["prefix_cache"] = {"units_found": c.hits, "units_computed": c.misses, "evictions": c.evictions,
                                   "mb_held": round(c.nbytes / 2**20, 1)}
    return summary


@dataclass
class SweepMatrix:
    """A sweep read back: ``P`` problems x ``L`` library entries.

    ``records``: the problem records (id, question, gt_ans, source, level, ...), ``entries`` the
    library; ``correct`` bool ``[P, L]``; ``answers`` ``P`` lists of ``L`` strings or None;
    ``logprob_first``/``logprob_mean`` float ``[P, L]`` (NaN where there is no answer token);
    ``new_tokens`` int ``[P, L]``; ``settings`` the run settings of the first file."""

    records: list[dict]
    entries: list[LibraryEntry]
    correct: np.ndarray
    answers: list[list[str | None]]
    logprob_first: np.ndarray
    logprob_mean: np.ndarray
    new_tokens: np.ndarray
    settings: dict

    @property
    def ids(self) -> list[str]:
        return [str(r["id"]) for r in self.records]

    def subset(self, rows: Sequence[int]) -> "SweepMatrix":
        rows = list(rows)
        return dataclasses.replace(self, records=[self.records[i] for i in rows], correct=self.correct[rows],
                                   answers=[self.answers[i] for i in rows], logprob_first=self.logprob_first[rows],
                                   logprob_mean=self.logprob_mean[rows], new_tokens=self.new_tokens[rows])


def read_sweep(paths: str | Path | Sequence[str | Path]) -> SweepMatrix:
    """Load sweep files (plain or ``.gz`` JSONL, each with its ``.library.json``) of ONE library
    into a :class:`SweepMatrix`; failed units are skipped with a warning. ``ValueError`` for files
    of different libraries, a problem found twice, or no records; ``FileNotFoundError`` for a
    missing file or library."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise UserError("no sweep files given")
    entries: list[LibraryEntry] | None = None
    sha = None
    records: list[dict] = []
    seen: dict[str, str] = {}
    settings: dict = {}
    for path in paths:
        path = Path(path)
        lib = library_path(path)
        if not path.is_file():
            raise UserFileNotFoundError(f"sweep file not found: {path}")
        if not lib.is_file():
            raise UserFileNotFoundError(f"library of {path} not found: {lib}")
        body = json.loads(lib.read_text(encoding="utf-8"))
        if sha is None:
            sha, entries = body["sha256"], library_from_json(body["entries"])
        elif body["sha256"] != sha:
            raise UserError(f"{path} was swept with another library than {paths[0]}; read them apart")
        for rec in _read_lines(path):
            if rec.get("failed"):
                logger.warning("%s: unit %s failed (%s); skipped", path, rec.get("id"), rec.get("error"))
                continue
            if rec.get("library_sha256") != sha:
                raise UserError(f"{path}: record {rec.get('id')!r} has another library than its .library.json")
            key = f"{rec.get('source')}/{rec['id']}"
            if key in seen:
                raise UserError(f"problem {rec['id']!r} appears twice: {seen[key]} and {path}")
            seen[key] = str(path)
            settings = settings or {k: rec.get(k) for k in SweepRun().settings([])}
            records.append(rec)
    if not records:
        raise UserError(f"no sweep records in {', '.join(map(str, paths))}")

    def mat(field, dtype, fill):
        return np.array([[fill if v is None else v for v in r[field]] for r in records], dtype=dtype)

    return SweepMatrix(records, entries, mat("correct", bool, 0), [list(r["answers"]) for r in records],
                       mat("logprob_first", float, np.nan), mat("logprob_mean", float, np.nan),
                       mat("new_tokens", int, 0), settings)


def _read_lines(path: Path) -> list[dict]:
    if path.name.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    return read_jsonl(path)


__all__ = ["ENTRY_FIELDS", "SweepMatrix", "SweepRun", "Sweeper", "answer_logprobs", "library_path", "read_sweep",
           "run_sweep", "sample_seed"]
