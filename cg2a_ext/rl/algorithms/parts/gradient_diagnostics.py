"""Per-loss gradient diagnostics (paper Figure 1): norms, pairwise cosines, weights, conflicts."""
from __future__ import annotations

import torch


def gram_diagnostics(gram: torch.Tensor, weights=None, conflict_fraction=None, gamma=None) -> dict:
    """Per-loss gradient norms, pairwise cosines, GAS weights, conflict fraction and gamma from the K x K Gram."""
    g = gram.detach().double().cpu()
    k = g.shape[0]
    norms = g.diagonal().clamp_min(0).sqrt()
    out = {"K": k}
    for i in range(k):
        out[f"grad_norm_{i}"] = float(norms[i])
    n_neg = 0
    for i in range(k):
        for j in range(i + 1, k):
            den = float(norms[i] * norms[j])
            cos = float(g[i, j]) / den if den > 0 else float("nan")
            out[f"cos_{i}_{j}"] = cos
            n_neg += cos < 0
    out["neg_cos_pairs"] = n_neg / max(1, k * (k - 1) // 2)
    if weights is not None:
        w = torch.as_tensor(weights).detach().double().cpu()
        for i in range(k):
            out[f"weight_{i}"] = float(w[i])
    if conflict_fraction is not None:
        out["conflict_fraction"] = float(conflict_fraction)
    if gamma is not None:
        out["gamma"] = float(gamma)
    return out


def gram_of(grads) -> torch.Tensor:
    """The float64 Gram matrix of K stacked per-loss gradients (list of [K, *shape])."""
    k = grads[0].shape[0]
    gram = torch.zeros(k, k, dtype=torch.float64, device=grads[0].device)
    for g in grads:
        f = g.reshape(k, -1).double()
        gram += f @ f.T
    return gram


def conflict_fraction(grads) -> float:
    """Fraction of parameter elements whose K values do not all share one strict sign."""
    agree = 0
    total = 0
    for g in grads:
        agree += int(((g > 0).all(0) | (g < 0).all(0)).sum())
        total += g[0].numel()
    return 1.0 - agree / max(1, total)
