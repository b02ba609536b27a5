"""Greedy rows that stop after a few tokens and resume in a later :func:`.generation.generate` call.

The state of a row at position ``p`` after program step ``k`` depends only on its tokens ``0..p``
and its program (docs/architecture.md section 9), so a row cut after ``t`` new tokens and fed
again as ``prompt + those t tokens`` continues exactly where it stopped: greedy decoding picks the
same next tokens (the same computation in other batch shapes, so logits agree up to float
rounding, as with sharing on or off). Callers use this to move the long tail of a call, rows
whose answer has not settled after a few tokens, into a later call where it decodes beside other
rows instead of alone: on a CPU a decode wave costs about the same for one row as for thirty
(docs/architecture.md section 17), and a lone row pays every wave of its program per token.

:func:`advance` runs one call over some :class:`ResumableRow` s. A row's stopping is the same as
in one uninterrupted ``generate(..., max_new_tokens, stop_strings=..., stop_fn=rule)`` call: EOS,
a stop string after the text's leading whitespace, ``rule(text)`` and the token budget are all
checked on the decoded text of every new token so far (``generate``'s ``prefix_tokens``), and
the row's tokens, log-probabilities and :func:`row_text` are those of the uninterrupted call.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .._checks import check_int
from ..errors import UserError
from .generation import GenerationResult, _text, generate, left_pad, stop_end


@dataclass
class ResumableRow:
    """One greedy row across calls. ``prompt_ids``: its real prompt tokens; ``rule``: the stop rule
    on the text so far (``stop_fn`` of :func:`.generation.generate`, per row); ``tokens`` /
    ``token_logprobs``: new tokens so far; ``finish_reason``: ``"eos"``, ``"stop"``, ``"rule"``,
    ``"length"``, or ``None`` while the row is unfinished."""

    prompt_ids: list[int]
    program: Sequence[int]
    rule: Callable[[str], bool] | None = None
    tokens: list[int] = field(default_factory=list)
    token_logprobs: list[float] = field(default_factory=list)
    finish_reason: str | None = None

    @property
    def done(self) -> bool:
        return self.finish_reason is not None


def row_text(tokenizer, row: ResumableRow, stop_strings: Sequence[str]) -> str:
    """The row's text as :func:`.generation.generate` returns it (cut after the first stop string)."""
    return _text(tokenizer, row.tokens, list(stop_strings))


def advance(model, tokenizer, rows: Sequence[ResumableRow], max_new_tokens: int,
            stop_strings: Sequence[str] = (), *, cut_after: int | None = None, **generate_kwargs) -> GenerationResult | None:
    """Advance every unfinished row of ``rows`` in ONE greedy :func:`.generation.generate` call (in place).

    A row stops as in an uninterrupted call with ``max_new_tokens`` (all its new tokens counted) and
    ``stop_strings``, with its ``rule`` as ``stop_fn``. ``cut_after``: a row still unfinished
    after this many tokens of this call is cut (left unfinished, to be continued by a later call)
    when its text so far decodes cleanly (no U+FFFD: its bytes end on a character boundary);
    ``None``: every row runs to its end. ``generate_kwargs`` go to ``generate`` (``prefix_cache``,
    ``share_prefix``, ``policy``, ``backend``; sampling is refused: a sampled row's generator
    cannot be resumed). Returns the call's result (``None`` when no row was unfinished).

    Raises ``ValueError`` for a bad budget, ``cut_after`` or sampling arguments, before any compute."""
    check_int(max_new_tokens, "max_new_tokens")
    check_int(cut_after, "cut_after", optional=True)
    if generate_kwargs.get("do_sample") or "seed" in generate_kwargs or "stop_fn" in generate_kwargs:
        raise UserError("advance() runs greedy rows with their own rules (no do_sample, seed or stop_fn)")
    todo = [r for r in rows if not r.done]
    if not todo:
        return None
    for r in todo:
        if len(r.tokens) >= max_new_tokens:
            raise UserError(f"an unfinished row already has {len(r.tokens)} >= max_new_tokens={max_new_tokens} tokens")
    stops = list(stop_strings)
    remaining = [max_new_tokens - len(r.tokens) for r in todo]
    counts = [0] * len(todo)
    ended: list[str | None] = [None] * len(todo)     # why stop_fn ended a row (None: cut, or EOS / generate)

    def stop_fn(i: int, text: str) -> bool:   # text: the decoded prefix + new tokens
        counts[i] += 1
        if stops and stop_end(text, stops) is not None:
            ended[i] = "stop"
        elif todo[i].rule is not None and todo[i].rule(text):
            ended[i] = "rule"
        elif counts[i] >= remaining[i]:
            ended[i] = "length"
        elif cut_after is not None and counts[i] >= cut_after and "\ufffd" not in text:
            return True                          # cut: unfinished, resumed later
        else:
            return False
        return True

    out = generate(model, tokenizer, left_pad(tokenizer, [r.prompt_ids + r.tokens for r in todo]),
                   [list(r.program) for r in todo], max(remaining), stop_fn=stop_fn,
                   prefix_tokens=[r.tokens for r in todo], **generate_kwargs)
    for i, r in enumerate(todo):
        r.tokens += out.tokens[i]
        r.token_logprobs += out.token_logprobs[i]
        if out.finish_reasons[i] == "eos":
            r.finish_reason = "eos"
        elif ended[i] is not None:
            r.finish_reason = ended[i]
        elif out.finish_reasons[i] == "length":  # the call's budget: the longest remaining one
            r.finish_reason = "length"
    return out
