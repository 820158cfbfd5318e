"""Plain-PyTorch CG2A aggregation: the test oracle and the benchmark baseline.

It does what the method doc (sections 2-4) says in the most direct way: flatten
and concatenate the K per-loss gradients into a [K, P] matrix, a matmul for the
Gram, sign tests for the mask, a weighted sum and a `where`. It accepts any K
and makes several passes and K x P temporaries; `cg2a_ext.ops` is the fused,
copy-free equivalent.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor

MASKS = ("agree", "positive")
NONFINITE_POLICIES = ("raise", "zero")


class AggregateResult(NamedTuple):
    """What every aggregation returns: `ops.aggregate`, `reference.aggregate`
    and `CG2A` (which also sets `gamma`, the damping it drew)."""

    grads: list[Tensor]
    """The aggregated gradient, one tensor of shape `shape_t` per input tensor."""
    gram: Tensor
    """K x K Gram matrix G_ij = <g_i, g_j>, float64 (accumulated in float64)."""
    weights: Tensor
    """The K weights w_i used (GAS weights, or 1/K with GAS off), float64;
    zeros when the output was zeroed."""
    conflict_fraction: Tensor
    """0-dim float64: fraction of elements whose K signs do not agree (under the mask)."""
    nonfinite: Tensor
    """0-dim bool: some input gradient holds NaN or Inf, and the output was
    zeroed (only with nonfinite="zero"; with "raise" such input raises instead)."""
    overflow: Tensor | None = None
    """0-dim bool: every input was finite but the result did not fit (the
    float64 Gram matrix, or the aggregated gradient in its dtype), and the
    output was zeroed (nonfinite="zero"; "raise" raises instead). None from
    `reference.aggregate`, which does not check."""
    gamma: float | None = None
    """The damping gamma drawn for this aggregation (set by `CG2A`)."""

    @property
    def zeroed(self) -> Tensor:
        """0-dim bool: the output was zeroed (a non-finite input or an overflow);
        a training step should be skipped."""
        return self.nonfinite if self.overflow is None else self.nonfinite | self.overflow


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 gradients, float32 for every other floating dtype."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _flatten(grads: Sequence[Tensor]) -> Tensor:
    k = grads[0].shape[0]
    return torch.cat([g.reshape(k, -1) for g in grads], dim=1).to(accumulation_dtype(grads[0].dtype))


def gram(grads: Sequence[Tensor]) -> Tensor:
    """G = F F^T with F the [K, P] concatenation of the flattened gradients."""
    flat = _flatten(grads)
    return flat @ flat.T


def _gram_float64(flat: Tensor) -> Tensor:
    """The Gram matrix in float64 (squares of float32 values above 1.8e19 overflow float32)."""
    flat64 = flat.double()
    return flat64 @ flat64.T


def gas_weights(gram_matrix: Tensor) -> Tensor:
    """GAS (Eq. 8): w_i = r_i / sum_k |r_k| with r_i = sum_j G_ij; 1/K when all r are 0."""
    r = gram_matrix.sum(dim=1)
    denominator = r.abs().sum()
    uniform = torch.full_like(r, 1.0 / r.numel())
    return torch.where(denominator > 0, r / torch.where(denominator > 0, denominator, 1.0), uniform)


def agreement(flat: Tensor, mask: str = "agree") -> Tensor:
    """Bool [P]: True where the K values agree in sign (exact zeros never agree)."""
    if mask not in MASKS:
        raise ValueError(f"unknown mask {mask!r}; expected one of {MASKS}")
    positive = (flat > 0).all(dim=0)
    if mask == "positive":
        return positive
    return positive | (flat < 0).all(dim=0)


def _combine_flat(grads: Sequence[Tensor], weights: Tensor, gamma: float, mask: str) -> tuple[Tensor, Tensor]:
    flat = _flatten(grads)
    weighted = (weights.to(flat.dtype)[:, None] * flat).sum(dim=0)
    agree = agreement(flat, mask)
    combined = torch.where(agree, weighted, gamma * weighted)
    return combined, (~agree).sum()


def _unflatten(flat: Tensor, grads: Sequence[Tensor], out: Sequence[Tensor] | None) -> list[Tensor]:
    results = []
    offset = 0
    for t, g in enumerate(grads):
        n = g[0].numel()
        piece = flat[offset : offset + n].reshape(g.shape[1:]).to(g.dtype)
        offset += n
        if out is not None:
            out[t].copy_(piece)
            piece = out[t]
        results.append(piece)
    return results


def check_gamma(gamma, op: str) -> float:
    """gamma as a float in [0, 1], else a ValueError (the fused ops' check_gamma; a tensor is read
    back to the host, as the fused ops' float(gamma) does)."""
    value = float(gamma)
    if not 0.0 <= value <= 1.0:  # written so that NaN fails too
        raise ValueError(f"{op}: gamma = {value}; expected a finite value in [0, 1]")
    return value


def check_out(out: Sequence[Tensor] | None, op: str) -> None:
    """Refuse an `out` tensor that requires grad (a parameter, not its .grad), as torch's in-place ops do."""
    if out is None:
        return
    for t, tensor in enumerate(out):
        if isinstance(tensor, Tensor) and tensor.requires_grad:
            raise ValueError(
                f"{op}: out[{t}] requires grad (a parameter?); pass the parameters' .grad buffers "
                "(or tensors that do not require grad), not the parameters themselves")


def combine(
    grads: Sequence[Tensor], weights: Tensor, gamma: float, mask: str = "agree", out: Sequence[Tensor] | None = None
) -> list[Tensor]:
    """out_t = m * sum_i w_i g_i, m = 1 where the signs agree, gamma elsewhere."""
    gamma = check_gamma(gamma, "cg2a reference combine")
    check_out(out, "cg2a reference combine")
    combined, _ = _combine_flat(grads, weights, gamma, mask)
    return _unflatten(combined, grads, out)


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
    """Gram (in float64), GAS weights, SGS mask and the damped weighted sum, all in plain PyTorch."""
    if nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"unknown nonfinite policy {nonfinite!r}; expected one of {NONFINITE_POLICIES}")
    # As the fused op: gamma is checked (and read) only when used (sgs=True), before any input.
    gamma = check_gamma(gamma, "cg2a reference aggregate") if sgs else 1.0
    check_out(out, "cg2a reference aggregate")
    flat = _flatten(grads)
    g = _gram_float64(flat)
    k = g.shape[0]
    finite = torch.isfinite(flat).all()
    if nonfinite == "raise" and not bool(finite):
        raise FloatingPointError("cg2a reference aggregate: the input gradients contain NaN or Inf")
    weights = gas_weights(g) if gas else torch.full((k,), 1.0 / k, dtype=g.dtype, device=g.device)
    # Branch-free zeroing keeps the function whole under torch.compile.
    weights = torch.where(finite, weights, 0.0)
    weighted = torch.where(finite, (weights.to(flat.dtype)[:, None] * flat).sum(dim=0), 0.0)
    agree = agreement(flat, mask)
    combined = torch.where(agree, weighted, gamma * weighted)
    results = _unflatten(combined, grads, out)
    conflict_fraction = (~agree).sum().to(torch.float64) / max(flat.shape[1], 1)
    return AggregateResult(results, g, weights, conflict_fraction, ~finite)
