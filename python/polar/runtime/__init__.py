"""Runtime (docs/architecture.md section 6): execute many different programs in one batch.

Data flow: programs -> CSR :mod:`.packing` -> waves planned by the compiled scheduler
(:mod:`.schedule`) -> a :mod:`.runners` runner applies each wave through the model's
:mod:`.adapters` with :mod:`.masks` / positions and the step-indexed :mod:`.cache` ->
logits (:mod:`.executor`) or tokens (:mod:`.generation`). :mod:`.reference` holds the plain
no-cache loops everything is tested against.

Shared prefixes (docs/architecture.md section 9, on by default): :mod:`.units` plans the states several
rows share (a radix tree over the prompts x a program trie per tree node; waves over these units
from the compiled scheduler) and :mod:`.shared` runs them, keys/values stored once in a
:class:`PooledKVCache` and read by every row that shares them; a :class:`PrefixCache` keeps the
common prompt prefix's states across :func:`generate` calls (:mod:`.prefix_cache`).

Online routing (docs/architecture.md section 15): a :class:`Router` (:mod:`.routing`) decides per
layer and row to skip, run or repeat, and may gate sub-layers or tokens (:class:`LayerGates`,
run by :mod:`.gated`); :mod:`.routed` is the engine behind ``batched_execute(..., router=)`` and
``generate(..., router=)``.
"""
from .adapters import SUPPORTED_MODEL_TYPES, ModelAdapter, UnsupportedModelError, get_adapter
from .cache import PooledKVCache, StepKVCache
from .executor import ExecutionResult, batched_execute
from .generation import GenerationResult, generate, stop_end
from .packing import PackedPrograms, pack
from .prefix_cache import PrefixCache, common_prefix, next_anchor, prefix_cache_bytes, weight_fingerprint
from .reference import reference_forward, reference_generate
from .routing import LayerGates, ReplayRouter, Router
from .runners import BACKENDS
from .schedule import DEFAULT_POLICY, POLICIES, Waves, plan_waves, plan_waves_reference

__all__ = [
    "BACKENDS", "DEFAULT_POLICY", "POLICIES", "SUPPORTED_MODEL_TYPES", "ExecutionResult", "GenerationResult",
    "ModelAdapter", "PackedPrograms", "PooledKVCache", "PrefixCache", "common_prefix", "next_anchor", "prefix_cache_bytes", "weight_fingerprint", "StepKVCache", "UnsupportedModelError", "Waves", "batched_execute",
    "generate", "get_adapter", "pack", "plan_waves", "plan_waves_reference", "reference_forward",
    "reference_generate", "stop_end", "LayerGates", "ReplayRouter", "Router",
]
