"""cg2a_ext: CG2A (Conflict-aware Gradient Agreement Augmentation, ICCV 2023).

Public API:
    ops.gram / ops.combine / ops.aggregate   fused C++/CUDA operators
    reference.*                              the same in plain PyTorch
    CG2A                                     draws gamma and aggregates
    per_group_grads                          K per-loss gradients (loop, vmap or split; auto picks)
    has_cuda_kernels()                       CUDA kernels compiled into this build

The RL application (environments, augmentations, agents, trainer) lives in
`cg2a_ext.rl`; importing `cg2a_ext` imports none of it.

`import cg2a_ext` works without the compiled extension (CG2A then falls back
to the reference); `cg2a_ext.ops` needs it.
"""
from __future__ import annotations

from cg2a_ext import reference
from cg2a_ext._extension import has_cuda_kernels, has_fused_ops
from cg2a_ext.aggregator import CG2A
from cg2a_ext.per_group_grads import per_group_grads
from cg2a_ext.reference import AggregateResult

__all__ = [
    "CG2A",
    "AggregateResult",
    "has_cuda_kernels",
    "has_fused_ops",
    "per_group_grads",
    "reference",
]
__version__ = "0.1.0"


_LAZY = {
    "ops": ("cg2a_ext.ops", None),
}


def __getattr__(name: str):
    # The fused ops need the compiled extension: load it on first use.
    if name not in _LAZY:
        raise AttributeError(f"module 'cg2a_ext' has no attribute {name!r}")
    import importlib

    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    return module if attribute is None else getattr(module, attribute)
