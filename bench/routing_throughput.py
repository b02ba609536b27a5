"""Online routing overhead (docs/architecture.md section 15): a router replaying fixed programs vs
``batched_execute`` with the same programs.

Both variants run in the same process, alternating, with pinned torch threads; each is timed
``--rounds`` times and the minimum kept. The work (row-layers x real tokens) is the same, so the
row-layer throughput ratio is ``seconds(programs) / seconds(router)`` (goal: >= 0.9).

- ``programs``: ``batched_execute(model, programs, inputs, share_prefix=False)`` (the routed engine
  never shares prefixes; prompts are distinct random tokens, so sharing would find nothing anyway),
  default policy.
- ``router``: ``batched_execute(model, None, inputs, router=ReplayRouter(programs))``: layer-ordered
  waves, one ``decide`` call per layer (validated), the same runners.

Programs: random routable programs (each layer skipped, run once or twice, lengths in
``[0.7 D, 1.2 D]``). With ``--new-tokens N > 0`` the same comparison is made for
``generate(..., max_new_tokens=N)`` (prefill + decode; tokens must match).

    OMP_NUM_THREADS=1 python bench/routing_throughput.py --batch-size 8 --tokens 32 --rounds 2
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

import polar
from polar.runtime import ReplayRouter


def routable(num_layers: int, batch_size: int, seed: int) -> list[list[int]]:
    """Random programs a router can produce, lengths in ``[0.7 D, 1.2 D]``."""
    g = torch.Generator().manual_seed(seed)
    out: list[list[int]] = []
    while len(out) < batch_size:
        u = torch.rand(num_layers, generator=g).tolist()
        prog = [layer for layer, x in enumerate(u) for _ in range(0 if x < 0.25 else 2 if x > 0.8 else 1)]
        if 0.7 * num_layers <= len(prog) <= 1.2 * num_layers:
            out.append(prog)
    return out


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=32, help="prompt tokens per row")
    ap.add_argument("--new-tokens", type=int, default=0, help="also compare generate with this budget (0: off)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backend", default="auto", choices=polar.runtime.BACKENDS)
    ap.add_argument("--out", default=None, help="write the record as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, _ = polar.load_default()
    D, V = model.config.num_hidden_layers, model.config.vocab_size
    programs = routable(D, args.batch_size, seed=args.batch_size)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, V, (args.batch_size, args.tokens), generator=g)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    router = ReplayRouter(programs)
    calls = {
        "programs": lambda: polar.batched_execute(model, programs, inputs, share_prefix=False, backend=args.backend),
        "router": lambda: polar.batched_execute(model, None, inputs, router=router, backend=args.backend),
    }
    if args.new_tokens:
        calls["generate_programs"] = lambda: polar.generate(model, None, inputs, programs, args.new_tokens,
                                                            share_prefix=False, backend=args.backend, eos_token_id=[])
        calls["generate_router"] = lambda: polar.generate(model, None, inputs, None, args.new_tokens, router=router,
                                                          backend=args.backend, eos_token_id=[])
    times: dict[str, list[float]] = {k: [] for k in calls}
    outs = {}
    calls["programs"]()  # warm-up
    for _ in range(args.rounds):
        for name, fn in calls.items():
            dt, outs[name] = timed(fn)
            times[name].append(dt)
    work = outs["programs"].work
    rec = dict(model="SmolLM2-135M-Instruct (polar.load_default)", num_layers=D, batch_size=args.batch_size,
               prompt_tokens=args.tokens, program_steps=sum(map(len, programs)), work=work,
               waves_programs=outs["programs"].num_waves, waves_router=outs["router"].num_waves,
               seconds_programs=min(times["programs"]), seconds_router=min(times["router"]),
               throughput_ratio=min(times["programs"]) / min(times["router"]),
               max_abs_logit_diff=float((outs["programs"].logits - outs["router"].logits).abs().max()),
               same_programs=outs["router"].programs == outs["programs"].programs)
    if args.new_tokens:
        gp, gr = outs["generate_programs"], outs["generate_router"]
        rec.update(new_tokens=args.new_tokens, seconds_generate_programs=min(times["generate_programs"]),
                   seconds_generate_router=min(times["generate_router"]),
                   generate_throughput_ratio=min(times["generate_programs"]) / min(times["generate_router"]),
                   decode_waves_programs=gp.decode_waves, decode_waves_router=gr.decode_waves,
                   same_tokens=gp.tokens == gr.tokens)
    rec.update(machine=platform.processor() or platform.machine(), torch=torch.__version__, threads=args.threads,
               backend=args.backend, rounds=args.rounds)
    print(json.dumps(rec, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rec, f, indent=2)


if __name__ == "__main__":
    main()
