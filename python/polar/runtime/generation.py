"""Batched generation with per-row programs and a KV cache indexed by program step.

Prefill runs every row's program over its prompt, writing each step's keys/values into the
step's own slot; each decode step is a scheduled pass over the active rows that appends one
column. Rows stop independently (EOS, stop strings, token budget) and leave the batch.

With ``share_prefix=True`` (the default) :class:`.shared.SharedGeneration` runs prefill and decode
instead: states shared by several rows (same program prefix on the same prompt or on a common
prompt prefix; in decode, the same program prefix on the same prompt and the same tokens so far)
are computed once, and their keys/values are stored once and read by every row that shares them.

With ``router=R`` (``programs=None``) :class:`.routed.RoutedGeneration` runs instead: the router
decides each row's program over the prompt (docs/architecture.md section 15) and decoding runs
those programs.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..errors import UserError
from .._checks import check_int
from ..programs import Program, validate_programs
from .adapters import get_adapter
from .cache import StepKVCache
from .executor import prefill
from .inputs import prepare_inputs
from .masks import PassContext, last_token_states, token_positions
from .packing import pack
from .packing import PackedPrograms
from .runners import WaveRunner, WaveStep, get_runner, prepare_waves
from .schedule import DEFAULT_POLICY, check_policy, plan_waves
from .prefix_cache import PrefixCache
from .routed import RoutedGeneration
from .routing import check_router
from .shared import SharedGeneration


@dataclass
class GenerationResult:
    """Output of :func:`generate`, one entry per input row.

    ``tokens``: new token ids (EOS included when generated); ``texts``: decoded new text (cut
    after the first stop string) when a tokenizer was given; ``finish_reasons``: ``"eos"``,
    ``"stop"``, ``"rule"`` (``stop_fn``) or ``"length"``; ``executed_layers``/``unique_layers``: program length / distinct
    layers per row; ``prefill_waves``/``decode_waves``: waves run (decode: summed over steps);
    ``decode_row_layers``: row-layer applications done by decode steps (active rows only; with
    ``share_prefix`` a state shared by several rows counts once).

    Work, in layer applications x token columns (pad columns not counted): ``prefill_work`` and
    ``decode_work`` done, ``prefill_work_unshared``/``decode_work_unshared`` what the same call
    does without prefix sharing (equal when ``share_prefix=False``); ``prefill_work_cached``: the
    part of the shared work that ``prefix_cache`` supplied (not in ``prefill_work``). ``cache_entries``: key (=
    value) columns of KV cache used, each ``num_layers``-independent ``[H_kv, head_dim]``;
    ``cache_entries_unshared``: what the unshared cache allocates (``N x (T + max_new_tokens)``,
    ``N`` = total program steps, ``T`` = padded prompt length).

    Routed calls (``router=``): ``programs`` are the decided ones; ``attention_gates`` ``[B, D]``
    (CPU float32, the prompt's attention gates, reused in decode) or ``None``; ``token_layers``:
    per row, the mean number of layers each processed token (real prompt tokens and fed-back new
    tokens) ran in full under token gates, or ``None`` without them.
    """

    tokens: list[list[int]]
    texts: list[str] | None
    finish_reasons: list[str]
    executed_layers: list[int]
    unique_layers: list[int]
    programs: list[Program]
    token_logprobs: list[list[float]] = field(default_factory=list)
    prefill_waves: int = 0
    decode_waves: int = 0
    decode_steps: int = 0
    decode_row_layers: int = 0
    prefill_work: int = 0
    prefill_work_unshared: int = 0
    prefill_work_cached: int = 0
    decode_work: int = 0
    decode_work_unshared: int = 0
    cache_entries: int = 0
    cache_entries_unshared: int = 0
    attention_gates: torch.Tensor | None = None
    token_layers: list[float] | None = None


def _tokenize(tokenizer, inputs):
    """Text -> a left-padded ``{input_ids, attention_mask}``; anything else is returned as is.

    Pads by hand (with the tokenizer's pad id, else its EOS id, else 0) so the tokenizer's own
    settings (padding side, pad token) are never changed."""
    if isinstance(inputs, str):
        inputs = [inputs]
    if not (isinstance(inputs, Sequence) and inputs and all(isinstance(s, str) for s in inputs)):
        return inputs
    if tokenizer is None:
        raise UserError("text inputs need a tokenizer")
    return left_pad(tokenizer, tokenizer(list(inputs), padding=False)["input_ids"])


def left_pad(tokenizer, seqs: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
    """``{input_ids, attention_mask}`` ``[B, T]`` (long) of token lists, left-padded by hand with
    the tokenizer's pad id, else its EOS id, else 0 (the tokenizer's own settings untouched)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    pad = 0 if pad is None else int(pad)
    seqs = [list(x) for x in seqs]
    T = max(len(x) for x in seqs)
    return {"input_ids": torch.tensor([[pad] * (T - len(x)) + x for x in seqs], dtype=torch.long),
            "attention_mask": torch.tensor([[0] * (T - len(x)) + [1] * len(x) for x in seqs], dtype=torch.long)}


def _eos_ids(model, tokenizer, eos_token_id) -> set[int]:
    if eos_token_id is None:
        eos_token_id = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos_token_id is None and tokenizer is not None:
        eos_token_id = tokenizer.eos_token_id
    if eos_token_id is None:
        return set()
    return {int(eos_token_id)} if isinstance(eos_token_id, int) else {int(e) for e in eos_token_id}


def _check_sampling(max_new_tokens, do_sample, temperature, top_p, top_k) -> None:
    check_int(max_new_tokens, "max_new_tokens")
    if do_sample:
        if not temperature > 0:
            raise UserError(f"temperature must be > 0 when sampling, got {temperature}")
        if not 0 < top_p <= 1:
            raise UserError(f"top_p must be in (0, 1], got {top_p}")
        if top_k < 0:
            raise UserError(f"top_k must be >= 0, got {top_k}")


def select_tokens(logits: torch.Tensor, do_sample: bool, temperature: float, top_p: float, top_k: int,
                  generator: torch.Generator | Sequence[torch.Generator | None] | None) -> torch.Tensor:
    """Next token per row from ``logits`` ``[n, V]``: argmax, or a sample after temperature,
    top-k and top-p (nucleus) filtering. ``generator``: one for all rows, or one per row (a
    row's draw then depends only on its own generator, not on the other rows of the batch)."""
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
    probs = scores.softmax(-1)                                              # [n, V]
    if isinstance(generator, Sequence):
        drawn = torch.cat([torch.multinomial(probs[i:i + 1], 1, generator=g)[:, 0] for i, g in enumerate(generator)])
    else:
        drawn = torch.multinomial(probs, 1, generator=generator)[:, 0]
    return drawn.to(logits.device)


def row_generators(seed: int | Sequence[int] | None, B: int) -> torch.Generator | list[torch.Generator] | None:
    """``None`` (torch's global generator), one generator (an int seed, shared by the rows in
    batch order) or one per row (a sequence of ``B`` seeds); ``ValueError`` for a wrong count."""
    if seed is None:
        return None
    if not isinstance(seed, Sequence):
        return torch.Generator().manual_seed(int(seed))
    seeds = list(seed)
    if len(seeds) != B:
        raise UserError(f"got {len(seeds)} seeds for a batch of {B} rows; give one per row or one int")
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


@dataclass
class _DecodePlan:
    """Waves of one decode pass over the active rows (re-planned only when rows leave)."""

    num_waves: int
    steps: list[WaveStep]
    row_layers: int


class _PlainGeneration:
    """Prefill and decode without prefix sharing: one KV slot per (row, step), every row computes
    its own states. Same interface and counters as :class:`.shared.SharedGeneration`."""

    def __init__(self, adapter, runner: WaveRunner, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 packed: PackedPrograms, policy: str, max_new_tokens: int):
        self.adapter, self.runner, self.packed, self.policy = adapter, runner, packed, policy
        self.input_ids, self.attention_mask = input_ids, attention_mask
        B, T = input_ids.shape
        device = adapter.device
        self.T = T
        self.slot_base = packed.offsets[:-1].long()                        # [B] first slot of each row
        L = T + max_new_tokens
        self.cache = StepKVCache(packed.total_steps, adapter.num_kv_heads, L, adapter.head_dim, adapter.dtype, device)
        self.key_valid = torch.zeros(B, L, dtype=torch.bool, device=device)  # real-token columns
        self.key_pos = torch.zeros(B, L, dtype=torch.long, device=device)    # RoPE position of each column
        self.key_valid[:, :T] = attention_mask.bool()
        self.key_pos[:, :T] = token_positions(attention_mask)
        self.n_real = attention_mask.sum(-1)                                 # [B]
        self.waves = plan_waves(packed, policy, adapter.num_layers)
        self.active: list[int] | None = None
        self.plan: _DecodePlan | None = None
        self.prefill_waves = self.waves.num_waves
        self.prefill_work = self.prefill_work_unshared = int((packed.lengths().long() * self.n_real.cpu()).sum())
        self.prefill_work_cached = 0
        self.decode_waves = self.decode_work = self.decode_work_unshared = 0
        self.cache_entries = self.cache.entries

    def prefill(self) -> torch.Tensor:
        B = self.input_ids.shape[0]
        steps = prepare_waves(self.waves, B, self.adapter.device, self.slot_base)
        hidden = prefill(self.adapter, self.input_ids, self.attention_mask, steps, self.runner, self.cache)
        return self.adapter.logits(last_token_states(hidden, self.attention_mask))  # [B, V]

    def decode(self, active: list[int], tokens: torch.Tensor, t: int) -> torch.Tensor:
        adapter, device = self.adapter, self.adapter.device
        if active != self.active:
            self.active = list(active)
            sub = self.packed.subset(active)
            sub_waves = plan_waves(sub, self.policy, adapter.num_layers)
            self.plan = _DecodePlan(sub_waves.num_waves,
                                    prepare_waves(sub_waves, len(active), device, self.slot_base[active]),
                                    sub.total_steps)
        rows = torch.tensor(active, device=device)                          # [n]
        col = self.T + t
        self.key_valid[rows, col] = True
        self.key_pos[rows, col] = self.n_real[rows] + t
        hidden = adapter.embed(tokens[:, None])                             # [n, 1, d]
        ctx = PassContext(adapter, hidden, self.key_valid[rows, : col + 1], self.key_pos[rows, : col + 1],
                          torch.tensor([col], device=device), self.key_pos[rows, col : col + 1])
        hidden = self.runner.run(adapter, hidden, self.plan.steps, ctx, self.cache, start_col=col)  # [n, 1, d]
        self.decode_waves += self.plan.num_waves
        self.decode_work += self.plan.row_layers
        self.decode_work_unshared += self.plan.row_layers
        return adapter.logits(hidden[:, -1])                                # [n, V]


@torch.inference_mode()
def generate(model, tokenizer, inputs, programs, max_new_tokens: int = 64, *, do_sample: bool = False,
             temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
             eos_token_id: int | Sequence[int] | None = None, stop_strings: Sequence[str] | None = None,
             stop_fn: Callable[[int, str], bool] | None = None,
             seed: int | Sequence[int] | None = None, policy: str = DEFAULT_POLICY,
             max_program_length: int | None = None, backend: str = "auto",
             share_prefix: bool = True, prefix_cache: PrefixCache | None = None,
             router=None, prefix_tokens: Sequence[Sequence[int]] | None = None) -> GenerationResult:
    """Generate up to ``max_new_tokens`` per row, row ``r`` running ``programs[r]``.

    ``inputs``: text (str or list of str, needs ``tokenizer``; left-padded), a dict/BatchEncoding
    with ``input_ids`` and ``attention_mask`` (left or right padding), or a tensor of ids.
    Greedy by default; ``do_sample`` draws with ``temperature``/``top_k``/``top_p`` from a
    generator seeded with ``seed``, or, for a list of ``B`` seeds, from one generator per row, so
    that a row's samples depend only on its own seed, whatever else is in the batch. Rows stop at an EOS id (default: the model's generation
    config), at a stop string (needs ``tokenizer``; matched in the decoded new text after its
    leading whitespace; ``texts`` end with it; reason ``"stop"``), when ``stop_fn(row, text)``
    returns True for the decoded new text so far (needs ``tokenizer``; reason ``"rule"``; e.g. an
    answer that can no longer change), or after ``max_new_tokens``. ``programs``: one per row
    (lists of layer indices or :class:`polar.CompactProgram`), or one :class:`polar.Program` for
    all. ``policy``, ``backend`` and ``share_prefix`` are as in :func:`polar.batched_execute`
    (with ``share_prefix``, decode also shares: rows with the same prompt, the same tokens so far
    and a common program prefix compute that prefix's new column once). Tokens are the same with
    sharing on or off (logits agree up to float rounding). ``prefix_cache``
    (:class:`polar.runtime.PrefixCache`, needs ``share_prefix``): states of the prompts' common
    prefix are looked up in it and stored into it, so that later calls on prompts with the same
    prefix (a search's rounds) skip the program prefixes computed before; same tokens.
    ``prefix_tokens`` (one list per row; :mod:`polar.runtime.resume`): new tokens a row generated
    in an earlier call, whose continuation this call is (they end its prompt): stop strings,
    ``stop_fn`` and ``texts`` see the decoded ``prefix_tokens[r] + new tokens``.

    ``router`` (with ``programs=None``; :mod:`polar.runtime.routing`): the router decides each
    row's program over the prompt, layer by layer (and may gate sub-layers or tokens), and decoding
    runs those programs: ``result.programs`` replayed with ``generate(..., programs=
    result.programs)`` give the same tokens. Routed calls do not share prefixes (rows decide
    independently; ``share_prefix`` is ignored, same tokens) and use layer-ordered waves
    (``policy`` is ignored); ``prefix_cache`` is refused. ``max_program_length`` does not apply
    (a routed program has at most ``2 D`` steps).

    Raises ``ValueError`` on bad programs, inputs or sampling settings, on programs and a router
    together or neither, before any compute; ``UserError`` naming the layer for a malformed router
    output.
    """
    adapter = get_adapter(model)
    check_policy(policy)
    runner = get_runner(backend, adapter.device)
    _check_sampling(max_new_tokens, do_sample, temperature, top_p, top_k)
    stop_strings = list(stop_strings or [])
    if (stop_strings or stop_fn is not None) and tokenizer is None:
        raise UserError("stop_strings and stop_fn need a tokenizer")
    input_ids, attention_mask = prepare_inputs(_tokenize(tokenizer, inputs), adapter.vocab_size, adapter.device)
    B, T = input_ids.shape
    if router is not None:
        if programs is not None:
            raise UserError("give either programs or a router, not both (programs=None when a router decides)")
        if prefix_cache is not None:
            raise UserError("prefix_cache does not work with a router (routed rows do not share prefixes)")
        check_router(router)
        progs = None
    elif programs is None:
        raise UserError("programs is None; give one program per row, or a router")
    else:
        progs = validate_programs(programs, B, adapter.num_layers, max_program_length)
    eos = _eos_ids(model, tokenizer, eos_token_id)
    generator = row_generators(seed, B)
    if prefix_tokens is not None and len(prefix_tokens) != B:
        raise UserError(f"got {len(prefix_tokens)} prefix_tokens lists for a batch of {B} rows")
    before = [list(p) for p in prefix_tokens] if prefix_tokens is not None else [[] for _ in range(B)]

    if prefix_cache is not None:
        if not share_prefix:
            raise UserError("prefix_cache needs share_prefix=True")
        prefix_cache.bind(model)

    if router is not None:
        engine = RoutedGeneration(adapter, runner, input_ids, attention_mask, router, max_new_tokens)
    elif share_prefix:
        packed = pack(progs)
        engine = SharedGeneration(adapter, runner, input_ids, attention_mask, packed, policy, max_new_tokens,
                                  prefix_cache)
    else:
        packed = pack(progs)
        engine = _PlainGeneration(adapter, runner, input_ids, attention_mask, packed, policy, max_new_tokens)
    logits = engine.prefill()                                               # [B, V]
    if router is not None:
        progs, packed = engine.programs, engine.packed
    result = GenerationResult(tokens=[[] for _ in range(B)], texts=None, finish_reasons=["length"] * B,
                              executed_layers=[len(p) for p in progs],
                              unique_layers=[p.unique_layers for p in progs], programs=progs,
                              token_logprobs=[[] for _ in range(B)])

    active = list(range(B))                                                 # rows still generating, ascending
    for t in range(max_new_tokens):
        gens = [generator[r] for r in active] if isinstance(generator, list) else generator
        next_tokens = select_tokens(logits, do_sample, temperature, top_p, top_k, gens)  # [n_active]
        logprobs = torch.log_softmax(logits.float(), -1).gather(-1, next_tokens[:, None])[:, 0]  # [n_active]
        keep = []
        for i, (row, tok, lp) in enumerate(zip(active, next_tokens.tolist(), logprobs.tolist())):
            result.tokens[row].append(tok)
            result.token_logprobs[row].append(lp)
            reason = _finish_reason(tok, eos, tokenizer, before[row] + result.tokens[row], stop_strings, stop_fn, row)
            if reason is None:
                keep.append(i)
            else:
                result.finish_reasons[row] = reason
        if not keep or t == max_new_tokens - 1:
            break
        if len(keep) < len(active):
            active = [active[i] for i in keep]
            next_tokens = next_tokens[torch.tensor(keep, device=next_tokens.device)]
        logits = engine.decode(active, next_tokens, t)                      # [n_active, V]
        result.decode_steps += 1

    result.prefill_waves, result.decode_waves = engine.prefill_waves, engine.decode_waves
    result.prefill_work, result.prefill_work_unshared = engine.prefill_work, engine.prefill_work_unshared
    result.prefill_work_cached = engine.prefill_work_cached
    result.decode_work, result.decode_work_unshared = engine.decode_work, engine.decode_work_unshared
    result.decode_row_layers = engine.decode_work
    result.cache_entries = engine.cache_entries
    result.cache_entries_unshared = packed.total_steps * (T + max_new_tokens)
    if router is not None:
        gates = engine.record.attention
        result.attention_gates = None if gates is None else gates.cpu()
        result.token_layers = engine.token_layers()
    if tokenizer is not None:
        result.texts = [_text(tokenizer, b + toks, stop_strings) for b, toks in zip(before, result.tokens)]
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
