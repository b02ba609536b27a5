"""Accuracy of the full program on a data set: a resumable per-problem run (``polar accuracy``).

Problems are generated greedily in batches of similar prompt length with :func:`polar.generate`;
each problem's record is appended to a JSONL :class:`~polar.jobs.ResultsFile` as soon as its batch
finishes, so a killed run resumes where it stopped. The summary (per source/level) is returned,
written to ``out`` and printed as a table by the CLI.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..jobs import ResultsFile
from ..models import load_model
from ..programs import full
from ..runtime import generate
from ..tasks import (GENERATION_SETTINGS, Problem, answer_rule, build_prompt, extract_answer, generation_setting,
                     is_correct, resolve)

logger = logging.getLogger(__name__)

#: New-token budget per prompt style when none is given (:data:`polar.tasks.GENERATION_SETTINGS`).
DEFAULT_MAX_NEW_TOKENS = {style: s.max_new_tokens for style, s in GENERATION_SETTINGS.items()}


@dataclass
class AccuracyConfig:
    """Settings of one accuracy run (recorded in every result line and the summary)."""

    model: str = "default"        # 'default' or a local folder / cached hub id
    data: str = ""                # --data spec
    prompt_style: str = "fewshot"  # polar.tasks.PROMPT_STYLES
    max_new_tokens: int | None = None  # None: the style's generation setting (DEFAULT_MAX_NEW_TOKENS)
    limit: int | None = None      # first N problems only
    batch_size: int = 16          # rows per generate call
    device: str | None = None     # where the model runs (default CPU); not a result setting


def generate_texts(model, tokenizer, prompts: list[str], max_new_tokens: int, stop: list[str],
                   programs=None, problems: list[Problem] | None = None, prompt_style: str | None = None) -> list[str]:
    """Greedy continuations (the stop string kept at the end) of ``prompts``; ``programs`` one per
    prompt or ``None`` for the full program. ``problems`` and ``prompt_style`` (one problem per
    prompt): also stop each row once its graded answer is final (the early-answer rule)."""
    if programs is None:
        programs = full(model.config.num_hidden_layers)
    stop_fn = None
    if problems is not None and prompt_style is not None:
        rules = [answer_rule(prompt_style, p) for p in problems]
        stop_fn = lambda row, text: rules[row](text)  # noqa: E731
    return generate(model, tokenizer, prompts, programs, max_new_tokens, stop_strings=stop, stop_fn=stop_fn).texts


def summarize(records: list[dict], settings: dict, elapsed_s: float) -> dict:
    """Accuracy overall and per ``source`` (+ level) group."""
    groups: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for rec in records:
        key = rec["source"] + (f" L{rec['level']}" if rec.get("level") is not None else "")
        groups[key][0] += int(rec["correct"])
        groups[key][1] += 1
    n = len(records)
    correct = sum(int(r["correct"]) for r in records)
    return {
        **settings, "n": n, "correct": correct, "accuracy": correct / n if n else 0.0,
        "no_answer": sum(1 for r in records if r["extracted"] is None),
        "mean_layers": (sum(r["layers"] for r in records) / n) if n else 0.0,
        "by_group": {k: {"n": v[1], "correct": v[0], "accuracy": v[0] / v[1]} for k, v in sorted(groups.items())},
        "elapsed_s": round(elapsed_s, 1),
    }


def format_table(summary: dict) -> str:
    """The summary as a plain-text table."""
    rows = [(k, v["n"], v["correct"], v["accuracy"]) for k, v in summary["by_group"].items()]
    rows.append(("all", summary["n"], summary["correct"], summary["accuracy"]))
    width = max(len(r[0]) for r in rows) + 2
    lines = [f"model={summary['model']} prompt_style={summary['prompt_style']} program={summary['program']}",
             f"{'group':<{width}}{'n':>6}{'correct':>9}{'accuracy':>10}"]
    lines += [f"{name:<{width}}{n:>6}{c:>9}{acc:>10.3f}" for name, n, c, acc in rows]
    return "\n".join(lines)


def run_accuracy(config: AccuracyConfig, results_path: str | Path) -> dict:
    """Evaluate the full program on ``config.data``, resuming from ``results_path``; returns the summary.

    Raises :class:`polar.UserError` (bad spec / style) and :class:`~polar.jobs.SettingsMismatchError` (the
    results file holds other settings) before any model is loaded."""
    problems: list[Problem] = resolve(config.data)
    if config.limit is not None:
        problems = problems[: config.limit]
    setting = generation_setting(config.prompt_style)
    stop = list(setting.stop_strings)
    max_new = config.max_new_tokens or setting.max_new_tokens
    settings = {"model": config.model, "prompt_style": config.prompt_style, "program": "full",
                "max_new_tokens": max_new, "early_answer": setting.early_answer}
    store = ResultsFile(results_path, settings)
    done = store.load()
    todo = [p for p in problems if p.id not in done]
    logger.info("%d problems, %d already in %s, %d to run", len(problems), len(problems) - len(todo),
                results_path, len(todo))
    start = time.perf_counter()
    if todo:
        model, tokenizer = load_model(config.model, device=config.device)
        n_layers = model.config.num_hidden_layers
        prompts = {p.id: build_prompt(p, config.prompt_style, tokenizer) for p in todo}
        # batch problems of similar prompt length together (less padding)
        lengths = {pid: len(tokenizer(text, add_special_tokens=False).input_ids) for pid, text in prompts.items()}
        order = sorted(todo, key=lambda p: lengths[p.id])
        with tqdm(total=len(order), desc="accuracy", unit="problem") as bar:
            for i in range(0, len(order), config.batch_size):
                batch = order[i:i + config.batch_size]
                with torch.inference_mode():
                    texts = generate_texts(model, tokenizer, [prompts[p.id] for p in batch], max_new, stop,
                                           problems=batch if setting.early_answer else None,
                                           prompt_style=config.prompt_style)
                store.append({"id": p.id, "source": p.source, "level": p.level, "layers": n_layers,
                              "gold": p.answer, "output": t, "extracted": extract_answer(t),
                              "correct": is_correct(t, p)} for p, t in zip(batch, texts))
                bar.update(len(batch))
                finished = [store.records[p.id] for p in order[:i + len(batch)]]
                bar.set_postfix(acc=f"{sum(r['correct'] for r in finished) / len(finished):.3f}")
    records = [store.records[p.id] for p in problems]
    summary = summarize(records, {**settings, "data": config.data}, time.perf_counter() - start)
    summary["results"] = str(results_path)
    return summary
