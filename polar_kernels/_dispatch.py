"""Shared helpers: optional Triton import, kernel objects that run compiled on CUDA
and under the Triton interpreter on CPU, and small argument checks.

Triton decides at ``@triton.jit`` decoration time whether a kernel is compiled or
interpreted (``TRITON_INTERPRET=1``). Each kernel here is wrapped in :class:`Kernel`, which
builds the compiled ``JITFunction`` for CUDA tensors and an ``InterpretedFunction`` (what
``TRITON_INTERPRET=1`` makes ``triton.jit`` return) for CPU tensors, lazily. Running on CPU
tensors still requires ``TRITON_INTERPRET=1`` to have been set before triton itself was
first imported, because triton's own library functions (``tl.sum``, ``tl.max``...) are
``@jit`` functions fixed at that import; this is checked and reported clearly.
"""
from __future__ import annotations

import contextlib
import os

import torch

try:  # triton is optional: the torch references work without it
    import triton  # noqa: F401
    import triton.language as tl  # noqa: F401

    HAS_TRITON = True
    _TRITON_IMPORT_ERROR: BaseException | None = None
except Exception as exc:  # pragma: no cover - exercised only without triton
    triton = None
    tl = None
    HAS_TRITON = False
    _TRITON_IMPORT_ERROR = exc


def interpret_mode() -> bool:
    """True when ``TRITON_INTERPRET`` is set to a truthy value (read at call time)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def require_triton(what: str) -> None:
    if not HAS_TRITON:
        raise RuntimeError(
            f"polar_kernels.{what}: CUDA tensors need Triton, which is not importable "
            f"({_TRITON_IMPORT_ERROR!r}); install it with `pip install triton` or move the "
            f"tensors to CPU to use the torch reference."
        )


def triton_imported_in_interpret_mode() -> bool:
    """Whether triton.language was built for the interpreter (``TRITON_INTERPRET=1`` was set
    when triton was first imported). Only then can kernels run on CPU tensors: the
    interpreter needs triton's own library functions (``tl.sum``...) interpreted too."""
    if not HAS_TRITON:
        return False
    from triton.runtime.jit import JITFunction

    return not isinstance(tl.sum, JITFunction)


class Kernel:
    """A Triton kernel source function, launched as ``Kernel.on(device)[grid](...)``.

    CUDA (or any non-CPU) device: a compiled ``triton.runtime.jit.JITFunction``.
    CPU device: ``triton.runtime.interpreter.InterpretedFunction`` (the Triton interpreter).
    Kernels must not call other ``@triton.jit`` helpers (all code is inlined), so the
    same Python function works for both.
    """

    def __init__(self, fn, do_not_specialize: tuple[str, ...] = ()):
        self.fn = fn
        self.do_not_specialize = tuple(do_not_specialize)
        self._compiled = None
        self._interpreted = None
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__

    def on(self, device: torch.device):
        require_triton(self.fn.__name__)
        if device.type == "cpu":
            if not triton_imported_in_interpret_mode():
                raise RuntimeError(
                    f"polar_kernels: the Triton path of {self.fn.__name__} on CPU tensors runs under "
                    "the Triton interpreter, which needs TRITON_INTERPRET=1 in the environment "
                    "before triton is first imported (e.g. `TRITON_INTERPRET=1 python ...`); "
                    "use the public dispatcher to get the torch reference on CPU."
                )
            if self._interpreted is None:
                from triton.runtime.interpreter import InterpretedFunction

                self._interpreted = InterpretedFunction(self.fn)
            return self._interpreted
        if self._compiled is None:
            from triton.runtime.jit import JITFunction

            self._compiled = JITFunction(self.fn, do_not_specialize=self.do_not_specialize or None)
        return self._compiled


def kernel(fn=None, *, do_not_specialize: tuple[str, ...] = ()):
    """Decorator used instead of ``@triton.jit`` in this package. ``do_not_specialize``: integer
    arguments that vary from call to call (sizes, row strides), so that Triton compiles one kernel
    for all their values instead of one per divisibility class."""
    if fn is None:
        return lambda f: Kernel(f, do_not_specialize)
    return Kernel(fn, do_not_specialize)


def next_pow2(x: int) -> int:
    return 1 if x <= 1 else 1 << (int(x) - 1).bit_length()


def check_rows(rows: torch.Tensor, device: torch.device, name: str = "rows") -> None:
    if rows.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(rows.shape)}")
    if rows.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"{name} must be int32 or int64, got {rows.dtype}")
    if rows.device != device:
        raise ValueError(f"{name} is on {rows.device}, expected {device}")


def check_out(out: torch.Tensor | None, shape, dtype, device, what: str) -> None:
    if out is None:
        return
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype or out.device != device:
        raise ValueError(
            f"{what}: out must be {tuple(shape)} {dtype} on {device}, got "
            f"{tuple(out.shape)} {out.dtype} on {out.device}"
        )
    if not out.is_contiguous():
        raise ValueError(f"{what}: out must be contiguous")


#: Set by :func:`triton_on_cpu`: dispatchers then run the Triton kernels on CPU tensors too.
_TRITON_ON_CPU = False


@contextlib.contextmanager
def triton_on_cpu():
    """Inside this context the dispatchers (``gathered_rmsnorm``, ...) run the Triton kernels on CPU
    tensors as well, under the Triton interpreter, so that code built on them (the fused runner)
    runs its real kernels without a GPU. Needs ``TRITON_INTERPRET=1`` set before triton was first
    imported (else the first kernel raises ``RuntimeError`` saying so). Not thread-safe; tests only."""
    global _TRITON_ON_CPU
    previous, _TRITON_ON_CPU = _TRITON_ON_CPU, True
    try:
        yield
    finally:
        _TRITON_ON_CPU = previous


def uses_triton(device: torch.device) -> bool:
    """Whether the dispatchers run Triton kernels (not the torch references) for tensors on
    ``device``: CUDA (and any non-CPU device) when triton is importable; CPU inside
    :func:`triton_on_cpu`."""
    if torch.device(device).type == "cpu":
        return _TRITON_ON_CPU and HAS_TRITON
    return HAS_TRITON


def use_triton(t: torch.Tensor, what: str) -> bool:
    """Dispatch rule: Triton for CUDA tensors (error if triton missing), reference on CPU
    (Triton under the interpreter inside :func:`triton_on_cpu`)."""
    if t.device.type == "cpu" and not _TRITON_ON_CPU:
        return False
    require_triton(what)
    return True
