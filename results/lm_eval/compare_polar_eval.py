"""Compare `polar lm-eval` samples with `polar eval`'s records on the same problems (by problem id).

    python results/lm_eval/compare_polar_eval.py results/lm_eval/full results/eval/test_k5/records.jsonl \
        --method base_greedy --out results/lm_eval/compare_full.json

For each task: problems found in both, accuracy under lm-eval (polar's grading in the task YAML) and
under `polar eval`, and the problems whose graded verdict or extracted answer differ (with both outputs).
"""
from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

from polar.tasks import extract_answer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("lm_eval_dir")
    ap.add_argument("records")
    ap.add_argument("--method", default="base_greedy", help="polar eval method whose first candidate is compared")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    records = {}
    for line in Path(args.records).read_text().splitlines():
        r = json.loads(line)
        records[r["id"]] = r["methods"][args.method][0]
    table = {}
    for path in sorted(glob.glob(str(Path(args.lm_eval_dir) / "*" / "samples_*.jsonl"))):
        task = Path(path).name.split("_2")[0].removeprefix("samples_")
        rows = [json.loads(x) for x in Path(path).read_text().splitlines()]
        both = [(s, records[s["doc"]["id"]]) for s in rows if s["doc"]["id"] in records]
        diffs = [{"id": s["doc"]["id"], "lm_eval": s["resps"][0][0], "polar_eval": r["output"],
                  "lm_eval_correct": bool(s["exact_match"]), "polar_eval_correct": r["correct"]}
                 for s, r in both
                 if bool(s["exact_match"]) != r["correct"] or extract_answer(s["resps"][0][0]) != r["answer"]]
        table[task] = {"problems": len(rows), "in_both": len(both),
                       "lm_eval_acc": round(sum(s["exact_match"] for s, _ in both) / max(1, len(both)), 4),
                       "polar_eval_acc": round(sum(r["correct"] for _, r in both) / max(1, len(both)), 4),
                       "differences": diffs}
        print(f"{task}: {len(both)} problems in both, lm-eval {table[task]['lm_eval_acc']:.3f}, "
              f"polar eval {table[task]['polar_eval_acc']:.3f}, {len(diffs)} differ")
    Path(args.out).write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
