"""A toy algorithm registered from a test: one module, one registry line (tests/test_plugins.py)."""
from __future__ import annotations

from dataclasses import dataclass

from cg2a_ext.rl.algorithms.base import Algorithm, CriticGradOutput, critic_loss
from cg2a_ext.rl.config import ConfigError


@dataclass
class ToyOptions:
    weight: float = 2.0
    """Scale of the clean critic loss."""


class ToyAlgorithm(Algorithm):
    name = "toy"
    label = "Toy"
    summary = "a scaled clean critic loss (a test plugin)"
    Options = ToyOptions
    cli_prefix = "toy_"
    shift = False

    @classmethod
    def check_config(cls, options, cfg) -> None:
        if not options.weight > 0:
            raise ConfigError(f"--toy_weight must be positive, got {options.weight}")

    def critic_gradient(self, step) -> CriticGradOutput:
        nets, obs, action, target, _ = step
        return self.backward_single(nets, self.options.weight * critic_loss(nets.critic, obs, action, target))


ALGORITHM = ToyAlgorithm
