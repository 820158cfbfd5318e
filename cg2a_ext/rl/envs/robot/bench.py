"""Env steps per second of the robot tasks, physics and rendering measured apart.

    python -m cg2a_ext.rl.envs.robot.bench [--steps 100] [--image-size 84]

Prints a markdown table: per task and mode, whole env steps/s (physics +
render of the observation), physics alone (mocap update + 20 substeps +
reward), rendering alone (frames/s), and the time of a reset (which settles
the arm for 0.5 s of simulated time). Random actions; resets at episode end
are timed apart.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from . import MODES, TASKS, make_env


def bench_cell(task: str, mode: str, steps: int, image_size: int, seed: int = 0) -> dict[str, float]:
    env = make_env(task, mode, seed=seed, image_size=image_size)
    try:
        render_s = 0.0
        original = env._render

        def timed_render():
            nonlocal render_s
            t = time.perf_counter()
            out = original()
            render_s += time.perf_counter() - t
            return out

        rng = np.random.default_rng(seed)
        t = time.perf_counter()
        env.reset()
        reset_s, resets = time.perf_counter() - t, 1
        env._render = timed_render
        step_s, truncated = 0.0, False
        for _ in range(steps):
            if truncated:
                render_before = render_s
                t = time.perf_counter()
                env.reset()
                reset_s += time.perf_counter() - t
                render_s = render_before  # the reset's render is part of the reset
                resets += 1
            a = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
            t = time.perf_counter()
            _, _, _, truncated, _ = env.step(a)
            step_s += time.perf_counter() - t
        physics_s = step_s - render_s
        return {
            "env": steps / step_s,
            "physics": steps / physics_s,
            "render": steps / render_s,
            "reset_ms": 1e3 * reset_s / resets,
        }
    finally:
        env.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="env steps per cell (default 100)")
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    args = parser.parse_args(argv)
    print(f"robot envs, {args.image_size} px, {args.steps} steps per cell, random actions\n")
    print("| task | mode | env steps/s | physics steps/s | render frames/s | reset ms |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for task in args.tasks:
        for mode in args.modes:
            r = bench_cell(task, mode, args.steps, args.image_size)
            print(f"| {task} | {mode} | {r['env']:.0f} | {r['physics']:.0f} | {r['render']:.0f} | {r['reset_ms']:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
