"""Shared set-up of the agent tests: tiny configs, a filled replay, state comparison."""
from __future__ import annotations

import numpy as np
import torch

from cg2a_ext.rl import algorithms
from cg2a_ext.rl.config import TrainConfig, resolve
from cg2a_ext.rl.core.replay import FrameReplayBuffer

OBS = (9, 32, 32)
A = 2


def config_with(**kw) -> TrainConfig:
    """A TrainConfig from core options and the algorithm's options under their command-line names
    (``soda_batch_size=16``, ``gamma=(0.3, 0.3)``, ``gas=False``), as a sweep line or a command line names them."""
    algo = algorithms.get(kw.get("algorithm", TrainConfig.algorithm))
    flags = {flag: field for field, flag in algo.cli_names().items()}
    for field, aliases in algo.cli_aliases.items():
        flags.update({a.lstrip("-"): field for a in aliases})
    options = {flags[k]: kw.pop(k) for k in list(kw) if k in flags}
    return TrainConfig(**kw, options=algo.Options(**options))


def small_agent_cfg(**kw) -> TrainConfig:
    """A CPU config with a two-layer, eight-filter trunk and batch 8, its unset options filled but not checked
    (tests pass options the checks would refuse)."""
    base = dict(task="cartpole_balance", preset="paper", image_size=OBS[-1], num_conv_layers=2, num_filters=8, projection_dim=16,
                hidden_dim=32, batch_size=8, device="cpu")
    base.update(kw)
    cfg = config_with(**base)
    resolve(cfg)
    return cfg


def tiny_cfg(algorithm: str, **kw) -> TrainConfig:
    """``small_agent_cfg`` for ``algorithm`` with SODA's own batch scaled down too, validated."""
    if algorithm == "soda":
        kw = {"soda_batch_size": 16, **kw}
    return small_agent_cfg(algorithm=algorithm, **kw).validate()


def filled_replay(obs_shape=OBS, action_dim=A, steps=40, seed=0) -> FrameReplayBuffer:
    rb = FrameReplayBuffer(obs_shape, action_dim, 100, frame_stack=3, episode_steps=20, seed=seed)
    rng = np.random.default_rng(seed)
    rb.add_first(rng.integers(0, 256, obs_shape, dtype=np.uint8))
    for _ in range(steps):
        rb.add(rng.uniform(-1, 1, action_dim), rng.uniform(0, 1), rng.integers(0, 256, obs_shape, dtype=np.uint8),
               False)
    return rb


def batch(b=8, obs_shape=OBS, action_dim=A, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randint(0, 256, (b, *obs_shape), generator=g).float()
    action = torch.rand(b, action_dim, generator=g) * 2 - 1
    target = torch.randn(b, 1, generator=g)
    return obs, action, target


def flat_tensors(state, prefix="") -> dict[str, torch.Tensor]:
    """Every tensor of a nested state dict (optimizer states included), keyed by its path."""
    out = {}
    if isinstance(state, torch.Tensor):
        out[prefix] = state
    elif isinstance(state, dict):
        for k, v in state.items():
            out.update(flat_tensors(v, f"{prefix}/{k}"))
    elif isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            out.update(flat_tensors(v, f"{prefix}/{i}"))
    return out


def aux_step(agent, batch, replay=None, num_transitions: int | None = None):
    """The AuxiliaryStep the agent hands its algorithm for ``batch`` (a Batch), drawing from ``replay``."""
    from cg2a_ext.rl.algorithms.base import AuxiliaryStep

    n = num_transitions if num_transitions is not None else (replay.num_transitions if replay is not None else 0)
    sample = (lambda k: replay.sample(k, device=agent.device)[0]) if replay is not None else None
    return AuxiliaryStep(agent.nets, batch, agent.num_updates, n, sample)
