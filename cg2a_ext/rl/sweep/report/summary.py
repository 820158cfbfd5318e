"""The numbers of the report, from the runs' zero-shot evaluations: cells, aggregates, comparisons.

A *cell* is one task, method and mode: the mean over its runs (seeds) of each run's mean episode
return, and the sample standard deviation over runs (``STD_DDOF`` = 1: with the 2-5 seeds of a sweep
the population std, ddof = 0, understates the spread by a factor up to 1.4), shown with n.
Only finished runs with a zero-shot result enter a cell. Where the task's episodes report success
(robot), a cell also holds each run's success rate over its zero-shot episodes, summarised the same way.

Aggregates across tasks, probabilities of improvement and the return kept under each shift need returns
on a known scale: they take only the tasks whose environment family gives a ``normalised_return_range``
(dmc: 0..1000), normalised by it, one group per family when several families have one (``Summary.groups``);
the other tasks are ``left_out`` of them, named in the report.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cg2a_ext.rl import algorithms
from cg2a_ext.rl.sweep.report import stats
from cg2a_ext.rl.sweep.report.collect import RunInfo

# Delta degrees of freedom of every spread over runs in the report: the sample standard deviation.
STD_DDOF = 1
STD_NOTE = "mean ± sample std over seeds (ddof = 1), n = runs"


def train_mode(task: str) -> str:
    """The mode ``task`` trains in: its environment family's first mode (the others are its test modes)."""
    from cg2a_ext.rl.envs import family_of

    return family_of(task).modes[0]


def return_scale(task: str) -> tuple[str | None, tuple[float, float] | None]:
    """(the name of ``task``'s environment family, its ``normalised_return_range``); (None, None) for a task no
    family knows."""
    from cg2a_ext.rl.envs import family_of

    try:
        family = family_of(task)
    except ValueError:
        return None, None
    return family.name, family.normalised_return_range


def family_modes(name: str) -> tuple[str, ...]:
    from cg2a_ext.rl.envs import get_family

    return get_family(name).modes


def left_out_reason(family: str | None) -> str:
    """Why a task of ``family`` (None: no family has it) has no place in the aggregates."""
    if family is None:
        return "no environment family has the task, so its return scale is unknown"
    return (f"the {family} family gives no normalised return range: its returns have no known common scale, "
            "so normalised scores and ratios of returns would mean nothing")


@dataclass
class Cell:
    task: str
    method: str
    algorithm: str
    mode: str
    runs: list[str]
    seeds: list[int]
    steps: list[int]
    episodes: list[int]
    run_means: list[float]
    data_sources: list[str]
    run_success_rates: list[float] = field(default_factory=list)   # runs whose zero-shot result has one

    @staticmethod
    def _spread(values: list[float]) -> float | None:
        """Sample std over runs (ddof = ``STD_DDOF``); None with a single run (a spread of 0 would claim what
        one run cannot show)."""
        return float(np.std(values, ddof=STD_DDOF)) if len(values) > 1 else None

    @property
    def mean(self) -> float:
        return float(np.mean(self.run_means))

    @property
    def std(self) -> float | None:
        return self._spread(self.run_means)

    @property
    def n(self) -> int:
        return len(self.run_means)

    @property
    def success_mean(self) -> float | None:
        return float(np.mean(self.run_success_rates)) if self.run_success_rates else None

    @property
    def success_std(self) -> float | None:
        return self._spread(self.run_success_rates)

    @property
    def success_n(self) -> int:
        return len(self.run_success_rates)

    def to_dict(self) -> dict:
        return {"task": self.task, "method": self.method, "algorithm": self.algorithm, "mode": self.mode,
                "runs": self.runs, "seeds": self.seeds, "steps": self.steps, "episodes": self.episodes,
                "run_means": self.run_means, "n": self.n, "mean": self.mean, "std": self.std, "std_ddof": STD_DDOF,
                "data_sources": self.data_sources,
                # only where the episodes report success: a dmc cell reads as before
                **({"run_success_rates": self.run_success_rates, "success_rate_mean": self.success_mean,
                    "success_rate_std": self.success_std} if self.run_success_rates else {})}


@dataclass
class Summary:
    modes: list[str]
    tasks: list[str]
    methods: list[str]                                   # in first-seen order
    algorithm_of: dict[str, str]
    cells: dict[tuple[str, str, str], Cell]              # (task, method, mode)
    # keyed by group (``groups()``: the mode, or "mode (family)" when several families are aggregated)
    aggregates: dict = field(default_factory=dict)       # group -> method -> {"iqm": Estimate, "mean": Estimate, "tasks"}
    improvement: dict = field(default_factory=dict)      # group -> (x, y) -> Estimate
    retention: dict = field(default_factory=dict)        # (task, method, mode) -> list of per-run ratios
    retention_improvement: dict = field(default_factory=dict)  # test group -> (x, y) -> Estimate on the ratios
    # the tasks the aggregates, improvements and retention take: task -> its return range, its family
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    task_family: dict[str, str] = field(default_factory=dict)
    left_out: dict[str, str | None] = field(default_factory=dict)   # the other tasks -> their family (or None)

    @property
    def train_modes(self) -> set[str]:
        """The train modes of the summary's tasks (every other mode is some task's test mode)."""
        return {train_mode(t) for t in self.tasks}

    @property
    def aggregated_tasks(self) -> list[str]:
        return [t for t in self.tasks if t in self.ranges]

    @property
    def aggregated_families(self) -> list[str]:
        return list(dict.fromkeys(self.task_family[t] for t in self.aggregated_tasks))

    def groups(self) -> list[tuple[str, str, str, list[str]]]:
        """(key, mode, family, tasks) of each aggregate: per mode of the summary, the aggregated tasks of each
        family that has the mode. The key is the mode, or ``mode (family)`` when several families are
        aggregated (their normalised scores are not one scale: each family is its own aggregate)."""
        families = self.aggregated_families
        tasks = {f: [t for t in self.aggregated_tasks if self.task_family[t] == f] for f in families}
        return [(f"{mode} ({family})" if len(families) > 1 else mode, mode, family, tasks[family])
                for mode in self.modes for family in families if mode in family_modes(family)]

    @property
    def family_ranges(self) -> dict[str, tuple[float, float]]:
        """The return range of each aggregated family."""
        return {self.task_family[t]: self.ranges[t] for t in self.aggregated_tasks}

    @property
    def divisor(self) -> float | None:
        """The one number every aggregated return is divided by (every range starts at 0 and ends there), else
        None (the ranges differ: each family is normalised by its own)."""
        ranges = set(self.family_ranges.values())
        return next(iter(ranges))[1] if len(ranges) == 1 and next(iter(ranges))[0] == 0 else None

    @property
    def retention_modes(self) -> list[str]:
        """The summary's modes that are a test mode of an aggregated task's family."""
        # a family's first mode is its train mode (``train_mode``), the others its test modes
        tests = {m for f in self.aggregated_families for m in family_modes(f)[1:]}
        return [m for m in self.modes if m in tests and m not in self.train_modes]

    def to_dict(self) -> dict:
        return {
            "modes": self.modes, "tasks": self.tasks, "methods": self.methods,
            "cells": [c.to_dict() for c in self.cells.values()],
            "aggregates": {m: {meth: {k: (v.to_dict() if isinstance(v, stats.Estimate) else v) for k, v in d.items()}
                               for meth, d in per.items()} for m, per in self.aggregates.items()},
            "probability_of_improvement": {m: [{"x": x, "y": y, **e.to_dict()} for (x, y), e in per.items()]
                                           for m, per in self.improvement.items()},
            "retention": [{"task": t, "method": meth, "mode": m, "ratios": r} for (t, meth, m), r in self.retention.items()],
            "retention_improvement": {m: [{"x": x, "y": y, **e.to_dict()} for (x, y), e in per.items()]
                                      for m, per in self.retention_improvement.items()},
            # only where some task is left out: a dmc sweep's report.json reads as before
            **({"left_out_of_aggregates": [{"task": t, "family": f, "reason": left_out_reason(f)}
                                           for t, f in self.left_out.items()]} if self.left_out else {}),
            **({"aggregate_groups": {key: {"mode": m, "family": f, "return_range": list(self.ranges[ts[0]])}
                                     for key, m, f, ts in self.groups()}} if len(self.aggregated_families) > 1
               else {}),
        }


def build_cells(runs: list[RunInfo], modes) -> Summary:
    methods: list[str] = []
    tasks: list[str] = []
    algorithm_of: dict[str, str] = {}
    for r in runs:
        if r.method not in methods:
            methods.append(r.method)
            algorithm_of[r.method] = r.algorithm
        if r.task not in tasks:
            tasks.append(r.task)
    cells: dict = {}
    for r in sorted((r for r in runs if r.finished and r.zero_shot), key=lambda r: r.seed):
        for mode in modes:
            z = r.zero_shot.get(mode)
            if not z:
                continue
            cell = cells.setdefault((r.task, r.method, mode), Cell(r.task, r.method, r.algorithm, mode,
                                                                   [], [], [], [], [], []))
            cell.runs.append(r.name)
            cell.seeds.append(r.seed)
            cell.steps.append(int(z.get("checkpoint_step", r.step)))
            cell.episodes.append(int(z["episodes"]))
            cell.run_means.append(float(z["mean"]))
            if z.get("success_rate") is not None:
                cell.run_success_rates.append(float(z["success_rate"]))
            if z.get("data_source") and z["data_source"] not in cell.data_sources:
                cell.data_sources.append(z["data_source"])
    # columns as in the paper's tables: the registry's order with the proposed method last; an algorithm's
    # plain run before its variants, variants by name
    order = [n for n in algorithms.NAMES if n != algorithms.PROPOSED] + [algorithms.PROPOSED]
    rank = {name: i for i, name in enumerate(order)}
    methods.sort(key=lambda m: (rank.get(algorithm_of[m], len(rank)), m != algorithm_of[m], m))
    summary = Summary(list(modes), tasks, methods, algorithm_of, cells)
    for task in tasks:
        family, scale = return_scale(task)
        if scale is None:
            summary.left_out[task] = family
        else:
            summary.ranges[task], summary.task_family[task] = (float(scale[0]), float(scale[1])), family
    return summary


def add_statistics(summary: Summary, runs: list[RunInfo], reps: int = 2000, seed: int = 0) -> Summary:
    """Aggregates per group (``Summary.groups``: a mode, per family if several) and method, probability of
    improvement of each method of the proposed algorithm (``algorithms.PROPOSED``) over each method of another
    algorithm, and each run's return under a test mode relative to its train mode: only the ``aggregated_tasks``."""
    for key, mode, _, tasks in summary.groups():
        per_method = {}
        for method in summary.methods:
            per_task = {t: summary.cells[(t, method, mode)].run_means for t in tasks
                        if (t, method, mode) in summary.cells}
            if not per_task:
                continue
            matrix, names = stats.score_matrix(per_task, summary.ranges)
            per_method[method] = {"iqm": stats.aggregate(matrix, "iqm", reps, seed),
                                  "mean": stats.aggregate(matrix, "mean", reps, seed), "tasks": names}
        summary.aggregates[key] = per_method
        summary.improvement[key] = _proposed_pairs(
            summary, tasks, summary.ranges,
            lambda t, m: summary.cells[(t, m, mode)].run_means if (t, m, mode) in summary.cells else None,
            reps, seed)
    for r in runs:
        if r.task not in summary.ranges:
            continue
        low = summary.ranges[r.task][0]
        trained_in = train_mode(r.task) if r.finished else None
        train = r.zero_shot.get(trained_in) if trained_in else None
        # a ratio of normalised returns (the range's low end as zero); none from a train return at that end
        if not train or train["mean"] - low == 0:
            continue
        for mode in summary.modes:
            z = r.zero_shot.get(mode)
            if mode != trained_in and z:
                summary.retention.setdefault((r.task, r.method, mode), []).append(
                    (z["mean"] - low) / (train["mean"] - low))
    for key, mode, _, tasks in summary.groups():
        if mode in summary.retention_modes:
            # does the proposed method keep more of its train return under this shift than each other method?
            # (the ratios are already relative: compared as they are)
            summary.retention_improvement[key] = _proposed_pairs(
                summary, tasks, {t: (0.0, 1.0) for t in tasks}, lambda t, m: summary.retention.get((t, m, mode)),
                reps, seed)
    return summary


def _proposed_pairs(summary: Summary, tasks: list[str], ranges: dict, scores, reps: int, seed: int) -> dict:
    """P(X > Y) with its interval for each method X of the proposed algorithm and each method Y of another
    algorithm, over those of ``tasks`` where both have scores (normalised by ``ranges``); ``scores(task, method)``
    gives one score per run, or None."""
    pairs = {}
    for x in summary.methods:
        if summary.algorithm_of[x] != algorithms.PROPOSED:
            continue
        for y in summary.methods:
            if summary.algorithm_of[y] == algorithms.PROPOSED:
                continue
            common = [t for t in tasks if scores(t, x) and scores(t, y)]
            if not common:
                continue
            mx, _ = stats.score_matrix({t: scores(t, x) for t in common}, ranges)
            my, _ = stats.score_matrix({t: scores(t, y) for t in common}, ranges)
            pairs[(x, y)] = stats.probability_of_improvement(mx, my, reps, seed)
    return pairs
