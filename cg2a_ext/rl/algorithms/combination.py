"""What ac and cg2a share: the clean batch and N augmented copies as K = N + 1 critic losses."""
from __future__ import annotations

import torch

from cg2a_ext import per_group_grads

from .base import Algorithm, critic_loss


class AugmentationCombination(Algorithm):
    """Base of algorithms over the K views [o, tau_1(o), ..., tau_N(o)] (``--augmentations``)."""

    gradient_diagnostics = True

    @classmethod
    def num_losses(cls, cfg) -> int:
        return 1 + len(cfg.augmentations)

    @classmethod
    def check_config(cls, cfg) -> None:
        if not cfg.augmentations:
            from cg2a_ext.rl.config import ConfigError

            raise ConfigError(f"{cls.name} needs at least one augmentation in --augmentations")

    def __init__(self, cfg, device, seeds) -> None:
        super().__init__(cfg, device, seeds)
        from cg2a_ext.rl.augmentations import make_combination

        self.combination = make_combination(list(cfg.augmentations), image_bank=cfg.image_bank or None)

    def views(self, obs: torch.Tensor) -> torch.Tensor:
        """[K, B, C, H, W]: the clean batch and its augmented copies."""
        copies = self.combination(obs, generator=self.generator)
        return torch.stack([obs, *copies])

    def per_loss_grads(self, agent, obs, action, target):
        """The K per-loss critic gradients (list of [K, *shape]) and the K losses, one batched backward."""
        return per_group_grads(agent.critic, critic_loss, (self.views(obs),), (action, target),
                               params=agent.critic_params)
