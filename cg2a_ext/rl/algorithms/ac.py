"""ac: the plain mean of the K augmented critic losses (the paper's "augmentation combination")."""
from __future__ import annotations

import torch

from cg2a_ext.rl.algorithms.base import CriticGradOutput, critic_loss
from cg2a_ext.rl.algorithms.parts.combination import AugmentationCombination
from cg2a_ext.rl.algorithms.parts.gradient_diagnostics import conflict_fraction, gram_diagnostics, gram_of


class AugmentedMean(AugmentationCombination):
    """One backward on the K*B batch; at diagnostics steps the K gradients are formed per loss (same
    result, their mean is written) to log norms, cosines and the conflict fraction."""

    name = "ac"
    label = "AC"
    gpu_steps_per_s = (26.5, "cg2a's figure (the same K views, one backward): unmeasured")
    summary = "AC: the plain mean of the clean and augmented critic losses"
    method_options = ("augmentations", "image_bank", "overlay_s_mu")

    @classmethod
    def ablation(cls, options) -> str | None:
        return "ac"

    def critic_gradient(self, step) -> CriticGradOutput:
        nets, obs, action, target, diagnostics = step
        if not diagnostics:
            v = self.views(obs)
            k, b = v.shape[:2]
            loss = critic_loss(nets.critic, v.reshape(k * b, *v.shape[2:]), action.repeat(k, 1),
                               target.repeat(k, 1))
            return self.backward_single(nets, loss)
        params = nets.critic_params
        grads, losses = self.per_loss_grads(nets, obs, action, target)
        for p, g in zip(params, grads):
            p.grad = g.mean(0)
        diag = gram_diagnostics(gram_of(grads), weights=torch.full((self.K,), 1.0 / self.K),
                                conflict_fraction=conflict_fraction(grads), gamma=1.0)
        for i, l in enumerate(losses.tolist()):
            diag[f"loss_{i}"] = l
        return CriticGradOutput(losses.mean(), diagnostics=diag)


ALGORITHM = AugmentedMean
