"""svea: alpha L(o) + beta L(tau(o)) on the concatenated batch (SVEA, Hansen et al. 2021)."""
from __future__ import annotations

import torch

from .base import Algorithm, CriticGradOutput, critic_loss


class SVEA(Algorithm):
    name = "svea"
    summary = "SVEA: weighted clean and augmented critic losses (one augmentation)"
    method_options = ("svea_augmentation", "svea_alpha", "svea_beta")

    @classmethod
    def num_losses(cls, cfg) -> int:
        return 2

    def __init__(self, cfg, device, seeds) -> None:
        super().__init__(cfg, device, seeds)
        from cg2a_ext.rl.augmentations import make_combination

        self.augmentation = make_combination([cfg.svea_augmentation], image_bank=cfg.image_bank or None)
        self.alpha, self.beta = cfg.svea_alpha, cfg.svea_beta

    def augment(self, obs: torch.Tensor) -> torch.Tensor:
        return self.augmentation(obs.clone(), generator=self.generator)[0]

    def critic_gradient(self, agent, obs, action, target, *, diagnostics=False) -> CriticGradOutput:
        aug = self.augment(obs)
        critic = agent.critic
        if self.alpha == self.beta:   # one forward on the 2B batch
            loss = (self.alpha + self.beta) * critic_loss(
                critic, torch.cat([obs, aug]), torch.cat([action, action]), torch.cat([target, target]))
        else:
            loss = self.alpha * critic_loss(critic, obs, action, target) + self.beta * critic_loss(
                critic, aug, action, target)
        return self.backward_single(agent, loss)


ALGORITHM = SVEA
