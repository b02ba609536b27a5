"""Evaluation (docs/architecture.md section 11): resumable runs of methods and baselines, metrics, reports.

- :mod:`.accuracy`: the full program's accuracy on a data set (``polar accuracy``).
- :mod:`.methods`: PoLar (segment predictor or scorer), base greedy / sampling, ShortGPT, best static, random programs, oracle,
  the online routers (DR.LLM's decided programs, MindSkip / FlexiDepth gated rows).
- :mod:`.metrics`: pass@k, maj@k. :mod:`.shortgpt`: Block Influence.
- :mod:`.run`: ``polar eval`` (all methods, one batched resumable run); :mod:`.report`: tables, plots.
- :mod:`.solve`: :func:`solve` (one deployable answer per question: top1 / vote / gate / auto) and
  :func:`choose_rule` (the rule and gate threshold chosen on validation, ``selection.json``).
- :mod:`.learnability`: :func:`analyze_sweep` (``polar analyze-sweep``: does any input feature
  predict which program works? pass@k of selectors vs best static and sampling, at equal compute).
"""
from .ask import AskResult, ask, format_ask
from .demo import DemoConfig, DemoResult, run_demo
from .accuracy import DEFAULT_MAX_NEW_TOKENS, AccuracyConfig, format_table, run_accuracy
from .methods import (BaseGreedy, BaseSampling, Candidate, GatedRouter, Method, MixedCandidates, PolarMethod,
                      RandomSegmentPrograms,
                      RandomSingleEdits, RouterPrograms, ScorerMethod, SearchOracle, StaticPrograms,
                      best_static_programs, single_edit, sweep_static_programs)
from .metrics import majority_answer, pass_at
from .report import answer_at_k, summarize, write_report
from .run import (DEFAULT_METHODS, DEFAULT_TEMPERATURES, METHOD_NAMES, RECORD_FIELDS, ROUTER_METHODS, EvalConfig,
                  build_methods, load_problems, read_eval_records, row_seed, run_eval)
from .shortgpt import block_influence, shortgpt_programs
from .learnability import analyze_sweep
from .solve import Solution, SolveCandidate, choose_rule, load_selection, save_selection, solve

__all__ = [
    "AskResult", "ask", "format_ask", "DemoConfig", "DemoResult", "run_demo",
    "DEFAULT_MAX_NEW_TOKENS", "AccuracyConfig", "BaseGreedy", "BaseSampling", "Candidate", "EvalConfig",
    "Method", "MixedCandidates", "PolarMethod", "RandomSegmentPrograms", "RandomSingleEdits", "SearchOracle", "StaticPrograms",
    "best_static_programs", "block_influence", "format_table", "majority_answer", "pass_at", "run_accuracy",
    "run_eval", "shortgpt_programs", "Solution", "SolveCandidate", "choose_rule", "load_selection", "save_selection",
    "solve", "analyze_sweep", "DEFAULT_METHODS", "GatedRouter", "ROUTER_METHODS", "RouterPrograms", "ScorerMethod", "sweep_static_programs", "answer_at_k", "DEFAULT_TEMPERATURES", "METHOD_NAMES", "RECORD_FIELDS", "read_eval_records", "row_seed", "build_methods", "load_problems", "single_edit", "summarize", "write_report",
]
