"""Aggregate scores across tasks with 95 % stratified-bootstrap intervals (Agarwal et al., 2021).

The estimators are rliable's (``rliable.metrics``: IQM, mean, probability of improvement), applied
to a (runs x tasks) matrix of normalised scores. The intervals are percentile intervals of a
bootstrap that resamples runs within each task (stratified by task), which is what rliable's
``get_interval_estimates`` does; the resampling itself is ``scipy.stats.bootstrap`` given one
sample per task (it resamples each sample independently), because ``rliable.library`` imports
``arch``, whose releases break with pandas 3 (import error) or dropped the ``random_state``
keyword rliable passes. Scores are normalised to [0, 1] by each task's return range (its environment
family's ``normalised_return_range``; the summary passes only tasks that have one); without ranges,
by ``SCORE_SCALE``.

A matrix needs as many runs on every task: with unequal counts the first runs (lowest seeds)
are kept, down to the smallest count. With one run per task there is no interval.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCORE_SCALE = 1000.0
CONFIDENCE = 0.95


@dataclass
class Estimate:
    value: float
    low: float | None
    high: float | None
    runs_per_task: int
    tasks: int

    def to_dict(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high, "runs_per_task": self.runs_per_task,
                "tasks": self.tasks}

    def text(self, digits: int = 3) -> str:
        if self.low is None:
            return f"{self.value:.{digits}f} (no interval: 1 run per task)"
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def score_matrix(per_task: dict[str, list[float]],
                 ranges: dict[str, tuple[float, float]] | None = None) -> tuple[np.ndarray, list[str]]:
    """{task: per-run scores (in seed order)} -> (runs x tasks) matrix of normalised scores, tasks.

    ``ranges``: {task: (low, high)}, a score s becoming (s - low) / (high - low); None: s / ``SCORE_SCALE``."""
    tasks = sorted(per_task)
    n = min(len(per_task[t]) for t in tasks)
    low_high = [(0.0, SCORE_SCALE) if ranges is None else ranges[t] for t in tasks]
    return np.array([[(per_task[t][i] - lo) / (hi - lo) for t, (lo, hi) in zip(tasks, low_high)] for i in range(n)],
                    dtype=np.float64), tasks


def _metric(name: str):
    from rliable import metrics

    return {"iqm": metrics.aggregate_iqm, "mean": metrics.aggregate_mean}[name]


def _bootstrap(samples: list[np.ndarray], statistic, reps: int, seed: int) -> tuple[float, float]:
    from scipy.stats import bootstrap

    res = bootstrap(tuple(samples), statistic, n_resamples=reps, confidence_level=CONFIDENCE, method="percentile",
                    vectorized=False, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def aggregate(matrix: np.ndarray, metric: str, reps: int = 2000, seed: int = 0) -> Estimate:
    """IQM or mean of a (runs x tasks) matrix with its stratified-bootstrap interval."""
    fn = _metric(metric)
    value = float(fn(matrix))
    runs, tasks = matrix.shape
    if runs < 2:
        return Estimate(value, None, None, runs, tasks)
    low, high = _bootstrap([matrix[:, j] for j in range(tasks)], lambda *cols: fn(np.stack(cols, axis=1)),
                           reps, seed)
    return Estimate(value, low, high, runs, tasks)


def probability_of_improvement(x: np.ndarray, y: np.ndarray, reps: int = 2000, seed: int = 0) -> Estimate:
    """P(a run of X scores above a run of Y on a random task), X and Y (runs x tasks) on the same tasks."""
    from rliable import metrics

    if x.shape[1] != y.shape[1]:
        raise ValueError(f"X and Y need the same tasks (columns), got {x.shape[1]} and {y.shape[1]}")
    tasks = x.shape[1]
    value = float(metrics.probability_of_improvement(x, y))
    if min(x.shape[0], y.shape[0]) < 2:
        return Estimate(value, None, None, min(x.shape[0], y.shape[0]), tasks)
    samples = [x[:, j] for j in range(tasks)] + [y[:, j] for j in range(tasks)]

    def statistic(*cols):
        return metrics.probability_of_improvement(np.stack(cols[:tasks], axis=1), np.stack(cols[tasks:], axis=1))

    low, high = _bootstrap(samples, statistic, reps, seed)
    return Estimate(value, low, high, min(x.shape[0], y.shape[0]), tasks)
