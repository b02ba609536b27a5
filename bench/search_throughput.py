"""Programs evaluated per second: ``run_search`` vs the reference implementation's approach.

Variants in one run, on the same problems: ``run_search`` as shipped (``cached``: shared-prefix
execution, the few-shot prefix's states kept across rounds, ``--prefix-cache-mb``), the same with
rows still unsettled after ``--defer-tokens`` tokens carried into the next round's call
(``carried``, opt-in: ``GenerateEvaluator(defer_tokens=)``), without the
cross-round cache (``shared``), without sharing at all (``unshared``; ``--variants`` picks a
subset, ``--no-unshared`` leaves this slow one out), and the reference
approach (PoLar's offline search): one ``generate`` call per program, batch 1, a fixed 50-token
budget, no stop string and no early-answer rule. ``run_search``: batched rounds of up to
``--batch-size`` rows (default 64) in one ``generate`` call each, stop string + early-answer rule.
Every search variant must write the same records (compared by problem id: carried rows change
the order in which trees finish). All on the default model with one torch
thread, on the same few-shot problems; the reference is timed on an evenly spaced sample of the
(problem, program) pairs the search evaluated, and its grades (50-token text cut at the stop
string) are compared with the search's.

    python bench/search_throughput.py --problems 16 --sims 7 --reference 24 --out bench/search_throughput.json
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from polar.models import load_model
from polar.runtime import generate, stop_end
from polar.search import DEFAULT_PREFIX_CACHE_MB, GenerateEvaluator, SearchConfig, SearchRun, run_search
from polar.search._evaluate import DEFAULT_DEFER_TOKENS
from polar.jobs import read_jsonl
from polar.tasks import is_correct, resolve, stop_strings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="synthetic:1:{n}:train", help="data spec; {n} = --problems")
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--sims", type=int, default=7)
    ap.add_argument("--reference", type=int, default=24, help="programs timed with the reference approach")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--space", default="skip+loop")
    ap.add_argument("--prefix-cache-mb", type=int, default=DEFAULT_PREFIX_CACHE_MB)
    ap.add_argument("--no-unshared", action="store_true", help="leave out the search without sharing")
    ap.add_argument("--variants", default="cached,shared,unshared",
                    help="comma-separated search variants to run (cached is needed)")
    ap.add_argument("--defer-tokens", type=int, default=DEFAULT_DEFER_TOKENS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model("default")
    data = args.data.format(n=args.problems)
    problems = {p.id: p for p in resolve(data)}

    def search(share_prefix: bool, prefix_cache_mb: int, defer_tokens):
        ev = GenerateEvaluator(model, tok, "fewshot", share_prefix=share_prefix, prefix_cache_mb=prefix_cache_mb,
                               defer_tokens=defer_tokens)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "search.jsonl"
            run = SearchRun(data=data, batch_size=args.batch_size, progress=False, limit=args.problems,
                            search=SearchConfig(space=args.space, simulations=args.sims))
            cpu = time.process_time()
            summary = run_search(run, out, evaluator=ev)
            summary["cpu_s"] = round(time.process_time() - cpu, 2)  # less sensitive to other jobs than elapsed_s
            rate = summary["programs_evaluated_now"] / summary["elapsed_s"]
            records = sorted((r["id"], r["final_valid_transitions"], r["final_invalid_transitions"]) for r in read_jsonl(out))
            return ev, summary, rate, records

    variants = {"cached": (True, args.prefix_cache_mb, None), "carried": (True, args.prefix_cache_mb, args.defer_tokens),
                "shared": (True, 0, None), "unshared": (False, 0, None)}
    chosen = [v for v in args.variants.split(",") if not (v == "unshared" and args.no_unshared)]
    variants = {k: v for k, v in variants.items() if k in chosen}
    runs = {name: search(*how) for name, how in reversed(variants.items())}
    ev, summary, search_rate, records = runs["cached"]
    pairs = [(pid, prog, True) for pid, valid, _ in records for prog in valid]
    pairs += [(pid, prog, False) for pid, _, invalid in records for prog in invalid]
    pairs.sort(key=lambda x: (x[0], x[1]))
    step = max(1, len(pairs) // args.reference)
    sample = pairs[::step][: args.reference]

    stops = stop_strings("fewshot")
    agree = 0
    start, start_cpu = time.perf_counter(), time.process_time()
    for pid, program, graded in sample:
        problem = problems[pid]
        res = generate(model, tok, [ev.prompt(problem)], [program], 50)  # B = 1, 50 tokens, no stop
        text = res.texts[0]
        end = stop_end(text, stops)
        agree += is_correct(text if end is None else text[:end], problem) == graded
    ref_s = time.perf_counter() - start
    ref_cpu = time.process_time() - start_cpu

    ref_rate = len(sample) / ref_s
    cache = ev.prefix_cache
    result = {
        "threads": args.threads, "data": data, "space": args.space, "sims": args.sims, "batch_size": args.batch_size,
        "prefix_cache_mb": args.prefix_cache_mb,
        "search_programs": summary["programs_evaluated_now"], "generate_calls": ev.stats.calls,
        "rows_per_call": ev.stats.rows_per_call,
        "defer_tokens_carried": args.defer_tokens,
        "generated_tokens_per_row": round(ev.stats.generated_tokens / ev.stats.rows, 2),
        "finish_reasons": dict(ev.stats.finish_reasons),
        "prefix_cache_units": {"hits": cache.hits, "misses": cache.misses, "evictions": cache.evictions,
                               "kept": len(cache), "mb": round(cache.nbytes / 2**20, 1)} if cache else None,
        "reference_programs": len(sample), "reference_s": round(ref_s, 2),
        "reference_programs_per_s": round(ref_rate, 3), "grades_agree": f"{agree}/{len(sample)}",
    }
    for name, (ev_, summ, rate, recs) in runs.items():
        result[f"{name}_search_s"] = summ["elapsed_s"]
        result[f"{name}_search_cpu_s"] = summ["cpu_s"]
        result[f"{name}_programs_per_s"] = round(rate, 3)
        result[f"{name}_vs_reference"] = round(rate / ref_rate, 2)
        result[f"{name}_vs_reference_cpu"] = round((summ["programs_evaluated_now"] / summ["cpu_s"]) / (len(sample) / ref_cpu), 2)
        result[f"{name}_same_records"] = recs == records
        result[f"{name}_generate_calls"] = ev_.stats.calls
    if "shared" in runs:
        result["cache_gain"] = round(search_rate / runs["shared"][2], 2)
    if "carried" in runs:
        result["carry_gain"] = round(runs["carried"][2] / search_rate, 3)
        result["carry_gain_cpu"] = round(summary["cpu_s"] / runs["carried"][1]["cpu_s"], 3)
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
