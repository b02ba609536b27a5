"""GPU benchmarks for polar_kernels: each kernel vs its torch reference and vs a
device-to-device copy of the same number of bytes, reported as GB/s.

    pytest bench/bench_kernels.py --benchmark-only            # pytest-benchmark suite
    python bench/bench_kernels.py                              # quick table (triton.testing.do_bench)

Skips cleanly without CUDA or without triton. "bytes" is the minimum traffic each op must
move (unique bytes read + written); the copy baseline moves the same number of bytes
(reads bytes/2, writes bytes/2), so "% of copy" reads as achieved fraction of copy bandwidth.
"""
from __future__ import annotations

import math

import pytest
import torch

import polar_kernels as pk

CUDA = torch.cuda.is_available()
pytestmark = [
    pytest.mark.skipif(not CUDA, reason="GPU benchmark: needs CUDA"),
    pytest.mark.skipif(not pk.HAS_TRITON, reason="triton is not importable"),
]

INNER = 20  # ops per timed call (amortizes the synchronize)
DT = torch.bfloat16

# name -> dict of sizes
RMS_CASES = {
    "decode-B64-n32-d4096": dict(B=64, T=1, d=4096, n=32),
    "decode-B128-n128-d576": dict(B=128, T=1, d=576, n=128),
    "prefill-B16-T512-n8-d4096": dict(B=16, T=512, d=4096, n=8),
}
ATTN_CASES = {
    "n32-Hq32-Hkv8-hd128-L2048": dict(n=32, Hq=32, Hkv=8, hd=128, L=2048, Lq=2048),
    "n8-Hq32-Hkv8-hd128-L8192": dict(n=8, Hq=32, Hkv=8, hd=128, L=8192, Lq=8192),
    "n128-Hq9-Hkv3-hd64-L512": dict(n=128, Hq=9, Hkv=3, hd=64, L=512, Lq=512),
}


def _rows(B, n, device):
    return torch.randperm(B, device=device)[:n].to(torch.int32)


def make_rmsnorm(c, impl):
    B, T, d, n = c["B"], c["T"], c["d"], c["n"]
    hidden = torch.randn(B, T, d, device="cuda", dtype=DT)
    rows = _rows(B, n, "cuda")
    w = torch.randn(d, device="cuda", dtype=DT)
    out = torch.empty(n, T, d, device="cuda", dtype=DT)
    nbytes = 2 * n * T * d * hidden.element_size() + w.numel() * w.element_size()
    if impl == "triton":
        return (lambda: pk.gathered_rmsnorm_triton(hidden, rows, w, 1e-6, out=out)), nbytes
    if impl == "reference":
        return (lambda: pk.gathered_rmsnorm_reference(hidden, rows, w, 1e-6)), nbytes
    return make_copy(nbytes), nbytes


def make_scatter(c, impl):
    B, T, d, n = c["B"], c["T"], c["d"], c["n"]
    hidden = torch.randn(B, T, d, device="cuda", dtype=DT)
    rows = _rows(B, n, "cuda")
    delta = torch.randn(n, T, d, device="cuda", dtype=DT) * 1e-3
    nbytes = 3 * n * T * d * hidden.element_size()
    if impl == "triton":
        return (lambda: pk.residual_scatter_add_triton(hidden, rows, delta)), nbytes
    if impl == "reference":
        return (lambda: pk.residual_scatter_add_reference(hidden, rows, delta)), nbytes
    return make_copy(nbytes), nbytes


def make_attention(c, impl):
    n, Hq, Hkv, hd, L, Lq = (c[k] for k in ("n", "Hq", "Hkv", "hd", "L", "Lq"))
    S = n + 3
    q = torch.randn(n, Hq, hd, device="cuda", dtype=DT)
    kc = torch.randn(S, Hkv, L, hd, device="cuda", dtype=DT)
    vc = torch.randn(S, Hkv, L, hd, device="cuda", dtype=DT)
    slots = torch.randperm(S, device="cuda")[:n].to(torch.int32)
    mask = torch.ones(n, Lq, dtype=torch.bool, device="cuda")
    mask[:, : Lq // 8] = False  # some left padding
    valid = int(mask.sum())
    out = torch.empty_like(q)
    es = q.element_size()
    nbytes = 2 * valid * Hkv * hd * es + 2 * q.numel() * es + mask.numel()
    scale = 1.0 / math.sqrt(hd)
    if impl == "triton":
        return (lambda: pk.slot_decode_attention_triton(q, kc, vc, slots, mask, scale, out=out)), nbytes
    if impl == "reference":
        return (lambda: pk.slot_decode_attention_reference(q, kc, vc, slots, mask, scale)), nbytes
    return make_copy(nbytes), nbytes


def make_copy(nbytes):
    """Device-to-device copy moving ``nbytes`` in total (reads nbytes/2, writes nbytes/2)."""
    half = max(1, nbytes // 2)
    src = torch.empty(half, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


MAKERS = {"rmsnorm": (make_rmsnorm, RMS_CASES), "scatter": (make_scatter, RMS_CASES),
          "attention": (make_attention, ATTN_CASES)}
IMPLS = ["triton", "reference", "copy"]
PARAMS = [(k, c, i) for k, (_, cases) in MAKERS.items() for c in cases for i in IMPLS]


@pytest.mark.parametrize("kernel,case,impl", PARAMS, ids=[f"{k}-{c}-{i}" for k, c, i in PARAMS])
def test_bench(benchmark, kernel, case, impl):
    make, cases = MAKERS[kernel]
    fn, nbytes = make(cases[case], impl)

    def run():
        for _ in range(INNER):
            fn()
        torch.cuda.synchronize()

    run()  # compile / warm up
    benchmark.group = f"{kernel}-{case}"
    benchmark.pedantic(run, rounds=20, iterations=1, warmup_rounds=2)
    per_op = benchmark.stats.stats.median / INNER
    benchmark.extra_info["bytes"] = nbytes
    benchmark.extra_info["us_per_op"] = per_op * 1e6
    benchmark.extra_info["GB/s"] = nbytes / per_op / 1e9


def main():  # pragma: no cover - manual GPU run
    if not (CUDA and pk.HAS_TRITON):
        print("needs CUDA and triton")
        return
    from triton.testing import do_bench

    print(f"{'kernel':10s} {'case':28s} {'impl':10s} {'us':>9s} {'GB/s':>8s} {'% copy':>7s}")
    for kernel, (make, cases) in MAKERS.items():
        for case, c in cases.items():
            res = {}
            for impl in IMPLS:
                fn, nbytes = make(c, impl)
                ms = do_bench(fn, warmup=25, rep=100)
                res[impl] = (ms, nbytes / (ms * 1e-3) / 1e9)
            for impl in IMPLS:
                ms, gbs = res[impl]
                print(f"{kernel:10s} {case:28s} {impl:10s} {ms * 1e3:9.1f} {gbs:8.1f} {100 * gbs / res['copy'][1]:6.0f}%")


if __name__ == "__main__":
    main()
