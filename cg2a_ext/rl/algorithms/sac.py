"""sac: SAC from pixels, the clean critic loss, no augmentation."""
from __future__ import annotations

from .base import Algorithm, CriticGradOutput, critic_loss


class SAC(Algorithm):
    name = "sac"
    summary = "SAC from pixels: the clean critic loss, no augmentation"
    shift = False

    def critic_gradient(self, agent, obs, action, target, *, diagnostics=False) -> CriticGradOutput:
        return self.backward_single(agent, critic_loss(agent.critic, obs, action, target))


ALGORITHM = SAC
