"""Decode attention over a slot-major KV store, read by slot index (no gathered copy).

One new query token per wave row ``i``: it attends to columns ``j < Lq`` of the cache slot
``slots[i]`` for which ``key_mask[i, j]`` is True (the mask carries left/right padding,
not-yet-written columns and sliding windows). GQA: query head ``h`` reads kv head
``h // (Hq // Hkv)``. Scores, softmax and the weighted sum are computed in fp32; the
result is cast to ``q.dtype``. A row whose mask is all False gets zeros (callers must not
rely on it; the executor guarantees at least one True per row).
"""
from __future__ import annotations

import math

import torch

from ._dispatch import HAS_TRITON, require_triton, check_out, check_rows, kernel, use_triton

__all__ = [
    "slot_decode_attention",
    "slot_decode_attention_reference",
    "slot_decode_attention_triton",
]


def _check(q, k_cache, v_cache, slots, key_mask, what):
    if q.dim() != 3:
        raise ValueError(f"{what}: q must be [n, Hq, hd], got {tuple(q.shape)}")
    if k_cache.dim() != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(
            f"{what}: k_cache/v_cache must both be [S, Hkv, L, hd], got "
            f"{tuple(k_cache.shape)} / {tuple(v_cache.shape)}"
        )
    n, Hq, hd = q.shape
    S, Hkv, L, hdk = k_cache.shape
    if hdk != hd:
        raise ValueError(f"{what}: head dim mismatch q {hd} vs cache {hdk}")
    if Hkv == 0 or Hq % Hkv != 0:
        raise ValueError(f"{what}: Hq={Hq} must be a multiple of Hkv={Hkv}")
    check_rows(slots, q.device, "slots")
    if slots.shape[0] != n:
        raise ValueError(f"{what}: slots must be [{n}], got {tuple(slots.shape)}")
    if key_mask.dtype != torch.bool or key_mask.dim() != 2 or key_mask.shape[0] != n:
        raise ValueError(f"{what}: key_mask must be bool [{n}, Lq], got {key_mask.dtype} {tuple(key_mask.shape)}")
    if key_mask.shape[1] > L:
        raise ValueError(f"{what}: key_mask has Lq={key_mask.shape[1]} columns > cache length L={L}")
    for t, name in ((k_cache, "k_cache"), (v_cache, "v_cache"), (key_mask, "key_mask")):
        if t.device != q.device:
            raise ValueError(f"{what}: {name} is on {t.device}, q on {q.device}")


def slot_decode_attention_reference(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                                    slots: torch.Tensor, key_mask: torch.Tensor, scale: float,
                                    *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Plain torch (gathers the rows' slots, fp32 masked softmax). Returns ``[n, Hq, hd]``."""
    _check(q, k_cache, v_cache, slots, key_mask, "slot_decode_attention_reference")
    n, Hq, hd = q.shape
    Hkv = k_cache.shape[1]
    Lq = key_mask.shape[1]
    g = Hq // Hkv
    idx = slots.long()
    k = k_cache.index_select(0, idx)[:, :, :Lq].float()  # [n, Hkv, Lq, hd]
    v = v_cache.index_select(0, idx)[:, :, :Lq].float()
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
    check_out(out, (n, Hq, hd), q.dtype, q.device, "slot_decode_attention_reference")
    out.copy_(res)
    return out


if HAS_TRITON:
    import triton.language as tl

    @kernel
    def _slot_decode_attention_kernel(
        q_ptr, k_ptr, v_ptr, slots_ptr, mask_ptr, out_ptr,
        Lq, GROUP,
        stride_qn, stride_qh,
        stride_ks, stride_kh, stride_kl,
        stride_vs, stride_vh, stride_vl,
        stride_mn,
        stride_on, stride_oh,
        qk_scale,
        HEAD_DIM: tl.constexpr,
        BLOCK_N: tl.constexpr,
    ):
        # grid: (n, Hq); one program = one query token and one query head
        i = tl.program_id(0)
        h = tl.program_id(1)
        kvh = h // GROUP
        slot = tl.load(slots_ptr + i).to(tl.int64)
        dd = tl.arange(0, HEAD_DIM)
        # fold softmax scale and log2(e) into q so the loop uses exp2
        q = tl.load(q_ptr + i.to(tl.int64) * stride_qn + h * stride_qh + dd).to(tl.float32) * qk_scale
        k_base = k_ptr + slot * stride_ks + kvh.to(tl.int64) * stride_kh
        v_base = v_ptr + slot * stride_vs + kvh.to(tl.int64) * stride_vh
        m_base = mask_ptr + i.to(tl.int64) * stride_mn

        m_i = tl.max(tl.full([BLOCK_N], float("-inf"), tl.float32), axis=0)
        l_i = tl.sum(tl.zeros([BLOCK_N], tl.float32), axis=0)
        acc = tl.zeros([HEAD_DIM], tl.float32)
        for start in range(0, Lq, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N)
            valid = tl.load(m_base + cols, mask=cols < Lq, other=0) != 0
            kv_off = cols.to(tl.int64)[:, None]
            k = tl.load(k_base + kv_off * stride_kl + dd[None, :], mask=valid[:, None], other=0.0)
            s = tl.sum(k.to(tl.float32) * q[None, :], axis=1)
            s = tl.where(valid, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=0))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp2(m_i - m_safe)
            p = tl.exp2(s - m_safe)
            l_i = l_i * alpha + tl.sum(p, axis=0)
            v = tl.load(v_base + kv_off * stride_vl + dd[None, :], mask=valid[:, None], other=0.0)
            acc = acc * alpha + tl.sum(p[:, None] * v.to(tl.float32), axis=0)
            m_i = m_new
        denom = tl.where(l_i > 0.0, l_i, 1.0)
        o = acc / denom
        o_ptrs = out_ptr + i.to(tl.int64) * stride_on + h * stride_oh + dd
        tl.store(o_ptrs, o.to(out_ptr.dtype.element_ty))


def slot_decode_attention_triton(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                                 slots: torch.Tensor, key_mask: torch.Tensor, scale: float,
                                 *, out: torch.Tensor | None = None,
                                 block_n: int | None = None) -> torch.Tensor:
    """Triton path (compiled on CUDA; Triton interpreter on CPU tensors)."""
    require_triton("slot_decode_attention_triton")
    _check(q, k_cache, v_cache, slots, key_mask, "slot_decode_attention_triton")
    n, Hq, hd = q.shape
    Hkv = k_cache.shape[1]
    Lq = key_mask.shape[1]
    if hd & (hd - 1) != 0 or hd < 16:
        raise ValueError(f"slot_decode_attention_triton: head dim must be a power of two >= 16, got {hd}")
    if q.stride(2) != 1:
        q = q.contiguous()
    if k_cache.stride(3) != 1 or v_cache.stride(3) != 1:
        raise ValueError("slot_decode_attention_triton: k_cache/v_cache last dim must be contiguous")
    key_mask = key_mask.contiguous().view(torch.uint8)
    slots = slots.contiguous()
    if out is None:
        out = torch.empty((n, Hq, hd), dtype=q.dtype, device=q.device)
    else:
        check_out(out, (n, Hq, hd), q.dtype, q.device, "slot_decode_attention_triton")
    if n == 0 or Hq == 0:
        return out
    if block_n is None:
        block_n = 64 if hd <= 64 else 32
    _slot_decode_attention_kernel.on(q.device)[(n, Hq)](
        q, k_cache, v_cache, slots, key_mask, out,
        Lq, Hq // Hkv,
        q.stride(0), q.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        key_mask.stride(0),
        out.stride(0), out.stride(1),
        float(scale) * math.log2(math.e),
        HEAD_DIM=hd,
        BLOCK_N=block_n,
        num_warps=4,
    )
    return out


def slot_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                          slots: torch.Tensor, key_mask: torch.Tensor, scale: float,
                          *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Decode attention for one new token per row, ``[n, Hq, hd]`` in ``q.dtype``.

    Triton on CUDA tensors, torch reference on CPU tensors.
    """
    if use_triton(q, "slot_decode_attention"):
        return slot_decode_attention_triton(q, k_cache, v_cache, slots, key_mask, scale, out=out)
    return slot_decode_attention_reference(q, k_cache, v_cache, slots, key_mask, scale, out=out)
