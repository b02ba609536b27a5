"""Methods compared by ``polar eval``: each turns problems into ranked candidate programs.

A :class:`Candidate` is one program run with one decoding setting (greedy, or sampling at a
temperature). Every method implements :meth:`Method.candidates`; the evaluation run executes the
candidates of all methods and problems together in batched ``generate`` calls and grades every
one of them for real (no cached search verdict stands in for a run).

Methods: :class:`PolarMethod` (the segment predictor's top-k), :class:`ScorerMethod` (a scorer's
:meth:`Scorer.select` top-k; ``polar eval``'s ``polar`` for a scorer checkpoint), :class:`BaseGreedy`,
:class:`BaseSampling` (best-of-k at a temperature), :class:`StaticPrograms` (ShortGPT, the best
static programs from search), :class:`RandomSingleEdits`, :class:`RandomSegmentPrograms`,
:class:`SearchOracle` (valid programs found by search for that problem). Online routers
(docs/architecture.md section 15): :class:`RouterPrograms` (DR.LLM: the program a router decides
over the prompt, replayed as a program) and :class:`GatedRouter` (MindSkip, FlexiDepth: gates no
program can express, so their rows run through ``generate(..., router=R)``); both give the
greedy run first and, for ``k > 1``, T=0.7 samples under the router's decisions.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .._checks import check_int
from ..errors import UserError
from ..programs import Program, full, random_compact
from ..predictor import static_cover
from ..runtime import batched_execute, get_adapter
from ..runtime.generation import left_pad
from ..tasks import Problem, build_prompt

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """One candidate: ``program`` run greedily (``temperature == 0``) or sampled; ``score`` ranks
    it inside its method (higher first; predictor log-score for PoLar). ``router``: the name of the
    method whose router runs the row (``generate(..., router=R)``; ``program`` is then the full
    program, for bookkeeping), ``None`` for a plain program row. ``fallback``: the method's own
    choice could not run (DR.LLM's empty program) and this is the full program instead. ``seed_of``:
    ``(method, rank)`` whose sampling seed a sampled candidate uses (default: its own method and
    rank), so it is that candidate's row (``polar_mix`` reuses base sampling's samples)."""

    program: Program
    temperature: float = 0.0
    score: float = 0.0
    router: str | None = None
    fallback: bool = False
    seed_of: tuple[str, int] | None = None


class Method:
    """``name`` identifies the method in results; ``candidates`` returns up to ``k`` ranked
    candidates per problem (a static method may return fewer, e.g. base greedy returns 1)."""

    name: str = ""
    #: seconds spent choosing candidates (the predictor's overhead), summed over calls
    overhead_s: float = 0.0

    def candidates(self, problems: Sequence[Problem], k: int) -> list[list[Candidate]]:
        raise NotImplementedError


def _problem_rng(seed: int, name: str, problem: Problem) -> random.Random:
    digest = hashlib.sha256(f"{seed}/{name}/{problem.source}/{problem.id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


class BaseGreedy(Method):
    """The full program, greedy: one candidate."""

    def __init__(self, num_layers: int):
        self.name, self.num_layers = "base_greedy", num_layers

    def candidates(self, problems, k):
        return [[Candidate(full(self.num_layers))] for _ in problems]


class BaseSampling(Method):
    """The full program sampled ``k`` times at ``temperature`` (best-of-k)."""

    def __init__(self, num_layers: int, temperature: float):
        if not temperature > 0:
            raise UserError(f"sampling temperature must be > 0, got {temperature}")
        self.name, self.num_layers, self.temperature = f"base_sample_t{temperature:g}", num_layers, temperature

    def candidates(self, problems, k):
        return [[Candidate(full(self.num_layers), self.temperature)] * k for _ in problems]


class MixedCandidates(Method):
    """A program method's first ``m`` candidates, then samples of the full program at
    ``temperature`` up to ``k`` (``polar_mix``: PoLar's programs mixed with base sampling, ``m`` and
    ``temperature`` chosen on validation data, e.g. by the learnability study). Sample ``r`` is
    ``base_sample_t{T}``'s candidate ``r`` (its seed, :attr:`Candidate.seed_of`): with both methods in
    a run they are the same rows. ``UserError`` for ``m < 0`` or ``temperature <= 0``."""

    def __init__(self, programs: Method, num_layers: int, m: int, temperature: float, name: str = "polar_mix"):
        if isinstance(m, bool) or not isinstance(m, int) or m < 0:
            raise UserError(f"mix: the number of programs must be an int >= 0, got {m!r}")
        if not temperature > 0:
            raise UserError(f"mix: sampling temperature must be > 0, got {temperature}")
        self.name, self.programs, self.num_layers, self.m, self.temperature = name, programs, num_layers, m, temperature
        self.sampler = BaseSampling(num_layers, temperature).name

    def candidates(self, problems, k):
        start = time.perf_counter()
        # the program method's own k candidates, cut to m: its first m (a budgeted choice of m alone differs)
        rows = self.programs.candidates(problems, k) if self.m else [[] for _ in problems]
        out = []
        for row in rows:
            row = list(row[:min(self.m, k)])
            low = min((c.score for c in row), default=0.0)
            out.append(row + [Candidate(full(self.num_layers), self.temperature, low - 1.0 - r, seed_of=(self.sampler, r))
                              for r in range(k - len(row))])
        self.overhead_s += time.perf_counter() - start
        return out


class StaticPrograms(Method):
    """The same ranked programs for every problem (ShortGPT variants, best static programs)."""

    def __init__(self, name: str, programs: Sequence[Sequence[int]]):
        if not programs:
            raise UserError(f"{name}: no static programs")
        self.name, self.programs = name, [Program(p) for p in programs]

    def candidates(self, problems, k):
        return [[Candidate(p, 0.0, -i) for i, p in enumerate(self.programs[:k])] for _ in problems]


def best_static_programs(records: Sequence[dict], k: int) -> list[Program]:
    """The ``k`` programs that were valid for the most searched training problems (a program's
    accuracy over all training problems, counting problems where search did not try it as wrong);
    ties: evaluated on more problems, then shorter, then lexicographic."""
    valid: Counter = Counter()
    tried: Counter = Counter()
    for rec in records:
        for p in rec.get("final_valid_transitions", []):
            valid[tuple(p)] += 1
            tried[tuple(p)] += 1
        for p in rec.get("final_invalid_transitions", []):
            tried[tuple(p)] += 1
    if not valid:
        raise UserError("the search results hold no valid program")
    ranked = sorted(valid, key=lambda p: (-valid[p], -tried[p], len(p), p))
    return [Program(p) for p in ranked[:k]]


def single_edits(num_layers: int, k_max: int = 4) -> list[Program]:
    """Every distinct single edit of the full program: skip, or repeat once, a block of
    1..``k_max`` consecutive layers (never the empty program), in a fixed order."""
    check_int(num_layers, "num_layers")
    out: list[Program] = []
    for size in range(1, min(k_max, num_layers) + 1):
        for start in range(num_layers - size + 1):
            head, block, tail = list(range(start)), list(range(start, start + size)), list(range(start + size, num_layers))
            if head or tail:
                out.append(Program(head + tail))
            out.append(Program(head + block + block + tail))
    return out


def single_edit(num_layers: int, rng: random.Random, k_max: int = 4) -> Program:
    """A random single edit of the full program: skip, or repeat once, a block of 1..k_max layers
    (any depth >= 1; a skip that would leave no layer is a repeat instead)."""
    check_int(num_layers, "num_layers")
    size = rng.randint(1, min(k_max, num_layers))
    start = rng.randint(0, num_layers - size)
    block = list(range(start, start + size))
    head, tail = list(range(start)), list(range(start + size, num_layers))
    skip = rng.random() < 0.5 and bool(head or tail)
    return Program(head + tail if skip else head + block + block + tail)


class RandomSingleEdits(Method):
    """``k`` distinct random single edits of the full program per problem (seeded per problem);
    ``k`` is capped by the number of distinct single edits of the depth (said once, in one line)."""

    def __init__(self, num_layers: int, seed: int = 0, k_max: int = 4):
        self.name, self.num_layers, self.seed, self.k_max = "random_single_edit", num_layers, seed, k_max
        self._edits = single_edits(num_layers, k_max)
        self._warned = False

    def candidates(self, problems, k):
        if k > len(self._edits) and not self._warned:
            logger.warning("random_single_edit: k=%d but a %d-layer model has only %d distinct single edits; "
                           "using %d", k, self.num_layers, len(self._edits), len(self._edits))
            self._warned = True
        k = min(k, len(self._edits))
        out = []
        for problem in problems:
            rng, seen = _problem_rng(self.seed, self.name, problem), []
            while len(seen) < k and len(seen) < len(self._edits) // 2:  # rejection sampling while it is cheap
                p = single_edit(self.num_layers, rng, self.k_max)
                if p not in seen:
                    seen.append(p)
            if len(seen) < k:  # the rest: a seeded draw from the edits not taken yet
                rest = [p for p in self._edits if p not in seen]
                seen += rng.sample(rest, k - len(seen))
            out.append([Candidate(p) for p in seen])
        return out


class RandomSegmentPrograms(Method):
    """``k`` random programs from the whole compact segment space (``polar.random_compact``)."""

    def __init__(self, num_layers: int, seed: int = 0):
        self.name, self.num_layers, self.seed = "random_segment", num_layers, seed

    def candidates(self, problems, k):
        out = []
        for problem in problems:
            rng = _problem_rng(self.seed, self.name, problem)
            out.append([Candidate(random_compact(self.num_layers, rng).decode()) for _ in range(k)])
        return out


class SearchOracle(Method):
    """Valid programs that search found for this very problem (shortest first); none when the
    problem was not searched. Re-executed and graded like every other candidate."""

    def __init__(self, records: Sequence[dict]):
        self.name = "search_oracle"
        self.valid: dict[str, list[Program]] = {}
        for rec in records:
            progs = sorted({tuple(p) for p in rec.get("final_valid_transitions", [])}, key=lambda p: (len(p), p))
            self.valid[_question_key(rec.get("question", ""))] = [Program(p) for p in progs]

    def candidates(self, problems, k):
        return [[Candidate(p, 0.0, -i) for i, p in enumerate(self.valid.get(_question_key(pr.question), [])[:k])]
                for pr in problems]


def _question_key(question: str) -> str:
    return " ".join(question.split())


class PolarMethod(Method):
    """The predictor's top-k programs (``predictor.predict(questions, k)``), ranked by score."""

    def __init__(self, predictor, name: str = "polar"):
        self.name, self.predictor = name, predictor

    def candidates(self, problems, k):
        start = time.perf_counter()
        preds = self.predictor.predict([p.question for p in problems], k=k)
        self.overhead_s += time.perf_counter() - start
        return [[Candidate(Program(x.program), 0.0, float(x.score)) for x in row] for row in preds]


class ScorerMethod(Method):
    """A scorer's candidates (``polar.predictor.Scorer``): the ``k`` library programs of
    :meth:`Scorer.select` (expected-pass@k order), each scored by its predicted probability.
    A scorer with LLM features computes them on the problems' prompts (``model``, ``tokenizer``,
    ``prompt_style``: the full program's prefill)."""

    def __init__(self, scorer, name: str = "polar", model=None, tokenizer=None, prompt_style: str = "fewshot"):
        self.name, self.scorer = name, scorer
        self.model, self.tokenizer, self.prompt_style = model, tokenizer, prompt_style
        if getattr(scorer.config, "uses_llm", False) and (model is None or tokenizer is None):
            raise UserError("a scorer with LLM features needs the model and tokenizer to compute them")

    def __getstate__(self):  # Ray ships methods to actors: the actor binds its own model (run._run_chunk)
        return {**self.__dict__, "model": None, "tokenizer": None}

    def bind(self, model, tokenizer) -> None:
        """Compute LLM features with this ``model`` (an evaluation worker's own copy)."""
        self.model, self.tokenizer = model, tokenizer

    def candidates(self, problems, k):
        start = time.perf_counter()
        feats = None
        if getattr(self.scorer.config, "uses_llm", False):
            prompts = [build_prompt(p, self.prompt_style, self.tokenizer) for p in problems]
            feats = self.scorer.compute_llm_features(self.model, self.tokenizer, prompts)
        proba = self.scorer.predict_proba([p.question for p in problems], llm_features=feats)
        out = []
        for row in proba:
            picks = list(self.scorer.select(row, k))[:k]
            out.append([Candidate(Program(self.scorer.entries[j].program), 0.0, float(row[j])) for j in picks])
        self.overhead_s += time.perf_counter() - start
        return out


#: The temperature of a router method's candidates 2..k (the paper's rows: samples under the router's decisions).
ROUTER_SAMPLE_TEMPERATURE = 0.7


def _cpu_copy(router):
    """``router`` for pickling (Ray ships methods to actors): a CPU copy of a torch module, else itself."""
    if isinstance(router, torch.nn.Module) and any(t.device.type != "cpu" for t in router.state_dict().values()):
        return copy.deepcopy(router).to("cpu")
    return router


def _to_model(router, model) -> None:
    """Move a torch-module router to ``model``'s device (an evaluation worker's own model)."""
    if isinstance(router, torch.nn.Module):
        router.to(get_adapter(model).device)


class RouterPrograms(Method):
    """A router that decides a whole program per row over the prompt (DR.LLM: skip / run once /
    run twice per layer): ``polar.batched_execute(model, None, prompts, router=R).programs`` on
    the problems' prompts (``build_prompt`` with ``prompt_style``, calls of ``batch_size``), each
    replayed as a program (``generate(programs=...)`` gives the routed generation's tokens). The
    greedy run first, then ``k - 1`` samples at ``temperature`` under the same decided program.
    A problem whose decided program is empty (every layer skipped; cannot be replayed) gets the
    full program instead, its candidates marked ``fallback`` (counted in :attr:`fallbacks`).
    The routing prefill counts as ``overhead_s``."""

    def __init__(self, router, model, tokenizer, name: str = "drllm", prompt_style: str = "fewshot",
                 batch_size: int = 64, temperature: float = ROUTER_SAMPLE_TEMPERATURE):
        check_int(batch_size, "batch_size")
        if not temperature > 0:
            raise UserError(f"{name}: sampling temperature must be > 0, got {temperature}")
        self.name, self.router, self.prompt_style = name, router, prompt_style
        self.model, self.tokenizer, self.batch_size, self.temperature = model, tokenizer, batch_size, temperature
        self.num_layers = int(model.config.num_hidden_layers)
        self.fallbacks = 0

    def __getstate__(self):  # Ray ships methods to actors: the actor binds its own model (run._run_chunk)
        return {**self.__dict__, "model": None, "tokenizer": None, "router": _cpu_copy(self.router)}

    def bind(self, model, tokenizer) -> None:
        """Route with this ``model`` (an evaluation worker's own copy; the router moves to its device)."""
        self.model, self.tokenizer = model, tokenizer
        _to_model(self.router, model)

    def decided(self, problems: Sequence[Problem]) -> list[Program]:
        """The program the router decides for each problem's prompt (possibly empty)."""
        prompts = [build_prompt(p, self.prompt_style, self.tokenizer) for p in problems]
        out: list[Program] = []
        for b in range(0, len(prompts), self.batch_size):
            inputs = left_pad(self.tokenizer, self.tokenizer(prompts[b:b + self.batch_size], padding=False)["input_ids"])
            out += batched_execute(self.model, None, inputs, router=self.router).programs
        return out

    def candidates(self, problems, k):
        start = time.perf_counter()
        progs = self.decided(problems) if problems else []
        self.overhead_s += time.perf_counter() - start
        out = []
        for problem, prog in zip(problems, progs):
            fallback = len(prog) == 0
            if fallback:
                self.fallbacks += 1
                logger.warning("%s: the router skips every layer on problem %s; running the full program instead",
                               self.name, problem.id)
                prog = full(self.num_layers)
            out.append([Candidate(prog, 0.0, 0.0, fallback=fallback)]
                       + [Candidate(prog, self.temperature, 0.0, fallback=fallback)] * (k - 1))
        return out


class GatedRouter(Method):
    """A router whose gates no program can express (MindSkip's attention gates, FlexiDepth's
    token gates): every candidate is a row that the evaluation run generates with
    ``polar.generate(model, tok, prompts, None, ..., router=R)`` (``Candidate.router`` = this
    method's name; its program is the full program, for bookkeeping): the greedy run first, then
    ``k - 1`` samples at ``temperature`` under the router's gates. The run records what each row
    executed (``executed_layers``: FlexiDepth's mean layers per token run in full, else the
    program length; ``attention_open``: the share of the ``D`` attention sub-layers run)."""

    def __init__(self, router, num_layers: int, name: str, temperature: float = ROUTER_SAMPLE_TEMPERATURE):
        check_int(num_layers, "num_layers")
        if not temperature > 0:
            raise UserError(f"{name}: sampling temperature must be > 0, got {temperature}")
        self.name, self.router, self.num_layers, self.temperature = name, router, num_layers, temperature

    def __getstate__(self):
        return {**self.__dict__, "router": _cpu_copy(self.router)}

    def bind(self, model, tokenizer) -> None:
        """Move the router to ``model``'s device (an evaluation worker's own copy)."""
        _to_model(self.router, model)

    def candidates(self, problems, k):
        prog = full(self.num_layers)
        return [[Candidate(prog, 0.0, 0.0, router=self.name)]
                + [Candidate(prog, self.temperature, 0.0, router=self.name)] * (k - 1) for _ in problems]


def is_scorer(predictor) -> bool:
    """Whether ``predictor`` is a scorer (``predict_proba``/``select``/``entries``), not the segment predictor."""
    return all(hasattr(predictor, a) for a in ("predict_proba", "select", "entries"))


def sweep_static_programs(train_matrix, k: int) -> list[Program]:
    """Best static as the learnability study defines it: the ``k`` greedy (program) columns of a
    training sweep matrix chosen by :func:`polar.predictor.static_cover` (the most training
    problems covered), in that order."""
    cols = [j for j, e in enumerate(train_matrix.entries) if getattr(e, "temperature", None) is None]
    if not cols:
        raise UserError("the training sweep has no program (greedy) entries for best_static")
    picks = static_cover(train_matrix.correct, k, candidates=cols)
    return [Program(train_matrix.entries[j].program) for j in picks]
