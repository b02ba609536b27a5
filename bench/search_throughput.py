"""Programs evaluated per second: ``run_search`` vs the reference implementation's approach.

Three variants in one run, on the same problems: ``run_search`` with shared-prefix execution
(the default), ``run_search`` without it (its records must be identical), and the reference
approach (PoLar's offline search): one ``generate`` call per program, batch 1, a fixed 50-token budget, no stop string and no early-answer rule. ``run_search``: batched rounds of up to
``--batch-size`` rows (default 64) in one ``generate`` call each, stop string + early-answer rule.
Both on the default model with one torch thread, on the same level-1 few-shot problems; the
reference is timed on an evenly spaced sample of the (problem, program) pairs the search
evaluated, and its grades (50-token text cut at the stop string) are compared with the search's.

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
from polar.search import GenerateEvaluator, SearchConfig, SearchRun, run_search
from polar.tasks import is_correct, read_jsonl, resolve, stop_strings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--sims", type=int, default=7)
    ap.add_argument("--reference", type=int, default=24, help="programs timed with the reference approach")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--space", default="skip+loop")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model("default")
    data = f"synthetic:1:{args.problems}:train"
    problems = {p.id: p for p in resolve(data)}

    def search(share_prefix: bool):
        ev = GenerateEvaluator(model, tok, "fewshot", share_prefix=share_prefix)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "search.jsonl"
            run = SearchRun(data=data, batch_size=args.batch_size, progress=False,
                            search=SearchConfig(space=args.space, simulations=args.sims))
            summary = run_search(run, out, evaluator=ev)
            return ev, summary, read_jsonl(out)

    plain_ev, plain_summary, plain_records = search(share_prefix=False)
    ev, summary, records = search(share_prefix=True)
    same_records = [(r["id"], r["final_valid_transitions"], r["final_invalid_transitions"]) for r in records] == \
        [(r["id"], r["final_valid_transitions"], r["final_invalid_transitions"]) for r in plain_records]
    pairs = [(rec["id"], prog, True) for rec in records for prog in rec["final_valid_transitions"]]
    pairs += [(rec["id"], prog, False) for rec in records for prog in rec["final_invalid_transitions"]]
    pairs.sort(key=lambda x: (x[0], x[1]))
    step = max(1, len(pairs) // args.reference)
    sample = pairs[::step][: args.reference]

    stops = stop_strings("fewshot")
    agree = 0
    start = time.perf_counter()
    for pid, program, graded in sample:
        problem = problems[pid]
        res = generate(model, tok, [ev.prompt(problem)], [program], 50)  # B = 1, 50 tokens, no stop
        text = res.texts[0]
        end = stop_end(text, stops)
        agree += is_correct(text if end is None else text[:end], problem) == graded
    ref_s = time.perf_counter() - start

    search_rate = summary["programs_evaluated_now"] / summary["elapsed_s"]
    plain_rate = plain_summary["programs_evaluated_now"] / plain_summary["elapsed_s"]
    ref_rate = len(sample) / ref_s
    result = {
        "threads": args.threads, "data": data, "space": args.space, "sims": args.sims, "batch_size": args.batch_size,
        "search_programs": summary["programs_evaluated_now"], "search_s": summary["elapsed_s"],
        "search_programs_per_s": round(search_rate, 3), "generate_calls": ev.stats.calls,
        "rows_per_call": ev.stats.rows_per_call,
        "generated_tokens_per_row": round(ev.stats.generated_tokens / ev.stats.rows, 2),
        "finish_reasons": dict(ev.stats.finish_reasons),
        "reference_programs": len(sample), "reference_s": round(ref_s, 2),
        "reference_programs_per_s": round(ref_rate, 3),
        "speedup": round(search_rate / ref_rate, 2), "grades_agree": f"{agree}/{len(sample)}",
        "unshared_search_s": plain_summary["elapsed_s"], "unshared_programs_per_s": round(plain_rate, 3),
        "unshared_speedup": round(plain_rate / ref_rate, 2), "sharing_speedup": round(search_rate / plain_rate, 2),
        "same_records_unshared": same_records,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
