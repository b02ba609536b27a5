"""polar: run frozen pretrained LLMs with per-input programs of layers (skip and loop layers).

Stages, each importing only earlier ones (docs/architecture.md section 5; enforced by import-linter):
``programs`` < ``runtime`` < ``tasks`` < ``jobs`` < ``search`` < ``predictor`` < ``evaluation`` < ``cli``.
This module re-exports the everyday names of the first three; ``polar.search``,
``polar.predictor`` and ``polar.evaluation`` are imported when used.
"""
import importlib

from .errors import UserError, UserFileNotFoundError
from .models import load_default, load_model
from .programs import (CompactProgram, NotInSpaceError, Op, Program, build, full, in_space, parse, random_compact,
                       segments, validate_program, validate_programs)
from .runtime import (SUPPORTED_MODEL_TYPES, ExecutionResult, GenerationResult, LayerGates, PackedPrograms,
                      ReplayRouter, Router, StepKVCache, UnsupportedModelError, Waves, batched_execute, generate,
                      get_adapter, pack, plan_waves, plan_waves_reference, reference_forward, reference_generate)
from .tasks import (PROMPT_STYLES, Problem, build_prompt, extract_answer, is_correct, load as load_problems,
                    load_supervision, resolve as resolve_data, synthetic)

__all__ = [
    "UserError", "UserFileNotFoundError", "CompactProgram", "NotInSpaceError", "Op", "build", "in_space", "parse", "random_compact", "segments",
    "PROMPT_STYLES", "Problem", "build_prompt", "extract_answer", "is_correct", "load_default",
    "load_model", "load_problems", "load_supervision", "resolve_data", "synthetic",
    "ExecutionResult", "GenerationResult", "PackedPrograms", "Program", "StepKVCache",
    "SUPPORTED_MODEL_TYPES", "UnsupportedModelError", "Waves", "batched_execute", "full",
    "generate", "get_adapter", "pack", "plan_waves", "plan_waves_reference",
    "reference_forward", "reference_generate", "validate_program", "validate_programs",
    "LayerGates", "ReplayRouter", "Router",
]
__version__ = "0.1.0"

#: Names of later stages, imported on first use (``polar.Predictor``) so ``import polar`` stays light.
_LAZY = {"Predictor": "polar.predictor", "train_from_files": "polar.predictor", "solve": "polar.evaluation",
         "Solution": "polar.evaluation"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'polar' has no attribute {name!r}")
