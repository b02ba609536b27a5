"""The fused runner end to end with its real Triton kernels, on CPU under the Triton interpreter.

``batched_execute`` and ``generate`` with ``backend="fused"`` inside
``polar_kernels.triton_on_cpu()`` (gathered RMSNorm, residual scatter, slot decode attention
without sharing, pool decode attention with cascade sharing), on every tiny architecture of
``polar.testing``, with and without shared prefixes, against the ``hf`` runner.

Why a subprocess: as in ``test_kernels.py``, the interpreter needs ``TRITON_INTERPRET=1`` before
triton is first imported, which other test modules of this process may already have done. The
cases run in one child (``python tests/runtime/test_fused_interpreter.py --cases OUT.json``) and
each is reported as its own test; with ``TRITON_INTERPRET=1 pytest ...`` they run in-process.
Shapes are small (3 layers, 4 rows, about 20 tokens, 3 new tokens): the interpreter runs every
program of every launch in Python.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter

import pytest
import torch

import polar_kernels as pk
from polar_kernels import _dispatch
from polar.testing import ARCHITECTURES

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
NEW_TOKENS = 3
LAYERS = 3
CASE_IDS = [f"{arch}-{what}" for arch in ARCHITECTURES for what in ("execute", "generate")]


def _batch():
    """4 rows over a common 16-token prefix (the pool kernel's default cascade threshold): rows 0
    and 2 have the same prompt; programs with skips, a repeat and a reorder."""
    from polar.testing import random_prompts

    g = torch.Generator().manual_seed(7)
    shared = torch.randint(3, 128, (16,), generator=g)
    tails = random_prompts(2, 128, 2, 3, seed=3)
    prompts = [torch.cat([shared, tails[0]]), torch.cat([shared, tails[1]]), torch.cat([shared, tails[0]]), shared]
    programs = [[0, 1, 2], [0, 1, 2], [0, 2, 2, 1], [1, 0]]
    return prompts, programs


class Launches:
    """Counts Triton launches by kernel name (wraps ``Kernel.on``) and, for pool attention, the
    calls in which the cascade found a shared group (>= 2 rows, >= MIN_SHARED columns)."""

    def __init__(self):
        self.count: Counter = Counter()
        self.cascades = 0

    def __enter__(self):
        mod = sys.modules["polar_kernels.pool_decode_attention"]
        self._on, self._pool = _dispatch.Kernel.on, mod.pool_decode_attention_triton
        count, real_on, real_pool = self.count, self._on, self._pool

        def on(kernel, device):
            count[kernel.fn.__name__] += 1
            return real_on(kernel, device)

        def pool(q, pool_k, pool_v, read_index, key_mask, scale, **kw):
            _, cnt, shared = mod.pool_cascade_plan_reference(read_index, key_mask)
            self.cascades += int(((cnt >= 2) & (shared >= mod.MIN_SHARED)).any())
            return real_pool(q, pool_k, pool_v, read_index, key_mask, scale, **kw)

        _dispatch.Kernel.on, mod.pool_decode_attention_triton = on, pool
        return self

    def __exit__(self, *exc):
        mod = sys.modules["polar_kernels.pool_decode_attention"]
        _dispatch.Kernel.on, mod.pool_decode_attention_triton = self._on, self._pool


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4) -> float:
    err = ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()
    assert err <= tol, f"relative error {err} > {tol}"
    return err


def run_case(case_id: str) -> dict:
    import polar
    from polar.testing import padded_batch, tiny_model

    arch, what = case_id.rsplit("-", 1)
    torch.manual_seed(0)
    model = tiny_model(arch, seed=1, num_layers=LAYERS)
    prompts, programs = _batch()
    hd = polar.get_adapter(model).head_dim
    info: dict = {}
    for share in (True, False):
        if what == "execute":
            inputs = padded_batch(prompts, "right")
            ref = polar.batched_execute(model, programs, inputs, backend="hf", share_prefix=share)
            with pk.triton_on_cpu(), Launches() as launches:
                got = polar.batched_execute(model, programs, inputs, backend="fused", share_prefix=share)
            info[f"logits_err_share{int(share)}"] = _close(got.logits, ref.logits)
            assert got.num_waves == ref.num_waves and got.work == ref.work
        else:
            inputs = padded_batch(prompts, "left")
            kw = dict(eos_token_id=[], share_prefix=share)
            ref = polar.generate(model, None, inputs, programs, NEW_TOKENS, backend="hf", **kw)
            with pk.triton_on_cpu(), Launches() as launches:
                got = polar.generate(model, None, inputs, programs, NEW_TOKENS, backend="fused", **kw)
            assert got.tokens == ref.tokens, (got.tokens, ref.tokens)
            lp = torch.tensor(sum(got.token_logprobs, [])), torch.tensor(sum(ref.token_logprobs, []))
            assert (lp[0] - lp[1]).abs().max().item() <= 1e-4, lp
            assert got.decode_work == ref.decode_work and got.cache_entries == ref.cache_entries
            pool = launches.count["_pool_rows_kernel"]
            slot = launches.count["_slot_decode_attention_kernel"]
            if share:
                assert pool > 0 and slot == 0, launches.count
                assert launches.cascades > 0, "the cascade never found a shared group"
            else:
                assert pool == 0 and (slot > 0) == (hd >= 16 and hd & (hd - 1) == 0), launches.count
        assert launches.count["_gathered_rmsnorm_kernel"] > 0 and launches.count["_residual_scatter_add_kernel"] > 0
        info[f"launches_share{int(share)}"] = dict(launches.count)
    return info


def run_cases(case_ids) -> dict:
    torch.set_num_threads(1)
    results = {}
    for cid in case_ids:
        t0 = time.perf_counter()
        try:
            results[cid] = {"ok": True, "info": run_case(cid)}
        except Exception as exc:  # reported per case by the parent
            results[cid] = {"ok": False, "msg": f"{exc!r}\n{traceback.format_exc()}"}
        results[cid]["seconds"] = round(time.perf_counter() - t0, 2)
    return results


needs_triton = pytest.mark.skipif(not pk.HAS_TRITON, reason="triton is not importable")


@pytest.fixture(scope="module")
def interp_results():
    if _dispatch.triton_imported_in_interpret_mode():
        return run_cases(CASE_IDS)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "results.json")
        env = dict(os.environ, TRITON_INTERPRET="1")
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--cases", path], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0 or not os.path.exists(path):
            pytest.fail(f"interpreter subprocess failed (rc={proc.returncode}):\n"
                        f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        with open(path) as f:
            return json.load(f)


@needs_triton
@pytest.mark.interpreter
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_fused_runner_under_interpreter_matches_hf(case_id, interp_results):
    r = interp_results[case_id]
    assert r["ok"], r.get("msg")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--cases":
        if not _dispatch.triton_imported_in_interpret_mode():
            sys.exit("run with TRITON_INTERPRET=1 in the environment")
        res = run_cases(CASE_IDS)
        with open(sys.argv[2], "w") as f:
            json.dump(res, f)
        bad = [k for k, v in res.items() if not v["ok"]]
        print(f"{len(res) - len(bad)}/{len(res)} cases ok", *bad,
              "| seconds:", {k: v["seconds"] for k, v in res.items()})
        sys.exit(0)
    sys.exit(f"usage: TRITON_INTERPRET=1 {sys.argv[0]} --cases OUT.json")
