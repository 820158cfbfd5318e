"""What a sweep costs on a GPU, from the speeds measured on one (BENCHMARKS.md): printed by ``sweep.py --dry_run``.

Each algorithm class declares its agent steps/s end to end at the paper preset on one H100 (``gpu_steps_per_s``,
BENCHMARKS.md, issues 11 and 13) and what the figure is. The update dominates a step, so the figures serve every
environment family; an algorithm not measured borrows the figure of the measured one whose update is closest,
and the estimate says so.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from cg2a_ext.rl import algorithms


def gpu_speed(name: str) -> tuple[float, str]:
    """``name``'s steps/s on one H100 at the paper preset and what the figure is. Without a figure of its own
    (one inherited from a parent class does not count: the subclass changes the update) it takes the slowest
    measured figure, so that the estimate errs long."""
    figure = vars(algorithms.get(name)).get("gpu_steps_per_s")
    if figure is not None:
        return figure
    measured = [f[0] for n in algorithms.NAMES
                if (f := vars(algorithms.get(n)).get("gpu_steps_per_s")) is not None and f[1] == "measured"]
    return min(measured), "the slowest measured figure: unmeasured"


@dataclass
class Estimate:
    runs: int
    gpu_hours: float
    assumptions: list[str]


def estimate(configs: Iterable) -> Estimate:
    """GPU-hours of training ``configs`` (TrainConfigs) one after another on one H100, evaluations excluded."""
    hours, runs, notes = 0.0, 0, set()
    for cfg in configs:
        rate, what = gpu_speed(cfg.algorithm)
        if what != "measured":
            notes.add(f"{cfg.algorithm}: {what}")
        if cfg.preset != "paper":
            notes.add("runs at the cpu preset are counted at the paper preset's speed (an upper bound)")
        hours += cfg.train_steps / rate / 3600
        runs += 1
    return Estimate(runs, hours, sorted(notes))


def describe(e: Estimate) -> str:
    text = (f"estimated training time: {e.gpu_hours:.0f} GPU-hours on one H100 for {e.runs} runs "
            f"({e.gpu_hours / max(e.runs, 1):.1f} h per run; evaluations and checkpoints not counted)")
    return text + "".join(f"\n  assumption: {n}" for n in e.assumptions)
