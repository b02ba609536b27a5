"""Decode attention over a pooled KV store read through an index table, with cascade sharing.

One new query token per wave row ``i``: it attends to the pool entries ``read_index[i, j]``
(``j < K``) for which ``key_mask[i, j]`` is True. The pool is one flat store of key/value
columns ``pool_k``/``pool_v`` ``[P, Hkv, hd]`` (``polar.runtime.cache.PooledKVCache``), like paged
attention with one-token pages. GQA: query head ``h`` reads kv head ``h // (Hq // Hkv)``.
Scores, softmax and the weighted sum are in fp32; the result is cast to ``q.dtype``; a row
whose mask is all False gets zeros.

Cascade (shared prefixes, docs/architecture.md section 9): rows that read the same entries over
their first ``S`` columns (where their masks are True) share those keys. The Triton path finds
such groups on the device, with no host synchronisation: a row's *leader* is the first row whose
index row starts with the same entry, and ``S`` is the longest prefix over which every member
agrees with its leader. When a group has at least two rows and ``S >= min_shared``, the keys of
columns ``[0, S)`` are read once for all of its rows (every member's query heads against each
key block, a matrix product; the columns split over ``num_splits`` programs), each row then reads
its own columns ``[S, K)``, and the parts are merged by their log-sum-exp. Other rows read all
their columns themselves. Launches: a memset, ``_pool_plan_kernel`` ``(n,)``,
``_pool_prefix_kernel`` ``(n, Hkv, splits)`` and ``_pool_rows_kernel`` ``(n, Hkv)`` (the last only,
with ``cascade=False`` or ``n == 1``). Any head size works (padded to a power of two >= 16).
Products use ``tl.dot``: exact fp32 for fp32 inputs, the tensor-core dot for bf16/fp16 on CUDA;
on CPU (the interpreter, whose ``tl.dot`` mishandles bf16) every operand is upcast to fp32, so
the interpreter tests do not run the bf16 dot itself (the sm_90 compile test and
``bench/gpu_check.sh`` do).
"""
from __future__ import annotations

import math

import torch

from ._dispatch import HAS_TRITON, check_out, kernel, next_pow2, require_triton, use_triton

__all__ = [
    "pool_decode_attention",
    "pool_decode_attention_reference",
    "pool_decode_attention_triton",
]

#: Shared prefixes shorter than this are read by each row itself (the cascade pass costs a launch
#: and a merge; below a few key blocks it does not pay).
MIN_SHARED = 16


def _check(q, pool_k, pool_v, read_index, key_mask, what):
    if q.dim() != 3:
        raise ValueError(f"{what}: q must be [n, Hq, hd], got {tuple(q.shape)}")
    if pool_k.dim() != 3 or pool_k.shape != pool_v.shape:
        raise ValueError(f"{what}: pool_k/pool_v must both be [P, Hkv, hd], got "
                         f"{tuple(pool_k.shape)} / {tuple(pool_v.shape)}")
    n, Hq, hd = q.shape
    P, Hkv, hdk = pool_k.shape
    if hdk != hd:
        raise ValueError(f"{what}: head dim mismatch q {hd} vs pool {hdk}")
    if Hkv == 0 or Hq % Hkv != 0:
        raise ValueError(f"{what}: Hq={Hq} must be a multiple of Hkv={Hkv}")
    if read_index.dim() != 2 or read_index.shape[0] != n:
        raise ValueError(f"{what}: read_index must be [{n}, K], got {tuple(read_index.shape)}")
    if read_index.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"{what}: read_index must be int32 or int64, got {read_index.dtype}")
    if key_mask.dtype != torch.bool or tuple(key_mask.shape) != tuple(read_index.shape):
        raise ValueError(f"{what}: key_mask must be bool {tuple(read_index.shape)}, got "
                         f"{key_mask.dtype} {tuple(key_mask.shape)}")
    for t, name in ((pool_k, "pool_k"), (pool_v, "pool_v"), (read_index, "read_index"), (key_mask, "key_mask")):
        if t.device != q.device:
            raise ValueError(f"{what}: {name} is on {t.device}, q on {q.device}")


def pool_decode_attention_reference(q: torch.Tensor, pool_k: torch.Tensor, pool_v: torch.Tensor,
                                    read_index: torch.Tensor, key_mask: torch.Tensor, scale: float,
                                    *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Plain torch (gathers every row's entries, fp32 masked softmax). Returns ``[n, Hq, hd]``.

    ``q`` ``[n, Hq, hd]``; ``pool_k``/``pool_v`` ``[P, Hkv, hd]``; ``read_index`` ``[n, K]`` (int32/int64
    entries ``< P``); ``key_mask`` bool ``[n, K]``. Raises ``ValueError`` on mismatched shapes."""
    _check(q, pool_k, pool_v, read_index, key_mask, "pool_decode_attention_reference")
    n, Hq, hd = q.shape
    g = Hq // pool_k.shape[1]
    idx = read_index.long()
    k = pool_k[idx].float().transpose(1, 2)                              # [n, Hkv, K, hd]
    v = pool_v[idx].float().transpose(1, 2)
    if g > 1:
        k = k.repeat_interleave(g, dim=1)
        v = v.repeat_interleave(g, dim=1)
    scores = torch.einsum("nhd,nhld->nhl", q.float(), k) * float(scale)
    scores = scores.masked_fill(~key_mask[:, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    has_key = key_mask.any(dim=-1)[:, None, None]
    probs = torch.where(has_key, probs, torch.zeros((), dtype=probs.dtype, device=probs.device))
    res = torch.einsum("nhl,nhld->nhd", probs, v).to(q.dtype)
    if out is None:
        return res
    check_out(out, (n, Hq, hd), q.dtype, q.device, "pool_decode_attention_reference")
    out.copy_(res)
    return out


if HAS_TRITON:
    import triton.language as tl

    @kernel(do_not_specialize=("K", "stride_in", "stride_mn"))
    def _pool_plan_kernel(
        idx_ptr, mask_ptr, lead_ptr, cnt_ptr, dsh_ptr,
        K,
        stride_in, stride_mn,
        BLOCK_R: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        # grid (n,): row j finds its leader (first row with the same first entry), counts itself
        # in the leader's group and lowers the group's shared length to its first disagreement.
        j = tl.program_id(0)
        jl = j.to(tl.int64)
        f0 = tl.load(idx_ptr + jl * stride_in)
        lead = j
        rr = tl.arange(0, BLOCK_R)
        for rb in range(0, j + 1, BLOCK_R):
            rows = rb + rr
            ok = rows <= j
            f = tl.load(idx_ptr + rows.to(tl.int64) * stride_in, mask=ok, other=0)
            cand = tl.where(ok & (f == f0), rows, j)
            lead = tl.minimum(lead, tl.min(cand, axis=0))
        tl.store(lead_ptr + j, lead)
        tl.atomic_add(cnt_ptr + lead, 1)
        first = j * 0 + K  # first column where row j reads another entry than its leader
        if lead != j:
            ll = lead.to(tl.int64)
            cc = tl.arange(0, BLOCK_C)
            start = j * 0
            while start < first:
                cols = start + cc
                ok = cols < K
                a = tl.load(idx_ptr + jl * stride_in + cols, mask=ok, other=0)
                b = tl.load(idx_ptr + ll * stride_in + cols, mask=ok, other=0)
                m = tl.load(mask_ptr + jl * stride_mn + cols, mask=ok, other=0) != 0
                bad = ok & m & (a != b)
                first = tl.minimum(first, tl.min(tl.where(bad, cols, K), axis=0))
                start += BLOCK_C
        # stored as K - shared length so that a zero-initialised buffer and atomic_max give the minimum
        tl.atomic_max(dsh_ptr + lead, K - first)

    @kernel(do_not_specialize=("n", "K", "stride_in", "stride_mn"))
    def _pool_prefix_kernel(
        q_ptr, k_ptr, v_ptr, idx_ptr, mask_ptr, lead_ptr, cnt_ptr, dsh_ptr,
        pm_ptr, pl_ptr, pacc_ptr,
        n, K, GROUP, HQ, HD, MIN_SH, NSPLIT,
        stride_qn, stride_qh,
        stride_kp, stride_kh,
        stride_vp, stride_vh,
        stride_in, stride_mn,
        qk_scale,
        BLOCK_G: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_D: tl.constexpr,
        IEEE: tl.constexpr,
    ):
        # grid (n, Hkv, NSPLIT): leader i's group, kv head kvh, split s of the shared columns [0, S).
        i = tl.program_id(0)
        kvh = tl.program_id(1)
        s = tl.program_id(2)
        lead = tl.load(lead_ptr + i)
        cnt = tl.load(cnt_ptr + i)
        S = K - tl.load(dsh_ptr + i)
        if (lead == i) & (cnt >= 2) & (S >= MIN_SH):
            chunk = tl.cdiv(tl.cdiv(S, NSPLIT), BLOCK_N) * BLOCK_N
            c0 = s * chunk
            c1 = tl.minimum(c0 + chunk, S)
            if c0 < c1:
                il = i.to(tl.int64)
                qq = tl.arange(0, BLOCK_M * BLOCK_G)
                hh = qq % BLOCK_G
                dd = tl.arange(0, BLOCK_D)
                dok = dd < HD
                nn = tl.arange(0, BLOCK_N)
                k_base = k_ptr + kvh.to(tl.int64) * stride_kh
                v_base = v_ptr + kvh.to(tl.int64) * stride_vh
                for rb in range(0, n, BLOCK_M):
                    rows = rb + qq // BLOCK_G
                    member = tl.load(lead_ptr + rows, mask=rows < n, other=-1) == i
                    qok = member & (hh < GROUP)
                    if tl.sum(qok.to(tl.int32), axis=0) > 0:
                        rl = rows.to(tl.int64)
                        heads = kvh * GROUP + hh
                        q = tl.load(q_ptr + rl[:, None] * stride_qn + heads[:, None] * stride_qh + dd[None, :],
                                    mask=qok[:, None] & dok[None, :], other=0.0)
                        m_i = tl.full([BLOCK_M * BLOCK_G], float("-inf"), tl.float32)
                        l_i = tl.zeros([BLOCK_M * BLOCK_G], tl.float32)
                        acc = tl.zeros([BLOCK_M * BLOCK_G, BLOCK_D], tl.float32)
                        for cb in range(c0, c1, BLOCK_N):
                            cols = cb + nn
                            cok = cols < c1
                            ent = tl.load(idx_ptr + il * stride_in + cols, mask=cok, other=0).to(tl.int64)
                            kv_mask = cok[:, None] & dok[None, :]
                            k = tl.load(k_base + ent[:, None] * stride_kp + dd[None, :], mask=kv_mask, other=0.0)
                            if IEEE:
                                sc = tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32)), input_precision="ieee")
                            else:
                                sc = tl.dot(q, tl.trans(k))
                            mk = tl.load(mask_ptr + rl[:, None] * stride_mn + cols[None, :],
                                         mask=qok[:, None] & cok[None, :], other=0) != 0
                            sc = tl.where(mk, sc * qk_scale, float("-inf"))
                            m_new = tl.maximum(m_i, tl.max(sc, axis=1))
                            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
                            alpha = tl.exp2(m_i - m_safe)
                            p = tl.exp2(sc - m_safe[:, None])
                            l_i = l_i * alpha + tl.sum(p, axis=1)
                            v = tl.load(v_base + ent[:, None] * stride_vp + dd[None, :], mask=kv_mask, other=0.0)
                            if IEEE:
                                pv = tl.dot(p, v.to(tl.float32), input_precision="ieee")
                            else:
                                pv = tl.dot(p.to(v.dtype), v)
                            acc = acc * alpha[:, None] + pv
                            m_i = m_new
                        off = (s * n + rl) * HQ + heads
                        tl.store(pm_ptr + off, m_i, mask=qok)
                        tl.store(pl_ptr + off, l_i, mask=qok)
                        tl.store(pacc_ptr + off[:, None] * BLOCK_D + dd[None, :], acc, mask=qok[:, None])

    @kernel(do_not_specialize=("n", "K", "stride_in", "stride_mn"))
    def _pool_rows_kernel(
        q_ptr, k_ptr, v_ptr, idx_ptr, mask_ptr, lead_ptr, cnt_ptr, dsh_ptr,
        pm_ptr, pl_ptr, pacc_ptr, out_ptr,
        n, K, GROUP, HQ, HD, MIN_SH, NSPLIT,
        stride_qn, stride_qh,
        stride_kp, stride_kh,
        stride_vp, stride_vh,
        stride_in, stride_mn,
        stride_on, stride_oh,
        qk_scale,
        BLOCK_H: tl.constexpr,
        BLOCK_N: tl.constexpr,
        PREFIX_BLOCK_N: tl.constexpr,
        BLOCK_D: tl.constexpr,
        IEEE: tl.constexpr,
        CASCADE: tl.constexpr,
    ):
        # grid (n, Hkv): row j's query heads of kv head kvh over its own columns [S, K), merged
        # with its group's shared part [0, S) (written by _pool_prefix_kernel) when S > 0.
        j = tl.program_id(0)
        kvh = tl.program_id(1)
        jl = j.to(tl.int64)
        if CASCADE:
            lead = tl.load(lead_ptr + j)
            cnt = tl.load(cnt_ptr + lead)
            S = K - tl.load(dsh_ptr + lead)
            S = tl.where((cnt >= 2) & (S >= MIN_SH), S, 0)
        else:
            S = j * 0
        hh = tl.arange(0, BLOCK_H)
        hok = hh < GROUP
        heads = kvh * GROUP + hh
        dd = tl.arange(0, BLOCK_D)
        dok = dd < HD
        nn = tl.arange(0, BLOCK_N)
        q = tl.load(q_ptr + jl * stride_qn + heads[:, None] * stride_qh + dd[None, :],
                    mask=hok[:, None] & dok[None, :], other=0.0)
        k_base = k_ptr + kvh.to(tl.int64) * stride_kh
        v_base = v_ptr + kvh.to(tl.int64) * stride_vh
        m_i = tl.full([BLOCK_H], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_H], tl.float32)
        acc = tl.zeros([BLOCK_H, BLOCK_D], tl.float32)
        for cb in range(S, K, BLOCK_N):
            cols = cb + nn
            cok = cols < K
            mk = tl.load(mask_ptr + jl * stride_mn + cols, mask=cok, other=0) != 0
            ent = tl.load(idx_ptr + jl * stride_in + cols, mask=mk, other=0).to(tl.int64)
            kv_mask = mk[:, None] & dok[None, :]
            k = tl.load(k_base + ent[:, None] * stride_kp + dd[None, :], mask=kv_mask, other=0.0)
            if IEEE:
                sc = tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32)), input_precision="ieee")
            else:
                sc = tl.dot(q, tl.trans(k))
            sc = tl.where(mk[None, :], sc * qk_scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(sc, axis=1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp2(m_i - m_safe)
            p = tl.exp2(sc - m_safe[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            v = tl.load(v_base + ent[:, None] * stride_vp + dd[None, :], mask=kv_mask, other=0.0)
            if IEEE:
                pv = tl.dot(p, v.to(tl.float32), input_precision="ieee")
            else:
                pv = tl.dot(p.to(v.dtype), v)
            acc = acc * alpha[:, None] + pv
            m_i = m_new
        if CASCADE:
            if S > 0:
                chunk = tl.cdiv(tl.cdiv(S, NSPLIT), PREFIX_BLOCK_N) * PREFIX_BLOCK_N
                for s in range(0, NSPLIT):
                    if s * chunk < S:
                        off = (s * n + jl) * HQ + heads
                        pm = tl.load(pm_ptr + off, mask=hok, other=float("-inf"))
                        pl = tl.load(pl_ptr + off, mask=hok, other=0.0)
                        pacc = tl.load(pacc_ptr + off[:, None] * BLOCK_D + dd[None, :], mask=hok[:, None], other=0.0)
                        m_new = tl.maximum(m_i, pm)
                        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
                        a = tl.exp2(m_i - m_safe)
                        b = tl.exp2(pm - m_safe)
                        l_i = l_i * a + pl * b
                        acc = acc * a[:, None] + pacc * b[:, None]
                        m_i = m_new
        denom = tl.where(l_i > 0.0, l_i, 1.0)
        o = acc / denom[:, None]
        tl.store(out_ptr + jl * stride_on + heads[:, None] * stride_oh + dd[None, :],
                 o.to(out_ptr.dtype.element_ty), mask=hok[:, None] & dok[None, :])


def pool_cascade_plan_reference(read_index: torch.Tensor,
                                key_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The groups the Triton path finds, in plain torch: ``(leader, count, shared)`` int64 ``[n]``
    each. ``leader[j]``: the first row whose index row starts with the same entry as row ``j``;
    ``count[i]``/``shared[i]`` (for a leader ``i``, else 0 / ``K``): its group's size and the longest
    prefix over which every member reads the leader's entries wherever the member's mask is True."""
    idx = read_index.long()
    n, K = idx.shape
    first = idx[:, 0]
    leader = (first[:, None] == first[None, :]).int().argmax(1)               # first True per row
    bad = (idx != idx[leader]) & key_mask
    cols = torch.arange(K, device=idx.device).expand(n, K)
    f = torch.where(bad, cols, K).min(1).values                             # [n]
    count = torch.zeros(n, dtype=torch.long, device=idx.device).index_add_(0, leader, torch.ones_like(leader))
    shared = torch.full((n,), K, dtype=torch.long, device=idx.device).scatter_reduce_(0, leader, f, "amin")
    return leader, count, shared


def pool_cascade_plan_triton(read_index: torch.Tensor,
                             key_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(leader, count, shared)`` as :func:`pool_cascade_plan_reference` (int32), from the plan
    kernel the Triton attention runs (for tests)."""
    require_triton("pool_cascade_plan_triton")
    n, K = read_index.shape
    read_index = read_index.contiguous()
    mask = key_mask.contiguous().view(torch.uint8)
    plan = torch.zeros((3, n), dtype=torch.int32, device=read_index.device)  # leader, count, K - shared length
    if n:
        _pool_plan_kernel.on(read_index.device)[(n,)](
            read_index, mask, plan[0], plan[1], plan[2], K, read_index.stride(0), mask.stride(0),
            BLOCK_R=64, BLOCK_C=128, num_warps=1,
        )
    return plan[0], plan[1], K - plan[2]


def default_splits(K: int) -> int:
    """Programs per (group, kv head) over the shared columns: one per 256 columns, at most 8."""
    return max(1, min(8, -(-K // 256)))


def pool_decode_attention_triton(q: torch.Tensor, pool_k: torch.Tensor, pool_v: torch.Tensor,
                                 read_index: torch.Tensor, key_mask: torch.Tensor, scale: float,
                                 *, out: torch.Tensor | None = None, cascade: bool = True,
                                 min_shared: int | None = None, num_splits: int | None = None,
                                 block_n: int | None = None) -> torch.Tensor:
    """Triton path (compiled on CUDA; Triton interpreter on CPU tensors). ``cascade=False``: every
    row reads all its columns itself (one launch). ``min_shared``/``num_splits``/``block_n``: tuning
    (see the module docstring; ``min_shared`` defaults to :data:`MIN_SHARED`); results do not depend
    on them beyond float rounding."""
    require_triton("pool_decode_attention_triton")
    _check(q, pool_k, pool_v, read_index, key_mask, "pool_decode_attention_triton")
    n, Hq, hd = q.shape
    Hkv = pool_k.shape[1]
    K = read_index.shape[1]
    if q.stride(2) != 1:
        q = q.contiguous()
    if pool_k.stride(2) != 1 or pool_v.stride(2) != 1:
        raise ValueError("pool_decode_attention_triton: pool_k/pool_v last dim must be contiguous")
    if out is None:
        out = torch.empty((n, Hq, hd), dtype=q.dtype, device=q.device)
    else:
        check_out(out, (n, Hq, hd), q.dtype, q.device, "pool_decode_attention_triton")
    if n == 0 or Hq == 0:
        return out
    if K == 0:
        return out.zero_()
    device = q.device
    read_index = read_index.contiguous()
    mask = key_mask.contiguous().view(torch.uint8)
    group = Hq // Hkv
    BLOCK_D = max(16, next_pow2(hd))
    BLOCK_N = block_n or (64 if BLOCK_D <= 64 else 32)
    # fp32 inputs: exact fp32 products (no tf32). On CPU (the interpreter, whose tl.dot mishandles
    # bf16) every operand is upcast to fp32 as well; CUDA bf16/fp16 uses the native tensor-core dot.
    ieee = q.dtype == torch.float32 or device.type == "cpu"
    qk_scale = float(scale) * math.log2(math.e)
    min_shared = max(1, MIN_SHARED if min_shared is None else int(min_shared))
    cascade = bool(cascade) and n >= 2 and K >= min_shared
    splits = num_splits or default_splits(K)
    strides = (q.stride(0), q.stride(1), pool_k.stride(0), pool_k.stride(1), pool_v.stride(0), pool_v.stride(1),
               read_index.stride(0), mask.stride(0))
    if cascade:
        plan = torch.zeros((3, n), dtype=torch.int32, device=device)          # leader, count, K - shared length
        lead, cnt, dsh = plan[0], plan[1], plan[2]
        _pool_plan_kernel.on(device)[(n,)](
            read_index, mask, lead, cnt, dsh, K, read_index.stride(0), mask.stride(0),
            BLOCK_R=64, BLOCK_C=128, num_warps=1,
        )
        pm = torch.empty((splits, n, Hq), dtype=torch.float32, device=device)
        pl = torch.empty_like(pm)
        pacc = torch.empty((splits, n, Hq, BLOCK_D), dtype=torch.float32, device=device)
        BLOCK_G = next_pow2(group)
        BLOCK_M = max(1, 32 // BLOCK_G)
        _pool_prefix_kernel.on(device)[(n, Hkv, splits)](
            q, pool_k, pool_v, read_index, mask, lead, cnt, dsh, pm, pl, pacc,
            n, K, group, Hq, hd, min_shared, splits, *strides, qk_scale,
            BLOCK_G=BLOCK_G, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D, IEEE=ieee, num_warps=4,
        )
    else:
        lead = cnt = dsh = pm = pl = pacc = out  # not read
    _pool_rows_kernel.on(device)[(n, Hkv)](
        q, pool_k, pool_v, read_index, mask, lead, cnt, dsh, pm, pl, pacc, out,
        n, K, group, Hq, hd, min_shared, splits, *strides, out.stride(0), out.stride(1), qk_scale,
        BLOCK_H=max(16, next_pow2(group)), BLOCK_N=BLOCK_N, PREFIX_BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D,
        IEEE=ieee, CASCADE=cascade, num_warps=4,
    )
    return out


def pool_decode_attention(q: torch.Tensor, pool_k: torch.Tensor, pool_v: torch.Tensor,
                          read_index: torch.Tensor, key_mask: torch.Tensor, scale: float,
                          *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Decode attention for one new token per row over the pool, ``[n, Hq, hd]`` in ``q.dtype``.

    Triton (with cascade sharing) on CUDA tensors, torch reference on CPU tensors (Triton under
    the interpreter inside :func:`polar_kernels.triton_on_cpu`)."""
    if use_triton(q, "pool_decode_attention"):
        return pool_decode_attention_triton(q, pool_k, pool_v, read_index, key_mask, scale, out=out)
    return pool_decode_attention_reference(q, pool_k, pool_v, read_index, key_mask, scale, out=out)
