"""The ``polar`` command line.

    polar accuracy --data synthetic:1:200 --prompt-style fewshot --out runs/l1.json
    polar accuracy --model default --data gsm8k:../shared/data/gsm8k/test.jsonl --limit 200
    polar data --data ../shared/data/asdiv/ASDiv.xml        # load a file, print its report

``accuracy`` evaluates the full program (every layer once) greedily. Per-problem results are
appended to a JSONL file as they are produced (``--results``, default ``<out stem>.jsonl``), so a
killed run resumes where it stopped, skipping the ids already there. At the end it prints a table
and a JSON summary (which records the prompt style) and writes the summary to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from polar.prompts import DEFAULT_PROMPT_STYLE, PROMPT_STYLES, build_prompt, stop_strings

DEFAULT_MAX_NEW_TOKENS = {"fewshot": 16, "direct": 48}


# ---------------------------------------------------------------------------------------------
# generation


def generate_texts(model, tokenizer, prompts: Sequence[str], max_new_tokens: int,
                   stop: Sequence[str] = (), programs=None) -> list[str]:
    """Greedy continuations of ``prompts`` with :func:`polar.generate`, cut before the first
    stop string (after some non-blank text). ``programs``: one per prompt, or ``None`` for the
    full program. The one place the CLI generates text."""
    import polar

    if programs is None:
        programs = polar.full(model.config.num_hidden_layers)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    out = polar.generate(model, tokenizer, enc, programs, max_new_tokens, stop_strings=list(stop))
    return [cut_at_stop(t, stop) for t in out.texts]


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to (excluding) the first stop string that follows some non-blank text."""
    cut = len(text)
    lead = len(text) - len(text.lstrip())
    for s in stop:
        i = text.find(s, lead)
        if i >= 0:
            cut = min(cut, i)
    return text[:cut]


# ---------------------------------------------------------------------------------------------
# accuracy


def _read_done(path: Path, config: dict) -> dict[str, dict]:
    done: dict[str, dict] = {}
    if not path.is_file():
        return done
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                print(f"warning: {path}:{lineno} is not valid JSON (a killed write?); ignored", file=sys.stderr)
                continue
            for key, value in config.items():
                if rec.get(key) != value:
                    raise SystemExit(
                        f"error: {path} holds results with {key}={rec.get(key)!r}, this run has {value!r}; "
                        f"use another --results/--out file"
                    )
            done[rec["id"]] = rec
    return done


def _summary(records: list[dict], config: dict, elapsed_s: float) -> dict:
    groups: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for rec in records:
        key = rec["source"] + (f" L{rec['level']}" if rec.get("level") is not None else "")
        groups[key][0] += int(rec["correct"])
        groups[key][1] += 1
    n = len(records)
    correct = sum(int(r["correct"]) for r in records)
    return {
        **config,
        "n": n,
        "correct": correct,
        "accuracy": correct / n if n else 0.0,
        "no_answer": sum(1 for r in records if r["extracted"] is None),
        "mean_layers": (sum(r["layers"] for r in records) / n) if n else 0.0,
        "by_group": {k: {"n": v[1], "correct": v[0], "accuracy": v[0] / v[1]} for k, v in sorted(groups.items())},
        "elapsed_s": round(elapsed_s, 1),
    }


def _print_table(summary: dict) -> None:
    rows = [(k, v["n"], v["correct"], v["accuracy"]) for k, v in summary["by_group"].items()]
    rows.append(("all", summary["n"], summary["correct"], summary["accuracy"]))
    width = max(len(r[0]) for r in rows) + 2
    print(f"model={summary['model']} prompt_style={summary['prompt_style']} program={summary['program']}")
    print(f"{'group':<{width}}{'n':>6}{'correct':>9}{'accuracy':>10}")
    for name, n, c, acc in rows:
        print(f"{name:<{width}}{n:>6}{c:>9}{acc:>10.3f}")


def cmd_accuracy(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from polar.data import resolve
    from polar.grading import extract_answer, is_correct
    from polar.models import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    problems = resolve(args.data)
    if args.limit is not None:
        problems = problems[: args.limit]
    style = args.prompt_style
    max_new = args.max_new_tokens or DEFAULT_MAX_NEW_TOKENS[style]
    out = Path(args.out)
    results_path = Path(args.results) if args.results else out.with_suffix(".jsonl")
    config = {"model": args.model or "default", "data": args.data, "prompt_style": style,
              "program": "full", "max_new_tokens": max_new}
    done = _read_done(results_path, {k: config[k] for k in ("model", "prompt_style", "program", "max_new_tokens")})
    todo = [p for p in problems if p.id not in done]
    print(f"{len(problems)} problems, {len(problems) - len(todo)} already in {results_path}, {len(todo)} to run",
          file=sys.stderr)

    start = time.perf_counter()
    if todo:
        model, tokenizer = load_model(args.model)
        n_layers = model.config.num_hidden_layers
        prompts = {p.id: build_prompt(p, style, tokenizer) for p in todo}
        # Batch problems of similar prompt length together (less padding); results keep ids.
        lengths = {pid: len(tokenizer(text, add_special_tokens=False).input_ids) for pid, text in prompts.items()}
        order = sorted(todo, key=lambda p: lengths[p.id])
        results_path.parent.mkdir(parents=True, exist_ok=True)
        with open(results_path, "a", encoding="utf-8") as fh, tqdm(total=len(order), desc="accuracy",
                                                                   unit="problem") as bar:
            for i in range(0, len(order), args.batch_size):
                batch = order[i:i + args.batch_size]
                texts = generate_texts(model, tokenizer, [prompts[p.id] for p in batch], max_new, stop_strings(style))
                for problem, text in zip(batch, texts):
                    rec = {
                        "id": problem.id, "source": problem.source, "level": problem.level,
                        **{k: config[k] for k in ("model", "prompt_style", "program", "max_new_tokens")},
                        "layers": n_layers, "gold": problem.answer, "output": text,
                        "extracted": extract_answer(text), "correct": is_correct(text, problem),
                    }
                    done[problem.id] = rec
                    fh.write(json.dumps(rec) + "\n")
                fh.flush()
                bar.update(len(batch))
                bar.set_postfix(acc=f"{sum(done[p.id]['correct'] for p in order[:i + len(batch)]) / (i + len(batch)):.3f}")
    records = [done[p.id] for p in problems]
    summary = _summary(records, config, time.perf_counter() - start)
    summary["results"] = str(results_path)
    _print_table(summary)
    print(json.dumps(summary, indent=2))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from polar.data import load, resolve

    if args.data.startswith("synthetic:"):
        problems = resolve(args.data)
        print(f"{args.data}: {len(problems)} problems")
    else:
        head, sep, rest = args.data.partition(":")
        path, fmt = (rest, head) if sep and not Path(args.data).exists() else (args.data, None)
        problems, report = load(path, format=fmt, report=True)
        print(report)
    for p in problems[: args.show]:
        print(json.dumps(p.__dict__))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polar", description="Program-of-Layers: run LLMs with programs of layers")
    sub = parser.add_subparsers(dest="command", required=True)

    acc = sub.add_parser("accuracy", help="accuracy of the full program on a data set (greedy)")
    acc.add_argument("--model", default="default", help="'default' (SmolLM2-135M-Instruct), a local folder or a hub id")
    acc.add_argument("--data", required=True, help="PATH, FORMAT:PATH or synthetic:LEVEL:N[:SPLIT[:SEED]]")
    acc.add_argument("--prompt-style", default=DEFAULT_PROMPT_STYLE, choices=PROMPT_STYLES)
    acc.add_argument("--limit", type=int, default=None, help="first N problems only")
    acc.add_argument("--batch-size", type=int, default=16)
    acc.add_argument("--max-new-tokens", type=int, default=None,
                     help=f"default per style: {DEFAULT_MAX_NEW_TOKENS}")
    acc.add_argument("--out", default="results.json", help="summary JSON")
    acc.add_argument("--results", default=None, help="per-problem JSONL (default: --out with .jsonl)")
    acc.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    acc.set_defaults(func=cmd_accuracy)

    data = sub.add_parser("data", help="load a data spec and print its load report")
    data.add_argument("--data", required=True)
    data.add_argument("--show", type=int, default=3, help="print the first N problems")
    data.set_defaults(func=cmd_data)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
