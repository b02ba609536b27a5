"""Tasks: problems, their file formats, synthetic levels, ``--data`` specs, prompts and grading.

Modules, earliest first (a module imports only those before it): :mod:`.problem` (records),
:mod:`.answers` (answer-text helpers), :mod:`.prompts` (prompt styles and their one
:class:`GenerationSetting` each, shared by every stage), :mod:`.grading`, :mod:`.formats`
(benchmark files), :mod:`.levels`, :mod:`.specs` (``--data``); :mod:`.answer_rule` (when a
generated answer is final: the search's early stop).
"""
from .answer_rule import answer_rule, answer_settled
from .formats import FORMATS, LoadReport, detect_format, load, load_supervision
from .grading import extract_answer, is_correct
from .problem import Problem, Supervision
from .prompts import (DEFAULT_PROMPT_STYLE, GENERATION_SETTINGS, PROMPT_STYLES, GenerationSetting, build_prompt,
                      generation_setting, stop_strings)
from .specs import DataSpec, parse_spec, resolve
from .levels import SPLITS, split_of, synthetic
from .words import word_problems

__all__ = [
    "DEFAULT_PROMPT_STYLE", "FORMATS", "GENERATION_SETTINGS", "GenerationSetting", "generation_setting", "PROMPT_STYLES", "SPLITS", "DataSpec", "LoadReport", "Problem",
    "Supervision", "build_prompt", "detect_format", "extract_answer", "is_correct", "load",
    "load_supervision", "parse_spec", "resolve", "split_of", "stop_strings", "synthetic",
    "word_problems", "answer_rule", "answer_settled",
]
