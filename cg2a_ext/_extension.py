"""Loads the compiled library (cg2a_ext._C), which registers the torch.ops.cg2a
operators, and says what it was built with."""
from __future__ import annotations

import functools


@functools.cache
def load_error() -> str | None:
    """None when the compiled ops are available, else why they are not."""
    try:
        from cg2a_ext import _C  # noqa: F401  (registers torch.ops.cg2a.*)
    except ImportError as error:
        return f"{error} (build it with `pip install .` from the repository root)"
    return None


def has_fused_ops() -> bool:
    """True when the compiled CPU (and possibly CUDA) kernels are loaded."""
    return load_error() is None


def require_fused_ops() -> None:
    error = load_error()
    if error is not None:
        raise RuntimeError(f"cg2a_ext: the compiled extension cg2a_ext._C is not available: {error}")


def has_cuda_kernels() -> bool:
    """True when the CUDA kernels were compiled into cg2a_ext._C (whether or
    not a GPU is visible now)."""
    if not has_fused_ops():
        return False
    from cg2a_ext import _C

    return bool(_C.has_cuda_kernels())
