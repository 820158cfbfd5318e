#!/usr/bin/env python
"""Baseline benchmarks: update cost and agent steps/s of soda, sgqn and smg against drq.

    python -m cg2a_ext.rl.bench.baselines [--quick] [--presets cpu,paper] [--json out.json]

Each configuration is what ``train.py --preset P --algorithm A --task cartpole_balance`` runs: the
preset, then the algorithm's own defaults (soda renders frames 16 px larger and trains on crops;
smg uses batch 64 and projection 256), plus the protocol-matched options (``soda_crop=shift``,
``smg_protocol=dmcgb``). Rows per configuration:

* ``update``: seconds per SAC update, the mean over pairs of updates (the auxiliary step runs every
  2nd update), median over repetitions, on a replay of 1000 random frames;
* ``act`` and ``env step`` (the real renderer at the configuration's frame size);
* ``agent steps/s`` = 1 / (update + act + env step), the training loop's rate after the seed steps.

The process keeps freed host memory (``cg2a_ext.rl.run.host_memory``), as ``train.py`` does by default.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from cg2a_ext.bench.timing import median_time

CONFIGS = (
    ("drq", ()),
    ("soda", ()),
    ("soda", ("--soda_crop", "shift")),
    ("sgqn", ()),
    ("smg", ()),
    ("smg", ("--smg_protocol", "dmcgb")),
)


def config(preset: str, algorithm: str, options=()):
    """The preset's config of ``algorithm`` on cartpole_balance with command-line ``options``; SystemExit naming a
    bad option or algorithm."""
    from cg2a_ext.rl.cli.options import config_from_args
    from cg2a_ext.rl.config import ConfigError

    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return config_from_args(["--preset", preset, "--algorithm", algorithm, "--task", "cartpole_balance",
                                 "--device", device, *options])
    except ConfigError as e:
        print(f"baselines.py: error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def random_replay(obs_shape, action_dim: int, frames: int, frame_stack: int):
    """A replay buffer of ``frames`` random frames (what an update samples does not change its cost)."""
    from cg2a_ext.rl.core.replay import FrameReplayBuffer

    rb = FrameReplayBuffer(obs_shape, action_dim, 2000, frame_stack=frame_stack, episode_steps=250)
    rng = np.random.default_rng(0)
    rb.add_first(rng.integers(0, 256, obs_shape, dtype=np.uint8))
    for _ in range(frames):
        rb.add(rng.uniform(-1, 1, action_dim), 0.0, rng.integers(0, 256, obs_shape, dtype=np.uint8), False)
    return rb


def update_time(agent, rb, device, reps: int) -> float:
    """Seconds per update: the median over ``reps`` pairs of updates (the auxiliary steps run every second one)."""
    return median_time(lambda: (agent.update(rb), agent.update(rb)), device, reps, warmup=1) / 2


def step_times(cfg, reps: int) -> dict:
    """Seconds per update, act and env step for ``cfg``."""
    from cg2a_ext.rl.core.agent import make_agent
    from cg2a_ext.rl.envs import make_env

    device = torch.device(cfg.device)
    env = make_env(cfg.task, seed=0, image_size=cfg.image_size, frame_stack=cfg.frame_stack,
                   action_repeat=cfg.action_repeat, episode_length=cfg.episode_length)
    obs_shape, adim = env.observation_space.shape, env.action_space.shape[0]
    env.reset(seed=0)
    zero = np.zeros(adim, np.float32)
    env_t = median_time(lambda: env.step(zero), torch.device("cpu"), max(20, 5 * reps), warmup=3)
    env.close()
    torch.manual_seed(0)
    agent = make_agent(obs_shape, adim, cfg, device)
    rb = random_replay(obs_shape, adim, 1000, cfg.frame_stack)
    update = update_time(agent, rb, device, reps)
    obs = np.random.default_rng(1).integers(0, 256, obs_shape, dtype=np.uint8)
    act = median_time(lambda: agent.act(obs, sample=True), device, 20, warmup=2)
    return {"update": update, "act": act, "env": env_t, "steps_per_s": 1.0 / (update + act + env_t)}


def update_only(algorithms: list[str], preset: str, reps: int) -> None:
    """Prints the ms per update of each algorithm (no environment): for comparing two trees, e.g.
    ``PYTHONPATH=OLD_TREE python cg2a_ext/rl/bench/baselines.py --update_only smg`` against this tree."""
    import cg2a_ext
    from cg2a_ext.rl.core.agent import make_agent

    for algorithm in algorithms:
        cfg = config(preset, algorithm)
        device = torch.device(cfg.device)
        obs_shape = (3 * cfg.frame_stack, cfg.image_size, cfg.image_size)
        torch.manual_seed(0)
        agent = make_agent(obs_shape, 1, cfg, device)
        rb = random_replay(obs_shape, 1, 500, cfg.frame_stack)
        print(f"{algorithm} ({preset}, {torch.get_num_threads()} threads, {Path(cg2a_ext.__file__).parents[1]}): "
              f"{update_time(agent, rb, device, reps) * 1e3:.0f} ms per update", flush=True)


def run(quick: bool = False, presets: list[str] | None = None) -> list[dict]:
    from cg2a_ext.rl.run.host_memory import keep_freed_host_memory

    keep_freed_host_memory()
    presets = presets or (["cpu"] if quick or not torch.cuda.is_available() else ["cpu", "paper"])
    threads = torch.get_num_threads()
    rows = []
    for preset in presets:
        reps = 3 if quick or preset == "paper" else 7
        for algorithm, options in CONFIGS:
            cfg = config(preset, algorithm, options)
            t = step_times(cfg, reps)
            label = " ".join([algorithm, *(o.lstrip("-") for o in options)])
            tag = f"{preset} B={cfg.batch_size} d={cfg.projection_dim} {cfg.image_size}px {cfg.device} threads={threads}"
            rows.append({"suite": "baselines", "name": f"agent steps/s {label} [{tag}]", "value": t["steps_per_s"],
                         "unit": "steps/s"})
            for part in ("update", "act", "env"):
                rows.append({"suite": "baselines", "name": f"  {part} {label} [{tag}]", "value": t[part] * 1e3,
                             "unit": "ms"})
            print(f"{label:28s} {tag}: update {t['update'] * 1e3:7.1f} ms, act {t['act'] * 1e3:5.1f} ms, "
                  f"env {t['env'] * 1e3:5.1f} ms, {t['steps_per_s']:.2f} steps/s", file=sys.stderr)
    return rows


def format_table(rows) -> str:
    lines = ["| benchmark | value | unit |", "| --- | ---: | --- |"]
    lines += [f"| {r['name']} | {r['value']:.3g} | {r['unit']} |" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--presets", default="", help="comma-separated presets (default: cpu, plus paper with CUDA)")
    parser.add_argument("--json", default="", help="also write the rows to this JSON file")
    parser.add_argument("--update_only", nargs="+", default=None, metavar="ALGORITHM",
                        help="only the ms per update of these algorithms (no environment), at the first preset")
    args = parser.parse_args()
    if args.update_only:
        update_only(args.update_only, (args.presets.split(",")[0] or "cpu"), 3 if args.quick else 5)
        raise SystemExit(0)
    result = run(quick=args.quick, presets=[p for p in args.presets.split(",") if p] or None)
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": result, "threads": torch.get_num_threads(), "torch": torch.__version__}, f, indent=2)
