"""``polar eval`` time: the execution plan of issue 23 (one row per distinct (prompt, program,
temperature, seed), the run's prefix cache, unsettled greedy rows continued at the end of the
chunk) against the earlier plan (``EvalConfig.legacy_rows``), on the ``results/eval/test_k5``
setting or an evenly spaced subset of its problems, in one process, same model, same methods.

The setting (``results/eval/run_k5.sh test``): the default model, predictor
``results/predictor/skip_loop_r5``, methods polar, base_greedy, base_sample (T = 0.3 / 0.7 / 1.0),
shortgpt (Block Influence on synthetic:1:40:train), best_static (from results/search/skip_loop),
random_single_edit, random_segment; k = 5, seed 0, chunks of 16 problems, batch 64, the style's
generation setting. Both plans write records into temporary folders; the script checks that they
agree (program, output, answer, grade, logprob_first of every candidate; which fields differ, and
by how much for ``logprob_first``, rounded to 5 decimals, where float rounding of other batch
shapes shows) and prints wall and CPU (``time.process_time``: less sensitive to other jobs on a
shared machine) times.

    OMP_NUM_THREADS=1 python bench/eval_speed.py --problems 20 --out bench/eval_speed_20.json   # a subset
    OMP_NUM_THREADS=1 python bench/eval_speed.py --problems 0 --out bench/eval_speed_full.json  # all 536 (hours)
"""
import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SPECS = ["synthetic:1:36:test", "synthetic:2:100:test", "synthetic:3:100:test", "synthetic:4:100:test",
         "synthetic:5:100:test", "words:100:test"]
METHODS = ["polar", "base_greedy", "base_sample", "shortgpt", "best_static", "random_single_edit", "random_segment"]
TIMING = ("wall_s", "overhead_s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=20, help="evenly spaced problems of the setting (0: all 536)")
    ap.add_argument("--chunk", type=int, default=16, help="problems per chunk (the setting's 16)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--order", default="legacy,new", help="plans to run, in this order (legacy, new, nocache, nodefer, defer8, legacy_b32)")
    ap.add_argument("--checkpoint", default=str(ROOT / "results/predictor/skip_loop_r5"))
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from polar import cli
    from polar.evaluation import EvalConfig, build_methods, load_problems, run_eval
    from polar.evaluation import run as run_module
    from polar.evaluation.run import DEFER_TOKENS
    from polar.models import load_model
    from polar.search import read_results
    from polar.tasks import resolve

    base = EvalConfig(model="default", data=SPECS, k=5, seed=0, chunk_problems=args.chunk)
    problems = load_problems(base)
    if args.problems:
        step = len(problems) / args.problems
        problems = [problems[int(i * step)] for i in range(args.problems)]
    model, tok = load_model("default")
    predictor = cli._load_predictor(args.checkpoint, model, tok)
    search = read_results([str(ROOT / f"results/search/skip_loop/{n}.jsonl") for n in ("L1", "L2", "L3", "L4", "L5", "words")],
                          same_settings=False)
    methods = build_methods(METHODS, model, tok, k=5, seed=0, predictor=predictor, search_records=search,
                            shortgpt_problems=resolve("synthetic:1:40:train"))
    plans = {"legacy": dict(legacy_rows=True), "new": {}, "nocache": dict(prefix_cache_mb=0),
             "legacy_b32": dict(legacy_rows=True, batch_size=32),  # the float-rounding baseline: other batches
             "nodefer": {}, "defer8": {}}                           # run.DEFER_TOKENS None / 8 (below)
    defer = {"nodefer": None, "defer8": 8}
    times, cpu, records = {}, {}, {}
    load_before = os.getloadavg()
    for name in args.order.split(","):
        config = EvalConfig(**{**base.__dict__, **plans[name]})
        run_module.DEFER_TOKENS = defer.get(name, DEFER_TOKENS)
        with tempfile.TemporaryDirectory() as tmp:
            start, start_cpu = time.perf_counter(), time.process_time()
            recs = run_eval(config, methods, model, tok, tmp, problems=problems)
            times[name] = round(time.perf_counter() - start, 2)
            cpu[name] = round(time.process_time() - start_cpu, 2)
        records[name] = [{k: v for k, v in r.items() if k not in TIMING} for r in recs]
        print(f"{name}: {times[name]} s wall, {cpu[name]} s CPU", flush=True)
    names = list(records)
    ref = records[names[0]]
    result = {"problems": len(problems), "chunk": args.chunk, "threads": args.threads, "times_s": times, "cpu_s": cpu,
              "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()]}
    for name in names[1:]:
        cands = [(a, b) for ra, rb in zip(ref, records[name]) for m in ra["methods"]
                 for a, b in zip(ra["methods"][m], rb["methods"][m])]
        result[f"{name}_same_records"] = records[name] == ref
        result[f"{name}_candidates_differing"] = sum(a != b for a, b in cands)
        result[f"{name}_fields_differing"] = {f: sum(a.get(f) != b.get(f) for a, b in cands) for f in cands[0][0]
                                             if any(a.get(f) != b.get(f) for a, b in cands)}
        lps = [abs(a["logprob_first"] - b["logprob_first"]) for a, b in cands
               if a.get("logprob_first") is not None and b.get("logprob_first") is not None]
        result[f"{name}_max_logprob_first_diff"] = max(lps, default=0.0)
        result[f"{name}_outputs_differing"] = sum((a["output"], a["correct"]) != (b["output"], b["correct"]) for a, b in cands)
        result[f"{name}_speedup_vs_{names[0]}"] = round(times[names[0]] / times[name], 3)
        result[f"{name}_cpu_speedup_vs_{names[0]}"] = round(cpu[names[0]] / cpu[name], 3)
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
