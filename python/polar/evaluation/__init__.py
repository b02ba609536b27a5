"""Evaluation (DESIGN.md section 5): resumable runs of methods and baselines, metrics, reports.

Today: :func:`run_accuracy`, the full program's accuracy on a data set (``polar accuracy``).
"""
from .accuracy import DEFAULT_MAX_NEW_TOKENS, AccuracyConfig, format_table, run_accuracy

__all__ = ["DEFAULT_MAX_NEW_TOKENS", "AccuracyConfig", "format_table", "run_accuracy"]
