"""cg2a benchmarks (``cg2a-bench``, ``python python/bench.py``): one entry point for every suite.

Each suite is a module (the aggregator's in ``cg2a_ext.bench``, the RL application's here), runnable alone (``python -m cg2a_ext.rl.bench.agent --speed``).
The aggregator suite (ops) imports nothing of cg2a_ext.rl; the others are the RL application's.

    cg2a-bench                                  # all suites
    python python/bench.py --suite ops          # fused aggregation (issue 2)
    python python/bench.py --suite per_loss_grads   # per_group_grads on the DMC-GB critic (issue 11)
    python python/bench.py --suite envs         # environments and augmentations (issue 3)
    python python/bench.py --suite agent        # critic updates and agent steps (issue 4)
    python python/bench.py --suite baselines    # soda, sgqn, smg against drq (issue 13)
    python python/bench.py --quick              # small sizes, for a smoke run

Two builds of the aggregator side by side (alternating runs, ratios):
``python -m cg2a_ext.bench.compare_builds OLD_TREE NEW_TREE``. Where an update's time goes:
``python -m cg2a_ext.rl.bench.profile``; what it reads back to the host and how many kernel-launching
ops it dispatches: ``python -m cg2a_ext.rl.bench.host_reads``; the critic update per per_group_grads
method: ``python -m cg2a_ext.rl.bench.agent --critic-methods``; the update captured as CUDA graphs (self-check,
update time and end-to-end steps/s with the graph on and off, GPU only): ``python -m cg2a_ext.rl.bench.graph``.

Each suite prints a markdown table (the one quoted in BENCHMARKS.md) and all
rows are written as JSON to --json (default bench_results/<suite>.json).
"""
from __future__ import annotations

import argparse
import importlib
import json
import platform
import time
from pathlib import Path

import torch


SUITES = {"ops": "cg2a_ext.bench.ops", "per_loss_grads": "cg2a_ext.rl.bench.per_loss_grads",
          "envs": "cg2a_ext.rl.bench.envs", "agent": "cg2a_ext.rl.bench.agent",
          "baselines": "cg2a_ext.rl.bench.baselines"}


def machine() -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu"] = f"{names[0]} x {len(names)}" if names else info["cpu"]
    except OSError:
        pass
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", action="append", choices=tuple(SUITES), help="suite(s) to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats")
    parser.add_argument("--json-dir", default="bench_results", help="where the JSON results go")
    args = parser.parse_args()

    out_dir = Path(args.json_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = machine()
    print(f"machine: {info}")
    for suite in args.suite or SUITES:
        module = importlib.import_module(SUITES[suite])
        start = time.perf_counter()
        rows = module.run(quick=args.quick)
        print(f"\n## {suite} ({time.perf_counter() - start:.0f} s)\n")
        print(module.format_table(rows))
        path = out_dir / f"{suite}.json"
        path.write_text(json.dumps({"machine": info, "quick": args.quick, "rows": rows}, indent=2, default=str))
        print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
