"""``polar lm-eval``: a thin wrapper around ``lm_eval.simple_evaluate`` with :class:`PolarLM`.

    polar lm-eval --tasks polar_level2,polar_words --program full --limit 50 --out runs/lm_eval
    polar lm-eval --tasks polar_levels --predictor default --limit 50 --out runs/lm_eval_pred

Writes lm-eval's own output files into ``--out`` (``<model>/results_<time>.json`` and, per task,
``samples_<task>_<time>.jsonl``) plus ``polar_summary.json`` (model arguments, metrics, executed
layers, requests and wall time). polar's tasks come from the export folder ``data_dir``
(:func:`polar.evaluation.lm_eval_tasks.export_lm_eval`; exported on first use for the synthetic
and word tasks).

lm-eval 0.4 finds models of other packages only once they are imported, so the shell command
``lm_eval --model polar`` does not know ``polar``; ``python -m polar.evaluation.lm_eval_run ARGS``
is lm-eval's own command line with ``polar`` registered::

    python -m polar.evaluation.lm_eval_run run --model polar --model_args pretrained=default,program=full \\
        --tasks polar_level2 --include_path ~/.cache/polar/lm-eval --limit 50
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..errors import UserError
from .lm_eval_tasks import BENCHMARKS, DEFAULT_DATA_DIR, export_lm_eval, is_exported, task_manager


#: Where lm-eval finds ``PolarLM`` (a lazy entry of its model registry: imported on first use).
POLAR_LM_TARGET = "polar.evaluation.lm_eval_backend:PolarLM"


def _require_lm_eval():
    try:
        import lm_eval
    except ImportError:
        raise UserError("polar lm-eval needs lm-eval: pip install 'polar[lm-eval]'") from None
    return lm_eval


def register_polar():
    """Register ``polar`` in lm-eval's model registry (lazily, by module path) and return ``PolarLM``."""
    _require_lm_eval()
    import lm_eval.models  # noqa: F401  (lm-eval's own models first: it fills an empty registry only)
    from lm_eval.api.registry import get_model, model_registry

    if "polar" not in model_registry:
        model_registry.register("polar", target=POLAR_LM_TARGET)
    return get_model("polar")


def run_lm_eval(tasks: list[str], out: str | Path, *, model: str = "default", program=None,
                predictor: str | None = None, predictor_input: str = "question", limit: int | float | None = None,
                batch_size: int = 16, device: str | None = None, data_dir: str | Path | None = None,
                seed: int = 1234, max_gen_toks: int | None = None, log_samples: bool = True) -> dict:
    """Evaluate ``tasks`` with :class:`PolarLM` (``program`` or ``predictor``) via ``lm_eval.simple_evaluate``.

    Returns lm-eval's results dict (without samples); writes lm-eval's files and ``polar_summary.json``
    into ``out``. :class:`polar.UserError` when lm-eval is missing, a benchmark task's data was not
    exported, or a model argument is bad (before the model runs)."""
    lm_eval = _require_lm_eval()
    from lm_eval.loggers import EvaluationTracker

    PolarLM = register_polar()
    if not tasks:
        raise UserError("--tasks is empty")
    data = Path(data_dir or DEFAULT_DATA_DIR).expanduser()
    if not is_exported(data):
        print(f"exporting polar's lm-eval tasks (synthetic levels, word problems) to {data}")
        export_lm_eval(data)
    for name in BENCHMARKS:
        if f"polar_{name}" in tasks and not (data / f"{name}.jsonl").is_file():
            raise UserError(f"task polar_{name} has no data in {data}: run polar data --export-lm-eval {data} "
                            f"--{name} PATH")
    args = {"pretrained": model, "batch_size": batch_size, "device": device, "seed": seed,
            "predictor_input": predictor_input}
    if program is not None:
        args["program"] = program
    if predictor is not None:
        args["predictor"] = predictor
    if max_gen_toks is not None:
        args["max_gen_toks"] = max_gen_toks
    lm = PolarLM.create_from_arg_obj({k: v for k, v in args.items() if v is not None})
    out = Path(out)
    tracker = EvaluationTracker(output_path=str(out))
    t0 = time.perf_counter()
    logged_args = {k: (" ".join(map(str, v)) if isinstance(v, (list, tuple)) else v) for k, v in args.items()}
    results = lm_eval.simple_evaluate(model=lm, model_args=logged_args, tasks=list(tasks), limit=limit,
                                      task_manager=task_manager(data), log_samples=log_samples,
                                      evaluation_tracker=tracker, bootstrap_iters=0)
    wall = time.perf_counter() - t0
    samples = results.pop("samples", None)
    tracker.save_results_aggregated(results=results, samples=samples)
    if samples:
        for task in results["configs"]:
            tracker.save_results_samples(task_name=task, samples=samples[task])
    summary = {"model_args": {k: (list(v) if isinstance(v, tuple) else v) for k, v in args.items()},
               "model": lm.get_model_info(), "tasks": list(tasks), "limit": limit, "data_dir": str(data),
               "results": results["results"], "n_samples": results.get("n-samples"), "programs": lm.stats.as_dict(),
               "wall_s": round(wall, 2), "lm_eval_version": lm_eval.__version__}
    out.mkdir(parents=True, exist_ok=True)
    (out / "polar_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    from lm_eval.utils import make_table

    print(make_table(results))
    print(f"programs: {summary['programs']}; wall {wall:.1f} s; lm-eval files and polar_summary.json in {out}")
    return results


def main() -> None:
    """lm-eval's own command line, with ``polar`` registered as a model."""
    register_polar()
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
