"""Tests for polar_kernels: Triton kernels (under the Triton interpreter, on CPU) against
their torch references, and the references against naive formulas.

Why a subprocess: the Triton interpreter only works when ``TRITON_INTERPRET=1`` is set
before ``triton`` is first imported (triton's own ``tl.sum``/``tl.max`` are ``@jit``
functions fixed at that import). In a pytest process other test modules may already have
imported triton (through polar -> polar_kernels), and setting the variable for the whole
process would leak into them. So the interpreter cases run in one child process per module
(``python tests/test_kernels.py --interp-cases OUT.json`` with ``TRITON_INTERPRET=1``), and
each case is reported as its own pytest test. If this process itself already runs triton in
interpreter mode (``TRITON_INTERPRET=1 pytest ...``), the cases run in-process instead.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import traceback

import pytest
import torch

import polar_kernels as pk
from polar_kernels import _dispatch

HERE = os.path.dirname(os.path.abspath(__file__))

# --------------------------------------------------------------------------------------
# helpers


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a64, b64 = a.double(), b.double()
    denom = b64.abs().max().item() if b64.numel() else 1.0
    return (a64 - b64).abs().max().item() / max(denom, 1e-30) if a64.numel() else 0.0


def norm_rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a64, b64 = a.double(), b.double()
    return ((a64 - b64).norm() / b64.norm().clamp_min(1e-30)).item()


def check_rel(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> float:
    """fp32: max|a-b| / max|b| <= 1e-5. bf16: norm-wise relative error <= 1e-2 and
    max-based <= 2e-2 (a few bf16 ulps: the interpreter truncates fp32 -> bf16 casts
    instead of rounding to nearest, which biases errors by up to one extra ulp per cast)."""
    err = rel_err(a, b)
    if dtype == torch.float32:
        assert err <= 1e-5, f"rel err {err}"
        return err
    nerr = norm_rel_err(a, b)
    assert nerr <= 1e-2 and err <= 2e-2, f"rel err (norm) {nerr}, (max) {err}"
    return nerr


def bits(t: torch.Tensor) -> torch.Tensor:
    """Integer view of a float tensor, for bit-for-bit comparisons (NaN-safe)."""
    itype = {2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return t.contiguous().view(itype)


DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}

# --------------------------------------------------------------------------------------
# interpreter cases: id -> (kind, params). Small shapes: the interpreter runs every program
# of the grid in Python.

RMS_SHAPES = [
    # B, T, d, rows, rows dtype, eps
    dict(B=1, T=1, d=96, rows=[0], idt="i64", eps=1e-6),
    dict(B=5, T=3, d=100, rows=[4, 0, 2], idt="i32", eps=1e-5),
    dict(B=9, T=2, d=576, rows=[8, 1, 3, 0, 6, 5, 2], idt="i64", eps=1e-6),
    dict(B=4, T=3, d=64, rows=[2], idt="i32", eps=1e-6, view=True),  # hidden = buf[:, :T] (strided)
]
SCATTER_SHAPES = [
    dict(B=6, T=1, d=96, rows=[3], idt="i64"),
    dict(B=8, T=3, d=100, rows=[7, 0, 4], idt="i32"),
    dict(B=11, T=2, d=576, rows=[10, 2, 5, 0, 9, 1, 6], idt="i64", delta_view=True),
]
ATTN_SHAPES = [
    # n, Hq, Hkv, hd, S, L, Lq, mask pattern
    dict(n=1, Hq=4, Hkv=4, hd=64, S=3, L=16, Lq=9, slots=[2], mask="random"),
    dict(n=3, Hq=6, Hkv=2, hd=64, S=10, L=40, Lq=33, slots=[7, 1, 3], mask="padding"),
    dict(n=7, Hq=8, Hkv=2, hd=128, S=12, L=24, Lq=24, slots=[11, 0, 5, 3, 9, 2, 7], mask="mixed"),
    # several column blocks, first block fully masked for some rows (online softmax guard)
    dict(n=3, Hq=3, Hkv=1, hd=64, S=5, L=80, Lq=75, slots=[4, 0, 2], mask="late", block_n=16),
    # k/v are strided views of one interleaved [S, 2, Hkv, L, hd] store
    dict(n=3, Hq=4, Hkv=1, hd=64, S=4, L=20, Lq=13, slots=[1, 3, 0], mask="window", kv_view=True),
]


POOL_SHAPES = [
    # n, Hq, Hkv, hd, P (pool entries), K (index columns); groups: (rows, shared columns); tuning
    dict(n=1, Hq=4, Hkv=4, hd=64, P=30, K=9, groups=[], mask="random"),
    dict(n=5, Hq=6, Hkv=2, hd=24, P=200, K=40, groups=[([0, 1, 2, 3], 30)], mask="random",
         min_shared=4, splits=3, block_n=16),
    dict(n=7, Hq=8, Hkv=2, hd=128, P=300, K=33, groups=[([0, 2, 4], 20), ([1, 5], 12)], mask="window",
         min_shared=1),
    # all rows share 70 columns; the first blocks are masked for some rows (empty partial softmaxes)
    dict(n=6, Hq=3, Hkv=1, hd=16, P=120, K=75, groups=[([0, 1, 2, 3, 4, 5], 70)], mask="late",
         min_shared=1, splits=4, block_n=16),
    # SmolLM2's GQA (9 / 3 heads); k/v strided views of one interleaved store; int32 index; the
    # default min_shared; members differ from their leader only where their mask is False
    dict(n=4, Hq=9, Hkv=3, hd=64, P=150, K=50, groups=[([1, 2, 3], 40)], mask="random", kv_view=True,
         differ_masked=True),
    # rows at different positions: trailing columns masked and pointing at the scratch entry 0
    dict(n=9, Hq=2, Hkv=2, hd=32, P=90, K=20, groups=[([0, 3, 4, 8], 17), ([1, 2], 16)], mask="ragged",
         min_shared=2, splits=2, block_n=16),
]


def _case_ids():
    ids = []
    for name, shapes in (("rmsnorm", RMS_SHAPES), ("scatter", SCATTER_SHAPES), ("attn", ATTN_SHAPES),
                         ("pool", POOL_SHAPES)):
        for i in range(len(shapes)):
            for dt in DTYPES:
                ids.append(f"{name}-{i}-{dt}")
    ids.append("rmsnorm-mixed-weight")  # bf16 hidden, fp32 weight -> fp32 output (HF promotion)
    return ids


CASE_IDS = _case_ids()


def _idx(rows, idt):
    return torch.tensor(rows, dtype=torch.int32 if idt == "i32" else torch.int64)


def _check_rmsnorm(p, dtype, wdtype=None, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    B, T, d = p["B"], p["T"], p["d"]
    if p.get("view"):
        buf = torch.randn(B, T + 2, d, generator=g).to(device=device, dtype=dtype)
        hidden = buf[:, :T]
        assert not hidden.is_contiguous()
    else:
        hidden = torch.randn(B, T, d, generator=g).to(device=device, dtype=dtype)
    weight = (1.0 + 0.5 * torch.randn(d, generator=g)).to(device=device, dtype=wdtype or dtype)
    rows = _idx(p["rows"], p["idt"]).to(device)
    before = hidden.clone()
    odt = torch.promote_types(weight.dtype, dtype)
    out = torch.full((len(p["rows"]), T, d), float("nan"), dtype=odt, device=device)
    res = pk.gathered_rmsnorm_triton(hidden, rows, weight, p["eps"], out=out)
    assert res is out
    ref = pk.gathered_rmsnorm_reference(hidden, rows, weight, p["eps"])
    assert ref.dtype == odt and ref.is_contiguous()
    assert not torch.isnan(out).any(), "some output elements were not written"
    err = check_rel(out, ref, dtype)
    assert torch.equal(bits(hidden), bits(before)), "hidden buffer modified"
    # allocation path (no out=) gives the same values
    res2 = pk.gathered_rmsnorm_triton(hidden, rows, weight, p["eps"])
    assert res2.is_contiguous() and res2.shape == out.shape and torch.equal(bits(res2), bits(out))
    return err


def _check_scatter(p, dtype, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    B, T, d = p["B"], p["T"], p["d"]
    rows = _idx(p["rows"], p["idt"])
    n = len(p["rows"])
    hidden = torch.randn(B, T, d, generator=g).to(dtype)
    # poison rows outside the wave with NaN (with a payload) so a stray write or a
    # non-bit-exact copy of them shows up
    outside = torch.ones(B, dtype=torch.bool)
    outside[rows.long()] = False
    hb = bits(hidden)
    nan_bits = torch.tensor(0x7FC1 if dtype == torch.bfloat16 else 0x7FC00123, dtype=hb.dtype)
    hb[outside, 0, :7] = nan_bits
    hidden = hb.view(dtype).to(device)
    rows, outside = rows.to(device), outside.to(device)
    if p.get("delta_view"):
        big = torch.randn(n, T, d + 5, generator=g).to(device=device, dtype=dtype)
        delta = big[:, :, :d]
        assert not delta.is_contiguous()
    else:
        delta = torch.randn(n, T, d, generator=g).to(device=device, dtype=dtype)
    before = hidden.clone()
    got = hidden.clone()
    pk.residual_scatter_add_triton(got, rows, delta)
    ref = hidden.clone()
    pk.residual_scatter_add_reference(ref, rows, delta)
    assert torch.equal(bits(got[outside]), bits(before[outside])), "rows outside the wave changed"
    r = rows.long()
    err = check_rel(got[r], ref[r], dtype)
    # fp32 add + one rounding to the buffer dtype is exactly what torch does. Under the
    # interpreter, fp32 -> bf16 casts truncate instead of rounding to nearest even (GPU), so
    # bit-exactness is only checked for fp32 here (and for every dtype on CUDA).
    if dtype == torch.float32 or hidden.is_cuda:
        assert torch.equal(bits(got[r]), bits(ref[r])), "wave rows not bit-identical to torch"
    return err


def _make_mask(kind, n, Lq, g):
    m = torch.zeros(n, Lq, dtype=torch.bool)
    for i in range(n):
        if kind == "random" or (kind == "mixed" and i % 3 == 0):
            m[i] = torch.rand(Lq, generator=g) < 0.6
        elif kind == "padding" or (kind == "mixed" and i % 3 == 1):
            left = int(torch.randint(0, Lq // 2, (1,), generator=g))  # left padding
            right = int(torch.randint(0, Lq // 3, (1,), generator=g))  # not yet written
            m[i, left:Lq - right] = True
        elif kind == "window" or (kind == "mixed" and i % 3 == 2):
            w = 1 + i % 5  # sliding window ending at the last column
            m[i, max(0, Lq - w):] = True
        elif kind == "late":
            m[i, 40 + 7 * i:] = True  # nothing in the first blocks
        if not m[i].any():
            m[i, int(torch.randint(0, Lq, (1,), generator=g))] = True
    return m


def _attn_inputs(p, dtype, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    n, Hq, Hkv, hd, S, L, Lq = (p[k] for k in ("n", "Hq", "Hkv", "hd", "S", "L", "Lq"))
    q = torch.randn(n, Hq, hd, generator=g).to(dtype)
    if p.get("kv_view"):
        kv = torch.randn(S, 2, Hkv, L, hd, generator=g).to(dtype)
        k_cache, v_cache = kv[:, 0], kv[:, 1]
    else:
        k_cache = torch.randn(S, Hkv, L, hd, generator=g).to(dtype)
        v_cache = torch.randn(S, Hkv, L, hd, generator=g).to(dtype)
    slots = torch.tensor(p["slots"], dtype=torch.int64 if n % 2 else torch.int32)
    mask = _make_mask(p["mask"], n, Lq, g)
    q, k_cache, v_cache, slots, mask = (t.to(device) for t in (q, k_cache, v_cache, slots, mask))
    return q, k_cache, v_cache, slots, mask, 1.0 / math.sqrt(hd)


def _check_attn(p, dtype, seed=0, device="cpu"):
    q, kc, vc, slots, mask, scale = _attn_inputs(p, dtype, seed, device)
    out = torch.full(q.shape, float("nan"), dtype=dtype, device=device)
    res = pk.slot_decode_attention_triton(q, kc, vc, slots, mask, scale, out=out, block_n=p.get("block_n"))
    assert res is out
    ref = pk.slot_decode_attention_reference(q, kc, vc, slots, mask, scale)
    assert ref.dtype == dtype
    assert not torch.isnan(out).any(), "some output elements were not written"
    err = check_rel(out, ref, dtype)
    return err


def _pool_inputs(p, dtype, seed=0, device="cpu"):
    """Random pool, queries, index table with the case's shared groups, and a mask (at least one
    True per row). Returns ``q, pool_k, pool_v, read_index, key_mask, scale``."""
    g = torch.Generator().manual_seed(seed)
    n, Hq, Hkv, hd, P, K = (p[k] for k in ("n", "Hq", "Hkv", "hd", "P", "K"))
    q = torch.randn(n, Hq, hd, generator=g).to(dtype)
    if p.get("kv_view"):
        kv = torch.randn(P, 2, Hkv, hd, generator=g).to(dtype)
        pool_k, pool_v = kv[:, 0], kv[:, 1]
    else:
        pool_k = torch.randn(P, Hkv, hd, generator=g).to(dtype)
        pool_v = torch.randn(P, Hkv, hd, generator=g).to(dtype)
    idx = torch.randint(1, P, (n, K), generator=g)
    idx[:, 0] = P - 1 - torch.arange(n)                        # distinct first entries: rows alone ...
    for gi, (rows, shared) in enumerate(p["groups"]):           # ... unless in a group
        idx[rows, :shared] = torch.randint(1, P, (shared,), generator=g)
        idx[rows, 0] = 1 + gi
    if p["mask"] == "ragged":
        mask = torch.ones(n, K, dtype=torch.bool)
        for i in range(n):
            end = K - int(torch.randint(0, 4, (1,), generator=g))
            mask[i, end:] = False
            idx[i, end:] = 0
    else:
        mask = _make_mask(p["mask"], n, K, g)
    if p.get("differ_masked"):
        rows = p["groups"][0][0]
        for r in rows[1:]:
            hide = ~mask[r, : p["groups"][0][1]]
            hide[0] = False                                   # groups are found by the first entry
            idx[r, : p["groups"][0][1]][hide] = 0          # another entry where the row does not look
    idx = idx.to(torch.int32 if p.get("kv_view") else torch.int64)
    q, pool_k, pool_v, idx, mask = (t.to(device) for t in (q, pool_k, pool_v, idx, mask))
    return q, pool_k, pool_v, idx, mask, 1.0 / math.sqrt(hd)


def _check_pool(p, dtype, seed=0, device="cpu"):
    mod = sys.modules["polar_kernels.pool_decode_attention"]
    q, pk_, pv_, idx, mask, scale = _pool_inputs(p, dtype, seed, device)
    ref = pk.pool_decode_attention_reference(q, pk_, pv_, idx, mask, scale)
    assert ref.dtype == dtype
    # the unshared path: the same keys laid out one slot per row, read by slot_decode_attention
    kc = pk_[idx.long()].transpose(1, 2).contiguous()                     # [n, Hkv, K, hd]
    vc = pv_[idx.long()].transpose(1, 2).contiguous()
    slots = torch.arange(q.shape[0], device=device)
    unshared = pk.slot_decode_attention_reference(q, kc, vc, slots, mask, scale)
    assert rel_err(ref, unshared) <= 1e-6
    # the plan kernel finds the groups the torch plan does
    got_plan = mod.pool_cascade_plan_triton(idx, mask)
    for a, b in zip(got_plan, mod.pool_cascade_plan_reference(idx, mask)):
        assert torch.equal(a.long().cpu(), b.cpu()), (got_plan, b)
    lead, count, shared = (t.long() for t in got_plan)
    min_shared = p.get("min_shared")
    for rows, s in p["groups"]:
        assert int(count[rows[0]]) == len(rows) and int(shared[rows[0]]) >= s
    errs = []
    for cascade in (True, False):
        out = torch.full(q.shape, float("nan"), dtype=dtype, device=device)
        res = pk.pool_decode_attention_triton(q, pk_, pv_, idx, mask, scale, out=out, cascade=cascade,
                                              min_shared=min_shared, num_splits=p.get("splits"),
                                              block_n=p.get("block_n"))
        assert res is out
        assert not torch.isnan(out).any(), "some output elements were not written"
        errs.append(check_rel(out, ref, dtype))
        check_rel(out, unshared, dtype)
    return max(errs)


def run_case(case_id: str, device: str = "cpu") -> float:
    if case_id == "rmsnorm-mixed-weight":
        return _check_rmsnorm(RMS_SHAPES[1], torch.bfloat16, wdtype=torch.float32, seed=7, device=device)
    name, i, dt = case_id.split("-")
    i, dtype = int(i), DTYPES[dt]
    seed = 1000 + 17 * i + (1 if dt == "bf16" else 0)
    if name == "rmsnorm":
        return _check_rmsnorm(RMS_SHAPES[i], dtype, seed=seed, device=device)
    if name == "scatter":
        return _check_scatter(SCATTER_SHAPES[i], dtype, seed=seed, device=device)
    if name == "attn":
        return _check_attn(ATTN_SHAPES[i], dtype, seed=seed, device=device)
    if name == "pool":
        return _check_pool(POOL_SHAPES[i], dtype, seed=seed, device=device)
    raise KeyError(case_id)


def run_cases(case_ids) -> dict:
    results = {}
    for cid in case_ids:
        try:
            results[cid] = {"ok": True, "err": run_case(cid)}
        except Exception as exc:  # reported per case by the parent
            results[cid] = {"ok": False, "msg": f"{exc!r}\n{traceback.format_exc()}"}
    # the dispatchers must still use the references on CPU, even in interpreter mode
    q, kc, vc, slots, mask, scale = _attn_inputs(ATTN_SHAPES[1], torch.float32)
    try:
        assert torch.equal(pk.slot_decode_attention(q, kc, vc, slots, mask, scale),
                           pk.slot_decode_attention_reference(q, kc, vc, slots, mask, scale))
        results["dispatch-cpu-reference"] = {"ok": True, "err": 0.0}
    except Exception as exc:
        results["dispatch-cpu-reference"] = {"ok": False, "msg": repr(exc)}
    # ... and the Triton kernels inside triton_on_cpu() (what the fused runner's CPU tests use)
    try:
        args = _pool_inputs(POOL_SHAPES[1], torch.float32)
        mod = sys.modules["polar_kernels.pool_decode_attention"]
        called = []
        real = mod.pool_decode_attention_triton
        mod.pool_decode_attention_triton = lambda *a, **k: called.append(1) or real(*a, **k)
        try:
            with pk.triton_on_cpu():
                assert pk.uses_triton(torch.device("cpu"))
                got = pk.pool_decode_attention(*args)
        finally:
            mod.pool_decode_attention_triton = real
        assert called and not pk.uses_triton(torch.device("cpu"))
        check_rel(got, pk.pool_decode_attention_reference(*args), torch.float32)
        results["dispatch-triton-on-cpu"] = {"ok": True, "err": 0.0}
    except Exception as exc:
        results["dispatch-triton-on-cpu"] = {"ok": False, "msg": f"{exc!r}\n{traceback.format_exc()}"}
    return results


# --------------------------------------------------------------------------------------
# interpreter tests

needs_triton = pytest.mark.skipif(not pk.HAS_TRITON, reason="triton is not importable")


@pytest.fixture(scope="module")
def interp_results():
    if _dispatch.triton_imported_in_interpret_mode():
        return run_cases(CASE_IDS)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "results.json")
        env = dict(os.environ, TRITON_INTERPRET="1")
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--interp-cases", path],
            env=env, cwd=os.path.dirname(HERE), capture_output=True, text=True, timeout=600,
        )
        if proc.returncode != 0 or not os.path.exists(path):
            pytest.fail(f"interpreter subprocess failed (rc={proc.returncode}):\n"
                        f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        with open(path) as f:
            return json.load(f)


@needs_triton
@pytest.mark.interpreter
@pytest.mark.parametrize("case_id", CASE_IDS + ["dispatch-cpu-reference", "dispatch-triton-on-cpu"])
def test_triton_interpreter_vs_reference(case_id, interp_results):
    r = interp_results[case_id]
    assert r["ok"], r.get("msg")


@needs_triton
def test_cpu_triton_path_without_interpreter_is_a_clear_error():
    if _dispatch.triton_imported_in_interpret_mode():
        pytest.skip("this process runs triton in interpreter mode")
    h = torch.randn(2, 1, 8)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        pk.gathered_rmsnorm_triton(h, torch.tensor([1]), torch.ones(8), 1e-6)


@needs_triton
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_cuda_kernels_vs_reference(case_id):
    """Same cases, compiled kernels on the GPU (bf16 scatter checked bit for bit there)."""
    run_case(case_id, device="cuda")


@needs_triton
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_dispatchers_use_triton(monkeypatch):
    q, kc, vc, slots, mask, scale = _attn_inputs(ATTN_SHAPES[2], torch.bfloat16, device="cuda")
    mod = sys.modules["polar_kernels.slot_decode_attention"]
    called = []
    real = mod.slot_decode_attention_triton
    monkeypatch.setattr(mod, "slot_decode_attention_triton", lambda *a, **k: called.append(1) or real(*a, **k))
    got = pk.slot_decode_attention(q, kc, vc, slots, mask, scale)
    assert called and got.is_cuda and got.dtype == torch.bfloat16


def _nvidia_backend_available() -> bool:
    if not pk.HAS_TRITON:
        return False
    try:
        from triton.backends import backends
        return "nvidia" in backends
    except Exception:
        return False


@pytest.mark.skipif(not _nvidia_backend_available(), reason="triton's CUDA backend is not available")
@pytest.mark.parametrize("dt", ["fp32", "bf16"])
def test_kernels_compile_for_sm90_without_gpu(dt):
    """Ahead-of-time compile every kernel to a cubin for sm_90 (no GPU needed): catches
    type/shape errors that the interpreter lets through."""
    import inspect

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    mods = [sys.modules[f"polar_kernels.{m}"] for m in ("gathered_rmsnorm", "residual_scatter", "slot_decode_attention",
                                                         "pool_decode_attention")]
    ieee = dt == "fp32"
    pool = mods[3]
    kernels = [
        (mods[0]._gathered_rmsnorm_kernel, {"BLOCK_D": 1024}),
        (mods[1]._residual_scatter_add_kernel, {"BLOCK_D": 1024}),
        (mods[2]._slot_decode_attention_kernel, {"HEAD_DIM": 128, "BLOCK_N": 32}),
        (mods[2]._slot_decode_attention_kernel, {"HEAD_DIM": 64, "BLOCK_N": 64}),
        (pool._pool_plan_kernel, {"BLOCK_R": 64, "BLOCK_C": 128}),
        (pool._pool_prefix_kernel, {"BLOCK_G": 4, "BLOCK_M": 8, "BLOCK_N": 64, "BLOCK_D": 64, "IEEE": ieee}),
        (pool._pool_rows_kernel, {"BLOCK_H": 16, "BLOCK_N": 64, "PREFIX_BLOCK_N": 64, "BLOCK_D": 64, "IEEE": ieee,
                                  "CASCADE": True}),
        (pool._pool_rows_kernel, {"BLOCK_H": 16, "BLOCK_N": 32, "PREFIX_BLOCK_N": 32, "BLOCK_D": 128, "IEEE": ieee,
                                  "CASCADE": False}),
    ]
    for k, consts in kernels:
        sig = {}
        for name in inspect.signature(k.fn).parameters:
            if name in consts:
                sig[name] = "constexpr"
            elif name == "mask_ptr":
                sig[name] = "*u8"
            elif name in ("rows_ptr", "slots_ptr", "idx_ptr"):
                sig[name] = "*i64"
            elif name in ("lead_ptr", "cnt_ptr", "dsh_ptr"):
                sig[name] = "*i32"
            elif name in ("pm_ptr", "pl_ptr", "pacc_ptr"):
                sig[name] = "*fp32"
            elif name.endswith("_ptr"):
                sig[name] = f"*{dt}"
            elif name in ("eps", "qk_scale"):
                sig[name] = "fp32"
            else:
                sig[name] = "i32"
        src = ASTSource(fn=JITFunction(k.fn), signature=sig, constexprs=consts)
        compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
        assert "cubin" in compiled.asm, k.fn.__name__


# --------------------------------------------------------------------------------------
# references vs naive formulas (plain torch, no triton needed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("d", [96, 576])
def test_rmsnorm_reference_matches_hf_llama_rmsnorm(dtype, d):
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    g = torch.Generator().manual_seed(d)
    hidden = torch.randn(7, 3, d, generator=g).to(dtype)
    rows = torch.tensor([6, 0, 3, 5], dtype=torch.int32)
    norm = llama.LlamaRMSNorm(d, eps=1e-6).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(1.0 + 0.3 * torch.randn(d, generator=g))
        expected = norm(hidden[rows.long()])
    got = pk.gathered_rmsnorm_reference(hidden, rows, norm.weight.detach(), 1e-6)
    assert got.dtype == expected.dtype and got.is_contiguous()
    assert torch.equal(got, expected)
    # the CPU dispatcher is the reference
    assert torch.equal(pk.gathered_rmsnorm(hidden, rows, norm.weight.detach(), 1e-6), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_scatter_reference_matches_naive_loop(dtype):
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(9, 2, 100, generator=g).to(dtype)
    rows = torch.tensor([8, 2, 5], dtype=torch.int64)
    delta = torch.randn(3, 2, 100, generator=g).to(dtype)
    expected = hidden.clone()
    for i, r in enumerate(rows.tolist()):
        expected[r] = expected[r] + delta[i]
    got = hidden.clone()
    pk.residual_scatter_add_reference(got, rows, delta)
    assert torch.equal(bits(got), bits(expected))
    got2 = hidden.clone()
    assert pk.residual_scatter_add_(got2, rows.int(), delta) is None  # CPU dispatcher
    assert torch.equal(bits(got2), bits(expected))


def _naive_attention(q, k_cache, v_cache, slots, mask, scale):
    n, Hq, hd = q.shape
    Hkv = k_cache.shape[1]
    out = torch.zeros(n, Hq, hd, dtype=torch.float64)
    for i in range(n):
        s = int(slots[i])
        cols = [j for j in range(mask.shape[1]) if bool(mask[i, j])]
        for h in range(Hq):
            kvh = h // (Hq // Hkv)
            logits = [float((q[i, h].double() * k_cache[s, kvh, j].double()).sum()) * scale for j in cols]
            mx = max(logits)
            w = [math.exp(x - mx) for x in logits]
            z = sum(w)
            for wj, j in zip(w, cols):
                out[i, h] += (wj / z) * v_cache[s, kvh, j].double()
    return out


@pytest.mark.parametrize("shape", [0, 1, 2])
def test_attention_reference_matches_naive_softmax(shape):
    p = ATTN_SHAPES[shape]
    q, kc, vc, slots, mask, scale = _attn_inputs(p, torch.float32, seed=5)
    got = pk.slot_decode_attention_reference(q, kc, vc, slots, mask, scale)
    expected = _naive_attention(q, kc, vc, slots, mask, scale)
    assert rel_err(got, expected) <= 1e-5
    assert torch.equal(pk.slot_decode_attention(q, kc, vc, slots, mask, scale), got)  # CPU dispatcher


def test_attention_reference_all_masked_row_gives_zeros():
    q, kc, vc, slots, mask, scale = _attn_inputs(ATTN_SHAPES[1], torch.float32)
    mask[1] = False
    got = pk.slot_decode_attention_reference(q, kc, vc, slots, mask, scale)
    assert torch.equal(got[1], torch.zeros_like(got[1]))
    assert not torch.isnan(got).any()


@pytest.mark.parametrize("shape", [1, 2, 5])
def test_pool_reference_matches_naive_softmax(shape):
    q, pk_, pv_, idx, mask, scale = _pool_inputs(POOL_SHAPES[shape], torch.float32, seed=9)
    got = pk.pool_decode_attention_reference(q, pk_, pv_, idx, mask, scale)
    kc, vc = pk_[idx.long()].transpose(1, 2), pv_[idx.long()].transpose(1, 2)   # one slot per row
    expected = _naive_attention(q, kc, vc, torch.arange(q.shape[0]), mask, scale)
    assert rel_err(got, expected) <= 1e-5
    assert torch.equal(pk.pool_decode_attention(q, pk_, pv_, idx, mask, scale), got)  # CPU dispatcher


def test_pool_cascade_plan_reference_by_hand():
    mod = sys.modules["polar_kernels.pool_decode_attention"]
    idx = torch.tensor([[5, 6, 7, 8], [9, 1, 1, 1], [5, 6, 3, 8], [5, 6, 7, 4], [9, 2, 1, 1]])
    mask = torch.ones(5, 4, dtype=torch.bool)
    mask[3, 3] = False                        # row 3 differs from row 0 only where it does not look
    lead, count, shared = mod.pool_cascade_plan_reference(idx, mask)
    assert lead.tolist() == [0, 1, 0, 0, 1]
    assert count.tolist() == [3, 2, 0, 0, 0]
    assert shared.tolist() == [2, 1, 4, 4, 4]


def test_pool_argument_validation():
    q, kv = torch.randn(2, 4, 16), torch.randn(10, 2, 16)
    idx, mask = torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.bool)
    with pytest.raises(ValueError):  # mask shape
        pk.pool_decode_attention(q, kv, kv, idx, mask[:, :4], 0.25)
    with pytest.raises(TypeError):  # float index
        pk.pool_decode_attention(q, kv, kv, idx.float(), mask, 0.25)
    with pytest.raises(ValueError):  # Hq not a multiple of Hkv
        pk.pool_decode_attention(torch.randn(2, 3, 16), kv, kv, idx, mask, 0.25)
    with pytest.raises(ValueError):  # head dim
        pk.pool_decode_attention(torch.randn(2, 4, 8), kv, kv, idx, mask, 0.25)


def test_cuda_without_triton_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(_dispatch, "HAS_TRITON", False)
    h = torch.empty(2, 1, 8, device="meta")
    with pytest.raises(RuntimeError, match="need Triton"):
        pk.gathered_rmsnorm(h, torch.tensor([1], device="meta"), torch.empty(8, device="meta"), 1e-6)


NO_TRITON_SCRIPT = r"""
import sys
sys.modules["triton"] = None  # make `import triton` fail
import torch
import polar_kernels as pk
assert not pk.HAS_TRITON
h = torch.randn(4, 2, 96); rows = torch.tensor([3, 1]); w = torch.ones(96)
assert torch.equal(pk.gathered_rmsnorm(h, rows, w, 1e-6), pk.gathered_rmsnorm_reference(h, rows, w, 1e-6))
pk.residual_scatter_add_(h, rows, torch.randn(2, 2, 96))
q = torch.randn(2, 4, 64); kv = torch.randn(3, 2, 8, 64); m = torch.ones(2, 5, dtype=torch.bool)
assert pk.slot_decode_attention(q, kv, kv, rows.clamp(max=2), m, 0.125).shape == (2, 4, 64)
try:
    pk.gathered_rmsnorm_triton(h, rows, w, 1e-6)
except RuntimeError as e:
    assert "not importable" in str(e)
else:
    raise AssertionError("expected RuntimeError")
print("OK")
"""


def test_references_work_without_triton():
    proc = subprocess.run([sys.executable, "-c", NO_TRITON_SCRIPT], capture_output=True, text=True,
                          timeout=300, cwd=os.path.dirname(HERE))
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr


def test_argument_validation():
    h = torch.randn(3, 2, 8)
    with pytest.raises(ValueError):
        pk.gathered_rmsnorm(h, torch.tensor([[0]]), torch.ones(8), 1e-6)
    with pytest.raises(TypeError):
        pk.gathered_rmsnorm(h, torch.tensor([0.0]), torch.ones(8), 1e-6)
    with pytest.raises(ValueError):
        pk.residual_scatter_add_(h, torch.tensor([0, 1]), torch.randn(1, 2, 8))
    q = torch.randn(2, 3, 16)
    kv = torch.randn(4, 2, 5, 16)
    with pytest.raises(ValueError):  # Hq not a multiple of Hkv
        pk.slot_decode_attention(q, kv, kv, torch.tensor([0, 1]), torch.ones(2, 5, dtype=torch.bool), 0.25)
    with pytest.raises(ValueError):  # Lq > L
        pk.slot_decode_attention(torch.randn(2, 4, 16), kv, kv, torch.tensor([0, 1]),
                                 torch.ones(2, 6, dtype=torch.bool), 0.25)


# --------------------------------------------------------------------------------------

if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--interp-cases":
        if not _dispatch.triton_imported_in_interpret_mode():
            sys.exit("run with TRITON_INTERPRET=1 in the environment")
        res = run_cases(CASE_IDS)
        with open(sys.argv[2], "w") as f:
            json.dump(res, f)
        bad = [k for k, v in res.items() if not v["ok"]]
        print(f"{len(res) - len(bad)}/{len(res)} interpreter cases ok", *bad)
        sys.exit(0)
    sys.exit(f"usage: TRITON_INTERPRET=1 {sys.argv[0]} --interp-cases OUT.json")
