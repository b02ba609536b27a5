"""Residual scatter-add: ``hidden[rows] += delta`` in place on the full hidden-state buffer.

The add is done in fp32 and rounded once to ``hidden.dtype`` (what torch does for
bf16/fp16 on both CPU and CUDA; for two <=16-bit floats fp32 then a second rounding is
exact-equivalent). Rows not in ``rows`` are never written.
"""
from __future__ import annotations

import torch

from ._dispatch import HAS_TRITON, require_triton, check_rows, kernel, next_pow2, use_triton

__all__ = [
    "residual_scatter_add_",
    "residual_scatter_add_reference",
    "residual_scatter_add_triton",
    "residual_scatter_add_reference_",
    "residual_scatter_add_triton_",
]


def _check(hidden, rows, delta, what):
    if hidden.dim() != 3:
        raise ValueError(f"{what}: hidden must be [B, T, d], got {tuple(hidden.shape)}")
    check_rows(rows, hidden.device)
    n = rows.shape[0]
    if tuple(delta.shape) != (n, hidden.shape[1], hidden.shape[2]):
        raise ValueError(
            f"{what}: delta must be [{n}, {hidden.shape[1]}, {hidden.shape[2]}], got {tuple(delta.shape)}"
        )
    if delta.device != hidden.device:
        raise ValueError(f"{what}: delta is on {delta.device}, hidden on {hidden.device}")


def residual_scatter_add_reference(hidden: torch.Tensor, rows: torch.Tensor,
                                    delta: torch.Tensor) -> None:
    """Plain torch: ``hidden[rows] = (hidden[rows] + delta).to(hidden.dtype)``; rows distinct."""
    _check(hidden, rows, delta, "residual_scatter_add_reference")
    idx = rows.long()
    new = (hidden.index_select(0, idx) + delta).to(hidden.dtype)
    hidden.index_copy_(0, idx, new)


if HAS_TRITON:
    import triton.language as tl

    @kernel
    def _residual_scatter_add_kernel(
        hidden_ptr, rows_ptr, delta_ptr,
        T, D,
        stride_hb, stride_ht,
        stride_db, stride_dt,
        BLOCK_D: tl.constexpr,
    ):
        # grid: (n * T, cdiv(D, BLOCK_D))
        pid = tl.program_id(0)
        pd = tl.program_id(1)
        i = pid // T
        t = (pid % T).to(tl.int64)
        r = tl.load(rows_ptr + i).to(tl.int64)
        cols = pd * BLOCK_D + tl.arange(0, BLOCK_D)
        cmask = cols < D
        h_ptrs = hidden_ptr + r * stride_hb + t * stride_ht + cols
        d_ptrs = delta_ptr + i.to(tl.int64) * stride_db + t * stride_dt + cols
        h = tl.load(h_ptrs, mask=cmask, other=0.0)
        dl = tl.load(d_ptrs, mask=cmask, other=0.0)
        res = h.to(tl.float32) + dl.to(tl.float32)
        tl.store(h_ptrs, res.to(hidden_ptr.dtype.element_ty), mask=cmask)


def residual_scatter_add_triton(hidden: torch.Tensor, rows: torch.Tensor,
                                 delta: torch.Tensor) -> None:
    """Triton path (compiled on CUDA; Triton interpreter on CPU tensors)."""
    require_triton("residual_scatter_add_triton")
    _check(hidden, rows, delta, "residual_scatter_add_triton")
    _, T, d = hidden.shape
    n = rows.shape[0]
    if hidden.stride(2) != 1:
        raise ValueError("residual_scatter_add_triton: hidden's last dim must be contiguous")
    if delta.stride(2) != 1:
        delta = delta.contiguous()
    rows = rows.contiguous()
    if n == 0 or T == 0 or d == 0:
        return None
    BLOCK_D = min(next_pow2(d), 4096)
    grid = (n * T, _cdiv(d, BLOCK_D))
    _residual_scatter_add_kernel.on(hidden.device)[grid](
        hidden, rows, delta,
        T, d,
        hidden.stride(0), hidden.stride(1),
        delta.stride(0), delta.stride(1),
        BLOCK_D=BLOCK_D,
        num_warps=4 if BLOCK_D <= 2048 else 8,
    )
    return None


def _cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def residual_scatter_add_(hidden: torch.Tensor, rows: torch.Tensor, delta: torch.Tensor) -> None:
    """In place ``hidden[rows] += delta`` (rows distinct). Triton on CUDA, torch on CPU."""
    if use_triton(hidden, "residual_scatter_add_"):
        return residual_scatter_add_triton(hidden, rows, delta)
    return residual_scatter_add_reference(hidden, rows, delta)


# trailing-underscore aliases (in-place naming convention)
residual_scatter_add_reference_ = residual_scatter_add_reference
residual_scatter_add_triton_ = residual_scatter_add_triton
