"""Can the agent's pixel trunk see what the task needs? A supervised probe.

Collects frame stacks from ``make_env`` with small random actions (so the
pole of cartpole stays near upright, where balancing happens), then trains the
agent's own ``SharedCNN -> Projection`` plus a small head (Adam, lr 1e-3,
batch 32) to regress the hinge angle and angular velocity, and prints
1 - R^2 on held-out stacks. Values near 0: the frames at this resolution carry
the state; near 1: they do not.

``--augmentations conv,overlay,overlay_s`` trains, like cg2a's critic, on the
random-shifted batch and its augmented copies (the plain mean of the K losses)
and still reports the error on clean held-out stacks, with the error on each
augmented held-out copy: does the trunk keep the state while it learns to
ignore what the augmentations change?

    python python/diagnostics/perception_probe.py --image_size 48 --num_conv_layers 4 --num_filters 16 --num_stride2 2
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from cg2a_ext.rl.core.agent.networks import Projection, SharedCNN
from cg2a_ext.rl.core.augmentations import make_combination, random_shift
from cg2a_ext.rl.envs import make_env


def collect(image_size: int, action_repeat: int, episodes: int, seed: int):
    env = make_env("cartpole_balance", seed=seed, image_size=image_size, action_repeat=action_repeat,
                   episode_length=80)
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done = False
        while not done:
            obs, _, terminated, truncated, _ = env.step(rng.uniform(-0.3, 0.3, 1))
            data = env.physics.named.data
            xs.append(obs)
            ys.append([data.qpos["hinge_1"][0], data.qvel["hinge_1"][0]])
            done = terminated or truncated
    env.close()
    return torch.as_tensor(np.array(xs)), torch.as_tensor(np.array(ys), dtype=torch.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image_size", type=int, default=48)
    ap.add_argument("--num_conv_layers", type=int, default=4)
    ap.add_argument("--num_filters", type=int, default=16)
    ap.add_argument("--num_stride2", type=int, default=2)
    ap.add_argument("--action_repeat", type=int, default=8)
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--augmentations", default="",
                    help="comma-separated copies trained alongside the clean batch (as cg2a's critic), '' = none")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    x, y = collect(args.image_size, args.action_repeat, args.episodes, args.seed)
    keep = y[:, 0].abs() < 0.3                      # near upright
    x, y = x[keep], y[keep]
    perm = torch.randperm(len(x))
    train, test = perm[: int(0.8 * len(x))], perm[int(0.8 * len(x)):]
    y = y / y[train].std(0)
    trunk = SharedCNN(tuple(x.shape[1:]), args.num_conv_layers, args.num_filters, args.num_stride2)
    proj = Projection(trunk.out_shape, 50)
    head = torch.nn.Sequential(torch.nn.Linear(50, 256), torch.nn.ReLU(), torch.nn.Linear(256, 2))
    model = torch.nn.Sequential(trunk, proj, head)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    combo = make_combination(args.augmentations) if args.augmentations else None
    names = ["clean"] + (combo.names if combo else [])
    gen = torch.Generator().manual_seed(args.seed)
    test_views = [x[test].float()] + (combo(x[test].float(), generator=gen) if combo else [])
    print(f"{len(x)} stacks near upright, {args.image_size} px, {args.num_filters} filters, trained on "
          f"{'+'.join(names)}; columns: iteration, seconds, then 1-R^2 of angle/angular velocity "
          "on held-out " + ", ".join(names))
    t0 = time.monotonic()
    for it in range(args.iterations + 1):
        idx = train[torch.randint(0, len(train), (args.batch_size,))]
        obs = random_shift(x[idx], generator=gen).float()
        views = torch.cat([obs] + (combo(obs, generator=gen) if combo else []))
        target = y[idx].repeat(len(names), 1)
        loss = ((model(views) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it % 500 == 0:
            cols = []
            with torch.no_grad():
                for v in test_views:
                    err = ((model(v) - y[test]) ** 2).mean(0) / y[test].var(0)
                    cols.append(f"{err[0]:.3f}/{err[1]:.3f}")
            print(f"{it},{time.monotonic() - t0:.0f}," + ",".join(cols), flush=True)


if __name__ == "__main__":
    main()
