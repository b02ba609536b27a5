"""polar: run frozen pretrained LLMs with per-input programs of layers (skip and loop layers)."""
from .adapters import SUPPORTED_MODEL_TYPES, UnsupportedModelError, get_adapter
from .cache import StepKVCache
from .compact import CompactProgram, NotInSpaceError, Op, build, in_space, parse, random_compact, segments
from .executor import ExecutionResult, batched_execute
from .generation import GenerationResult, generate
from .programs import PackedPrograms, Program, full, pack, validate_program, validate_programs
from .reference import reference_forward, reference_generate
from .schedule import Waves, plan_waves, plan_waves_reference

__all__ = [
    "CompactProgram", "NotInSpaceError", "Op", "build", "in_space", "parse", "random_compact", "segments",
    "ExecutionResult", "GenerationResult", "PackedPrograms", "Program", "StepKVCache",
    "SUPPORTED_MODEL_TYPES", "UnsupportedModelError", "Waves", "batched_execute", "full",
    "generate", "get_adapter", "pack", "plan_waves", "plan_waves_reference",
    "reference_forward", "reference_generate", "validate_program", "validate_programs",
]
__version__ = "0.1.0"
