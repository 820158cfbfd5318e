"""What has a saved critic learned? Value against returns, and how much it depends on the action.

Loads the latest checkpoint of a run, plays a few episodes (the agent's sampled
actions, then uniform random actions) and prints, per policy: the return,
the correlation of min(Q1, Q2) with the discounted return-to-go and with the
reward, the spread of Q over states, and the mean spread of Q over the actions
{-1, 0, 1} (first action dimension; the others held at 0). A critic whose
action spread is tiny next to its state spread gives the actor no direction
to improve in: that is what a batch-32 drq run on cartpole_balance showed.

    python python/diagnostics/critic_probe.py RUN_DIR [--episodes 3]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from cg2a_ext.rl.core.agent import make_agent
from cg2a_ext.rl.run.checkpoint import latest_checkpoint, load_checkpoint
from cg2a_ext.rl.config import TrainConfig
from cg2a_ext.rl.envs import make_env
from cg2a_ext.rl.run.folder import CONFIG


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--episodes", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = TrainConfig.load(Path(args.run_dir) / CONFIG)
    env = make_env(cfg.task, seed=cfg.seed + 5, image_size=cfg.image_size, frame_stack=cfg.frame_stack,
                   action_repeat=cfg.action_repeat, episode_length=cfg.episode_length)
    adim = env.action_space.shape[0]
    agent = make_agent(env.observation_space.shape, adim, cfg, "cpu")
    agent.load_state_dict(load_checkpoint(latest_checkpoint(args.run_dir))["agent"], networks_only=True)
    rng = np.random.default_rng(0)
    print("policy,return_per_episode,corr_Q_return_to_go,corr_Q_reward,Q_std_over_states,Q_spread_over_actions")
    for policy in ("agent", "random"):
        qs, rewards, spreads, ends = [], [], [], []
        for ep in range(args.episodes):
            obs, _ = env.reset(seed=1000 + ep)
            done = False
            while not done:
                if policy == "agent":
                    a = agent.act(obs, sample=True)
                else:
                    a = rng.uniform(-1, 1, adim).astype(np.float32)
                with torch.no_grad():
                    x = torch.as_tensor(obs).float()[None]
                    qs.append(float(torch.min(*agent.critic(x, torch.as_tensor(a)[None]))))
                    probe = torch.zeros(3, adim)
                    probe[:, 0] = torch.tensor([-1.0, 0.0, 1.0])
                    q_a = torch.min(*agent.critic(x.expand(3, *x.shape[1:]), probe)).squeeze(-1)
                    spreads.append(float(q_a.max() - q_a.min()))
                obs, r, terminated, truncated, _ = env.step(a)
                done = terminated or truncated
                rewards.append(r)
                ends.append(done)
        q, r = np.array(qs), np.array(rewards)
        togo, g = np.zeros_like(r), 0.0
        for i in range(len(r) - 1, -1, -1):
            g = r[i] + (0.0 if ends[i] else cfg.discount * g)
            togo[i] = g
        print(f"{policy},{r.sum() / args.episodes:.1f},{np.corrcoef(q, togo)[0, 1]:.3f},{np.corrcoef(q, r)[0, 1]:.3f},"
              f"{q.std():.2f},{np.mean(spreads):.2f}")


if __name__ == "__main__":
    main()
