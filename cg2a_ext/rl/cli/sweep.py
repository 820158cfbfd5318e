"""``cg2a-sweep`` / ``python python/sweep.py``: run a grid of training runs on Ray.

    python python/sweep.py --root runs/sweep --tasks cartpole_balance --algorithms drq cg2a --seeds 0 1 2 \\
        --set preset=cpu --set action_repeat=8 --vary "augmentations=overlay overlay_s|conv overlay overlay_s"
    python python/sweep.py --config sweep.toml --root runs/sweep          # the grid from a TOML file
    python python/sweep.py ... --address auto --gpus_per_run 0.25          # on a running Ray cluster

One run folder per run under --root, named by its options; sweep.json lists them. Launching the same
command again skips finished runs and resumes the others from their last checkpoint. Ctrl-C stops
the sweep (every run keeps its last checkpoint); a second Ctrl-C kills the runs at once.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from cg2a_ext.rl import algorithms

INSTALL_HINT = ('sweep.py runs the grid on Ray, which is not installed here. Install the optional extra '
                'from the repository root:  pip install ".[sweep]"')


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sweep.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("the grid")
    g.add_argument("--root", default=None, help="sweep folder: one run folder per run, sweep.json, _sweep/")
    g.add_argument("--config", default=None, help="TOML file with the grid (see cg2a_ext.rl.sweep.grid)")
    g.add_argument("--tasks", nargs="+", default=[], help="DMC tasks")
    g.add_argument("--algorithms", nargs="+", default=[], help="algorithms (" + ", ".join(algorithms.NAMES) + ")")
    g.add_argument("--seeds", nargs="+", type=int, default=[], help="seeds")
    g.add_argument("--set", action="append", nargs="+", default=[], metavar="KEY=VALUE",
                   help="a train.py option for every run, e.g. preset=cpu, 'eval_modes=train video_hard', gas=false")
    g.add_argument("--vary", action="append", nargs="+", default=[], metavar="KEY=V1|V2",
                   help="an option with one run per value ('|' between values), named in the run folders")
    g.add_argument("--order", choices=("seeds", "grid"), default="seeds",
                   help="launch order: seeds (each configuration's first seed, then the second seeds, ...: a "
                        "first comparison of every method early) or grid (all seeds of one configuration "
                        "first); runs with a checkpoint always resume first")
    g.add_argument("--dry_run", action="store_true", help="print the runs and their train.py options; run nothing")
    r = p.add_argument_group("Ray")
    r.add_argument("--address", default=None, help="a running Ray cluster (e.g. auto); default: start Ray here")
    r.add_argument("--num_cpus", type=int, default=None, help="local Ray: CPUs to use (default: all)")
    r.add_argument("--num_gpus", type=float, default=None, help="local Ray: GPUs to use (default: detected)")
    r.add_argument("--cpus_per_run", type=float, default=1.0, help="CPUs per run (also its torch threads)")
    r.add_argument("--gpus_per_run", type=float, default=0.0, help="GPUs per run; 0.25 packs 4 runs per GPU")
    r.add_argument("--retries", type=int, default=3, help="retries of a run whose worker dies or errs")
    r.add_argument("--refresh", type=float, default=None,
                   help="seconds between progress tables (default 5 on a terminal, 30 otherwise)")
    z = p.add_argument_group("zero-shot evaluation in the sweep (what report.py would do afterwards)")
    z.add_argument("--zero_shot_episodes", type=int, default=0,
                   help="evaluate each run, once trained, on --zero_shot_modes with this many episodes per mode, in "
                        "its own slot (cached in the run folder: report.py then reuses it); 0: leave it to report.py")
    z.add_argument("--zero_shot_modes", nargs="+", default=None, metavar="MODE",
                   help="modes of that evaluation (default: every mode of the task's environment family)")
    r.add_argument("--stop_timeout", type=float, default=120.0,
                   help="seconds stopped runs get to checkpoint before they are killed")
    return p


def _modes_of(spec) -> tuple[str, ...]:
    """The evaluation modes of the sweep's tasks' environment families (in family order, each once)."""
    from cg2a_ext.rl.envs import family_of

    out: list[str] = []
    for block in spec.blocks:
        for task in block.tasks:
            try:
                out += [m for m in family_of(task).modes if m not in out]
            except ValueError:                      # an unknown task: its runs fail on their own
                continue
    return tuple(out)


def main(argv=None) -> int:
    from cg2a_ext.rl.sweep.grid import GridError, build_spec, order_runs

    p = parser()
    args = p.parse_args(argv)
    flat = lambda items: [x for group in items for x in group]
    try:
        spec = build_spec(args.config, args.tasks, args.algorithms, args.seeds, flat(args.set), flat(args.vary))
        runs = order_runs(spec.runs(), args.order)
    except GridError as e:
        p.error(str(e))
    root = args.root or spec.root
    if not root:
        p.error("give the sweep folder with --root (or `root = ...` in the TOML file)")
    for name, value in (("cpus_per_run", args.cpus_per_run), ("retries", args.retries)):
        if value < 0 or (name == "cpus_per_run" and value <= 0):
            p.error(f"--{name} must be {'positive' if name == 'cpus_per_run' else '>= 0'}, got {value}")
    if args.gpus_per_run < 0:
        p.error(f"--gpus_per_run must be >= 0, got {args.gpus_per_run}")
    MODES = _modes_of(spec)
    if args.zero_shot_episodes < 0:
        p.error(f"--zero_shot_episodes must be >= 0, got {args.zero_shot_episodes}")
    zero_shot_modes = tuple(args.zero_shot_modes or MODES)
    unknown = [m for m in zero_shot_modes if m not in MODES]
    if unknown:
        p.error(f"unknown --zero_shot_modes {', '.join(unknown)}; known modes: {', '.join(MODES)}")
    if args.dry_run:
        for run in runs:
            print(f"{run.name}\n    train.py {shlex.join(run.command_line())}")
        print(f"{len(runs)} runs under {root}")
        print(_cost(runs))
        return 0
    try:
        import ray  # noqa: F401
    except ImportError:
        print(f"sweep.py: error: {INSTALL_HINT}", file=sys.stderr)
        return 2
    from cg2a_ext.rl.sweep.runner import RunnerOptions, SweepLocked, SweepRunner

    options = RunnerOptions(root=Path(root), address=args.address, num_cpus=args.num_cpus, num_gpus=args.num_gpus,
                            cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run, retries=args.retries,
                            refresh=args.refresh, stop_timeout=args.stop_timeout,
                            zero_shot_episodes=args.zero_shot_episodes, zero_shot_modes=zero_shot_modes)
    runner = SweepRunner(runs, options, spec=spec.to_dict(), handle_signals=True)
    try:
        code = runner.run()
    except (SweepLocked, RuntimeError) as e:
        print(f"sweep.py: error: {e}", file=sys.stderr)
        return 2
    print(runner.summary())
    if code == 130:
        print("stopped: launch the same command again to resume")
    elif code == 0:
        print(f"next: python python/report.py {root}   (add --archive DIR to keep the results without "
              f"the checkpoints: the sweep root holds them only on this machine)")
    return code


def _cost(runs) -> str:
    """The GPU-hours the runs would take (``cg2a_ext.rl.sweep.cost``), their configs resolved as a run does."""
    import copy

    from cg2a_ext.rl.config import resolve
    from cg2a_ext.rl.sweep.cost import describe, estimate

    configs = []
    for run in runs:
        cfg = copy.deepcopy(run.config)
        resolve(cfg)
        configs.append(cfg)
    return describe(estimate(configs))


if __name__ == "__main__":
    sys.exit(main())
