"""Tiny random-weight models of each supported architecture, built in code (tests, benchmarks)."""
from __future__ import annotations

import torch

from .runtime.adapters import SUPPORTED_MODEL_TYPES
from .search._library import library_sha256, library_to_json
from .search._sweep import library_path

#: Every supported architecture has a tiny test model (one list: the adapters').
ARCHITECTURES = SUPPORTED_MODEL_TYPES


def tiny_config(arch: str, num_layers: int = 6, vocab_size: int = 128, hidden_size: int = 64,
                num_heads: int = 4, num_kv_heads: int = 2, **overrides):
    """A small config of architecture ``arch`` (GQA, biases/q-k norms/MoE as the family has them)."""
    import transformers as tf

    common = dict(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                  num_hidden_layers=num_layers, num_attention_heads=num_heads,
                  num_key_value_heads=num_kv_heads, max_position_embeddings=512, rms_norm_eps=1e-6,
                  tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if arch == "llama":
        cfg = tf.LlamaConfig(**common)
    elif arch == "mistral":  # a small sliding window so that tests exercise it
        cfg = tf.MistralConfig(**common, sliding_window=5, head_dim=hidden_size // num_heads)
    elif arch == "qwen2":  # q/k/v biases
        cfg = tf.Qwen2Config(**common)
    elif arch == "qwen3":  # q/k norms, explicit head_dim
        cfg = tf.Qwen3Config(**common, head_dim=24)
    elif arch == "qwen2_moe":  # sparse MLP with shared expert
        cfg = tf.Qwen2MoeConfig(**common, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                                shared_expert_intermediate_size=48, decoder_sparse_step=1)
    elif arch == "qwen3_moe":  # q/k norms + sparse MLP
        cfg = tf.Qwen3MoeConfig(**common, head_dim=16, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                                decoder_sparse_step=1)
    else:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {ARCHITECTURES}")
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def tiny_model(arch: str = "llama", seed: int = 0, dtype: torch.dtype = torch.float32,
               attn_implementation: str = "sdpa", **config_overrides):
    """A seeded random-weight causal LM of architecture ``arch`` in eval mode."""
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(arch, **config_overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn_implementation, dtype=dtype)
    return model.eval()


def tiny_tokenizer(vocab_size: int = 128):
    """A word-level fast tokenizer over ``vocab_size`` tokens ``<pad> <s> </s> w3 w4 ..`` (ids 0, 1, 2, ...)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def padded_batch(prompts: list[torch.Tensor], side: str, pad_id: int = 0) -> dict:
    """Pad 1-D id tensors on ``side`` ('left' or 'right') into input_ids/attention_mask."""
    T = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), T), dtype=torch.long)
    for r, p in enumerate(prompts):
        if side == "left":
            ids[r, T - len(p):], mask[r, T - len(p):] = p, 1
        else:
            ids[r, : len(p)], mask[r, : len(p)] = p, 1
    return {"input_ids": ids, "attention_mask": mask}


def random_prompts(n: int, vocab: int, lo: int, hi: int, seed: int) -> list[torch.Tensor]:
    """``n`` random 1-D id tensors of lengths in ``[lo, hi]`` (ids >= 3, below ``vocab``)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(lo, hi + 1, (n,), generator=g).tolist()
    return [torch.randint(3, vocab, (L,), generator=g) for L in lengths]


def mixed_programs(D: int, n: int, seed: int) -> list[list[int]]:
    """Programs with skips, single-layer repeats, segment repeats, reorders, and the full pass."""
    g = torch.Generator().manual_seed(seed)
    kinds = [
        lambda: list(range(D)),
        lambda: [i for i in range(D) if torch.rand(1, generator=g).item() > 0.4] or [0],  # skips
        lambda: sorted(list(range(D)) + [int(torch.randint(D, (1,), generator=g))]),  # one layer twice
        lambda: list(range(D // 2 + 1)) + list(range(1, D)),  # a segment repeated
        lambda: list(range(D - 1, -1, -1))[: D // 2] + [0, 1],  # reordered
        lambda: [int(x) for x in torch.randint(D, (int(torch.randint(1, 2 * D, (1,), generator=g)),), generator=g)],
    ]
    return [kinds[r % len(kinds)]() for r in range(n)]


def routable_programs(D: int, n: int, seed: int, p_skip: float = 0.3, p_repeat: float = 0.2) -> list[list[int]]:
    """``n`` programs a router can produce (layers in order, each skipped, run once or twice:
    :func:`polar.runtime.routing.decisions_of`), mixed per row; row 0 is the full program and none
    is empty."""
    g = torch.Generator().manual_seed(seed)
    out = [list(range(D))]
    while len(out) < n:
        u = torch.rand(D, generator=g)
        counts = [0 if x < p_skip else 2 if x > 1 - p_repeat else 1 for x in u.tolist()]
        prog = [layer for layer, c in enumerate(counts) for _ in range(c)]
        if prog:
            out.append(prog)
    return out


def mcts_edit(program: list[int], rng, max_block: int = 3) -> list[int]:
    """One MCTS action on ``program``: skip a block of 1..``max_block`` entries or repeat it once
    (``rng``: a ``random.Random``); never empty (``[0]`` instead)."""
    k = rng.randint(1, min(max_block, len(program)))
    i = rng.randrange(0, len(program) - k + 1)
    out = program[:i] + program[i + k:] if rng.random() < 0.5 else program[:i + k] + program[i:i + k] + program[i + k:]
    return out or [0]


def save_tiny_model(folder, arch: str = "llama", num_layers: int = 6, seed: int = 0) -> None:
    """Save a tiny random model and :func:`tiny_tokenizer` into ``folder`` (loadable with
    ``polar.load_model(folder)``), for CLI and subprocess tests."""
    tiny_model(arch, seed=seed, num_layers=num_layers).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)


class EchoWorker:
    """A worker for :mod:`polar.jobs.workers` tests: one record per unit (``{"id", "value"}``, the
    value a fixed function of the id), after ``delay`` seconds per unit; a unit whose id is in
    ``poison`` raises, one in ``kill`` kills its own process (each only while ``marker`` is absent
    when given, so the fault can be made to happen once)."""

    def __init__(self, delay: float = 0.0, poison: tuple = (), kill: tuple = (), marker: str | None = None):
        self.delay, self.poison, self.kill, self.marker = delay, set(poison), set(kill), marker

    def run(self, units):
        import hashlib
        import os
        import signal
        import time

        out = []
        for u in units:
            armed = self.marker is None or not os.path.exists(self.marker)
            if u.id in self.kill and armed:
                if self.marker:
                    open(self.marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)
            if u.id in self.poison:
                raise RuntimeError(f"unit {u.id} always fails")
            time.sleep(self.delay)
            out.append({"id": u.id, "value": int(hashlib.sha256(u.id.encode()).hexdigest()[:8], 16)})
        return out


def echo_worker_factory(**kwargs):
    """A picklable factory of :class:`EchoWorker`."""
    import functools

    return functools.partial(EchoWorker, **kwargs)


def kill_after_lines(cmd: list[str], path, min_lines: int = 3, timeout: float = 120.0, env: dict | None = None) -> int:
    """Start ``cmd`` in its own process group, SIGKILL the group once ``path`` holds ``min_lines``
    lines (or the process ended, or ``timeout`` s passed) and return its return code
    (``-signal.SIGKILL`` when it was killed). For tests of resume after a hard kill."""
    import os
    import signal
    import subprocess
    import time
    from pathlib import Path

    path = Path(path)
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline and (
            not path.exists() or len(path.read_text().splitlines()) < min_lines):
        time.sleep(0.005)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait()


def write_sweep_file(path, entries, records: list[dict], settings: dict, spec: str = "toy"):
    """A sweep matrix file in ``polar sweep``'s format: one JSON line per record with ``settings``
    (``library_sha256`` added) and the ``<path>.library.json`` of ``entries``. Returns ``path``."""
    import json
    from pathlib import Path

    path = Path(path)
    sha = library_sha256(entries)
    with open(path, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps({**r, **settings, "library_sha256": sha}) + "\n")
    library_path(path).write_text(json.dumps({"spec": spec, "sha256": sha, "entries": library_to_json(entries)}) + "\n")
    return path
