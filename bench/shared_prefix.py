"""Shared-prefix execution (docs/architecture.md section 9): ``generate`` with ``share_prefix`` on vs off.

Run (one torch thread, both settings in the same run, alternating, min over rounds)::

    python bench/shared_prefix.py --rounds 2 --batches mcts prompts --out bench/shared_prefix.json
    python bench/shared_prefix.py --rounds 1 --batches mcts4 --out bench/shared_prefix_mcts4.json

Batches, on the default model (``polar.load_default()``, SmolLM2-135M-Instruct, 30 layers):

- ``mcts``: one level-1 few-shot prompt, 32 programs shaped like one MCTS round: the full
  program, single-edit children (skip one block of 1-4 layers, or repeat it once more) and
  two-edit grandchildren (an edit of a child).
- ``prompts``: 16 different level-1 few-shot prompts x 2 programs each (the full program and one
  single edit of it, a different one per prompt).
- ``mcts4`` (the shape of issue 10): 4 level-1 problems x 16 programs, each problem's programs a
  tree grown on its own (the full program, 9 single edits, 6 two-edit grandchildren).

Each batch runs ``generate(..., max_new_tokens=8, stop_strings=["\\n"])`` (``generate``) and
the same call with ``max_new_tokens=1`` (``prefill``: prefill plus the first token). Reported:
seconds with sharing off / on and their ratio, the work counters of :class:`polar.GenerationResult`
(row-layer x token columns), cache columns, and whether both settings gave the same tokens.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import random
import time

import torch

import polar

NUM_LAYERS = 30


def edit(program: list[int], rng: random.Random) -> list[int]:
    """One MCTS action: skip a contiguous block of 1-4 entries, or repeat it once more."""
    while True:
        k = rng.randint(1, 4)
        i = rng.randrange(0, len(program) - k + 1)
        block = program[i:i + k]
        if rng.random() < 0.5:
            out = program[:i] + program[i + k:]
        else:
            out = program[:i + k] + block + program[i + k:]
        if out and out != program:
            return out


def mcts_programs(n: int = 32, children: int = 20, seed: int = 0) -> list[list[int]]:
    """The full program, ``children - 1`` distinct single edits of it, then two-edit grandchildren."""
    rng = random.Random(seed)
    root = list(range(NUM_LAYERS))
    out = [root]
    while len(out) < children:
        child = edit(root, rng)
        if child not in out:
            out.append(child)
    while len(out) < n:
        grand = edit(rng.choice(out[1:children]), rng)
        if grand not in out:
            out.append(grand)
    return out


def batches(seed: int = 0) -> dict[str, tuple[list[str], list[list[int]]]]:
    """The benchmark batches by name: ``(prompts, programs)``, one of each per row."""
    problems = polar.synthetic(1, 16, seed=seed)
    prompts = [polar.build_prompt(p, "fewshot") for p in problems]
    rng = random.Random(seed + 1)
    mcts = ([prompts[0]] * 32, mcts_programs(seed=seed))
    pairs = [(p, prog) for p in prompts for prog in (list(range(NUM_LAYERS)), edit(list(range(NUM_LAYERS)), rng))]
    trees = [(prompts[i], prog) for i in range(4) for prog in mcts_programs(16, 10, seed=seed + 10 + i)]
    return {"mcts": mcts, "prompts": ([p for p, _ in pairs], [g for _, g in pairs]),
            "mcts4": ([p for p, _ in trees], [g for _, g in trees])}


def run(model, tok, prompts, programs, new_tokens: int, share: bool):
    t0 = time.perf_counter()
    out = polar.generate(model, tok, prompts, programs, max_new_tokens=new_tokens, stop_strings=["\n"],
                         share_prefix=share)
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batches", nargs="+", default=["mcts", "prompts"], choices=sorted(batches()))
    ap.add_argument("--out", default=None, help="write the records as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = polar.load_default()
    ids = lambda ps: [tok(p)["input_ids"] for p in ps]  # noqa: E731
    records = []
    for name, (prompts, programs) in batches().items():
        if name not in args.batches:
            continue
        toks = ids(prompts)
        common = min(next((i for i, (a, b) in enumerate(zip(toks[0], t)) if a != b), min(len(toks[0]), len(t)))
                     for t in toks)
        for what, new in (("prefill", 1), ("generate", 8)):
            times = {True: [], False: []}
            outs = {}
            for _ in range(args.rounds):
                for share in (False, True):
                    dt, outs[share] = run(model, tok, prompts, programs, new, share)
                    times[share].append(dt)
            on, off = outs[True], outs[False]
            digest = hashlib.sha256("\x00".join(prompts).encode()).hexdigest()[:12]
            rec = dict(batch=name, call=what, rows=len(prompts), max_new_tokens=new, prompts_sha256=digest,
                       prompt_tokens=[min(map(len, toks)), max(map(len, toks))], common_prefix_tokens=common,
                       distinct_programs=len({tuple(p) for p in programs}), program_steps=sum(map(len, programs)),
                       seconds_off=min(times[False]), seconds_on=min(times[True]),
                       speedup=min(times[False]) / min(times[True]),
                       prefill_work_off=off.prefill_work, prefill_work_on=on.prefill_work,
                       prefill_work_ratio=off.prefill_work / on.prefill_work,
                       decode_work_off=off.decode_work, decode_work_on=on.decode_work,
                       decode_work_ratio=off.decode_work / max(on.decode_work, 1),
                       prefill_waves=[off.prefill_waves, on.prefill_waves],
                       decode_waves=[off.decode_waves, on.decode_waves],
                       cache_entries_off=off.cache_entries, cache_entries_on=on.cache_entries,
                       same_tokens=on.tokens == off.tokens, same_texts=on.texts == off.texts)
            records.append(rec)
            print(json.dumps(rec), flush=True)
    meta = dict(machine=platform.processor() or platform.machine(), torch=torch.__version__, threads=args.threads,
                rounds=args.rounds, time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "records": records}, f, indent=1)


if __name__ == "__main__":
    main()
