"""Batched generation with per-row programs and a KV cache indexed by program step.

Prefill runs every row's program over its prompt, writing each step's keys/values into the
step's own slot; each decode step is a scheduled pass over the active rows that appends one
column. Rows stop independently (EOS, stop strings, token budget) and leave the batch.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..programs import Program, validate_programs
from .adapters import get_adapter
from .cache import StepKVCache
from .executor import prefill
from .inputs import prepare_inputs
from .masks import PassContext, last_token_states, token_positions
from .packing import pack
from .runners import WaveStep, get_runner, prepare_waves
from .schedule import DEFAULT_POLICY, check_policy, plan_waves


@dataclass
class GenerationResult:
    """Output of :func:`generate`, one entry per input row.

    ``tokens``: new token ids (EOS included when generated); ``texts``: decoded new text (cut
    after the first stop string) when a tokenizer was given; ``finish_reasons``: ``"eos"``,
    ``"stop"``, ``"rule"`` (``stop_fn``) or ``"length"``; ``executed_layers``/``unique_layers``: program length / distinct
    layers per row; ``prefill_waves``/``decode_waves``: waves run (decode: summed over steps);
    ``decode_row_layers``: row-layer applications done by decode steps (active rows only).
    """

    tokens: list[list[int]]
    texts: list[str] | None
    finish_reasons: list[str]
    executed_layers: list[int]
    unique_layers: list[int]
    programs: list[Program]
    prefill_waves: int = 0
    decode_waves: int = 0
    decode_steps: int = 0
    decode_row_layers: int = 0


def _tokenize(tokenizer, inputs):
    """Text -> a left-padded ``{input_ids, attention_mask}``; anything else is returned as is.

    Pads by hand (with the tokenizer's pad id, else its EOS id, else 0) so the tokenizer's own
    settings (padding side, pad token) are never changed."""
    if isinstance(inputs, str):
        inputs = [inputs]
    if not (isinstance(inputs, Sequence) and inputs and all(isinstance(s, str) for s in inputs)):
        return inputs
    if tokenizer is None:
        raise ValueError("text inputs need a tokenizer")
    ids = [list(x) for x in tokenizer(list(inputs), padding=False)["input_ids"]]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    pad = 0 if pad is None else int(pad)
    T = max(len(x) for x in ids)
    input_ids = torch.tensor([[pad] * (T - len(x)) + x for x in ids], dtype=torch.long)
    attention_mask = torch.tensor([[0] * (T - len(x)) + [1] * len(x) for x in ids], dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def _eos_ids(model, tokenizer, eos_token_id) -> set[int]:
    if eos_token_id is None:
        eos_token_id = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos_token_id is None and tokenizer is not None:
        eos_token_id = tokenizer.eos_token_id
    if eos_token_id is None:
        return set()
    return {int(eos_token_id)} if isinstance(eos_token_id, int) else {int(e) for e in eos_token_id}


def _check_sampling(max_new_tokens, do_sample, temperature, top_p, top_k) -> None:
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if do_sample:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {top_k}")


def select_tokens(logits: torch.Tensor, do_sample: bool, temperature: float, top_p: float, top_k: int,
                  generator: torch.Generator | None) -> torch.Tensor:
    """Next token per row from ``logits`` ``[n, V]``: argmax, or a sample after temperature,
    top-k and top-p (nucleus) filtering."""
    if not do_sample:
        return logits.argmax(-1)
    scores = logits.float().cpu() / temperature
    if top_k > 0:
        kth = torch.topk(scores, min(top_k, scores.shape[-1]), dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
        cum = sorted_scores.softmax(-1).cumsum(-1)
        drop = cum - sorted_scores.softmax(-1) >= top_p  # keep the smallest prefix reaching top_p
        sorted_scores = sorted_scores.masked_fill(drop, float("-inf"))
        scores = torch.full_like(scores, float("-inf")).scatter(-1, order, sorted_scores)
    probs = scores.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0].to(logits.device)


@dataclass
class _DecodePlan:
    """Waves of one decode pass over the active rows (re-planned only when rows leave)."""

    num_waves: int
    steps: list[WaveStep]
    row_layers: int


@dataclass
class _DecodeState:
    """Loop state of :func:`generate`: the active rows and the growing key metadata."""

    active: list[int]                 # batch rows still generating, ascending
    key_valid: torch.Tensor           # [B, L] bool: real-token columns (prompt + generated)
    key_pos: torch.Tensor             # [B, L] long: RoPE position of each column
    n_real: torch.Tensor              # [B]: real prompt tokens per row
    plan: _DecodePlan | None = None


@torch.inference_mode()
def generate(model, tokenizer, inputs, programs, max_new_tokens: int = 64, *, do_sample: bool = False,
             temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
             eos_token_id: int | Sequence[int] | None = None, stop_strings: Sequence[str] | None = None,
             stop_fn: Callable[[int, str], bool] | None = None,
             seed: int | None = None, policy: str = DEFAULT_POLICY,
             max_program_length: int | None = None, backend: str = "auto") -> GenerationResult:
    """Generate up to ``max_new_tokens`` per row, row ``r`` running ``programs[r]``.

    ``inputs``: text (str or list of str, needs ``tokenizer``; left-padded), a dict/BatchEncoding
    with ``input_ids`` and ``attention_mask`` (left or right padding), or a tensor of ids.
    Greedy by default; ``do_sample`` draws with ``temperature``/``top_k``/``top_p`` from a
    generator seeded with ``seed``. Rows stop at an EOS id (default: the model's generation
    config), at a stop string (needs ``tokenizer``; matched in the decoded new text after its
    leading whitespace; ``texts`` end with it; reason ``"stop"``), when ``stop_fn(row, text)``
    returns True for the decoded new text so far (needs ``tokenizer``; reason ``"rule"``; e.g. an
    answer that can no longer change), or after ``max_new_tokens``. ``programs``: one per row
    (lists of layer indices or :class:`polar.CompactProgram`), or one :class:`polar.Program` for
    all. ``policy`` and ``backend`` are as in :func:`polar.batched_execute`.

    Raises ``ValueError`` on bad programs, inputs or sampling settings, before any compute.
    """
    adapter = get_adapter(model)
    check_policy(policy)
    runner = get_runner(backend, adapter.device)
    _check_sampling(max_new_tokens, do_sample, temperature, top_p, top_k)
    stop_strings = list(stop_strings or [])
    if (stop_strings or stop_fn is not None) and tokenizer is None:
        raise ValueError("stop_strings and stop_fn need a tokenizer")
    input_ids, attention_mask = prepare_inputs(_tokenize(tokenizer, inputs), adapter.vocab_size, adapter.device)
    B, T = input_ids.shape
    progs = validate_programs(programs, B, adapter.num_layers, max_program_length)
    eos = _eos_ids(model, tokenizer, eos_token_id)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    device = adapter.device

    packed = pack(progs)
    slot_base = packed.offsets[:-1].long()                            # [B] first slot of each row
    L = T + max_new_tokens
    cache = StepKVCache(packed.total_steps, adapter.num_kv_heads, L, adapter.head_dim, adapter.dtype, device)
    state = _DecodeState(active=list(range(B)),
                         key_valid=torch.zeros(B, L, dtype=torch.bool, device=device),
                         key_pos=torch.zeros(B, L, dtype=torch.long, device=device),
                         n_real=attention_mask.sum(-1))
    state.key_valid[:, :T] = attention_mask.bool()
    state.key_pos[:, :T] = token_positions(attention_mask)

    waves = plan_waves(packed, policy, adapter.num_layers)
    hidden = prefill(adapter, input_ids, attention_mask, prepare_waves(waves, B, device, slot_base), runner, cache)
    logits = adapter.logits(last_token_states(hidden, attention_mask))  # [B, V]
    result = GenerationResult(tokens=[[] for _ in range(B)], texts=None, finish_reasons=["length"] * B,
                              executed_layers=[len(p) for p in progs],
                              unique_layers=[p.unique_layers for p in progs], programs=progs,
                              prefill_waves=waves.num_waves)

    for t in range(max_new_tokens):
        next_tokens = select_tokens(logits, do_sample, temperature, top_p, top_k, generator)  # [n_active]
        keep = []
        for i, (row, tok) in enumerate(zip(state.active, next_tokens.tolist())):
            result.tokens[row].append(tok)
            reason = _finish_reason(tok, eos, tokenizer, result.tokens[row], stop_strings, stop_fn, row)
            if reason is None:
                keep.append(i)
            else:
                result.finish_reasons[row] = reason
        if not keep or t == max_new_tokens - 1:
            break
        if len(keep) < len(state.active) or state.plan is None:
            if len(keep) < len(state.active):
                state.active = [state.active[i] for i in keep]
                next_tokens = next_tokens[torch.tensor(keep, device=next_tokens.device)]
            sub = packed.subset(state.active)
            sub_waves = plan_waves(sub, policy, adapter.num_layers)
            state.plan = _DecodePlan(sub_waves.num_waves,
                                     prepare_waves(sub_waves, len(state.active), device, slot_base[state.active]),
                                     sub.total_steps)
        rows = torch.tensor(state.active, device=device)              # [n]
        col = T + t
        state.key_valid[rows, col] = True
        state.key_pos[rows, col] = state.n_real[rows] + t
        hidden = adapter.embed(next_tokens[:, None])                  # [n, 1, d]
        ctx = PassContext(adapter, hidden, state.key_valid[rows, : col + 1], state.key_pos[rows, : col + 1],
                          torch.tensor([col], device=device), state.key_pos[rows, col : col + 1])
        hidden = runner.run(adapter, hidden, state.plan.steps, ctx, cache, start_col=col)  # [n, 1, d]
        logits = adapter.logits(hidden[:, -1])                        # [n, V]
        result.decode_waves += state.plan.num_waves
        result.decode_steps += 1
        result.decode_row_layers += state.plan.row_layers

    if tokenizer is not None:
        result.texts = [_text(tokenizer, toks, stop_strings) for toks in result.tokens]
    return result


def _finish_reason(tok: int, eos: set[int], tokenizer, tokens: list[int], stop_strings: list[str],
                   stop_fn, row: int) -> str | None:
    """Why a row stops after emitting ``tok`` (``"eos"``, ``"stop"``, ``"rule"``), or ``None``."""
    if tok in eos:
        return "eos"
    if not stop_strings and stop_fn is None:
        return None
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    if stop_strings and stop_end(text, stop_strings) is not None:
        return "stop"
    if stop_fn is not None and stop_fn(row, text):
        return "rule"
    return None


def stop_end(text: str, stop_strings: Sequence[str]) -> int | None:
    """End of the first stop string in ``text`` that starts after its leading whitespace (a
    newline before any content does not stop a row), or ``None``."""
    lead = len(text) - len(text.lstrip())
    ends = [i + len(s) for s in stop_strings if (i := text.find(s, lead)) >= 0]
    return min(ends) if ends else None


def _text(tokenizer, tokens: list[int], stop_strings: list[str]) -> str:
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    end = stop_end(text, stop_strings)
    return text if end is None else text[:end]
