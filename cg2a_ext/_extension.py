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
        return f"{error} ({build_advice()})"
    return None


def build_advice() -> str:
    """What to do when _C does not load: a source tree (a checkout run from its root) shadows an
    installed build, or was never built; else the installed build is broken (rebuild it)."""
    from importlib.machinery import EXTENSION_SUFFIXES
    from pathlib import Path

    package = Path(__file__).resolve().parent
    source_tree = (package.parent / "setup.py").exists() and (package.parent / "csrc").is_dir()
    if not source_tree:
        return ("rebuild it against the torch you run: `pip install --no-build-isolation .` "
                "from the repository root (docs/install.md)")
    built_here = any(any(package.glob(f"_C*{suffix}")) for suffix in EXTENSION_SUFFIXES)
    shadowing = f"Python imported the source tree {package}, which has no compiled _C"
    if built_here:
        shadowing = f"Python imported the source tree {package}, whose _C does not load (built against another torch?)"
    return (f"{shadowing} (e.g. python run from the repository root, which hides an installed build): "
            "run from another folder to use the installed build, or build this tree in place with an "
            "editable install, `pip install --no-build-isolation -e .` (docs/install.md)")


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


def op_error_message(device: str) -> str:
    """The ValueError message of an op refusing bad input on ``device`` (grads with different K).

    Run it in a child process (``python -c "from cg2a_ext._extension import op_error_message;
    print(op_error_message('cpu'))"``): built with a compiler whose C++ runtime does not match
    torch's, the first thrown error can crash the whole process instead of raising."""
    import torch

    require_fused_ops()
    try:
        torch.ops.cg2a.gram([torch.randn(3, 4, device=device), torch.randn(2, 4, device=device)])
    except ValueError as error:
        return str(error)
    raise AssertionError("cg2a::gram accepted grads with different K")
