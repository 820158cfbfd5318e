"""Sanity check of the SAC core without pixels: SAC from proprioceptive states.

The agent is the repository's ``SACAgent`` (same actor, critic, temperature and
target updates, same hyper-parameters as ``--preset``); only the trunk is
replaced by the identity, so the projection ``Linear -> LayerNorm -> tanh``
reads the state vector. If this does not learn, the bug is in the SAC core,
not in the pixels. On cartpole_balance (action repeat 8) it reaches ~950 within
~3-4k agent steps, about a minute on one CPU core.

    python python/diagnostics/state_sac.py --task cartpole_balance --action_repeat 8 --train_steps 4000
"""
from __future__ import annotations

import copy
import sys
import time

import numpy as np
import torch
import torch.nn as nn

import cg2a_ext.rl.envs  # noqa: F401  (imports torch._dynamo before dm_control; see cg2a_ext/rl/envs)
from cg2a_ext.rl import algorithms
from cg2a_ext.rl.core.agent import SACAgent
from cg2a_ext.rl.run.seeding import SeedStreams
from cg2a_ext.rl.core.agent.networks import Actor, Critic, Encoder, Projection
from cg2a_ext.rl.cli.options import config_from_args


class IdentityTrunk(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def state_networks(state_dim: int, action_dim: int, cfg):
    trunk = IdentityTrunk()
    actor = Actor(Encoder(trunk, Projection((state_dim,), cfg.projection_dim)), action_dim, cfg.hidden_dim,
                  cfg.actor_log_std_min, cfg.actor_log_std_max)
    critic = Critic(Encoder(trunk, Projection((state_dim,), cfg.projection_dim)), action_dim, cfg.hidden_dim)
    target = copy.deepcopy(critic)
    for p in target.parameters():
        p.requires_grad_(False)
    return actor, critic, target


class StateReplay:
    """Plain (s, a, r, s', not_done) arrays: the interface ``SACAgent.update`` samples from."""

    def __init__(self, state_dim: int, action_dim: int, capacity: int, seed: int):
        self.s = np.zeros((capacity, state_dim), np.float32)
        self.a = np.zeros((capacity, action_dim), np.float32)
        self.r = np.zeros((capacity, 1), np.float32)
        self.s2 = np.zeros((capacity, state_dim), np.float32)
        self.nd = np.zeros((capacity, 1), np.float32)
        self.n = 0
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.n

    def add(self, s, a, r, s2, terminated) -> None:
        i = self.n
        self.s[i], self.a[i], self.r[i], self.s2[i], self.nd[i] = s, a, r, s2, 0.0 if terminated else 1.0
        self.n += 1

    def sample(self, batch_size: int, device=None):
        i = self.rng.integers(0, self.n, batch_size)
        return tuple(torch.from_numpy(x[i]).to(device) for x in (self.s, self.a, self.r, self.s2, self.nd))


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    cfg = config_from_args(["--preset", "cpu", "--algorithm", "sac", *argv])
    if cfg.algorithm != "sac":
        raise SystemExit("state_sac: only --algorithm sac makes sense without pixels")
    from dm_control import suite

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.num_threads or 1)
    domain, task = cfg.task.split("_", 1)
    env = suite.load(domain, task, task_kwargs={"random": cfg.seed})
    flat = lambda ts: np.concatenate([np.atleast_1d(v).ravel() for v in ts.observation.values()]).astype(np.float32)
    spec = env.action_spec()
    ts = env.reset()
    s = flat(ts)
    algorithm = algorithms.get(cfg.algorithm)(cfg, torch.device("cpu"), SeedStreams(cfg.seed))
    agent = SACAgent(s.shape, spec.shape[0], cfg, algorithm, "cpu",
                     networks=state_networks(s.size, spec.shape[0], cfg))
    replay = StateReplay(s.size, spec.shape[0], cfg.train_steps, cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    ret, t0, episode = 0.0, time.monotonic(), 0
    print("episode,agent_step,return,seconds")
    for step in range(cfg.train_steps):
        if step < cfg.seed_steps:
            a = rng.uniform(-1, 1, spec.shape).astype(np.float32)
        else:
            a = agent.act(s, sample=True)
            agent.update(replay)
        r = 0.0
        for _ in range(cfg.action_repeat):
            ts = env.step(spec.minimum + (a + 1) * 0.5 * (spec.maximum - spec.minimum))
            r += ts.reward or 0.0
            if ts.last():
                break
        s2 = flat(ts)
        replay.add(s, a, r, s2, ts.last() and ts.discount == 0.0)
        s, ret = s2, ret + r
        if ts.last():
            print(f"{episode},{step + 1},{ret:.1f},{time.monotonic() - t0:.0f}", flush=True)
            episode, ret = episode + 1, 0.0
            ts = env.reset()
            s = flat(ts)


if __name__ == "__main__":
    main()
