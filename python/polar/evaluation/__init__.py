"""Evaluation (DESIGN.md section 5): resumable runs of methods and baselines, metrics, reports.

- :mod:`.accuracy`: the full program's accuracy on a data set (``polar accuracy``).
- :mod:`.methods`: PoLar, base greedy / sampling, ShortGPT, best static, random programs, oracle.
- :mod:`.metrics`: pass@k, maj@k. :mod:`.shortgpt`: Block Influence.
- :mod:`.run`: ``polar eval`` (all methods, one batched resumable run); :mod:`.report`: tables, plots.
"""
from .ask import AskResult, ask, format_ask
from .demo import DemoConfig, DemoResult, run_demo
from .accuracy import DEFAULT_MAX_NEW_TOKENS, AccuracyConfig, format_table, run_accuracy
from .methods import (BaseGreedy, BaseSampling, Candidate, Method, PolarMethod, RandomSegmentPrograms,
                      RandomSingleEdits, SearchOracle, StaticPrograms, best_static_programs, single_edit)
from .metrics import majority_answer, pass_at
from .report import summarize, write_report
from .run import DEFAULT_TEMPERATURES, METHOD_NAMES, EvalConfig, build_methods, load_problems, run_eval
from .shortgpt import block_influence, shortgpt_programs

__all__ = [
    "AskResult", "ask", "format_ask", "DemoConfig", "DemoResult", "run_demo",
    "DEFAULT_MAX_NEW_TOKENS", "AccuracyConfig", "BaseGreedy", "BaseSampling", "Candidate", "EvalConfig",
    "Method", "PolarMethod", "RandomSegmentPrograms", "RandomSingleEdits", "SearchOracle", "StaticPrograms",
    "best_static_programs", "block_influence", "format_table", "majority_answer", "pass_at", "run_accuracy",
    "run_eval", "shortgpt_programs", "DEFAULT_TEMPERATURES", "METHOD_NAMES", "build_methods", "load_problems", "single_edit", "summarize", "write_report",
]
