"""What a sweep costs on a GPU, from the speeds measured on one (BENCHMARKS.md): printed by ``sweep.py --dry_run``.

Agent steps/s end to end at the paper preset on one H100 (BENCHMARKS.md, issues 11 and 13). The update dominates
a step, so the figures serve every environment family; an algorithm not measured there takes the figure of the
measured one whose update is closest, and the estimate says so.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

# algorithm -> (steps/s, what the figure is)
MEASURED_H100: dict[str, tuple[float, str]] = {
    "drq": (51.9, "measured"),
    "cg2a": (26.5, "measured"),
    "soda": (24.1, "measured"),
    "sgqn": (15.5, "measured"),
    "smg": (15.0, "measured"),
    "sac": (51.9, "drq's figure (same update without the shift)"),
    "svea": (39.0, "between drq and cg2a (a 2B critic batch): unmeasured"),
    "ac": (26.5, "cg2a's figure (the same K views, one backward): unmeasured"),
}


@dataclass
class Estimate:
    runs: int
    gpu_hours: float
    assumptions: list[str]


def estimate(configs: Iterable) -> Estimate:
    """GPU-hours of training ``configs`` (TrainConfigs) one after another on one H100, evaluations excluded."""
    hours, runs, notes = 0.0, 0, set()
    for cfg in configs:
        rate, what = MEASURED_H100.get(cfg.algorithm, (15.0, "the slowest measured figure: unmeasured"))
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
