"""Wave scheduler: compiled ``polar.plan_waves`` vs the Python reference, and wave counts.

Timing: 64 .. 4096 programs from the segment space of a 30-layer model (lengths ~30), plus
4096 programs of a 40-layer model (lengths ~40), for every compiled policy (``cpp_*``), the
compiled ``bound`` planner including ``polar.pack`` (``cpp_pack_bound``) and the Python reference
(``py_*``; ``py_bound`` only up to 256 programs, it is quadratic). Target: under 1 ms per 1000
programs.

Quality: waves per batch (B = 8, 32, 128; mean over several random batches) of each policy,
relative to the longest program, to the count lower bound and to the best supersequence found
offline by beam search (bench/supersequence.py).
"""
from __future__ import annotations

import numpy as np
import pytest

import polar
from common import run
from programs import sample_programs
from supersequence import POLICIES, beam_supersequence, count_lower_bound, embed, greedy_waves

SIZES = [(30, 64), (30, 256), (30, 1024), (30, 4096), (40, 4096)]
IMPLS = ["cpp_bound", "cpp_lowest", "cpp_step", "cpp_pack_bound", "py_bound", "py_lowest", "py_step"]
PY_BOUND_MAX_N = 256  # the Python reference of ``bound`` rescans every row per candidate: ~1 s at n=256, ~17 s at 1024

_PROGS: dict = {}


def programs_for(D: int, n: int) -> list[list[int]]:
    if (D, n) not in _PROGS:
        _PROGS[(D, n)] = sample_programs(D, n, seed=7 * n + D)
    return _PROGS[(D, n)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("D,n", SIZES, ids=[f"D{d}-n{n}" for d, n in SIZES])
def test_plan_waves(benchmark, D, n, impl):
    if impl == "py_bound" and n > PY_BOUND_MAX_N:
        pytest.skip(f"Python reference of 'bound' is quadratic in n (skipped above n={PY_BOUND_MAX_N})")
    progs = programs_for(D, n)
    packed = polar.pack(progs)
    policy = impl.split("_")[-1]
    benchmark.group = f"scheduler D={D} n={n}"
    if impl.startswith("cpp_pack"):
        fn = lambda: polar.plan_waves(polar.pack(progs), policy)  # noqa: E731
    elif impl.startswith("cpp"):
        fn = lambda: polar.plan_waves(packed, policy)  # noqa: E731
    else:
        fn = lambda: polar.plan_waves_reference(progs, policy)  # noqa: E731
    slow = impl.startswith("py") and (n >= 1024 or (impl == "py_bound" and n > 64))
    out = run(benchmark, fn, rounds=2 if slow else 20, warmup=0 if slow else 2, suite="scheduler", D=D, n=n,
              impl=impl, mean_length=float(np.mean([len(p) for p in progs])), baseline=impl == "py_lowest")
    waves = out.num_waves if hasattr(out, "num_waves") else len(out)
    benchmark.extra_info["waves"] = waves


QUALITY_B = [8, 32, 128]
QUALITY_SEEDS = 10


@pytest.mark.parametrize("B", QUALITY_B)
def test_wave_quality(benchmark, B):
    """Times the offline beam search; records mean waves of every policy in ``extra_info``."""
    D = 30
    batches = [sample_programs(D, B, seed=100 * B + s) for s in range(QUALITY_SEEDS)]
    benchmark.group = f"waves B={B}"

    def search():
        return [beam_supersequence(p, D, width=64) for p in batches]

    beams = run(benchmark, search, rounds=1, suite="waves", B=B, D=D, batches=QUALITY_SEEDS)
    waves: dict[str, list[int]] = {"longest": [], "count_lower_bound": [], "beam64": [], "cpp_bound": [], "cpp_lowest": [],
                                   "cpp_step": [], "greedy_lb": [], **{f"py_{k}": [] for k in POLICIES}}
    for progs, beam in zip(batches, beams):
        embed(progs, beam)  # checks it is a common supersequence
        packed = polar.pack(progs)
        waves["longest"].append(max(len(p) for p in progs))
        waves["count_lower_bound"].append(count_lower_bound(progs, D))
        waves["beam64"].append(len(beam))
        waves["cpp_bound"].append(polar.plan_waves(packed, "bound").num_waves)
        waves["cpp_lowest"].append(polar.plan_waves(packed, "lowest").num_waves)
        waves["cpp_step"].append(polar.plan_waves(packed, "step").num_waves)
        waves["greedy_lb"].append(len(beam_supersequence(progs, D, width=1)))
        for k in POLICIES:
            seq = greedy_waves(progs, k)
            embed(progs, seq)
            waves[f"py_{k}"].append(len(seq))
    assert waves["py_lowest"] == waves["cpp_lowest"]
    benchmark.extra_info["mean_waves"] = {k: float(np.mean(v)) for k, v in waves.items()}
