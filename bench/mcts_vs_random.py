"""MCTS vs random programs at the same number of evaluations (issue 9).

For each space (skip, loop, skip+loop) and each problem, MCTS with ``--sims N`` evaluates the
full program plus N new programs; the random baseline evaluates the full program plus N distinct
programs drawn by random walks from the full program (1..3 random actions of the same space and
length bounds). Both use the same evaluator (``GenerateEvaluator``: real generation and grading).
Reported: base accuracy, oracle accuracy (some evaluated program is correct) of each, and valid
programs per problem. Writes JSON (``--out``) with the settings and versions.

    python bench/mcts_vs_random.py --levels 1 2 --problems 20 --sims 12 --out results/search/mcts_vs_random.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import random
import time

import torch
import transformers

import polar
from polar.search import GenerateEvaluator, SearchConfig, child_programs, search_problems


def random_programs(problem_id: str, config: SearchConfig, D: int, n: int, seed: int) -> list[tuple[int, ...]]:
    rng = random.Random(int(hashlib.sha256(f"{seed}/{problem_id}/{config.space}".encode()).hexdigest()[:8], 16))
    root = tuple(range(D))
    out: dict[tuple[int, ...], None] = {}
    tries = 0
    while len(out) < n and tries < 100 * n:
        tries += 1
        prog = root
        for _ in range(rng.randint(1, 3)):
            children = child_programs(prog, config, D)
            if not children:
                break
            prog = rng.choice(children)
        if prog != root:
            out.setdefault(prog, None)
    return list(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--problems", type=int, default=20)
    ap.add_argument("--sims", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = polar.load_default()
    D = model.config.num_hidden_layers
    evaluator = GenerateEvaluator(model, tok, "fewshot")
    rows = []
    for level in args.levels:
        problems = polar.synthetic(level, args.problems, "train")
        for space in ("skip", "loop", "skip+loop"):
            config = SearchConfig(space=space, simulations=args.sims, seed=args.seed)
            start = time.perf_counter()
            trees = search_problems(problems, evaluator, config, batch_size=64)
            mcts_s = time.perf_counter() - start
            items = [(p, prog) for p in problems for prog in random_programs(p.id, config, D, args.sims, args.seed)]
            start = time.perf_counter()
            grades = []
            for i in range(0, len(items), 64):
                grades += evaluator.evaluate(items[i:i + 64])
            random_s = time.perf_counter() - start
            by_problem: dict[str, list[bool]] = {p.id: [] for p in problems}
            for (p, _), g in zip(items, grades):
                by_problem[p.id].append(g)
            base = [bool(trees[p.id].root.correct) for p in problems]
            mcts_valid = [sum(n.correct for n in trees[p.id].evaluated() if n is not trees[p.id].root) for p in problems]
            rand_valid = [sum(by_problem[p.id]) for p in problems]
            row = {"level": level, "space": space, "problems": len(problems), "evaluations_per_problem": args.sims,
                   "base": sum(base) / len(problems),
                   "mcts_oracle": sum(b or v > 0 for b, v in zip(base, mcts_valid)) / len(problems),
                   "random_oracle": sum(b or v > 0 for b, v in zip(base, rand_valid)) / len(problems),
                   "mcts_valid_per_problem": sum(mcts_valid) / len(problems),
                   "random_valid_per_problem": sum(rand_valid) / len(problems),
                   "mcts_evaluated": sum(len(trees[p.id].evaluated()) - 1 for p in problems),
                   "random_evaluated": len(items), "mcts_s": round(mcts_s, 1), "random_s": round(random_s, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta = {"command": "python bench/mcts_vs_random.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in vars(args).items()),
        "model": "default (SmolLM2-135M-Instruct)", "prompt_style": "fewshot",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()}}
    with open(args.out, "w") as fh:
        json.dump({**meta, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
