"""The ``polar`` command line: argument parsing only; every command calls a stage's public function.

    polar accuracy --data synthetic:1:200 --prompt-style fewshot --out runs/l1.json
    polar accuracy --model default --data gsm8k:../shared/data/gsm8k/test.jsonl --limit 200
    polar data --data ../shared/data/asdiv/ASDiv.xml        # load a file, print its report

User errors (bad spec, missing file, results file with other settings) print one line and exit
with status 2; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

import torch

from .evaluation import DEFAULT_MAX_NEW_TOKENS, AccuracyConfig, format_table, run_accuracy
from .models import cache_root, load_model
from .predictor import EmbeddingEncoder, TrainConfig, train_from_files
from .tasks import DEFAULT_PROMPT_STYLE, PROMPT_STYLES, resolve

logger = logging.getLogger("polar")


def cmd_accuracy(args: argparse.Namespace) -> int:
    _threads(args.threads)
    out = Path(args.out)
    config = AccuracyConfig(model=args.model, data=args.data, prompt_style=args.prompt_style,
                            max_new_tokens=args.max_new_tokens, limit=args.limit, batch_size=args.batch_size)
    assert set(DEFAULT_MAX_NEW_TOKENS) == set(PROMPT_STYLES)
    summary = run_accuracy(config, Path(args.results) if args.results else out.with_suffix(".jsonl"))
    print(format_table(summary))
    print(json.dumps(summary, indent=2))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    problems, report = resolve(args.data, report=True)
    print(report if report is not None else f"{args.data}: {len(problems)} problems")
    for p in problems[: args.show]:
        print(json.dumps(p.__dict__))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    _threads(args.threads)
    overrides = {"encoder": args.encoder}
    encoder = None
    if args.encoder == "llm":
        model, tok = load_model(args.model)
        encoder = EmbeddingEncoder.from_model(model, tok, args.model)
    train_config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    predictor = train_from_files(args.search, args.out, overrides, seed=args.seed, train_config=train_config,
                                 encoder=encoder, cache_dir=cache_root() / "encoder-outputs")
    print(f"trained predictor ({predictor.num_parameters():,} trainable parameters) saved in {args.out}")
    return 0


def _threads(n: int | None) -> None:
    if n:
        torch.set_num_threads(n)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polar", description="Program-of-Layers: run LLMs with programs of layers")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True)

    acc = sub.add_parser("accuracy", help="accuracy of the full program on a data set (greedy)",
                         epilog="example: polar accuracy --data synthetic:1:100 --out runs/l1.json")
    acc.add_argument("--model", default="default", help="'default' (SmolLM2-135M-Instruct), a local folder or a hub id")
    acc.add_argument("--data", required=True, help="PATH, FORMAT:PATH or synthetic:LEVEL:N[:SPLIT[:SEED]]")
    acc.add_argument("--prompt-style", default=DEFAULT_PROMPT_STYLE, choices=PROMPT_STYLES)
    acc.add_argument("--limit", type=int, default=None, help="first N problems only")
    acc.add_argument("--batch-size", type=int, default=16)
    acc.add_argument("--max-new-tokens", type=int, default=None, help="default: 16 (fewshot), 48 (direct)")
    acc.add_argument("--out", default="results.json", help="summary JSON")
    acc.add_argument("--results", default=None, help="per-problem JSONL (default: --out with .jsonl)")
    acc.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    acc.set_defaults(func=cmd_accuracy)

    tr = sub.add_parser("train", help="train the PoLar predictor on search results",
                        epilog="example: polar train --search results/search/skip_loop.jsonl --out ckpt/")
    tr.add_argument("--search", nargs="+", required=True, help="search results JSONL file(s) (polar search)")
    tr.add_argument("--out", required=True, help="checkpoint folder (a rerun resumes or reuses it)")
    tr.add_argument("--encoder", default="minilm", help="'minilm' (default), an AutoModel folder, or 'llm'")
    tr.add_argument("--model", default="default", help="the LLM (for --encoder llm)")
    tr.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    tr.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    tr.add_argument("--lr", type=float, default=TrainConfig.lr)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    tr.set_defaults(func=cmd_train)

    data = sub.add_parser("data", help="load a data spec and print its load report",
                          epilog="example: polar data --data mawps:../shared/data/mawps/test.jsonl")
    data.add_argument("--data", required=True)
    data.add_argument("--show", type=int, default=3, help="print the first N problems")
    data.set_defaults(func=cmd_data)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="[%(name)s] %(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, OSError) as err:
        if args.debug:
            raise
        print(f"polar {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
