"""polar_kernels: Triton kernels for wave execution, each with a plain-torch reference.

Dispatchers pick the Triton kernel for CUDA tensors and the torch reference for CPU
tensors. ``*_triton`` functions can be called directly; on CPU tensors they run under the
Triton interpreter (what ``TRITON_INTERPRET=1`` does), which is how the tests check them.
Inside ``triton_on_cpu()`` the dispatchers run the Triton kernels on CPU tensors too (interpreter),
so that the fused runner's real kernels can be tested without a GPU.
Triton is optional: without it the references still work (CUDA tensors then raise).
"""
from ._dispatch import HAS_TRITON, interpret_mode, triton_on_cpu, uses_triton
from .gathered_rmsnorm import (
    gathered_rmsnorm,
    gathered_rmsnorm_reference,
    gathered_rmsnorm_triton,
)
from .pool_decode_attention import (
    pool_decode_attention,
    pool_decode_attention_reference,
    pool_decode_attention_triton,
)
from .residual_scatter import (
    residual_scatter_add_,
    residual_scatter_add_reference,
    residual_scatter_add_reference_,
    residual_scatter_add_triton,
    residual_scatter_add_triton_,
)
from .slot_decode_attention import (
    slot_decode_attention,
    slot_decode_attention_reference,
    slot_decode_attention_triton,
)

__all__ = [
    "HAS_TRITON",
    "interpret_mode",
    "triton_on_cpu",
    "uses_triton",
    "gathered_rmsnorm",
    "gathered_rmsnorm_reference",
    "gathered_rmsnorm_triton",
    "pool_decode_attention",
    "pool_decode_attention_reference",
    "pool_decode_attention_triton",
    "residual_scatter_add_",
    "residual_scatter_add_reference",
    "residual_scatter_add_reference_",
    "residual_scatter_add_triton",
    "residual_scatter_add_triton_",
    "slot_decode_attention",
    "slot_decode_attention_reference",
    "slot_decode_attention_triton",
]
