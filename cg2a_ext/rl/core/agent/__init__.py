"""The SAC core and its networks; ``make_agent`` builds the agent of a config's algorithm."""
from __future__ import annotations

from cg2a_ext.rl.core.agent.networks import Actor, Critic, Encoder, SharedCNN, build_networks
from cg2a_ext.rl.core.agent.sac_agent import SACAgent


def make_agent(obs_shape, action_dim, cfg, device="cpu", seeds=None) -> SACAgent:
    """The SAC agent for ``cfg`` (a TrainConfig) with its registered algorithm.

    ``seeds``: the run's :class:`~cg2a_ext.rl.run.seeding.SeedStreams` (default: from ``cfg.seed``); the
    algorithm draws its augmentation (and gamma) generators from it. Network initialisation uses
    torch's global RNG, which the caller seeds.
    """
    import torch

    from cg2a_ext.rl import algorithms
    from cg2a_ext.rl.run.seeding import SeedStreams

    from cg2a_ext.rl.config import resolve

    resolve(cfg)        # options left unset take the algorithm's, family's and preset's values (idempotent)
    device = torch.device(device)
    algorithm = algorithms.get(cfg.algorithm)(cfg, device, seeds or SeedStreams(cfg.seed))
    return SACAgent(obs_shape, action_dim, cfg, algorithm, device)


__all__ = ["SACAgent", "make_agent", "build_networks", "Actor", "Critic", "Encoder", "SharedCNN"]
