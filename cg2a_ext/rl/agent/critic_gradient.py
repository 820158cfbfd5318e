"""The ways the critic gradient is formed: one small strategy per algorithm.

The SAC core (``sac.py``) samples a batch, random-shifts it when the strategy
says so (``shift``), computes the TD target on the clean next observation and
then calls ``strategy(critic, params, obs, action, target, diagnostics=...)``.
The strategy writes the critic gradient into ``p.grad`` for ``params`` and
returns a ``CriticGradOutput``. The optimizer step is the core's.

* ``sac``  : L(o), no augmentation.
* ``drq``  : L(shift(o)).
* ``svea`` : alpha L(o) + beta L(tau(o)) on the concatenated batch (SVEA).
* ``ac``   : mean_i L(tau_i(o)), tau_0 = identity: one backward on the K*B batch.
* ``cg2a`` : the K per-loss gradients from one batched backward
             (``per_group_grads``), aggregated by ``cg2a_ext.CG2A``.

Non-finite gradients are never written into the model silently: with
``nonfinite="skip"`` the gradient is zeroed, ``finite`` is False and the core
skips the optimizer step and counts it; with ``"raise"`` a FloatingPointError
is raised.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from cg2a_ext import CG2A, per_group_grads


def critic_loss(model, obs, action, target):
    """(Q1 - y)^2 + (Q2 - y)^2 averaged over the batch (DMC-GB's critic loss)."""
    q1, q2 = model(obs, action)
    return F.mse_loss(q1, target) + F.mse_loss(q2, target)


@dataclass
class CriticGradOutput:
    loss: torch.Tensor                       # scalar, detached: the loss whose gradient was formed
    finite: bool = True                      # False: gradient was non-finite and zeroed (skip the step)
    diagnostics: dict = field(default_factory=dict)


def grads_finite(params) -> bool:
    gs = [p.grad for p in params if p.grad is not None]
    if not gs:
        return True
    return bool(torch.stack([torch.isfinite(g).all() for g in gs]).all().item())


def _check_finite(params, policy: str, what: str) -> bool:
    if grads_finite(params):
        return True
    if policy == "raise":
        raise FloatingPointError(f"non-finite {what} gradient")
    for p in params:
        if p.grad is not None:
            p.grad.zero_()
    return False


def gram_diagnostics(gram: torch.Tensor, weights=None, conflict_fraction=None, gamma=None) -> dict:
    """Per-loss gradient norms, pairwise cosines, GAS weights, conflict fraction, gamma (paper Fig. 1)."""
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


def _gram(grads) -> torch.Tensor:
    k = grads[0].shape[0]
    gram = torch.zeros(k, k, dtype=torch.float64, device=grads[0].device)
    for g in grads:
        f = g.reshape(k, -1).double()
        gram += f @ f.T
    return gram


def _conflict_fraction(grads) -> float:
    """Fraction of parameter elements whose K values do not all share one strict sign."""
    agree = 0
    total = 0
    for g in grads:
        agree += int(((g > 0).all(0) | (g < 0).all(0)).sum())
        total += g[0].numel()
    return 1.0 - agree / max(1, total)


class CriticGradient(abc.ABC):
    """Base: ``shift`` = random-shift obs/next_obs first; ``K`` = number of loss terms."""

    name = "base"
    shift = True
    K = 1

    def __init__(self, nonfinite: str = "skip", generator: torch.Generator | None = None):
        self.nonfinite = nonfinite
        self.generator = generator

    @abc.abstractmethod
    def __call__(self, critic, params, obs, action, target, *, diagnostics: bool = False) -> CriticGradOutput:
        """Write the critic gradient into params' .grad; return losses and diagnostics."""

    def _single(self, critic, params, loss) -> CriticGradOutput:
        for p in params:
            p.grad = None
        loss.backward()
        return CriticGradOutput(loss.detach(), _check_finite(params, self.nonfinite, "critic"))


class PlainLoss(CriticGradient):
    """sac (shift=False) and drq (shift=True): the clean loss only."""

    def __init__(self, shift: bool, **kw):
        super().__init__(**kw)
        self.shift = shift
        self.name = "drq" if shift else "sac"

    def __call__(self, critic, params, obs, action, target, *, diagnostics=False):
        return self._single(critic, params, critic_loss(critic, obs, action, target))


class SVEAGradient(CriticGradient):
    """SVEA: alpha * L(o) + beta * L(tau(o)); one forward on the concatenated batch when alpha == beta."""

    name = "svea"
    K = 2

    def __init__(self, augmentation, alpha: float = 0.5, beta: float = 0.5, **kw):
        super().__init__(**kw)
        self.augmentation, self.alpha, self.beta = augmentation, alpha, beta

    def __call__(self, critic, params, obs, action, target, *, diagnostics=False):
        aug = self.augmentation(obs.clone(), generator=self.generator)
        if self.alpha == self.beta:
            loss = (self.alpha + self.beta) * critic_loss(
                critic, torch.cat([obs, aug]), torch.cat([action, action]), torch.cat([target, target]))
        else:
            loss = self.alpha * critic_loss(critic, obs, action, target) + \
                self.beta * critic_loss(critic, aug, action, target)
        return self._single(critic, params, loss)


class _Combination(CriticGradient):
    def __init__(self, combination, K: int, **kw):
        super().__init__(**kw)
        self.combination = combination
        self.K = K

    def views(self, obs) -> torch.Tensor:
        copies = self.combination(obs, generator=self.generator)
        return torch.stack([obs, *copies])                 # [K, B, C, H, W]

    def per_loss_grads(self, critic, params, obs, action, target):
        return per_group_grads(critic, critic_loss, (self.views(obs),), (action, target), params=params)


class AugmentedMean(_Combination):
    """ac: the plain mean of the K losses (one backward on the K*B batch).

    At diagnostics steps the K gradients are formed per loss (same result,
    their mean is written) to log norms, cosines and the conflict fraction.
    """

    name = "ac"

    def __call__(self, critic, params, obs, action, target, *, diagnostics=False):
        if not diagnostics:
            v = self.views(obs)
            k, b = v.shape[:2]
            loss = critic_loss(critic, v.reshape(k * b, *v.shape[2:]), action.repeat(k, 1), target.repeat(k, 1))
            return self._single(critic, params, loss)
        grads, losses = self.per_loss_grads(critic, params, obs, action, target)
        for p, g in zip(params, grads):
            p.grad = g.mean(0)
        finite = _check_finite(params, self.nonfinite, "critic")
        diag = gram_diagnostics(_gram(grads), weights=torch.full((self.K,), 1.0 / self.K),
                                conflict_fraction=_conflict_fraction(grads), gamma=1.0)
        for i, l in enumerate(losses.tolist()):
            diag[f"loss_{i}"] = l
        return CriticGradOutput(losses.mean(), finite, diag)


class CG2AGradient(_Combination):
    """cg2a: per-loss gradients in one batched backward, aggregated by CG2A (GAS + SGS)."""

    name = "cg2a"

    def __init__(self, combination, K: int, *, gas=True, sgs=True, gamma=(0.22, 0.28), mask="agree",
                 gamma_generator: torch.Generator | None = None, **kw):
        super().__init__(combination, K, **kw)
        self.aggregator = CG2A(alpha=gamma[0], beta=gamma[1], gas=gas, sgs=sgs, mask=mask,
                               generator=gamma_generator,
                               nonfinite="zero" if self.nonfinite == "skip" else "raise")

    def __call__(self, critic, params, obs, action, target, *, diagnostics=False):
        grads, losses = self.per_loss_grads(critic, params, obs, action, target)
        for p in params:
            p.grad = None
        res = self.aggregator.apply_(params, grads)
        finite = not bool(res.nonfinite)
        diag = {}
        if diagnostics:
            diag = gram_diagnostics(res.gram, weights=res.weights, conflict_fraction=res.conflict_fraction,
                                    gamma=res.gamma)
            for i, l in enumerate(losses.tolist()):
                diag[f"loss_{i}"] = l
        return CriticGradOutput(losses.mean(), finite, diag)


def make_critic_gradient(cfg, device, generator=None, gamma_generator=None) -> CriticGradient:
    """Build the strategy for ``cfg.algorithm`` (a TrainConfig)."""
    kw = dict(nonfinite=cfg.nonfinite, generator=generator)
    if cfg.algorithm == "sac":
        return PlainLoss(shift=False, **kw)
    if cfg.algorithm == "drq":
        return PlainLoss(shift=True, **kw)
    from cg2a_ext.rl.augmentations import AUGMENTATIONS, make_combination

    image_bank = cfg.image_bank or None
    if cfg.algorithm == "svea":
        aug = make_combination(cfg.svea_augmentation, image_bank=image_bank)

        def one(x, generator=None):
            return aug(x, generator=generator)[0]
        return SVEAGradient(one, cfg.svea_alpha, cfg.svea_beta, **kw)
    combo = make_combination(",".join(cfg.augmentation_list), image_bank=image_bank)
    if cfg.algorithm == "ac":
        return AugmentedMean(combo, cfg.K, **kw)
    if cfg.algorithm == "cg2a":
        return CG2AGradient(combo, cfg.K, gas=cfg.gas, sgs=cfg.sgs, gamma=cfg.gamma_range(), mask=cfg.mask,
                            gamma_generator=gamma_generator, **kw)
    raise ValueError(f"unknown algorithm {cfg.algorithm!r}")
