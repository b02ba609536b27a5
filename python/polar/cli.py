"""The ``polar`` command line: argument parsing only; every command calls a stage's public function.

    polar accuracy --data synthetic:1:200 --prompt-style fewshot --out runs/l1.json
    polar accuracy --model default --data gsm8k:../shared/data/gsm8k/test.jsonl --limit 200
    polar data --data ../shared/data/asdiv/ASDiv.xml        # load a file, print its report
    polar search --data synthetic:1:40:train --space skip --sims 32 --out results/search/l1_skip.jsonl
    polar merge shard0.jsonl shard1.jsonl --out merged.jsonl
    polar export merged.jsonl --out merged_mcts_samples.json
    polar analyze results/search/*.jsonl --out results/analysis

User errors (:class:`polar.UserError`: bad spec, missing file, results file with other settings)
print one line and exit with status 2; any other error is a bug: one line and exit status 1;
``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

import torch

from .evaluation import (DEFAULT_METHODS, METHOD_NAMES, ROUTER_METHODS, AccuracyConfig, EvalConfig, build_methods,
                         format_table, load_problems, run_accuracy, run_eval, write_report)
from .evaluation.ask import ask, format_ask
from .evaluation.demo import DemoConfig, demo_table, run_demo
from .evaluation.lm_eval_run import run_lm_eval
from .evaluation.lm_eval_tasks import export_lm_eval
from .evaluation.learnability import analyze_sweep, embed_mean, scorer_selection
from .evaluation.report import markdown_table
from .search import read_sweep
from .search import (DEFAULT_LIBRARY, DEFAULT_MAX_NEW_TOKENS as SEARCH_MAX_NEW_TOKENS, DEFAULT_PREFIX_CACHE_MB, SPACES,
                     SearchConfig, SearchRun, SweepRun, analyze, export_supervision, merge_results, parse_shard,
                     read_results, run_search, run_sweep)
from .errors import UserError, UserFileNotFoundError
from .jobs import RayOptions
from .models import cache_root, check_device, load_model, model_depth
from .predictor import (EmbeddingEncoder, PredictorConfig, TrainConfig, load_search_results,
                        recorded_depth, train_from_files)
from .predictor import Scorer, load_encoder, load_predictor, sweep_prompts
from .predictor import ScorerTrainConfig, train_scorer_from_files
from .predictor._predictor import DEFAULT_CHECKPOINT
from .predictor._scorer import SCORER_FORMAT, is_scorer_checkpoint
from .evaluation.solve import SELECTS, SELECTION_FILE, load_selection, save_selection
from .routers import ROUTER_KINDS, RouterRun, RouterTrainConfig, load_router, train_router
from .routers import read_config as read_router_config
from .tasks import DEFAULT_PROMPT_STYLE, PROMPT_STYLES, resolve

logger = logging.getLogger("polar")


def cmd_accuracy(args: argparse.Namespace) -> int:
    _threads(args.threads)
    out = Path(args.out)
    check_device(args.device)
    config = AccuracyConfig(model=args.model, data=args.data, prompt_style=args.prompt_style,
                            max_new_tokens=args.max_new_tokens, limit=args.limit, batch_size=args.batch_size,
                            device=args.device)
    summary = run_accuracy(config, Path(args.results) if args.results else out.with_suffix(".jsonl"))
    print(format_table(summary))
    print(json.dumps(summary, indent=2))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    if args.export_lm_eval:
        sources = {k: getattr(args, k) for k in ("gsm8k", "mawps", "asdiv") if getattr(args, k)}
        for name, n in export_lm_eval(args.export_lm_eval, sources).items():
            print(f"{name}: {n} records")
        print(f"lm-eval task folder: {Path(args.export_lm_eval).expanduser().resolve()} "
              "(polar lm-eval --data-dir DIR, or lm-eval's --include_path DIR)")
        return 0
    if not args.data:
        raise UserError("polar data needs --data SPEC or --export-lm-eval DIR")
    problems, report = resolve(args.data, report=True)
    print(report if report is not None else f"{args.data}: {len(problems)} problems")
    for p in problems[: args.show]:
        print(json.dumps(p.__dict__))
    return 0


def _train_scorer(args: argparse.Namespace) -> int:
    """``polar train --head scorer``: the scorer on sweep matrices (+ search results)."""
    if not args.sweep:
        raise UserError("--head scorer needs --sweep FILES (polar sweep matrices)")
    if args.deploy_k < 1:
        raise UserError(f"--deploy-k must be a positive int, got {args.deploy_k}")
    for path in list(args.sweep) + list(args.val_sweep or []):
        if not Path(path).is_file():
            raise UserFileNotFoundError(f"sweep file not found: {path}")
    flags = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr}
    train_config = _user_input(ScorerTrainConfig, **{k: v for k, v in flags.items() if v is not None})
    model = tok = None
    if "llm" in args.features.split("+"):
        model, tok = load_model(args.model, device=args.device)
    config = {} if args.encoder == "minilm" else {"encoder": args.encoder}
    scorer = _user_input(train_scorer_from_files, args.sweep, args.out, val_sweep=args.val_sweep or [],
                         search=args.search or [], features=args.features, config=config,
                         train_config=train_config, model=model, tokenizer=tok, seed=args.seed,
                         cache_dir=cache_root() / "encoder-outputs")
    print(f"trained scorer ({len(scorer.entries)} programs, features {args.features}) saved in {args.out}")
    if "validation" in scorer.metadata:
        print(json.dumps(scorer.metadata["validation"], indent=2))
    if args.val_sweep:  # the deployable rule (select="auto"), chosen on the same validation split
        val = read_sweep(args.val_sweep)
        llm = None
        if scorer.config.uses_llm:
            llm = scorer.compute_llm_features(model, tok, sweep_prompts(val, tok), cache_dir=cache_root() / "encoder-outputs")
        choice = scorer_selection(scorer, val, args.deploy_k, llm)
        save_selection(args.out, choice)
        print(f"answer rule chosen on validation (k={args.deploy_k}): {choice['rule']}"
              + (f" (threshold {choice['threshold']:.3f})" if choice["threshold"] is not None else "")
              + f", val accuracy {choice['val_accuracy']:.3f}; {Path(args.out) / SELECTION_FILE}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    _threads(args.threads)
    if args.head == "scorer":
        return _train_scorer(args)
    if args.max_runs < 1:  # before any model is loaded
        raise UserError(f"--max-runs must be a positive int (2: skip, keep, repeat), got {args.max_runs}")
    if not args.search and not args.sweep:
        raise UserError("polar train needs --search FILES and/or --sweep FILES")
    if args.val_sweep or args.features != "text":
        raise UserError("--val-sweep and --features are options of --head scorer")
    overrides = {"encoder": args.encoder, "max_runs": args.max_runs}
    # UserError before any model is loaded: no records, other generation settings, bad records
    records = load_search_results(args.search, limit=args.limit) if args.search else []
    if args.search and recorded_depth(records) is None:  # e.g. the reference's layout: the depth of --model
        overrides["num_layers"] = model_depth(args.model)
    for path in args.sweep or []:
        if not Path(path).is_file():
            raise UserFileNotFoundError(f"sweep file not found: {path}")
    encoder = None
    if args.encoder == "llm":
        model, tok = load_model(args.model, device=args.device)
        encoder = EmbeddingEncoder.from_model(model, tok, args.model)
    flags = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr}
    train_config = _user_input(TrainConfig, **{k: v for k, v in flags.items() if v is not None},
                               anti_original_lambda=args.anti_original_lambda, lenpref_beta=args.lenpref_beta,
                               per_problem_normalize=not args.no_per_problem_normalize,
                               drop_full_if_shorter=args.drop_full_if_shorter)
    predictor = train_from_files(args.search or [], args.out, overrides, seed=args.seed, train_config=train_config,
                                 encoder=encoder, cache_dir=cache_root() / "encoder-outputs", limit=args.limit,
                                 sweep=args.sweep or [])
    print(f"trained predictor ({predictor.num_parameters():,} trainable parameters) saved in {args.out}")
    return 0


def cmd_train_router(args: argparse.Namespace) -> int:
    _threads(args.threads)
    check_device(args.device)
    flags = {k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "alpha", "save_every")}
    train = _user_input(RouterTrainConfig, **{k: v for k, v in flags.items() if v is not None})
    run = _user_input(RouterRun, kind=args.kind, search=tuple(args.search or ()), data=tuple(args.data or ()),
                      model=args.model, prompt_style=args.prompt_style, limit=args.limit, seed=args.seed,
                      device=args.device, train=train)
    train_router(run, args.out)
    print(f"trained {run.kind} router saved in {args.out} (polar.routers.load_router)")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    _threads(args.threads)
    search = SearchConfig(space=args.space, simulations=args.sims, max_block=args.max_block,
                          max_repeats=args.max_repeats, min_length=args.min_length, max_length=args.max_length,
                          exploration=args.exploration, length_penalty=args.length_penalty,
                          widening=args.widening, leaves_per_round=args.leaves, seed=args.seed)
    run = SearchRun(model=args.model, data=args.data, prompt_style=args.prompt_style,
                    max_new_tokens=args.max_new_tokens, early_answer=not args.no_early_answer,
                    batch_size=args.batch_size, limit=args.limit,
                    shard=parse_shard(args.shard) if args.shard else None, search=search, device=args.device)
    check_device(args.device)
    ray = _ray_options(args) if args.ray else None
    print(json.dumps(run_search(run, args.out, ray=ray, threads=args.threads, max_active=args.max_active,
                                prefix_cache_mb=args.prefix_cache_mb, retry_failed=not args.no_retry_failed),
                     indent=2))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    _threads(args.threads)
    run = SweepRun(model=args.model, data=args.data, library=args.library, prompt_style=args.prompt_style,
                   max_new_tokens=args.max_new_tokens, early_answer=not args.no_early_answer, seed=args.seed,
                   batch_size=args.batch_size, limit=args.limit,
                   shard=parse_shard(args.shard) if args.shard else None, device=args.device)
    _user_input(run.validate)
    check_device(args.device)
    search_records = read_results(args.from_search, same_settings=False) if args.from_search else []
    ray = _ray_options(args) if args.ray else None
    print(json.dumps(run_sweep(run, args.out, search_records, ray=ray, threads=args.threads,
                               prefix_cache_mb=args.prefix_cache_mb, retry_failed=not args.no_retry_failed), indent=2))
    return 0


def _user_input(check, *args, **kwargs):
    """``check(*args, **kwargs)``, a validator of flags: its ``ValueError`` is the user's error."""
    try:
        return check(*args, **kwargs)
    except UserError:
        raise
    except ValueError as err:
        raise UserError(str(err)) from err


def _ray_options(args: argparse.Namespace) -> RayOptions:
    return RayOptions(address=args.address, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
                      batch_units=args.units_per_task)


def _add_runtime_flags(p: argparse.ArgumentParser) -> None:
    """``--threads`` and ``--device``, the same on every command that runs a model."""
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--device", default=None, help="where the model runs: cpu (default), cuda, cuda:N")


def _add_ray_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Ray (optional: pip install 'polar[ray]')")
    g.add_argument("--ray", action="store_true", help="run on Ray actors; this process is the single writer")
    g.add_argument("--address", default=None, help="Ray cluster address (default: start a local one)")
    g.add_argument("--workers", type=int, default=2, help="Ray actors, each loading the model once")
    g.add_argument("--gpus-per-worker", type=float, default=0.0)
    g.add_argument("--units-per-task", type=int, default=RayOptions.batch_units,
                   help="problems per task sent to an actor (default %(default)s)")


def _add_retry_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-retry-failed", action="store_true",
                   help="keep the units a run marked failed instead of running them again")


def cmd_merge(args: argparse.Namespace) -> int:
    n = merge_results(args.inputs, args.out)
    print(f"{n} records -> {args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    n = export_supervision(args.inputs, args.out)
    print(f"{n} samples -> {args.out}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    summary = analyze(args.inputs, args.out)
    print(Path(args.out, "findings.md").read_text(encoding="utf-8"))
    print(f"plots: {', '.join(summary['plots'])}")
    return 0


def cmd_analyze_sweep(args: argparse.Namespace) -> int:
    _threads(args.threads)
    for folder in filter(None, (args.scorer, args.scorer_llm)):
        if not Path(folder).is_dir():
            raise UserFileNotFoundError(f"scorer checkpoint folder not found: {folder}")
    scorer = Scorer.load(args.scorer) if args.scorer else None
    scorer_llm = Scorer.load(args.scorer_llm) if args.scorer_llm else None
    llm_features = None
    if scorer_llm is not None:
        model, tok = load_model(args.model, device=args.device)
        llm_features = lambda m: scorer_llm.compute_llm_features(model, tok, sweep_prompts(m, tok))  # noqa: E731
    encoder = None if args.encoder == "minilm" else _user_input(load_encoder, args.encoder)
    summary = analyze_sweep(args.train, args.test, args.out, val_paths=args.val, sample_paths=args.samples,
                            val_sample_paths=args.val_samples, scorer=scorer, scorer_llm=scorer_llm, llm_features=llm_features, k_max=args.k_max,
                            deploy_k=args.deploy_k, neighbours=args.neighbours, bootstrap=args.bootstrap,
                            seed=args.seed, embed=(lambda qs: embed_mean(qs, encoder)) if encoder else None)
    print(Path(args.out, "findings.md").read_text(encoding="utf-8"))
    print(f"plots: {', '.join(summary['plots'])}; summary: {Path(args.out) / 'summary.json'}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    _threads(args.threads)
    router_dirs = _eval_router_dirs(args.routers)  # {kind: folder}, read before any model load
    mix = _parse_mix(args.mix) if args.mix else None
    names = list(args.methods) if args.methods is not None else (
        list(DEFAULT_METHODS) + [n for n in ROUTER_METHODS if n in router_dirs] + (["polar_mix"] if mix else []))
    if mix and "polar_mix" not in names:
        logger.warning("--mix %s: polar_mix is not among --methods; not evaluated", args.mix)
    for name in (n for n in ROUTER_METHODS if n in names and n not in router_dirs):
        given = ", ".join(f"{k} ({v})" for k, v in router_dirs.items()) or "none"
        raise UserError(f"method {name!r} needs a {name} router checkpoint among --routers (given: {given}); "
                        f"polar train-router --kind {name} makes one")
    unused = [str(v) for k, v in router_dirs.items() if k not in names]
    if unused:
        logger.warning("--routers %s: not among --methods; not evaluated", " ".join(unused))
    router_dirs = {k: v for k, v in router_dirs.items() if k in names}
    config = EvalConfig(model=args.model, data=args.data, k=args.k, batch_size=args.batch_size,
                        prompt_style=args.prompt_style, max_new_tokens=args.max_new_tokens, seed=args.seed,
                        limit=args.limit, checkpoint=args.checkpoint, device=args.device,
                        prefix_cache_mb=args.prefix_cache_mb, routers=list(router_dirs.values()),
                        mix=args.mix if "polar_mix" in names else None)
    check_device(args.device)
    problems = load_problems(config)  # bad specs fail here, before any model is loaded
    search_records = read_results(args.search, same_settings=False) if args.search else []
    train_problems = resolve(args.train_data) if args.train_data else []
    train_sweep = read_sweep(args.train_sweep) if args.train_sweep else None
    for name in ("polar", "polar_mix"):
        if name in names and not args.checkpoint:
            raise UserError(f"method {name!r} needs --checkpoint (or leave it out of --methods)")
    if "polar_mix" in names and mix is None:
        raise UserError("method 'polar_mix' needs --mix M:T (M programs, then samples at temperature T)")
    selection = _eval_selection(args.checkpoint)
    if selection["rule"] == "gate" and "base_greedy" not in names:
        logger.warning("the gate's answer@k needs the full program's run: problems whose polar candidates lack it "
                       "are left out of answer@k unless base_greedy is among --methods")
    model, tok = load_model(args.model, device=args.device)
    predictor = None
    if args.checkpoint:
        predictor = _load_predictor(args.checkpoint, model, tok)
    routers = {kind: load_router(folder, model) for kind, folder in router_dirs.items()}
    methods = build_methods(names, model, tok, k=args.k, seed=args.seed, predictor=predictor,
                            search_records=search_records, shortgpt_problems=train_problems,
                            prompt_style=args.prompt_style, train_sweep=train_sweep, routers=routers,
                            batch_size=args.batch_size, mix=mix)
    records = run_eval(config, methods, model, tok, args.out, problems=problems,
                       ray=_ray_options(args) if args.ray else None, threads=args.threads,
                       retry_failed=not args.no_retry_failed)
    definitions = {m.name: m.definition for m in methods if getattr(m, "definition", None)}
    summary = write_report(records, args.k, args.out, title=f"polar eval: {', '.join(args.data)}",
                           selection=selection, definitions=definitions,
                           num_layers=getattr(getattr(model, "config", None), "num_hidden_layers", None))
    print(markdown_table(summary, args.k))
    print(f"report: {Path(args.out) / 'report.md'} (summary.json, records.jsonl, *.png beside it)")
    return 0


def _parse_mix(text: str) -> tuple[int, float]:
    """``"M:T"`` -> ``(M programs, temperature T)``; one-line :class:`UserError` otherwise."""
    m, sep, t = text.partition(":")
    try:
        out = int(m), float(t)
    except ValueError:
        out = None
    if not sep or out is None or out[0] < 0 or not out[1] > 0:
        raise UserError(f"--mix {text!r}: expected M:T, M >= 0 programs and a temperature T > 0 (e.g. 3:0.7)")
    return out


def _eval_router_dirs(folders: Sequence[str] | None) -> dict[str, str]:
    """``{kind: folder}`` of ``polar eval --routers`` (each folder's config.json names its kind);
    one-line :class:`UserError` for a folder that is no router checkpoint or two of one kind."""
    out: dict[str, str] = {}
    for folder in folders or []:
        kind = read_router_config(folder)["kind"]
        if kind in out:
            raise UserError(f"--routers: {out[kind]} and {folder} are both {kind} routers; give one per kind")
        out[kind] = folder
    return out


def _eval_selection(checkpoint: str | None) -> dict:
    """The rule of ``polar eval``'s answer@k: the checkpoint's ``selection.json`` (chosen on
    validation data), else top1."""
    folder = DEFAULT_CHECKPOINT if checkpoint == "default" else Path(checkpoint) if checkpoint else None
    if folder is not None and checkpoint != "default-segments" and (folder / SELECTION_FILE).is_file():
        choice = load_selection(folder)
        return {"rule": choice["rule"], "threshold": choice.get("threshold"), "source": str(folder / SELECTION_FILE)}
    return {"rule": "top1", "threshold": None, "source": "default (no selection.json)"}


def checkpoint_format(checkpoint: str) -> str:
    """``"polar-scorer"`` for a scorer checkpoint folder (its ``config.json`` says so; ``default``:
    the shipped one's), else ``"segments"`` (the paper's predictor, and ``default-segments``)."""
    if checkpoint == "default-segments":
        return "segments"
    folder = DEFAULT_CHECKPOINT if checkpoint == "default" else Path(checkpoint)
    return SCORER_FORMAT if is_scorer_checkpoint(folder) else "segments"


def _load_predictor(checkpoint: str, model, tok):
    """:func:`polar.predictor.load_predictor` with ``model``'s embedding (``default``,
    ``default-segments``, a scorer or a segment predictor folder)."""
    return load_predictor(checkpoint, embedding=model.get_input_embeddings(), tokenizer=tok)


def cmd_ask(args: argparse.Namespace) -> int:
    _threads(args.threads)
    if not args.question.strip():
        raise UserError("the question is empty")
    model, tok = load_model(args.model, device=args.device)
    predictor = _load_predictor(args.checkpoint, model, tok)
    print(format_ask(ask(args.question, model, tok, predictor, k=args.k, prompt_style=args.prompt_style,
                         select=args.select)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in dict(model=args.model, levels=args.levels, train_problems=args.train_problems,
                                       simulations=args.sims, test_problems=args.test_problems, k=args.k,
                                       encoder=args.encoder, seed=args.seed, batch_size=args.batch_size,
                                       device=args.device).items()
                 if v is not None}
    config = DemoConfig.quick(**overrides) if args.quick else DemoConfig(**overrides)
    result = run_demo(config, args.out, threads=args.threads)
    print(demo_table(result.summary, config.k))
    if not result.trained:
        print("search found no valid program for any problem, so no predictor was trained (PoLar not evaluated)")
    print(f"wall time {result.wall_s:.0f} s; report: {Path(args.out) / 'eval' / 'report.md'} "
          f"(summary.json, records.jsonl, pass_at_k.png, accuracy_vs_layers.png beside it)")
    return 0


def cmd_lm_eval(args: argparse.Namespace) -> int:
    _threads(args.threads)
    check_device(args.device)
    tasks = [t for t in args.tasks.split(",") if t]
    run_lm_eval(tasks, args.out, model=args.model, program=args.program, predictor=args.predictor,
                predictor_input=args.predictor_input, limit=args.limit, batch_size=args.batch_size,
                device=args.device, data_dir=args.data_dir, seed=args.seed, max_gen_toks=args.max_gen_toks)
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
    acc.add_argument("--max-new-tokens", type=int, default=None,
                     help="default: the prompt style's generation setting (the search's budget)")
    acc.add_argument("--out", default="results.json", help="summary JSON")
    acc.add_argument("--results", default=None, help="per-problem JSONL (default: --out with .jsonl)")
    _add_runtime_flags(acc)
    acc.set_defaults(func=cmd_accuracy)

    tr = sub.add_parser("train", help="train the PoLar predictor on search results or sweep matrices",
                        epilog="example: polar train --search results/search/skip_loop.jsonl --out ckpt/ ; "
                               "polar train --head scorer --sweep L1_train.jsonl --val-sweep "
                               "L1_validation.jsonl --out scorer/")
    tr.add_argument("--head", default="segments", choices=["segments", "scorer"],
                    help="'segments': the paper's boundary/op network (default); 'scorer': P(program correct | "
                         "input) for a library's programs, trained on sweep matrices")
    tr.add_argument("--search", nargs="+", default=None, help="search results JSONL file(s) (polar search)")
    tr.add_argument("--sweep", nargs="+", default=None,
                    help="sweep matrices (polar sweep): the scorer's data; for segments, the correct programs "
                         "of each problem are its valid programs")
    tr.add_argument("--val-sweep", nargs="+", default=None,
                    help="validation sweep matrices (--head scorer): model selection and the answer rule "
                         "(selection.json, select='auto')")
    tr.add_argument("--deploy-k", type=int, default=5, help="--head scorer: k of the answer rule chosen on --val-sweep")
    tr.add_argument("--features", default="text", choices=["text", "llm", "text+llm"],
                    help="scorer inputs: the text encoder, the LLM's state on the prompt (--model), or both")
    tr.add_argument("--anti-original-lambda", type=float, default=0.0,
                    help="segments: add lambda * mean P(keep) for problems whose full program is invalid")
    tr.add_argument("--lenpref-beta", type=float, default=0.0,
                    help="segments: weight valid programs by exp(-beta * length) (the reference uses 0.05)")
    tr.add_argument("--no-per-problem-normalize", action="store_true",
                    help="segments: a problem weighs as many times as it has valid programs")
    tr.add_argument("--drop-full-if-shorter", action="store_true",
                    help="segments: drop the full program from a problem's targets when a shorter valid one exists")
    tr.add_argument("--out", required=True, help="checkpoint folder (a rerun resumes or reuses it)")
    tr.add_argument("--encoder", default="minilm", help="'minilm' (default), an AutoModel folder, or 'llm'")
    tr.add_argument("--model", default="default", help="the LLM (for --encoder llm)")
    tr.add_argument("--epochs", type=int, default=None,
                    help=f"default {TrainConfig.epochs} (segments), {ScorerTrainConfig.epochs} (scorer: most epochs)")
    tr.add_argument("--batch-size", type=int, default=None,
                    help=f"default {TrainConfig.batch_size} (segments), {ScorerTrainConfig.batch_size} (scorer)")
    tr.add_argument("--lr", type=float, default=None,
                    help=f"default {TrainConfig.lr} (segments), {ScorerTrainConfig.lr} (scorer)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--limit", type=int, default=None,
                    help="only the first N records of each --search file (freeze files a search still appends to)")
    tr.add_argument("--max-runs", type=int, default=PredictorConfig.max_runs,
                    help="most runs of one segment in the predictor's compact space (default 2: skip, keep, "
                         "repeat); polar search repeats a block up to --max-repeats + 1 times, so 5 covers the "
                         "default search")
    _add_runtime_flags(tr)
    tr.set_defaults(func=cmd_train)

    trr = sub.add_parser("train-router", help="train an online router (DR.LLM, MindSkip, FlexiDepth) for a model",
                         epilog="example: polar train-router --kind drllm --search results/search/skip_loop/*.jsonl "
                                "--out runs/drllm ; polar train-router --kind mindskip --data synthetic:1:200:train "
                                "--out runs/mindskip")
    trr.add_argument("--kind", required=True, choices=ROUTER_KINDS,
                     help="drllm: skip/run/repeat per layer, labels from --search; mindskip: attention gates; "
                          "flexidepth: per-token layer gates (both trained with the LM loss on --data)")
    trr.add_argument("--search", nargs="+", default=None, help="search results JSONL file(s) (--kind drllm)")
    trr.add_argument("--data", action="append", default=None,
                     help="training problems, a --data spec (--kind mindskip/flexidepth); repeat for several")
    trr.add_argument("--out", required=True, help="checkpoint folder (a rerun resumes or reuses it)")
    trr.add_argument("--model", default="default", help="the base model ('default', a local folder or a hub id)")
    trr.add_argument("--prompt-style", default=None, choices=PROMPT_STYLES,
                     help="default: the search records' (drllm), else " + DEFAULT_PROMPT_STYLE)
    trr.add_argument("--limit", type=int, default=None, help="first N records of each --search / problems of each --data")
    trr.add_argument("--epochs", type=int, default=None, help=f"default {RouterTrainConfig.epochs}")
    trr.add_argument("--batch-size", type=int, default=None, help=f"default {RouterTrainConfig.batch_size}")
    trr.add_argument("--lr", type=float, default=None, help=f"peak AdamW learning rate (default {RouterTrainConfig.lr})")
    trr.add_argument("--alpha", type=float, default=None,
                     help=f"flexidepth: weight of the layer-usage penalty (default {RouterTrainConfig.alpha})")
    trr.add_argument("--save-every", type=int, default=None,
                     help=f"write the resumable state every N steps (default {RouterTrainConfig.save_every})")
    trr.add_argument("--seed", type=int, default=0)
    _add_runtime_flags(trr)
    trr.set_defaults(func=cmd_train_router)

    ev = sub.add_parser("eval", help="evaluate PoLar against baselines on the same problems (resumable)",
                        epilog="example: polar eval --checkpoint ckpt/ --data synthetic:1:100 --data synthetic:2:100 "
                               "--search results/search/*.jsonl --train-data synthetic:1:50:train --out runs/eval")
    ev.add_argument("--model", default="default", help="'default' (SmolLM2-135M-Instruct), a local folder or a hub id")
    ev.add_argument("--data", action="append", required=True, help="a --data spec; repeat for several")
    ev.add_argument("--checkpoint", default=None,
                    help="predictor checkpoint folder (polar train): the segment predictor or a scorer "
                         "(--head scorer; detected from its config.json), or 'default'")
    ev.add_argument("--methods", nargs="+", default=None, choices=METHOD_NAMES, metavar="METHOD",
                    help=f"some of {', '.join(METHOD_NAMES)} (default: all but {', '.join(ROUTER_METHODS)}, "
                         "plus the kinds of --routers)")
    ev.add_argument("--routers", nargs="+", default=None, metavar="CKPT_DIR",
                    help="router checkpoint folders (polar train-router): each gives the method of its kind "
                         f"({', '.join(ROUTER_METHODS)}); candidates 2..k are T=0.7 samples under its decisions")
    ev.add_argument("--mix", default=None, metavar="M:T",
                    help="polar_mix: polar's first M candidates, then base sampling's T samples up to k (choose M and "
                         "T on validation data, e.g. the learnability study's mixes); adds polar_mix to the default methods")
    ev.add_argument("--search", nargs="*", default=None, help="search results (best_static, oracle)")
    ev.add_argument("--train-sweep", nargs="+", default=None, metavar="FILE",
                    help="training-split sweep matrices (polar sweep): best_static becomes the set cover on them "
                         "(as in the learnability study); without them, best_static uses --search")
    ev.add_argument("--train-data", default=None, help="training problems for ShortGPT's Block Influence")
    ev.add_argument("--k", type=int, default=5)
    ev.add_argument("--limit", type=int, default=None, help="first N problems of each --data")
    ev.add_argument("--prompt-style", default=DEFAULT_PROMPT_STYLE, choices=PROMPT_STYLES)
    ev.add_argument("--max-new-tokens", type=int, default=None,
                    help="default: the prompt style's generation setting (the search's budget)")
    ev.add_argument("--batch-size", type=int, default=64)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--out", required=True, help="output folder (records.jsonl, report.md, summary.json, PNGs)")
    ev.add_argument("--prefix-cache-mb", type=int, default=DEFAULT_PREFIX_CACHE_MB,
                    help="memory for the few-shot prefix's states kept across calls (0: off; same records)")
    _add_retry_flag(ev)
    _add_ray_flags(ev)
    _add_runtime_flags(ev)
    ev.set_defaults(func=cmd_eval)

    ak = sub.add_parser("ask", help="predict programs for one question, run them, and answer (polar.solve)",
                        epilog='example: polar ask "What is 23 + 41?" --k 5')
    ak.add_argument("question")
    ak.add_argument("--k", type=int, default=5)
    ak.add_argument("--checkpoint", default="default",
                    help="'default' (shipped for the default model: the predictor best on validation), "
                         "'default-segments' (the paper's segment predictor shipped beside it) or a folder")
    ak.add_argument("--model", default="default")
    ak.add_argument("--prompt-style", default=DEFAULT_PROMPT_STYLE, choices=PROMPT_STYLES)
    ak.add_argument("--select", default="auto", choices=SELECTS,
                    help="answer rule: top1, vote, gate, or auto (the checkpoint's selection.json; top1 without "
                         "one) (default %(default)s)")
    _add_runtime_flags(ak)
    ak.set_defaults(func=cmd_ask)

    dm = sub.add_parser("demo", help="the whole method end to end: search, train, evaluate, report",
                        epilog="example: polar demo --out polar-demo        (polar demo --quick: a 2-minute smoke run)")
    dm.add_argument("--out", default="polar-demo", help="output folder (a rerun reuses what is there)")
    dm.add_argument("--quick", action="store_true", help="one level, a few problems (about 2 minutes)")
    dm.add_argument("--model", default=None, help="default: the default model")
    dm.add_argument("--levels", type=int, nargs="+", default=None, help="synthetic levels (default 1 2 5)")
    dm.add_argument("--train-problems", type=int, default=None, help="searched per level (default 16)")
    dm.add_argument("--sims", type=int, default=None, help="MCTS simulations per problem (default 16)")
    dm.add_argument("--test-problems", type=int, default=None, help="evaluated per level (default 12)")
    dm.add_argument("--k", type=int, default=None, help="candidates per method (default 3)")
    dm.add_argument("--encoder", default=None, help="predictor encoder: minilm (default), a folder, or llm")
    dm.add_argument("--batch-size", type=int, default=None)
    dm.add_argument("--seed", type=int, default=None)
    _add_runtime_flags(dm)
    dm.set_defaults(func=cmd_demo)

    data = sub.add_parser("data", help="load a data spec and print its load report",
                          epilog="example: polar data --data mawps:../shared/data/mawps/test.jsonl")
    data.add_argument("--data", default=None)
    data.add_argument("--show", type=int, default=3, help="print the first N problems")
    data.add_argument("--export-lm-eval", metavar="DIR", default=None,
                      help="write the JSONL and task YAMLs of polar's lm-eval tasks into DIR (synthetic levels, "
                           "word problems, and the benchmarks given below)")
    for name in ("gsm8k", "mawps", "asdiv"):
        data.add_argument(f"--{name}", metavar="PATH", default=None, help=f"{name} file for --export-lm-eval")
    data.set_defaults(func=cmd_data)

    le = sub.add_parser("lm-eval", help="lm-evaluation-harness tasks under a program or the predictor",
                        epilog="example: polar lm-eval --tasks polar_level2,polar_words --program full --limit 50 "
                               "--out runs/lm_eval   (pip install 'polar[lm-eval]')")
    le.add_argument("--tasks", required=True, help="comma-separated lm-eval tasks or tags (polar_levels, polar_words, ...)")
    which = le.add_mutually_exclusive_group()
    which.add_argument("--program", default=None,
                       help="'full' (default), a layer list '0-5 5 6-29' or segments '0-3:keep 4-5:skip ...'")
    which.add_argument("--predictor", default=None, help="'default' or a predictor checkpoint: top-1 program per question")
    le.add_argument("--predictor-input", default="question", choices=("question", "context"),
                    help="what the predictor reads: the task document's question (default) or the whole prompt")
    le.add_argument("--model", default="default", help="'default' (SmolLM2-135M-Instruct), a local folder or a hub id")
    le.add_argument("--limit", type=int, default=None, help="first N documents of each task")
    le.add_argument("--batch-size", type=int, default=16)
    le.add_argument("--max-gen-toks", type=int, default=None, help="default budget when a task gives none (256)")
    le.add_argument("--seed", type=int, default=1234, help="sampling seed (per request, whatever the batching)")
    le.add_argument("--data-dir", default=None,
                    help="polar's exported task folder (default ~/.cache/polar/lm-eval; exported on first use)")
    le.add_argument("--out", required=True, help="output folder (lm-eval's results and samples, polar_summary.json)")
    _add_runtime_flags(le)
    le.set_defaults(func=cmd_lm_eval)

    _add_search_commands(sub)
    return parser


def _add_search_commands(sub) -> None:
    d = SearchConfig()
    srch = sub.add_parser(
        "search", help="MCTS over programs per problem; one JSON line per finished problem (resumable)",
        epilog="example: polar search --data synthetic:1:40:train --space skip+loop --sims 64 "
               "--out results/search/l1.jsonl --shard 0/2 --threads 1")
    srch.add_argument("--model", default="default",
                      help="'default' (SmolLM2-135M-Instruct), a local folder or a hub id")
    srch.add_argument("--data", required=True, help="PATH, FORMAT:PATH or synthetic:LEVEL:N[:SPLIT[:SEED]]")
    srch.add_argument("--out", required=True, help="results JSONL (appended; a rerun skips finished problems)")
    srch.add_argument("--space", default=d.space, choices=SPACES)
    srch.add_argument("--sims", type=int, default=d.simulations, help="new programs per problem (default %(default)s)")
    srch.add_argument("--seed", type=int, default=d.seed)
    srch.add_argument("--batch-size", type=int, default=64, help="rows per generate call (default %(default)s)")
    srch.add_argument("--limit", type=int, default=None, help="first N problems only (before sharding)")
    srch.add_argument("--shard", default=None, metavar="I/N", help="search only shard I of N (0 <= I < N)")
    srch.add_argument("--prompt-style", default=DEFAULT_PROMPT_STYLE, choices=PROMPT_STYLES)
    srch.add_argument("--max-new-tokens", type=int, default=SEARCH_MAX_NEW_TOKENS)
    srch.add_argument("--no-early-answer", action="store_true",
                      help="generate to the token budget instead of stopping once the graded answer is final")
    srch.add_argument("--leaves", type=int, default=d.leaves_per_round, help="leaves per tree per round (virtual loss)")
    srch.add_argument("--max-active", type=int, default=None,
                      help="at most N problems in progress at once (default: as many as fill the batches; a cap "
                           "writes records steadily, so a kill loses less, but batches may run less full)")
    srch.add_argument("--prefix-cache-mb", type=int, default=DEFAULT_PREFIX_CACHE_MB,
                      help="memory (MiB, per process) for the few-shot prefix's states kept across rounds; 0: none")
    _add_retry_flag(srch)
    srch.add_argument("--max-block", type=int, default=d.max_block, help="k: entries per skipped/repeated block")
    srch.add_argument("--max-repeats", type=int, default=d.max_repeats, help="r: extra runs of a repeated block")
    srch.add_argument("--min-length", type=float, default=d.min_length, help="shortest program, times D")
    srch.add_argument("--max-length", type=float, default=d.max_length, help="longest program, times D")
    srch.add_argument("--exploration", type=float, default=d.exploration, help="c in the UCB")
    srch.add_argument("--length-penalty", type=float, default=d.length_penalty, help="lambda in the UCB")
    srch.add_argument("--widening", type=float, default=d.widening, help="children <= widening * sqrt(visits)")
    _add_ray_flags(srch)
    _add_runtime_flags(srch)
    srch.set_defaults(func=cmd_search)

    sw = sub.add_parser(
        "sweep", help="run a fixed library of programs on every problem: a dense matrix of answers and grades",
        epilog="example: polar sweep --data synthetic:2:150:train --library full,skip:1-2,repeat:1-2,search:20 "
               "--from-search results/search/skip_loop/*.jsonl --out runs/sweep/L2_train.jsonl --threads 1")
    sw.add_argument("--model", default="default", help="'default' (SmolLM2-135M-Instruct), a local folder or a hub id")
    sw.add_argument("--data", required=True, help="PATH, FORMAT:PATH or synthetic:LEVEL:N[:SPLIT[:SEED]]")
    sw.add_argument("--library", default=DEFAULT_LIBRARY,
                    help="comma-separated parts: full, skip:A-B, repeat:A-B, search:N, samples:T:N, file:PATH "
                         "(default %(default)s)")
    sw.add_argument("--from-search", nargs="*", default=None, metavar="FILE",
                    help="search results for the library's search:N part")
    sw.add_argument("--out", required=True, help="results JSONL (appended; a rerun skips finished problems)")
    sw.add_argument("--seed", type=int, default=0, help="seeds the sample entries")
    sw.add_argument("--batch-size", type=int, default=SweepRun.batch_size, help="rows per generate call")
    sw.add_argument("--limit", type=int, default=None, help="first N problems only (before sharding)")
    sw.add_argument("--shard", default=None, metavar="I/N", help="sweep only shard I of N (0 <= I < N)")
    sw.add_argument("--prompt-style", default=DEFAULT_PROMPT_STYLE, choices=PROMPT_STYLES)
    sw.add_argument("--max-new-tokens", type=int, default=SEARCH_MAX_NEW_TOKENS)
    sw.add_argument("--no-early-answer", action="store_true",
                    help="generate to the token budget instead of stopping once the graded answer is final")
    sw.add_argument("--prefix-cache-mb", type=int, default=DEFAULT_PREFIX_CACHE_MB,
                    help="memory (MiB) for the few-shot prefix's states per program prefix, kept for the whole run")
    _add_retry_flag(sw)
    _add_ray_flags(sw)
    _add_runtime_flags(sw)
    sw.set_defaults(func=cmd_sweep)

    merge = sub.add_parser("merge", help="join search shard files into one (duplicates refused)",
                           epilog="example: polar merge l1.shard0.jsonl l1.shard1.jsonl --out l1.jsonl")
    merge.add_argument("inputs", nargs="+", help="search results JSONL files")
    merge.add_argument("--out", required=True, help="new JSONL file")
    merge.set_defaults(func=cmd_merge)

    export = sub.add_parser("export", help="write search results as PoLar merged_mcts_samples.json",
                            epilog="example: polar export l1.jsonl --out merged_mcts_samples.json")
    export.add_argument("inputs", nargs="+", help="search results JSONL files")
    export.add_argument("--out", required=True, help="JSON file")
    export.set_defaults(func=cmd_export)

    ana = sub.add_parser("analyze", help="the paper's findings from search results: markdown tables and PNG plots",
                         epilog="example: polar analyze results/search/l1_skip.jsonl results/search/l1_loop.jsonl "
                                "--out results/analysis")
    ana.add_argument("inputs", nargs="+", help="search results JSONL files (one run each)")
    ana.add_argument("--out", required=True, help="output folder (findings.md, findings.json, *.png)")
    ana.set_defaults(func=cmd_analyze)

    las = sub.add_parser(
        "analyze-sweep", help="the learnability study: does any input feature predict which program works?",
        epilog="example: polar analyze-sweep --train results/sweep/programs/*_train.jsonl "
               "--val results/sweep/programs/*_validation.jsonl --test results/sweep/programs/L*_test.jsonl "
               "results/sweep/programs/words_test.jsonl --samples results/sweep/samples/*.jsonl "
               "--scorer runs/scorer_text --out results/learnability")
    las.add_argument("--train", nargs="+", required=True, metavar="FILE", help="training-split sweep files")
    las.add_argument("--test", nargs="+", required=True, metavar="FILE", help="test-split sweep files (same library)")
    las.add_argument("--val", nargs="*", default=None, metavar="FILE",
                     help="validation-split sweep files: choose K, the gate's threshold and the auto rule")
    las.add_argument("--samples", nargs="*", default=None, metavar="FILE",
                     help="sweeps of temperature samples of the full program on the same problems")
    las.add_argument("--val-samples", nargs="*", default=None, metavar="FILE",
                     help="samples of validation problems: choose the programs + samples mixes (m programs, T)")
    las.add_argument("--scorer", default=None, help="a trained text-feature scorer checkpoint folder")
    las.add_argument("--scorer-llm", default=None, help="a trained LLM-feature scorer folder (loads --model)")
    las.add_argument("--model", default="default", help="the LLM for --scorer-llm's features")
    las.add_argument("--encoder", default="minilm", help="encoder of the nearest-neighbour selector: minilm or a folder")
    las.add_argument("--out", required=True, help="output folder (findings.md, summary.json, *.png)")
    las.add_argument("--k-max", type=int, default=10, help="pass@k for k = 1..K")
    las.add_argument("--deploy-k", type=int, default=5, help="k of the deployable answer@k and the verdict")
    las.add_argument("--neighbours", type=int, default=None, help="K nearest training problems (default: chosen on --val)")
    las.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the lift intervals")
    las.add_argument("--seed", type=int, default=0)
    _add_runtime_flags(las)
    las.set_defaults(func=cmd_analyze_sweep)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status: 0, 2 for a :class:`polar.UserError` (one line),
    1 for any other error (a bug: one line naming it; ``--debug`` re-raises it with its traceback)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="[%(name)s] %(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except Exception as err:  # noqa: BLE001 - the command line's one place for errors
        if args.debug:
            raise
        lines = str(err).strip().splitlines() or [type(err).__name__]
        if isinstance(err, UserError):
            more = " (--debug shows the details)" if len(lines) > 1 else ""
            print(f"polar {args.command}: error: {lines[0]}{more}", file=sys.stderr)
            return 2
        print(f"polar {args.command}: internal error: {type(err).__name__}: {lines[0]} "
              f"(run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
