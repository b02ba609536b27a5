"""Shared benchmark helpers: models, batches, the ``run`` wrapper (fixtures live in conftest.py)."""
from __future__ import annotations

import os

import torch

from programs import random_prompts, sample_programs

PROMPT_TOKENS = 64
NEW_TOKENS = 32
LARGE = os.environ.get("POLAR_BENCH_LARGE") == "1"

SMOLLM2_SHAPES = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, head_dim=64, tie_word_embeddings=True,
                      rope_theta=100000.0, rms_norm_eps=1e-5, max_position_embeddings=8192,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2)


def _smollm2():
    from polar import models

    if os.environ.get("POLAR_BENCH_RANDOM_WEIGHTS") != "1" and models.is_default_cached():
        model, _ = models.load_default()
        return model, "SmolLM2-135M-Instruct, real weights (GGUF Q4_1 dequantized to fp32)"
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    cfg = LlamaConfig(**SMOLLM2_SHAPES)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa", dtype=torch.float32).eval()
    return model, "SmolLM2-135M shapes, random weights (LlamaConfig stand-in, fp32)"


def _tiny():
    from polar.testing import tiny_model

    return tiny_model("llama", seed=0, num_layers=30), "tiny Llama (polar.testing.tiny_model, 30 layers, d=64, fp32)"


_BUILDERS = {"smollm2": _smollm2, "tiny": _tiny}


class Models:
    """Lazily built, session-wide models: ``models.get(name) -> (model, description)``."""

    def __init__(self):
        self._cache: dict[str, tuple] = {}

    def get(self, name: str):
        if name not in self._cache:
            self._cache[name] = _BUILDERS[name]()
        return self._cache[name]


class Batch:
    """One benchmark batch: ``programs`` (lists of layer indices) and unpadded ``inputs``."""

    def __init__(self, model, batch_size: int, seed: int):
        cfg = model.config
        self.num_layers = cfg.num_hidden_layers
        self.programs = sample_programs(self.num_layers, batch_size, seed)
        self.inputs = random_prompts(batch_size, PROMPT_TOKENS, cfg.vocab_size, seed + 1)
        self.batch_size = batch_size
        self.tokens = PROMPT_TOKENS
        self.program_steps = sum(len(p) for p in self.programs)


_BATCHES: dict[tuple, Batch] = {}


def get_batch(model_name: str, model, batch_size: int) -> Batch:
    """The same batch for every variant (and for prefill and decode) of ``(model, B)``."""
    key = (model_name, batch_size)
    if key not in _BATCHES:
        _BATCHES[key] = Batch(model, batch_size, seed=1000 + batch_size)
    return _BATCHES[key]


def run(benchmark, fn, rounds: int, warmup: int = 0, **info):
    """``benchmark.pedantic`` with one call per round; ``info`` goes to ``extra_info``."""
    benchmark.extra_info.update(info)
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=warmup)
