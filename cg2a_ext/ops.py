"""Typed Python front of the fused `torch.ops.cg2a` operators.

`grads` is always a list of tensors; tensor t has shape [K, *shape_t]: the K
per-loss gradients of parameter t stacked on dim 0 (as vmap or jacobian code
produces them). The kernels read each tensor where it lies (rows that are each
contiguous are never copied; other layouts are made contiguous once), do one
pass over all tensors for the Gram and one for the recombination, and reduce
deterministically. On CUDA, `aggregate` never synchronises with the host,
except with nonfinite="raise", which reads one flag back to decide whether to
raise.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from cg2a_ext._extension import require_fused_ops
from cg2a_ext.reference import (
    MASKS,
    NONFINITE_POLICIES,
    AggregateResult,
    accumulation_dtype,
    agreement,
    gas_weights,
)

__all__ = ["gram", "combine", "aggregate", "AggregateResult", "MASKS"]

require_fused_ops()

_MASK_IDS = {"agree": 0, "positive": 1}
_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
MAX_K = 32


def _check_grads(grads: Sequence[Tensor], op: str) -> int:
    if isinstance(grads, Tensor):
        raise TypeError(f"{op}: grads must be a list of tensors shaped [K, *shape], not a single tensor")
    grads = list(grads)
    if not grads:
        raise ValueError(f"{op}: grads is an empty list; pass at least one tensor shaped [K, *shape]")
    first = grads[0]
    for t, g in enumerate(grads):
        if not isinstance(g, Tensor):
            raise TypeError(f"{op}: grads[{t}] is {type(g).__name__}, not a Tensor")
        if g.dim() < 1:
            raise ValueError(f"{op}: grads[{t}] is 0-dimensional; stack the K per-loss gradients on dim 0")
        if g.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{op}: grads[{t}] has dtype {g.dtype}; expected float32, float64, float16 or bfloat16")
        if g.shape[0] != first.shape[0]:
            raise ValueError(f"{op}: grads[{t}] has K = {g.shape[0]} on dim 0 but grads[0] has K = {first.shape[0]}")
        if g.device != first.device:
            raise ValueError(f"{op}: grads[{t}] is on {g.device} but grads[0] is on {first.device}")
        if g.dtype != first.dtype:
            raise TypeError(f"{op}: grads[{t}] has dtype {g.dtype} but grads[0] has {first.dtype}")
    k = first.shape[0]
    if k < 1:
        raise ValueError(f"{op}: K = 0: there are no gradients on dim 0")
    if k > MAX_K:
        raise ValueError(f"{op}: K = {k} exceeds the fused kernels' limit of {MAX_K}; use cg2a_ext.reference")
    return k


def _check_out(out: Sequence[Tensor], grads: Sequence[Tensor], op: str) -> None:
    if len(out) != len(grads):
        raise ValueError(f"{op}: out has {len(out)} tensors but grads has {len(grads)}")
    for t, (o, g) in enumerate(zip(out, grads)):
        if not isinstance(o, Tensor):
            raise TypeError(f"{op}: out[{t}] is {type(o).__name__}, not a Tensor")
        if o.shape != g.shape[1:]:
            raise ValueError(f"{op}: out[{t}] has shape {tuple(o.shape)} but grads[{t}] holds gradients of shape {tuple(g.shape[1:])}")
        if o.dtype != g.dtype or o.device != g.device:
            raise ValueError(f"{op}: out[{t}] is {o.dtype} on {o.device} but grads[{t}] is {g.dtype} on {g.device}")


def _mask_id(mask: str) -> int:
    if mask not in _MASK_IDS:
        raise ValueError(f"unknown mask {mask!r}; expected one of {MASKS}")
    return _MASK_IDS[mask]


def gram(grads: Sequence[Tensor]) -> Tensor:
    """K x K Gram matrix G_ij = <g_i, g_j> over all tensors (float64 for
    float64 inputs, float32 otherwise). Differentiable w.r.t. grads."""
    _check_grads(grads, "cg2a.gram")
    return torch.ops.cg2a.gram.default(list(grads))


def combine(
    grads: Sequence[Tensor],
    weights: Tensor,
    gamma: float,
    mask: str = "agree",
    out: Sequence[Tensor] | None = None,
) -> list[Tensor]:
    """out_t = m * sum_i weights[i] * grads_t[i], m = 1 where the K signs agree
    and gamma elsewhere. Written into `out` when given (e.g. the parameters'
    .grad); differentiable w.r.t. grads and weights when `out` is None."""
    k = _check_grads(grads, "cg2a.combine")
    grads = list(grads)
    weights = torch.as_tensor(weights, device=grads[0].device).to(accumulation_dtype(grads[0].dtype))
    if weights.shape != (k,):
        raise ValueError(f"cg2a.combine: weights must have shape ({k},), got {tuple(weights.shape)}")
    mask_id = _mask_id(mask)
    if out is None:
        results, _ = torch.ops.cg2a.combine.default(grads, weights, float(gamma), mask_id)
        return list(results)
    out = list(out)
    _check_out(out, grads, "cg2a.combine")
    torch.ops.cg2a.combine_out.default(grads, weights, float(gamma), mask_id, out)
    return out


@torch.library.custom_op("cg2a::guard_finite", mutates_args=())
def _guard_finite(gram_matrix: Tensor, weights: Tensor, policy: str) -> Tensor:
    """The weights to use given the Gram diagonal: raise on a non-finite input
    ("raise"), or zero weights, hence a zero output ("zero"). An op of its own
    so that torch.compile(fullgraph=True) keeps the check in the graph."""
    finite = torch.isfinite(gram_matrix.diagonal()).all()
    if policy == "raise":
        if not bool(finite):  # the one documented host sync on CUDA
            norms = gram_matrix.diagonal().sqrt().tolist()
            raise FloatingPointError(
                "cg2a.aggregate: an input gradient contains NaN or Inf (per-loss gradient norms: "
                f"{norms}); nothing was written. Pass nonfinite='zero' to zero the output instead."
            )
        return weights.clone()
    return torch.where(finite, weights, torch.zeros_like(weights))


@_guard_finite.register_fake
def _(gram_matrix: Tensor, weights: Tensor, policy: str) -> Tensor:
    return torch.empty_like(weights)


def _guard_finite_backward(ctx, grad: Tensor):
    return None, torch.where(ctx.finite, grad, torch.zeros_like(grad)), None


def _guard_finite_setup(ctx, inputs, output) -> None:
    ctx.finite = torch.isfinite(inputs[0].diagonal()).all()


_guard_finite.register_autograd(_guard_finite_backward, setup_context=_guard_finite_setup)


def aggregate(
    grads: Sequence[Tensor],
    gamma: float,
    *,
    gas: bool = True,
    sgs: bool = True,
    mask: str = "agree",
    out: Sequence[Tensor] | None = None,
    nonfinite: str = "raise",
) -> AggregateResult:
    """The full CG2A aggregation (method doc, sections 2-4) in two fused passes.

    gamma: the damping of conflicting elements (ignored with sgs=False).
    gas: GAS weights (else 1/K). sgs: damp conflicting elements (else m = 1;
    the conflict fraction is still reported). mask: "agree" or "positive".
    out: tensors of shape shape_t written in place (e.g. parameters' .grad).
    nonfinite: "raise" (FloatingPointError, nothing written) or "zero" (the
    output is zeros and result.nonfinite is True). Detection uses the Gram
    diagonal, so it costs no extra pass (a finite gradient whose squared norm
    overflows the accumulation dtype counts as non-finite too).
    """
    k = _check_grads(grads, "cg2a.aggregate")
    grads = list(grads)
    if nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"unknown nonfinite policy {nonfinite!r}; expected one of {NONFINITE_POLICIES}")
    mask_id = _mask_id(mask)
    if out is not None:
        out = list(out)
        _check_out(out, grads, "cg2a.aggregate")
    g = torch.ops.cg2a.gram.default(grads)
    weights = gas_weights(g) if gas else torch.full((k,), 1.0 / k, dtype=g.dtype, device=g.device)
    weights = _guard_finite(g, weights, nonfinite)
    gamma_used = float(gamma) if sgs else 1.0
    if out is None:
        results, conflicts = torch.ops.cg2a.combine.default(grads, weights, gamma_used, mask_id)
        results = list(results)
    else:
        conflicts = torch.ops.cg2a.combine_out.default(grads, weights, gamma_used, mask_id, out)
        results = out
    elements = sum(x[0].numel() for x in grads)
    conflict_fraction = conflicts.to(g.dtype) / max(elements, 1)
    nonfinite_flag = ~torch.isfinite(g.diagonal()).all()
    return AggregateResult(results, g, weights, conflict_fraction, nonfinite_flag)


# --- fake (meta) implementations: shapes and dtypes only ---------------------


@torch.library.register_fake("cg2a::gram")
def _gram_fake(grads: list[Tensor]) -> Tensor:
    k = grads[0].shape[0]
    return grads[0].new_empty((k, k), dtype=accumulation_dtype(grads[0].dtype))


@torch.library.register_fake("cg2a::combine")
def _combine_fake(grads: list[Tensor], weights: Tensor, gamma: float, mask: int) -> tuple[list[Tensor], Tensor]:
    return [g.new_empty(g.shape[1:]) for g in grads], grads[0].new_empty((), dtype=torch.int64)


@torch.library.register_fake("cg2a::combine_out")
def _combine_out_fake(grads: list[Tensor], weights: Tensor, gamma: float, mask: int, out: list[Tensor]) -> Tensor:
    return grads[0].new_empty((), dtype=torch.int64)


# --- autograd: gradient w.r.t. the input gradients (mask and gamma constant) --


def _gram_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs[0])


def _gram_backward(ctx, grad_gram: Tensor):
    symmetric = grad_gram + grad_gram.T
    grads = ctx.saved_tensors
    k = grads[0].shape[0]
    return [(symmetric.to(g.dtype) @ g.reshape(k, -1)).reshape(g.shape) for g in grads]


torch.library.register_autograd("cg2a::gram", _gram_backward, setup_context=_gram_setup)


def _combine_setup(ctx, inputs, output) -> None:
    grads, weights, gamma, mask = inputs
    ctx.gamma, ctx.mask = gamma, mask
    ctx.save_for_backward(weights, *grads)


def _combine_backward(ctx, grad_outs: list[Tensor], grad_conflicts: Tensor):
    weights, *grads = ctx.saved_tensors
    k = grads[0].shape[0]
    mask_name = MASKS[ctx.mask]
    grad_grads = []
    grad_weights = torch.zeros_like(weights)
    for g, d in zip(grads, grad_outs):
        flat = g.reshape(k, -1).to(weights.dtype)
        if d is None:
            grad_grads.append(torch.zeros_like(g))
            continue
        m = torch.where(agreement(flat, mask_name), 1.0, ctx.gamma).to(weights.dtype)
        md = m * d.reshape(-1).to(weights.dtype)
        grad_grads.append((weights[:, None] * md).reshape(g.shape).to(g.dtype))
        grad_weights = grad_weights + flat @ md
    return grad_grads, grad_weights, None, None


torch.library.register_autograd("cg2a::combine", _combine_backward, setup_context=_combine_setup)
