"""Gathered RMSNorm: ``rmsnorm(hidden[rows]) * weight`` reading rows straight from the
hidden-state buffer (no separate gather copy).

Numerics follow Hugging Face ``LlamaRMSNorm``::

    x32 = x.float()
    y = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return weight * y            # dtype: torch.promote_types(weight.dtype, x.dtype)
"""
from __future__ import annotations

import torch

from ._dispatch import HAS_TRITON, require_triton, check_out, check_rows, kernel, next_pow2, use_triton

__all__ = [
    "gathered_rmsnorm",
    "gathered_rmsnorm_reference",
    "gathered_rmsnorm_triton",
]


def _check(hidden, rows, weight, what):
    if hidden.dim() != 3:
        raise ValueError(f"{what}: hidden must be [B, T, d], got {tuple(hidden.shape)}")
    d = hidden.shape[-1]
    if weight.shape != (d,):
        raise ValueError(f"{what}: weight must be [{d}], got {tuple(weight.shape)}")
    if weight.device != hidden.device:
        raise ValueError(f"{what}: weight is on {weight.device}, hidden on {hidden.device}")
    check_rows(rows, hidden.device)


def _out_dtype(hidden, weight):
    return torch.promote_types(weight.dtype, hidden.dtype)


def gathered_rmsnorm_reference(hidden: torch.Tensor, rows: torch.Tensor, weight: torch.Tensor,
                               eps: float, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Plain torch: ``weight * rmsnorm(hidden[rows])`` as in HF LlamaRMSNorm, ``[n, T, d]``."""
    _check(hidden, rows, weight, "gathered_rmsnorm_reference")
    n, (_, T, d) = rows.shape[0], hidden.shape
    x = hidden.index_select(0, rows.long())
    x32 = x.float()
    y = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(hidden.dtype)
    res = weight * y
    if out is None:
        return res.contiguous()
    check_out(out, (n, T, d), _out_dtype(hidden, weight), hidden.device, "gathered_rmsnorm_reference")
    out.copy_(res)
    return out


if HAS_TRITON:
    import triton.language as tl

    @kernel
    def _gathered_rmsnorm_kernel(
        hidden_ptr, rows_ptr, weight_ptr, out_ptr,
        T, D,
        stride_hb, stride_ht,
        eps,
        BLOCK_D: tl.constexpr,
    ):
        # one program per (wave row i, position t)
        pid = tl.program_id(0)
        i = pid // T
        t = pid % T
        r = tl.load(rows_ptr + i).to(tl.int64)
        cols = tl.arange(0, BLOCK_D)
        cmask = cols < D
        src = hidden_ptr + r * stride_hb + t.to(tl.int64) * stride_ht
        x = tl.load(src + cols, mask=cmask, other=0.0)
        x32 = x.to(tl.float32)
        var = tl.sum(x32 * x32, axis=0) / D
        rstd = tl.rsqrt(var + eps)
        # round to the input dtype first (HF), then multiply by the weight in the output dtype;
        # the product of two <=16-bit floats is exact in fp32, so fp32 multiply + one rounding
        # equals the correctly rounded product torch computes.
        y = (x32 * rstd).to(x.dtype)
        w = tl.load(weight_ptr + cols, mask=cmask, other=0.0)
        res = w.to(tl.float32) * y.to(tl.float32)
        dst = out_ptr + pid.to(tl.int64) * D
        tl.store(dst + cols, res.to(out_ptr.dtype.element_ty), mask=cmask)


def gathered_rmsnorm_triton(hidden: torch.Tensor, rows: torch.Tensor, weight: torch.Tensor,
                            eps: float, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Triton path (compiled on CUDA; Triton interpreter on CPU tensors)."""
    require_triton("gathered_rmsnorm_triton")
    _check(hidden, rows, weight, "gathered_rmsnorm_triton")
    B, T, d = hidden.shape
    n = rows.shape[0]
    if hidden.stride(2) != 1:
        raise ValueError("gathered_rmsnorm_triton: hidden's last dim must be contiguous")
    weight = weight.contiguous()
    rows = rows.contiguous()
    odt = _out_dtype(hidden, weight)
    if out is None:
        out = torch.empty((n, T, d), dtype=odt, device=hidden.device)
    else:
        check_out(out, (n, T, d), odt, hidden.device, "gathered_rmsnorm_triton")
    if n == 0 or T == 0:
        return out
    BLOCK_D = next_pow2(d)
    num_warps = 4 if BLOCK_D <= 2048 else (8 if BLOCK_D <= 8192 else 16)
    _gathered_rmsnorm_kernel.on(hidden.device)[(n * T,)](
        hidden, rows, weight, out,
        T, d,
        hidden.stride(0), hidden.stride(1),
        float(eps),
        BLOCK_D=BLOCK_D,
        num_warps=num_warps,
    )
    return out


def gathered_rmsnorm(hidden: torch.Tensor, rows: torch.Tensor, weight: torch.Tensor,
                     eps: float, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """``weight * rmsnorm(hidden[rows])``, contiguous ``[n, T, d]``.

    Triton on CUDA tensors, torch reference on CPU tensors.
    """
    if use_triton(hidden, "gathered_rmsnorm"):
        return gathered_rmsnorm_triton(hidden, rows, weight, eps, out=out)
    return gathered_rmsnorm_reference(hidden, rows, weight, eps, out=out)
