"""Program search (docs/architecture.md section 11): MCTS over programs with batched, memoised evaluation.

- :mod:`._mcts`: :class:`SearchConfig`, :class:`Tree` (one per problem; skip / repeat actions,
  length bounds, UCB with a length penalty, virtual loss, progressive widening).
- :mod:`._evaluate`: the :class:`Evaluator` interface and :class:`GenerateEvaluator` (one
  ``polar.generate`` call per round, early-answer stop, the few-shot prefix's states kept across
  rounds).
- :mod:`._run`: :func:`run_search` (batched rounds over many trees, resumable JSONL results,
  shards).
- :mod:`._files`: :func:`merge_results`, :func:`export_supervision` (``merged_mcts_samples.json``).
- :mod:`._library`, :mod:`._sweep`: program libraries and :func:`run_sweep` (``polar sweep``:
  every library entry on every problem, a dense matrix of answers, grades and log-probabilities),
  :func:`read_sweep` (-> :class:`SweepMatrix`).
- :mod:`._analyze`: :func:`analyze` (the paper's findings: tables and plots).

Example::

    from polar.search import SearchConfig, SearchRun, run_search
    run_search(SearchRun(data="synthetic:1:40:train", search=SearchConfig(space="skip", simulations=32)),
               "results/search/l1_skip.jsonl")
"""
from ._analyze import DEFAULT_BUDGETS, analyze
from ._evaluate import DEFAULT_MAX_NEW_TOKENS, DEFAULT_PREFIX_CACHE_MB, Evaluator, EvaluatorStats, GenerateEvaluator
from ._files import export_supervision, merge_results, read_results
from ._mcts import SPACES, SearchConfig, Tree, child_programs
from ._run import SearchRun, parse_shard, run_search, search_problems, select_shard, shard_of
from ._library import DEFAULT_LIBRARY, LibraryEntry, build_library, most_valid_programs, parse_library, single_edits
from ._sweep import SweepMatrix, SweepRun, Sweeper, read_sweep, run_sweep

__all__ = [
    "DEFAULT_BUDGETS", "DEFAULT_MAX_NEW_TOKENS", "DEFAULT_PREFIX_CACHE_MB", "SPACES", "Evaluator", "EvaluatorStats", "GenerateEvaluator",
    "SearchConfig", "SearchRun", "Tree", "analyze", "child_programs", "export_supervision", "merge_results",
    "parse_shard", "read_results", "run_search", "search_problems", "select_shard", "shard_of",
    "DEFAULT_LIBRARY", "LibraryEntry", "build_library", "most_valid_programs", "parse_library", "single_edits",
    "SweepMatrix", "SweepRun", "Sweeper", "read_sweep", "run_sweep",
]
