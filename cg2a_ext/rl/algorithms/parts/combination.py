"""What ac and cg2a share: the clean batch and N augmented copies as K = N + 1 critic losses."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from cg2a_ext import per_group_grads
from cg2a_ext.per_group_grads import SplitUnsupported, auto_method

from cg2a_ext.rl.algorithms.base import Algorithm, critic_loss


AugmentationName = Literal["identity", "shift", "conv", "overlay", "overlay_s"]
AUGMENTATION_NAMES: tuple[str, ...] = ("identity", "shift", "conv", "overlay", "overlay_s")
# The paper's combination (K = 4). The cpu preset's small encoder cannot fit the random-conv copy: cg2a with it
# stays near a random policy on cartpole_balance for 17k steps while the overlay pair passes 800 (RESULTS.md).
PAPER_COMBINATION: tuple[str, ...] = ("conv", "overlay", "overlay_s")
CPU_COMBINATION: tuple[str, ...] = ("overlay", "overlay_s")


@dataclass
class CombinationOptions:
    augmentations: tuple[AugmentationName, ...] | None = None
    """Augmentations combined with the clean batch (K = 1 + their number): identity, shift, conv, overlay,
    overlay_s. None = the preset's: conv overlay overlay_s (paper), overlay overlay_s (cpu: its small encoder
    does not learn with the random-conv copy)."""


class AugmentationCombination(Algorithm):
    """Base of algorithms over the K views [o, tau_1(o), ..., tau_N(o)] (``--augmentations``)."""

    gradient_diagnostics = True
    draws_overlay_images = True
    Options = CombinationOptions

    @classmethod
    def num_losses(cls, options) -> int:
        if options.augmentations is None:
            raise ValueError(f"{cls.name}: --augmentations is unresolved (TrainConfig.validate() fills it)")
        return 1 + len(options.augmentations)

    @classmethod
    def overlays_with(cls, options) -> bool:
        # unresolved: both presets' combinations overlay
        augs = options.augmentations
        return augs is None or any(a in ("overlay", "overlay_s") for a in augs)

    @classmethod
    def resolve_options(cls, options, cfg) -> None:
        if options.augmentations is None:
            options.augmentations = CPU_COMBINATION if cfg.preset == "cpu" else PAPER_COMBINATION

    @classmethod
    def check_config(cls, options, cfg) -> None:
        from cg2a_ext.rl.config import ConfigError

        if not isinstance(options.augmentations, tuple) or not options.augmentations:
            raise ConfigError(f"{cls.name} needs at least one augmentation in --augmentations, got "
                              f"{options.augmentations!r}")
        for name in options.augmentations:
            if name not in AUGMENTATION_NAMES:
                raise ConfigError(f"unknown augmentation {name!r} in --augmentations; known: "
                                  f"{', '.join(AUGMENTATION_NAMES)}")

    def __init__(self, cfg, device, seeds) -> None:
        super().__init__(cfg, device, seeds)
        from cg2a_ext.rl.core.augmentations import make_combination, overlay_options

        self.combination = make_combination(list(self.options.augmentations), **overlay_options(cfg, seeds))
        self.grad_method: str | None = None    # per_group_grads' method, fixed at the first update

    def views(self, obs: torch.Tensor) -> torch.Tensor:
        """[K, B, C, H, W]: the clean batch and its augmented copies."""
        copies = self.combination(obs, generator=self.generator)
        return torch.stack([obs, *copies])

    def per_loss_grads(self, nets, obs, action, target):
        """The K per-loss critic gradients (list of [K, *shape]) and the K losses, one batched backward.

        The first call lets per_group_grads measure its methods (vmap, loop, split: "auto"); the choice is kept
        (and checkpointed), so a resumed run computes its gradients the same way, bit for bit."""
        views = self.views(obs)
        try:
            result = per_group_grads(nets.critic, critic_loss, (views,), (action, target),
                                     params=nets.critic_params, method=self.grad_method or "auto")
        except SplitUnsupported:
            # a run that chose split, resumed with options split cannot serve (e.g. --compile on): measure again
            self.grad_method = None
            result = per_group_grads(nets.critic, critic_loss, (views,), (action, target),
                                     params=nets.critic_params, method="auto")
        if self.grad_method is None:
            self.grad_method = auto_method(nets.critic, critic_loss, (views,), (action, target),
                                           params=nets.critic_params)
        return result

    def state_dict(self):
        return {**super().state_dict(), "grad_method": self.grad_method or ""}

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        self.grad_method = state.get("grad_method") or None     # checkpoints before it: measured again
