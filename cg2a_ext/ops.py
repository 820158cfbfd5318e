"""Typed Python front of the fused `torch.ops.cg2a` operators.

`grads` is always a list of tensors; tensor t has shape [K, *shape_t]: the K
per-loss gradients of parameter t stacked on dim 0 (as vmap or jacobian code
produces them). The kernels read each tensor where it lies (rows that are each
contiguous are never copied; other layouts are made contiguous once).

`aggregate` is ONE operator call (`cg2a::aggregate`, or `cg2a::aggregate_out`
with `out`): the Gram pass, the weights, the finite guard, the combine pass
and the conflict count all run inside it. On CUDA it never synchronises with
the host, except with nonfinite="raise", which reads one flag back to decide
whether to raise.

Every check lives in the C++ library (one set of messages for both backends);
this module only converts arguments and builds the result. The fake (meta)
kernels and the autograd formulas of the ops are registered here.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from cg2a_ext._extension import require_fused_ops
from cg2a_ext.reference import AggregateResult, accumulation_dtype, agreement, check_out

__all__ = ["gram", "combine", "aggregate", "AggregateResult", "MASKS", "MAX_K",
           "NonFiniteInputError", "AggregateOverflowError"]

require_fused_ops()

from cg2a_ext import _C  # noqa: E402  (after the check, for its message)

# The op overloads, looked up once (each attribute step costs a dictionary walk per call).
_GRAM = torch.ops.cg2a.gram.default
_COMBINE = torch.ops.cg2a.combine.default
_COMBINE_OUT = torch.ops.cg2a.combine_out.default
_AGGREGATE = torch.ops.cg2a.aggregate.default
_AGGREGATE_OUT = torch.ops.cg2a.aggregate_out.default

MAX_K: int = _C.MAX_K
"""Largest K the fused ops accept (the library's limit)."""
MASKS: tuple[str, ...] = tuple(_C.MASKS)
"""Mask names, indexed by the `mask` number of the raw combine ops."""


class NonFiniteInputError(FloatingPointError, ValueError):
    """An input gradient holds NaN or Inf (nonfinite="raise"); nothing was written."""


class AggregateOverflowError(OverflowError, ValueError):
    """Every input is finite but the result does not fit (nonfinite="raise")."""


def _list(grads: Sequence[Tensor], op: str) -> list[Tensor]:
    # The schema takes a list; a lone tensor would otherwise be iterated row by row.
    if isinstance(grads, Tensor):
        raise TypeError(f"{op}: grads must be a list of tensors shaped [K, *shape], not a single tensor")
    return list(grads)


def _mask_id(mask: str) -> int:
    try:
        return MASKS.index(mask)
    except ValueError:
        raise ValueError(f"unknown mask {mask!r}; expected one of {MASKS}") from None


def gram(grads: Sequence[Tensor]) -> Tensor:
    """K x K Gram matrix G_ij = <g_i, g_j> over all tensors, accumulated in
    float64 and returned in the accumulation dtype (float64 for float64
    inputs, float32 otherwise). Differentiable w.r.t. grads."""
    return _GRAM(_list(grads, "cg2a.gram"))


def combine(
    grads: Sequence[Tensor],
    weights: Tensor,
    gamma: float,
    mask: str = "agree",
    out: Sequence[Tensor] | None = None,
) -> list[Tensor]:
    """out_t = m * sum_i weights[i] * grads_t[i], m = 1 where the K signs agree
    and gamma elsewhere. Written into `out` when given (e.g. the parameters'
    .grad); differentiable w.r.t. grads and weights when `out` is None.
    Checks the weights' values (on CUDA a read back of K numbers)."""
    grads = _list(grads, "cg2a.combine")
    if not isinstance(weights, Tensor):
        weights = torch.as_tensor(weights, dtype=torch.float64)
    mask_id = _mask_id(mask)
    if out is None:
        results, _ = _COMBINE(grads, weights, float(gamma), mask_id)
        return list(results)
    out = list(out)
    check_out(out, "cg2a.combine")
    _COMBINE_OUT(grads, weights, float(gamma), mask_id, out)
    return out


def _translate(error: ValueError) -> ValueError:
    """The library's two refusals of nonfinite="raise" as their own types."""
    message = str(error)
    if ": non-finite input: " in message:
        return NonFiniteInputError(message)
    if ": overflow: " in message:
        return AggregateOverflowError(message)
    return error


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
    """The full CG2A aggregation (method doc, sections 2-4) in one fused op.

    gamma: the damping of conflicting elements, in [0, 1] (ignored with
    sgs=False). gas: GAS weights (else 1/K). sgs: damp conflicting elements
    (else m = 1; the conflict fraction is still reported). mask: "agree" or
    "positive". out: tensors of shape shape_t written in place (e.g. the
    parameters' .grad); they must not overlap any input or each other.

    The Gram matrix and the weights are formed in float64, so finite inputs of
    any dtype give finite weights. nonfinite: "raise" or "zero":

    * a NaN or Inf input: NonFiniteInputError (a FloatingPointError and a
      ValueError; nothing written) or zeros written and result.nonfinite set;
    * every input finite but the float64 Gram matrix overflows (float64
      gradients with norms above about 1e154), or an output element does not
      fit in its dtype: AggregateOverflowError (an OverflowError and a
      ValueError) or zeros written and result.overflow set.

    Under torch.compile both refusals arrive as the library's ValueError.
    """
    grads = _list(grads, "cg2a.aggregate")
    gamma_used = float(gamma) if sgs else 1.0
    try:
        if out is None:
            results, g, weights, fraction, flags = _AGGREGATE(
                grads, gamma_used, bool(gas), mask, nonfinite)
            results = list(results)
        else:
            results = list(out)
            check_out(results, "cg2a.aggregate")
            g, weights, fraction, flags = _AGGREGATE_OUT(
                grads, gamma_used, bool(gas), mask, nonfinite, results)
    except ValueError as error:
        raise _translate(error) from None
    nonfinite_flag, overflow_flag = flags.unbind()  # one view op for both
    return AggregateResult(results, g, weights, fraction, nonfinite_flag, overflow_flag)


# --- fake (meta) kernels: the library's own checks, then shapes and dtypes ----


def _like(t: Tensor, shape, dtype: torch.dtype | None = None) -> Tensor:
    return t.new_empty(shape, dtype=dtype)


@torch.library.register_fake("cg2a::gram")
def _gram_fake(grads: list[Tensor]) -> Tensor:
    torch.ops.cg2a.gram_check(grads)
    k = grads[0].shape[0]
    return _like(grads[0], (k, k), accumulation_dtype(grads[0].dtype))


@torch.library.register_fake("cg2a::combine")
def _combine_fake(grads: list[Tensor], weights: Tensor, gamma: float, mask: int) -> tuple[list[Tensor], Tensor]:
    torch.ops.cg2a.combine_check(grads, weights, gamma, mask)
    return [_like(g, g.shape[1:]) for g in grads], _like(grads[0], (), torch.int64)


@torch.library.register_fake("cg2a::combine_out")
def _combine_out_fake(grads: list[Tensor], weights: Tensor, gamma: float, mask: int, out: list[Tensor]) -> Tensor:
    torch.ops.cg2a.combine_out_check(grads, weights, gamma, mask, out)
    return _like(grads[0], (), torch.int64)


def _aggregate_stats_fake(grads: list[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    k = grads[0].shape[0]
    return (_like(grads[0], (k, k), torch.float64), _like(grads[0], (k,), torch.float64),
            _like(grads[0], (), torch.float64), _like(grads[0], (2,), torch.bool))


@torch.library.register_fake("cg2a::aggregate")
def _aggregate_fake(grads: list[Tensor], gamma: float, gas: bool, mask: str, nonfinite: str):
    torch.ops.cg2a.aggregate_check(grads, gamma, gas, mask, nonfinite)
    return ([_like(g, g.shape[1:]) for g in grads], *_aggregate_stats_fake(grads))


@torch.library.register_fake("cg2a::aggregate_out")
def _aggregate_out_fake(grads: list[Tensor], gamma: float, gas: bool, mask: str, nonfinite: str,
                        out: list[Tensor]):
    torch.ops.cg2a.aggregate_out_check(grads, gamma, gas, mask, nonfinite, out)
    return _aggregate_stats_fake(grads)


# --- autograd: gradient w.r.t. the input gradients (mask and gamma constant) --


def _gram_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs[0])


def _gram_backward(ctx, grad_gram: Tensor):
    symmetric = grad_gram + grad_gram.T
    grads = ctx.saved_tensors
    k = grads[0].shape[0]
    return [(symmetric.to(g.dtype) @ g.reshape(k, -1)).reshape(g.shape) for g in grads]


torch.library.register_autograd("cg2a::gram", _gram_backward, setup_context=_gram_setup)


def _damped(flat: Tensor, grad_out: Tensor, gamma: float, mask: str, dtype: torch.dtype) -> Tensor:
    """m * d: the upstream gradient of one output, damped where the signs conflict."""
    m = torch.where(agreement(flat, mask), 1.0, gamma).to(dtype)
    return m * grad_out.reshape(-1).to(dtype)


def _combine_setup(ctx, inputs, output) -> None:
    grads, weights, gamma, mask = inputs
    ctx.gamma, ctx.mask = gamma, mask
    ctx.save_for_backward(weights, *grads)


def _combine_backward(ctx, grad_outs: list[Tensor], grad_conflicts: Tensor):
    weights, *grads = ctx.saved_tensors
    k = grads[0].shape[0]
    grad_grads = []
    grad_weights = torch.zeros_like(weights)
    for g, d in zip(grads, grad_outs):
        if d is None:
            grad_grads.append(torch.zeros_like(g))
            continue
        flat = g.reshape(k, -1).to(weights.dtype)
        md = _damped(flat, d, ctx.gamma, MASKS[ctx.mask], weights.dtype)
        grad_grads.append((weights[:, None] * md).reshape(g.shape).to(g.dtype))
        grad_weights = grad_weights + flat @ md
    return grad_grads, grad_weights, None, None


torch.library.register_autograd("cg2a::combine", _combine_backward, setup_context=_combine_setup)


def _aggregate_setup(ctx, inputs, output) -> None:
    grads, gamma, gas, mask, _ = inputs
    _, gram_matrix, weights, _, flags = output
    ctx.gamma, ctx.gas, ctx.mask = gamma, gas, mask
    ctx.save_for_backward(gram_matrix, weights, flags, *grads)


def _aggregate_backward(ctx, grad_outs, grad_gram, grad_weights, grad_fraction, grad_flags):
    """out_t = m_t * (w^T F_t) with w = r / sum|r|, r = G 1, G = sum_t F_t F_t^T
    (GAS), or w = 1/K. Zeroed weights (the guard) pass no gradient through w.
    In float64, branch-free (no host sync), cast back to each input's dtype."""
    gram_matrix, weights, flags, *grads = ctx.saved_tensors
    k = grads[0].shape[0]
    flats = [g.reshape(k, -1).double() for g in grads]
    grad_w = torch.zeros_like(weights) if grad_weights is None else grad_weights.double()
    direct = []
    for flat, d in zip(flats, grad_outs):
        if d is None:
            direct.append(torch.zeros_like(flat))
            continue
        md = _damped(flat, d, ctx.gamma, ctx.mask, torch.float64)
        direct.append(weights[:, None] * md[None, :])  # zero when guarded: w = 0
        grad_w = grad_w + flat @ md
    grad_g = torch.zeros_like(gram_matrix) if grad_gram is None else grad_gram.double()
    if ctx.gas:
        r = gram_matrix.sum(dim=1)
        denominator = r.abs().sum()
        # w = r / D with D = sum|r|: dr_j = dw_j / D - sign(r_j) (dw . w) / D;
        # no gradient where w is the constant 1/K (D = 0) or was zeroed.
        live = (denominator > 0) & ~flags.any()
        safe = torch.where(live, denominator, 1.0)
        grad_r = torch.where(live, (grad_w - torch.sign(r) * (grad_w @ weights)) / safe, 0.0)
        grad_g = grad_g + grad_r[:, None].expand(k, k)
    symmetric = grad_g + grad_g.T
    grad_grads = [(dd + symmetric @ f).reshape(g.shape).to(g.dtype) for dd, f, g in zip(direct, flats, grads)]
    return grad_grads, None, None, None, None


torch.library.register_autograd("cg2a::aggregate", _aggregate_backward, setup_context=_aggregate_setup)
