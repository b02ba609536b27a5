"""polar: run frozen pretrained LLMs with per-input programs of layers (skip and loop layers)."""
from .adapters import SUPPORTED_MODEL_TYPES, UnsupportedModelError, get_adapter
from .cache import StepKVCache
from .compact import CompactProgram, NotInSpaceError, Op, build, in_space, parse, random_compact, segments
from .data import Problem, load as load_problems, load_supervision, resolve as resolve_data, synthetic
from .executor import ExecutionResult, batched_execute
from .generation import GenerationResult, generate
from .grading import extract_answer, is_correct
from .models import load_default, load_model
from .prompts import PROMPT_STYLES, build_prompt
from .programs import PackedPrograms, Program, full, pack, validate_program, validate_programs
from .reference import reference_forward, reference_generate
from .schedule import Waves, plan_waves, plan_waves_reference

__all__ = [
    "CompactProgram", "NotInSpaceError", "Op", "build", "in_space", "parse", "random_compact", "segments",
    "PROMPT_STYLES", "Problem", "build_prompt", "extract_answer", "is_correct", "load_default",
    "load_model", "load_problems", "load_supervision", "resolve_data", "synthetic",
    "ExecutionResult", "GenerationResult", "PackedPrograms", "Program", "StepKVCache",
    "SUPPORTED_MODEL_TYPES", "UnsupportedModelError", "Waves", "batched_execute", "full",
    "generate", "get_adapter", "pack", "plan_waves", "plan_waves_reference",
    "reference_forward", "reference_generate", "validate_program", "validate_programs",
]
__version__ = "0.1.0"
