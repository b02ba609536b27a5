"""Where the time goes: torch.profiler op table for one benchmark case (not part of the pytest suite).

    python bench/profile_run.py --model smollm2 --B 32 --what decode      # polar.generate, 32 tokens
    python bench/profile_run.py --model tiny --B 32 --what prefill --policy lowest
    python bench/profile_run.py --model tiny --B 32 --what hf_decode      # HF generate, same batch

Prints wall time of the profiled call, the top ops by self CPU time, and the share of the
self time spent in gather/scatter/copy ops vs GEMMs vs attention.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).parent))

import polar  # noqa: E402
from polar.runtime.schedule import DEFAULT_POLICY  # noqa: E402
from common import NEW_TOKENS, Models, get_batch  # noqa: E402
from variants import fixed_forward, fixed_generate  # noqa: E402

CATEGORIES = {
    "gemm": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear"),
    "attention": ("aten::_scaled_dot_product", "aten::scaled_dot_product", "aten::_softmax", "aten::softmax"),
    "gather/scatter/copy": ("aten::index", "aten::index_select", "aten::index_put_", "aten::index_copy_",
                            "aten::copy_", "aten::cat", "aten::_index_put_impl_", "aten::where",
                            "aten::clone", "aten::contiguous"),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny", choices=["tiny", "smollm2"])
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--what", default="decode", choices=["decode", "prefill", "hf_decode", "hf_prefill"])
    ap.add_argument("--policy", default=DEFAULT_POLICY)
    ap.add_argument("--new", type=int, default=NEW_TOKENS)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--share-prefix", action="store_true", help="run with shared prefixes (docs/architecture.md section 9)")
    args = ap.parse_args()
    share = args.share_prefix
    model, desc = Models().get(args.model)
    batch = get_batch(args.model, model, args.B)
    progs, inputs = batch.programs, batch.inputs
    calls = {
        "decode": lambda: polar.generate(model, None, inputs, progs, args.new, eos_token_id=[], policy=args.policy,
                                         share_prefix=share),
        "prefill": lambda: polar.batched_execute(model, progs, inputs, policy=args.policy, share_prefix=share),
        "hf_decode": lambda: fixed_generate(model, inputs, args.new),
        "hf_prefill": lambda: fixed_forward(model, inputs),
    }
    fn = calls[args.what]
    fn()  # warm-up
    t0 = time.perf_counter()
    fn()
    plain = time.perf_counter() - t0
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        fn()
        profiled = time.perf_counter() - t0
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print(f"{desc}; B={args.B}; {args.what} ({args.policy}): {plain:.3f} s unprofiled, {profiled:.3f} s profiled")
    shares = {k: sum(e.self_cpu_time_total for e in events if e.key.startswith(v)) / total for k, v in CATEGORIES.items()}
    print("self-time shares: " + ", ".join(f"{k} {100 * s:.1f}%" for k, s in shares.items())
          + f", other {100 * (1 - sum(shares.values())):.1f}%")
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.top))


if __name__ == "__main__":
    main()
