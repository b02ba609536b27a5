"""``polar demo``: the whole method end to end on one model and the synthetic levels.

Phases (each resumable; a rerun reuses what is there and says so):

1. model: ``load_model`` (the default model is cached after its first conversion);
2. search: MCTS (``skip+loop``) on ``train_problems`` train-split problems per level ->
   ``OUT/search/L{level}.jsonl``;
3. train: the predictor on those results -> ``OUT/predictor/``;
4. evaluate: held-out test-split problems, PoLar against base greedy, base sampling (T = 0.7)
   and random single edits -> ``OUT/eval/`` (records.jsonl, report.md, summary.json, PNGs);
5. print a table: pass@1, pass@k, maj@k, mean executed layers per method.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import UserError
from ..models import load_model
from ..predictor import EmbeddingEncoder, Predictor, TrainConfig, train_from_files
from ..search import GenerateEvaluator, SearchConfig, SearchRun, read_results, run_search
from ..tasks.levels import SYNTHETIC_LEVELS
from .methods import BaseGreedy, BaseSampling, PolarMethod, RandomSingleEdits
from .report import write_report
from .run import EvalConfig, load_problems, run_eval

logger = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """Sizes of ``polar demo`` (defaults: about 6 minutes on one CPU thread with SmolLM2-135M)."""

    model: str = "default"
    levels: list[int] = field(default_factory=lambda: [1, 2, 5])  # synthetic levels searched and evaluated
    train_problems: int = 16      # train-split problems searched per level
    simulations: int = 16         # MCTS simulations per problem
    test_problems: int = 12       # held-out test-split problems per level
    k: int = 3                    # candidates per method
    epochs: int = 40              # predictor training epochs
    encoder: str = "minilm"       # predictor encoder: 'minilm', a folder, or 'llm'
    max_runs: int = 5             # predictor op space: a segment runs 0..max_runs times (search repeats up to 4 more)
    batch_size: int = 64
    seed: int = 0
    device: str | None = None     # where the model runs (default CPU)

    @classmethod
    def quick(cls, **overrides) -> "DemoConfig":
        """A smoke run of about 2 minutes: one level, a few problems."""
        return cls(**{**dict(levels=[1], train_problems=4, simulations=4, test_problems=4, k=2, epochs=5),
                      **overrides})


def _phase(name: str, reused: bool, detail: str = "") -> None:
    logger.info("[demo] %s: %s%s", name, "reusing what is there" if reused else "running", f" ({detail})" if detail else "")


@dataclass
class DemoResult:
    """What :func:`run_demo` did: the evaluation summary (``{group: {method: metrics}}``), the
    wall time of all phases, and whether a predictor was trained (False: PoLar left out)."""

    summary: dict
    wall_s: float
    trained: bool


def run_demo(config: DemoConfig, out_dir: str | Path, threads: int | None = None) -> DemoResult:
    """Run every phase (see the module docstring); raises ``ValueError`` for bad sizes or levels."""
    out = Path(out_dir)
    if not config.levels or config.k < 1 or min(config.train_problems, config.test_problems) < 1:
        raise UserError("the demo needs at least one level, one train and one test problem, and k >= 1")
    bad = [lv for lv in config.levels if lv not in SYNTHETIC_LEVELS]
    if bad:
        raise UserError(f"synthetic level must be one of {sorted(SYNTHETIC_LEVELS)}, got {bad[0]}")
    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    model, tok = load_model(config.model, device=config.device)

    search_files = []
    for level in config.levels:
        path = out / "search" / f"L{level}.jsonl"
        _phase(f"search level {level}", path.is_file())
        run = SearchRun(model=config.model, data=f"synthetic:{level}:{config.train_problems}:train",
                        batch_size=config.batch_size, progress=True,
                        search=SearchConfig(space="skip+loop", simulations=config.simulations, seed=config.seed))
        run_search(run, path, evaluator=GenerateEvaluator(model, tok, run.prompt_style, run.max_new_tokens,
                                                          run.early_answer))
        search_files.append(path)

    ckpt = out / "predictor"
    D = model.config.num_hidden_layers
    methods: list = [BaseGreedy(D), BaseSampling(D, 0.7), RandomSingleEdits(D, config.seed)]
    valid = sum(1 for r in read_results(search_files, same_settings=False) if r.get("final_valid_transitions"))
    if valid:
        _phase("train predictor", (ckpt / "model.safetensors").is_file(), f"{valid} problems with a valid program")
        encoder = EmbeddingEncoder.from_model(model, tok, config.model) if config.encoder == "llm" else None
        predictor: Predictor = train_from_files(search_files, ckpt, {"encoder": config.encoder, "max_runs": config.max_runs}, seed=config.seed,
                                                train_config=TrainConfig(epochs=config.epochs, batch_size=16),
                                                encoder=encoder)
        methods.insert(0, PolarMethod(predictor))
    else:  # nothing to learn from (e.g. a random model): say so, evaluate the baselines
        logger.warning("[demo] search found no valid program for any problem: no predictor can be trained, "
                       "PoLar is left out of the evaluation")

    eval_dir = out / "eval"
    _phase("evaluate", (eval_dir / "records.jsonl").is_file())
    ev = EvalConfig(model=config.model, data=[f"synthetic:{lv}:{config.test_problems}:test" for lv in config.levels],
                    k=config.k, batch_size=config.batch_size, seed=config.seed, checkpoint=str(ckpt) if valid else None)
    records = run_eval(ev, methods, model, tok, eval_dir, problems=load_problems(ev))
    summary = write_report(records, config.k, eval_dir, title="polar demo")
    return DemoResult(summary, round(time.perf_counter() - start, 1), bool(valid))


def demo_table(summary: dict, k: int) -> str:
    """pass@1, pass@k, maj@k and mean executed layers per method, over all levels."""
    rows = summary["all"]
    lines = [f"| method | pass@1 | pass@{k} | maj@{k} | mean layers |", "|---|---|---|---|---|"]
    for name, m in rows.items():
        if m.get("pass@1") is None or name == "base_sample_best":
            continue
        lines.append(f"| {name} | {100 * m['pass@1']:.1f} | {100 * m[f'pass@{k}']:.1f} | {100 * m[f'maj@{k}']:.1f} "
                     f"| {m['layers']:.1f} |")
    return "\n".join(lines)
