"""Side-by-side timing of `ops.aggregate` in two builds of cg2a_ext, on one machine in the same minutes.

On a shared machine absolute times drift with the load; alternating the two builds, run after run,
and reading the ratio is the comparison that holds. Each tree is a folder holding a built
`cg2a_ext` package (a checkout after `python setup.py build_ext --inplace`, or a copy of one).

    python -m cg2a_ext.bench.compare_builds OLD_TREE NEW_TREE [--rounds 3] [--threads 1]

Prints microseconds per call (float32, K = 4, gamma = 0.25, written into preallocated `out`) for
24 mixed tensors totalling P = 1e4 (the issue's small-P case), one tensor of 1e4 and of 1e5, and
milliseconds at P = 1e7 with the fraction of the copy bandwidth (36 P bytes for K = 4); the median
over rounds, and new / old.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CASES = ("24 mixed, P = 1e4", "1 tensor, P = 1e4", "1 tensor, P = 1e5", "24 mixed, P = 1e7")

# Runs in a child process whose sys.path starts with one tree: prints one JSON line of timings.
CHILD = r"""
import json, sys, torch
sys.path.insert(0, sys.argv[1])
import cg2a_ext
from cg2a_ext import ops
from cg2a_ext.bench.ops import calls_time, copy_bandwidth, split_sizes
assert cg2a_ext.__file__.startswith(sys.argv[1]), cg2a_ext.__file__
torch.set_num_threads(int(sys.argv[2]))
gen = torch.Generator().manual_seed(0)
result = {}
for name, total, count, calls in (("24 mixed, P = 1e4", 10_000, 24, 500), ("1 tensor, P = 1e4", 10_000, 1, 500),
                                  ("1 tensor, P = 1e5", 100_000, 1, 100), ("24 mixed, P = 1e7", 10_000_000, 24, 5)):
    sizes = split_sizes(total, count, gen)
    grads = [torch.randn(4, n, generator=gen) for n in sizes]
    out = [torch.empty(n) for n in sizes]
    result[name] = calls_time(lambda: ops.aggregate(grads, 0.25, out=out), "cpu", calls)
result["copy GB/s"] = copy_bandwidth("cpu", 10_000_000, 5)
print(json.dumps(result))
"""


def measure(tree: str, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-c", CHILD, os.path.abspath(tree), str(threads)], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"timing {tree} failed:\n{done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("old", help="folder holding the baseline build's cg2a_ext")
    p.add_argument("new", help="folder holding the build under test")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (old, new, old, new, ...)")
    p.add_argument("--threads", type=int, default=1, help="torch threads in both")
    args = p.parse_args(argv)
    for tree in (args.old, args.new):
        if not os.path.isdir(os.path.join(tree, "cg2a_ext")):
            p.error(f"{tree} holds no cg2a_ext package")
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    for r in range(args.rounds):
        for label, tree in (("old", args.old), ("new", args.new)):
            runs[label].append(measure(tree, args.threads))
            print(f"round {r + 1}/{args.rounds}: {label} measured", file=sys.stderr)
    med = {label: {k: statistics.median(run[k] for run in rs) for k in rs[0]} for label, rs in runs.items()}
    print(f"threads {args.threads}, {args.rounds} alternating rounds, medians; "
          f"copy bandwidth {med['old']['copy GB/s']:.1f} / {med['new']['copy GB/s']:.1f} GB/s (old / new runs)\n")
    print("| case | old | new | new / old | new: of copy bandwidth |")
    print("|---|---:|---:|---:|---:|")
    for case in CASES:
        old, new = med["old"][case], med["new"][case]
        big = case.endswith("1e7")
        fmt = (lambda s: f"{s * 1e3:.1f} ms") if big else (lambda s: f"{s * 1e6:.1f} us")
        share = f"{36 * 1e7 / new / 1e9 / med['new']['copy GB/s']:.0%}" if big else ""
        print(f"| {case} | {fmt(old)} | {fmt(new)} | {new / old:.2f} | {share} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
