"""Scheduling overhead of the sweep runner (issue 12): a sweep of N tiny runs on a local Ray against
the same runs started by hand, two at a time.

    python -m cg2a_ext.rl.bench.sweep [--runs 8] [--steps 300] [--repeats 1]

"By hand" is ``python python/train.py ... --num_threads 1`` processes, two started together, the
next two when both have ended. "Sweep" is one ``python python/sweep.py --num_cpus 2 --cpus_per_run 1``
command over the same runs (Ray started and stopped inside it, all included). Both write to fresh
folders in a temporary directory. The target: sweep time <= 1.2 x hand time. With ``--repeats`` the
two ways alternate, so a change in the machine's load hits both.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from cg2a_ext.rl.run.folder import RunFolder

ROOT = Path(__file__).resolve().parents[2]
TINY = ["preset=cpu", "image_size=32", "episode_length=80", "num_conv_layers=2", "num_filters=8",
        "projection_dim=16", "hidden_dim=32", "batch_size=8", "seed_steps=20", "log_freq=50", "eval_episodes=1",
        "device=cpu", "eval_modes=train", "tensorboard=false"]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _runs(n: int, steps: int):
    from cg2a_ext.rl.sweep.grid import build_spec

    options = TINY + [f"train_steps={steps}", f"eval_freq={steps // 2}", f"checkpoint_freq={steps // 2}"]
    algorithms = ["drq", "cg2a"]
    seeds = list(range((n + 1) // 2))
    runs = build_spec(None, ["cartpole_balance"], algorithms, seeds, options).runs()[:n]
    return runs, options, algorithms, seeds


def by_hand(runs, folder: Path, parallel: int = 2) -> float:
    start = time.perf_counter()
    for i in range(0, len(runs), parallel):
        procs = [subprocess.Popen([sys.executable, "-m", "cg2a_ext.rl.cli.train", *run.command_line(), "--no-progress",
                                   "--num_threads", "1", "--run_dir", str(folder / run.name)],
                                  env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for run in runs[i:i + parallel]]
        for p in procs:
            _, err = p.communicate()
            if p.returncode != 0:
                raise RuntimeError(f"train.py failed: {err[-2000:]}")
    return time.perf_counter() - start


def with_sweep(runs, options, algorithms, seeds, folder: Path) -> float:
    cmd = [sys.executable, "-m", "cg2a_ext.rl.cli.sweep", "--root", str(folder), "--tasks", "cartpole_balance",
           "--algorithms", *algorithms, "--seeds", *map(str, seeds), "--set", *options,
           "--num_cpus", "2", "--cpus_per_run", "1", "--refresh", "3600"]
    start = time.perf_counter()
    p = subprocess.run(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    elapsed = time.perf_counter() - start
    if p.returncode != 0:
        raise RuntimeError(f"sweep.py failed:\n{p.stdout[-3000:]}")
    finished = sum(RunFolder(folder / r.name).finished.is_file() for r in runs)
    if finished != len(runs):
        raise RuntimeError(f"sweep.py finished {finished} of {len(runs)} runs")
    return elapsed


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=8, help="number of runs (drq and cg2a, seeds 0, 1, ...)")
    p.add_argument("--steps", type=int, default=300, help="agent steps per run")
    p.add_argument("--repeats", type=int, default=1, help="measurements of each way, alternating")
    args = p.parse_args(argv)
    runs, options, algorithms, seeds = _runs(args.runs, args.steps)
    if len(runs) != args.runs:
        p.error("--runs must be even")
    print(f"{len(runs)} runs of {args.steps} agent steps (tiny config), {os.cpu_count()} CPUs, "
          f"load average before: {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sweep_bench_") as tmp:
        for k in range(args.repeats):
            hand = by_hand(runs, Path(tmp) / f"hand{k}")
            print(f"by hand, two at a time: {hand:.1f} s", flush=True)
            sweep = with_sweep(runs, options, algorithms, seeds, Path(tmp) / f"sweep{k}")
            print(f"sweep on a local Ray:   {sweep:.1f} s", flush=True)
            rows.append({"hand_s": hand, "sweep_s": sweep, "ratio": sweep / hand})
    print(f"load average after: {os.getloadavg()[0]:.1f}\n")
    print("| repeat | by hand, 2 at a time (s) | sweep (s) | sweep / hand |")
    print("| ---: | ---: | ---: | ---: |")
    for i, r in enumerate(rows):
        print(f"| {i + 1} | {r['hand_s']:.1f} | {r['sweep_s']:.1f} | {r['ratio']:.2f} |")
    worst = max(r["ratio"] for r in rows)
    print(f"\ntarget sweep / hand <= 1.20: {'met' if worst <= 1.2 else 'NOT met'} (worst {worst:.2f})")
    return rows


if __name__ == "__main__":
    main()
