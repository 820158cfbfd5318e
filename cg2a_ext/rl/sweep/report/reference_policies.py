"""Reference policies on the robot tasks, on the very episodes the report evaluates runs on.

    python -m cg2a_ext.rl.sweep.report.reference_policies --task reach --episodes 30 --seeds 0 1

Three policies that need no training: ``random`` (uniform actions in [-1, 1]), ``still`` (the zero
action: the arm stays where the episode starts) and ``expert`` (``expert_action``: privileged state,
straight to the goal). Each is run on every mode with the zero-shot seeds of a run of each seed given
(``zero_shot_seeds``: the same goal and start draws as ``python/report.py`` uses for those runs), so a
trained run's return and success rate can be read between "random" and "expert" episode by episode.
The policies do not look at the pixels: ``--image_size`` only sets the render's cost (the physics does
not depend on it).

Prints a markdown table (return mean and standard deviation over every episode of every seed, success
rate) and, with ``--json``, writes the numbers.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

POLICIES = ("random", "still", "expert")


class _Policy:
    """What ``run_episodes`` needs of an agent: ``act(obs, sample)``."""

    def __init__(self, name: str, env, rng: np.random.Generator) -> None:
        self.name, self.env, self.rng = name, env, rng

    def act(self, obs, sample: bool = False) -> np.ndarray:
        from cg2a_ext.rl.envs.robot import expert_action

        shape = self.env.action_space.shape
        if self.name == "random":
            return self.rng.uniform(-1.0, 1.0, shape).astype(np.float32)
        if self.name == "still":
            return np.zeros(shape, np.float32)
        return expert_action(self.env)


def evaluate(task: str, policies, modes, seeds, episodes: int, image_size: int = 84) -> dict:
    """{policy: {mode: {"returns", "successes", "mean", "std", "success_rate"}}} over ``seeds`` x ``episodes``."""
    from cg2a_ext.rl.core.evaluation import run_episodes
    from cg2a_ext.rl.envs import family_of
    from cg2a_ext.rl.envs.robot import make_env
    from cg2a_ext.rl.run.seeding import SeedStreams
    from cg2a_ext.rl.sweep.report.zero_shot import zero_shot_seeds

    family_modes = family_of(task).modes
    for mode in modes:
        if mode not in family_modes:
            raise ValueError(f"unknown mode {mode!r} for task {task}; known modes: {', '.join(family_modes)}")
    for name in policies:
        if name not in POLICIES:
            raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}")
    out: dict = {name: {} for name in policies}
    for name in policies:
        for mode in modes:
            returns: list[float] = []
            successes: list[bool] = []
            for seed in seeds:
                streams = SeedStreams(seed)
                i = family_modes.index(mode)
                env_seed, episode_seeds = zero_shot_seeds(streams, i, episodes)
                env = make_env(task, mode=mode, seed=env_seed, image_size=image_size)
                try:
                    rng = np.random.default_rng(streams.integer("reference_random", i, bits=31))
                    won: list[bool] = []
                    returns += run_episodes(_Policy(name, env, rng), env, episodes, episode_seeds=episode_seeds,
                                            successes=won)
                    successes += won
                finally:
                    env.close()
            r = np.asarray(returns)
            out[name][mode] = {"returns": returns, "successes": successes, "mean": float(r.mean()),
                               "std": float(r.std()), "success_rate": float(np.mean(successes))}
    return out


def table(results: dict) -> str:
    modes = list(next(iter(results.values())))
    lines = ["| policy | " + " | ".join(modes) + " |", "| --- |" + " ---: |" * len(modes)]
    for name, per_mode in results.items():
        cells = [f"{r['mean']:.1f} ± {r['std']:.1f} ({100 * r['success_rate']:.0f} %)" for r in per_mode.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from cg2a_ext.rl.envs.robot import MODES, TASKS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="reach", choices=TASKS)
    p.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="the runs' seeds whose episodes to use")
    p.add_argument("--episodes", type=int, default=30, help="episodes per seed and mode")
    p.add_argument("--image_size", type=int, default=84, help="render size (the policies ignore the pixels)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the numbers here")
    args = p.parse_args(argv)
    if args.episodes < 1:
        p.error(f"--episodes must be >= 1, got {args.episodes}")
    results = evaluate(args.task, args.policies, args.modes, args.seeds, args.episodes, args.image_size)
    print(f"{args.task}: return mean ± std over {len(args.seeds)} seed(s) x {args.episodes} episodes "
          f"(success rate), the report's zero-shot episodes of seeds {' '.join(map(str, args.seeds))}\n")
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
