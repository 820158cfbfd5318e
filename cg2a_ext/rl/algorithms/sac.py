"""sac: SAC from pixels, the clean critic loss, no augmentation."""
from __future__ import annotations

from cg2a_ext.rl.algorithms.base import Algorithm, CriticGradOutput, critic_loss


class SAC(Algorithm):
    name = "sac"
    label = "SAC"
    gpu_steps_per_s = (51.9, "drq's figure (same update without the shift)")
    summary = "SAC from pixels: the clean critic loss, no augmentation"
    shift = False

    @classmethod
    def ablation(cls, options) -> str | None:
        return cls.name if cls.name == "sac" else None

    def critic_gradient(self, step) -> CriticGradOutput:
        nets, obs, action, target, diagnostics = step
        return self.backward_single(nets, critic_loss(nets.critic, obs, action, target))


ALGORITHM = SAC
