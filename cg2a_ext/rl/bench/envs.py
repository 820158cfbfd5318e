"""Benchmarks of issue 3: DMC-GB environments, the green screen and the augmentations.

    python -m cg2a_ext.rl.bench.envs [--quick]

Rows (``suite = "envs"``):

* ``env steps`` per mode (and data source): agent steps per second of
  ``make_env(task, mode, image_size=84, action_repeat=4)`` with random
  actions (4 simulator steps and 1 rendered 84 x 84 frame each), plus the
  time of a reset (colour reload / clip change);
* ``green screen``: the vectorised green screen against DMC-GB's per-pixel
  Python loop on the same rendered video_hard frames;
* ``augmentation``: one call on a 128 x 9 x 84 x 84 float batch, and
  random_conv's grouped convolution against a per-sample loop.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from cg2a_ext.rl.core.augmentations import AUGMENTATIONS, random_conv_kernels  # noqa: E402
from cg2a_ext.rl.envs import MODES, make_env  # noqa: E402
from cg2a_ext.rl.envs.dmc.video import green_screen, green_screen_reference  # noqa: E402

TASK = "walker_walk"


def _dmcgb_dir() -> Path | None:
    env = os.environ.get("CG2A_DMCGB_DATA", "").strip()
    return Path(env) if env else None


def _median_time(fn: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def bench_env_steps(quick: bool) -> list[dict]:
    steps = 20 if quick else 100
    data = _dmcgb_dir()
    configs = [("train", None)]
    for mode in MODES[1:]:
        configs.append((mode, "procedural"))
        if data is not None:
            configs.append((mode, str(data)))
    rows = []
    saved = os.environ.pop("CG2A_DMCGB_DATA", None)  # procedural rows must not pick it up
    try:
        for mode, source in configs:
            data_dir = None if source in (None, "procedural") else source
            env = make_env(TASK, mode, seed=0, image_size=84, action_repeat=4, episode_length=10**6, data_dir=data_dir)
            rng = np.random.default_rng(0)
            start = time.perf_counter()
            env.reset()  # first reset: clip decode, colour reload
            first_reset = time.perf_counter() - start
            start = time.perf_counter()
            env.reset()
            reset = time.perf_counter() - start
            for _ in range(3):
                env.step(rng.uniform(-1, 1, env.action_space.shape))
            start = time.perf_counter()
            for _ in range(steps):
                env.step(rng.uniform(-1, 1, env.action_space.shape))
            elapsed = time.perf_counter() - start
            rows.append({
                "suite": "envs", "name": "env steps", "task": TASK, "mode": mode,
                "data_source": env.data_source, "value": steps / elapsed, "unit": "agent steps/s",
                "sim_steps_per_s": 4 * steps / elapsed, "reset_s": reset, "first_reset_s": first_reset,
                "steps": steps,
            })
            env.close()
    finally:
        if saved is not None:
            os.environ["CG2A_DMCGB_DATA"] = saved
    return rows


def bench_green_screen(quick: bool) -> list[dict]:
    n_frames = 2 if quick else 5
    env = make_env(TASK, "video_hard", seed=0, image_size=84, episode_length=10**6, data_dir=None)
    env.reset()
    frames, backgrounds = [], []
    rng = np.random.default_rng(0)
    for _ in range(n_frames):
        env.step(rng.uniform(-1, 1, env.action_space.shape))
        # The frame before keying (green sky and floor) and the clip frame behind it.
        frames.append(env.physics.render(height=84, width=84, camera_id=0))
        backgrounds.append(env.background_frame())
    env.close()
    frames_a, bgs_a = np.stack(frames), np.stack(backgrounds)
    for f, b in zip(frames, backgrounds):
        assert np.array_equal(green_screen(f, b), green_screen_reference(f, b))
    loop = _median_time(lambda: [green_screen_reference(f, b) for f, b in zip(frames, backgrounds)], 1 if quick else 3)
    vec = _median_time(lambda: [green_screen(f, b) for f, b in zip(frames, backgrounds)], 20 if quick else 100)
    batched = _median_time(lambda: green_screen(frames_a, bgs_a), 20 if quick else 100)
    return [{
        "suite": "envs", "name": "green screen", "value": loop / vec, "unit": "x faster than per-pixel loop",
        "vectorised_ms_per_frame": vec / n_frames * 1e3, "batched_ms_per_frame": batched / n_frames * 1e3,
        "loop_ms_per_frame": loop / n_frames * 1e3, "frames": n_frames, "size": 84,
    }]


def _conv_loop(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """SVEA / DMC-GB's per-sample random_conv loop, with given kernels."""
    b, c, h, w = x.shape
    out = []
    for i in range(b):
        xi = F.pad(x[i].reshape(-1, 3, h, w) / 255.0, (1, 1, 1, 1), mode="replicate")
        out.append(torch.sigmoid(F.conv2d(xi, kernels[i])).reshape(c, h, w) * 255.0)
    return torch.stack(out)


def bench_augmentations(quick: bool, devices: list[str]) -> list[dict]:
    rows = []
    repeats = 3 if quick else 10
    for device in devices:
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        g = torch.Generator(device=device).manual_seed(0)
        x = torch.rand(128, 9, 84, 84, device=device, generator=g) * 255
        for name, fn in AUGMENTATIONS.items():
            t = _median_time(lambda: fn(x, generator=g), repeats, sync)
            rows.append({
                "suite": "envs", "name": "augmentation", "augmentation": name, "device": device,
                "batch": "128x9x84x84", "value": t * 1e3, "unit": "ms/batch", "samples_per_s": 128 / t,
            })
        kernels = random_conv_kernels(128, device=device, generator=g)
        from cg2a_ext.rl.core.augmentations import apply_conv_kernels

        torch.testing.assert_close(apply_conv_kernels(x, kernels), _conv_loop(x, kernels), rtol=1e-4, atol=1e-3)
        t_group = _median_time(lambda: apply_conv_kernels(x, kernels), repeats, sync)
        t_loop = _median_time(lambda: _conv_loop(x, kernels), repeats, sync)
        rows.append({
            "suite": "envs", "name": "random_conv grouped vs loop", "device": device, "batch": "128x9x84x84",
            "value": t_loop / t_group, "unit": "x faster than per-sample loop",
            "grouped_ms": t_group * 1e3, "loop_ms": t_loop * 1e3,
        })
    return rows


def run(quick: bool = False, devices: list[str] | None = None) -> list[dict]:
    devices = devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    return bench_env_steps(quick) + bench_green_screen(quick) + bench_augmentations(quick, devices)


def format_table(rows: list[dict]) -> str:
    out = []
    env_rows = [r for r in rows if r["name"] == "env steps"]
    if env_rows:
        out += [
            f"Environment steps ({env_rows[0]['task']}, 84 x 84, action repeat 4, random actions):",
            "",
            "| mode | data | agent steps/s | sim steps/s | reset (s) | first reset (s) |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for r in env_rows:
            out.append(
                f"| {r['mode']} | {r['data_source']} | {r['value']:.1f} | {r['sim_steps_per_s']:.0f} "
                f"| {r['reset_s']:.2f} | {r['first_reset_s']:.2f} |"
            )
        out.append("")
    for r in (r for r in rows if r["name"] == "green screen"):
        out += [
            f"Green screen on {r['frames']} rendered video_hard frames, 84 x 84:",
            "",
            "| implementation | ms / frame | speed-up |",
            "| --- | ---: | ---: |",
            f"| per-pixel Python loop (DMC-GB) | {r['loop_ms_per_frame']:.1f} | 1x |",
            f"| vectorised, frame by frame | {r['vectorised_ms_per_frame']:.3f} | {r['value']:.0f}x |",
            f"| vectorised, all frames at once | {r['batched_ms_per_frame']:.3f} "
            f"| {r['loop_ms_per_frame'] / r['batched_ms_per_frame']:.0f}x |",
            "",
        ]
    aug_rows = [r for r in rows if r["name"] == "augmentation"]
    if aug_rows:
        out += [
            "Augmentations on a 128 x 9 x 84 x 84 float batch (median of repeats):",
            "",
            "| augmentation | device | ms / batch | samples/s |",
            "| --- | --- | ---: | ---: |",
        ]
        for r in aug_rows:
            out.append(f"| {r['augmentation']} | {r['device']} | {r['value']:.1f} | {r['samples_per_s']:.0f} |")
        out.append("")
    conv_rows = [r for r in rows if r["name"] == "random_conv grouped vs loop"]
    if conv_rows:
        out += [
            "random_conv: one grouped convolution against a per-sample loop (same kernels, same batch):",
            "",
            "| device | grouped (ms) | per-sample loop (ms) | speed-up |",
            "| --- | ---: | ---: | ---: |",
        ]
        for r in conv_rows:
            out.append(f"| {r['device']} | {r['grouped_ms']:.1f} | {r['loop_ms']:.1f} | {r['value']:.1f}x |")
    return "\n".join(out).rstrip() + "\n"


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}, MUJOCO_GL={os.environ.get('MUJOCO_GL', '(auto)')}")
    print(format_table(run(quick=args.quick)))


if __name__ == "__main__":
    main()
