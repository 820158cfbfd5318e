"""svea: alpha L(o) + beta L(tau(o)) on the concatenated batch (SVEA, Hansen et al. 2021)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from cg2a_ext.rl.algorithms.base import Algorithm, CriticGradOutput, critic_loss


@dataclass
class SVEAOptions:
    augmentation: Literal["overlay", "conv"] = "overlay"
    """The one augmentation (overlay or conv)."""
    alpha: float = 0.5
    """Weight of the clean loss."""
    beta: float = 0.5
    """Weight of the augmented loss."""


class SVEA(Algorithm):
    name = "svea"
    label = "SVEA"
    gpu_steps_per_s = (39.0, "between drq and cg2a (a 2B critic batch): unmeasured")
    Options = SVEAOptions
    cli_prefix = "svea_"
    summary = "SVEA: weighted clean and augmented critic losses (one augmentation)"
    method_options = ("augmentation", "alpha", "beta", "image_bank")
    draws_overlay_images = True

    @classmethod
    def overlays_with(cls, options) -> bool:
        return options.augmentation == "overlay"

    @classmethod
    def num_losses(cls, options) -> int:
        return 2

    @classmethod
    def check_config(cls, options, cfg) -> None:
        from cg2a_ext.rl.config import ConfigError

        for name in ("alpha", "beta"):
            value = getattr(options, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"--svea_{name} must be a finite number >= 0, got {value!r}")
        if options.augmentation not in ("overlay", "conv"):
            raise ConfigError(f"--svea_augmentation must be overlay or conv, got {options.augmentation!r}")

    def __init__(self, cfg, device, seeds) -> None:
        super().__init__(cfg, device, seeds)
        from cg2a_ext.rl.core.augmentations import make_combination, overlay_options

        self.augmentation = make_combination([self.options.augmentation], **overlay_options(cfg, seeds))
        self.alpha, self.beta = self.options.alpha, self.options.beta

    def augment(self, obs: torch.Tensor) -> torch.Tensor:
        return self.augmentation(obs.clone(), generator=self.generator)[0]

    def critic_gradient(self, step) -> CriticGradOutput:
        nets, obs, action, target, diagnostics = step
        aug = self.augment(obs)
        critic = nets.critic
        if self.alpha == self.beta:   # one forward on the 2B batch
            loss = (self.alpha + self.beta) * critic_loss(
                critic, torch.cat([obs, aug]), torch.cat([action, action]), torch.cat([target, target]))
        else:
            loss = self.alpha * critic_loss(critic, obs, action, target) + self.beta * critic_loss(
                critic, aug, action, target)
        return self.backward_single(nets, loss)


ALGORITHM = SVEA
