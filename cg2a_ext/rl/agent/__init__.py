"""SAC agent: networks, the SAC core and the critic-gradient strategies."""
from .critic_gradient import (AugmentedMean, CG2AGradient, CriticGradient, CriticGradOutput, PlainLoss,
                              SVEAGradient, critic_loss, make_critic_gradient)
from .networks import Actor, Critic, Encoder, SharedCNN, build_networks
from .sac import SACAgent


def make_agent(obs_shape, action_dim, cfg, device="cpu"):
    """Build the SAC agent for ``cfg`` (a TrainConfig) with its critic-gradient strategy and RNGs."""
    import torch

    device = torch.device(device)
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed + 1)
    gamma_gen = torch.Generator()
    gamma_gen.manual_seed(cfg.seed + 2)
    strategy = make_critic_gradient(cfg, device, generator=gen, gamma_generator=gamma_gen)
    agent = SACAgent(obs_shape, action_dim, cfg, strategy, device)
    agent.gamma_generator = gamma_gen
    return agent


__all__ = ["SACAgent", "make_agent", "make_critic_gradient", "CriticGradient", "CriticGradOutput", "PlainLoss",
           "SVEAGradient", "AugmentedMean", "CG2AGradient", "critic_loss", "build_networks", "Actor", "Critic",
           "Encoder", "SharedCNN"]
