"""How much of a search's few-shot prefix work a cross-round cache can save: planning only, no model.

Runs ``run_search`` with the real tree policy and a stand-in grader (a program is "correct" for a
problem with probability ~1/7, fixed by a hash), records every round's programs, and counts the
prefix units (distinct program prefixes, the states of the shared few-shot prompt node) that each
round computes: inside the round only (shared-prefix execution), and with an LRU cache of at most
``cap`` units kept across rounds (:class:`polar.runtime.PrefixCache`; 4096 MiB holds ~12,700 units
of the default model's 88-token prefix).

    python bench/prefix_reuse.py --problems 16 --sims 64 --caps 0 6000 12700 0
"""
import argparse
import hashlib
import json
import tempfile
from collections import OrderedDict
from pathlib import Path

from polar.search import SearchConfig, SearchRun, run_search


class StandInGrader:
    """Grades by a hash of (problem, program) and records the rounds."""

    num_layers = 30

    def __init__(self):
        self.rounds: list[list[tuple[int, ...]]] = []

    def evaluate(self, items):
        self.rounds.append([tuple(p) for _, p in items])
        return [int(hashlib.md5(repr((q.id, tuple(p))).encode()).hexdigest(), 16) % 7 == 0 for q, p in items]


def computed_units(rounds: list[list[tuple[int, ...]]], cap: int | None) -> int:
    """Prefix units computed over all rounds with an LRU cache of ``cap`` units (0: none; None: unbounded)."""
    lru: OrderedDict = OrderedDict()
    total = 0
    for programs in rounds:
        units = {p[:k] for p in programs for k in range(1, len(p) + 1)}
        for u in units:
            if u in lru:
                lru.move_to_end(u)
            else:
                total += 1
                lru[u] = None
        while cap is not None and len(lru) > cap:
            lru.popitem(last=False)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="synthetic:1:{n}:train", help="data spec; {n} = --problems")
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--sims", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--caps", type=int, nargs="+", default=[0, 6000, 12700, -1], help="-1: unbounded")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    grader = StandInGrader()
    with tempfile.TemporaryDirectory() as tmp:
        run = SearchRun(data=args.data.format(n=args.problems), batch_size=args.batch_size, progress=False,
                        limit=args.problems, search=SearchConfig(space="skip+loop", simulations=args.sims))
        run_search(run, Path(tmp) / "s.jsonl", evaluator=grader)
    programs = sum(len(r) for r in grader.rounds)
    rows = []
    for cap in args.caps:
        units = computed_units(grader.rounds, None if cap < 0 else cap)
        rows.append({"cap_units": "unbounded" if cap < 0 else cap, "units": units,
                     "units_per_program": round(units / programs, 2)})
    result = {"data": run.data, "sims": args.sims, "batch_size": args.batch_size, "rounds": len(grader.rounds),
              "programs": programs, "caps": rows}
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
