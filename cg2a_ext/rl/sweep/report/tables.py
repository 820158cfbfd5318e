"""Markdown tables of the report, in the CG2A paper's layouts.

- Table 1 (``color_hard``, the paper's "Random Colors") and Table 2 (``video_easy``, ``video_hard``):
  one row per task, one column per method, "mean +- std (n=runs)" over seeds (sample std, ddof = 1); after an algorithm's own
  columns, the paper's number for it where the paper has that task and mode, labelled as the paper's.
- The same layout for the modes the paper does not report (the train mode, color_easy).
- Table 4 (ablations on ``video_hard``): one row per ablation the sweep holds (each run's row is its
  algorithm's ``ablation(options)``), tasks as columns, the paper's figure beside ours.
- Table 3 (robot manipulation, ``scene_table``): the tasks of one family, a row per task and scene
  (train, test1-3), a column per method labelled as its algorithm's ``label``, each algorithm followed
  by the paper's column; the same cells as success rates; the family's other scenes (test4, test5) in a
  table of their own. Those tasks then have no per-mode tables.

Which mode is which table is the paper's fact (``paper_numbers``); the train mode of a task is its
environment family's first mode. No table names an algorithm: columns come from the runs, their order
and the paper's columns from ``paper_numbers``, labels from the algorithm registry.
"""
from __future__ import annotations

import numpy as np

from cg2a_ext.rl import algorithms
from cg2a_ext.rl.sweep import paper_numbers
from cg2a_ext.rl.sweep.report.collect import RunInfo
from cg2a_ext.rl.sweep.report.summary import STD_DDOF, STD_NOTE, Summary, left_out_reason, train_mode

MODE_TABLE = paper_numbers.MODE_TABLE


def _md(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def _pm(mean: float, std: float | None) -> str:
    return f"{mean:.0f} ± {std:.0f}" if std is not None else f"{mean:.0f}"


def _paper(table: str, mode: str, task: str, method: str) -> str:
    found = paper_numbers.lookup(table, mode, task, method)
    return _pm(found[0].mean, found[0].std) if found else ""


def _family(task: str):
    from cg2a_ext.rl.envs import family_of

    try:
        return family_of(task)
    except ValueError:                   # a task no family knows (any more): only the per-mode tables show it
        return None


def scene_tasks(summary: Summary) -> list[str]:
    """The summary's tasks of the family the paper's Table 3 layout is for, in the paper's row order."""
    tasks = [t for t in summary.tasks if (f := _family(t)) is not None and f.name == paper_numbers.SCENE_TABLE_FAMILY]
    order = paper_numbers.SCENE_TABLE_TASKS
    return sorted(tasks, key=lambda t: (order.index(t) if t in order else len(order), summary.tasks.index(t)))


def mode_tasks(summary: Summary, mode: str) -> list[str]:
    """The tasks of the per-mode table of ``mode``: those that have the mode, less the Table 3 layout's."""
    scene = set(scene_tasks(summary))
    return [t for t in summary.tasks if t not in scene and ((f := _family(t)) is None or mode in f.modes)]


def mode_table(summary: Summary, mode: str, tasks: list[str] | None = None) -> str:
    """One row per task (``tasks``, default all the summary's), one column per method, the paper's beside."""
    tasks = summary.tasks if tasks is None else tasks
    table = MODE_TABLE.get(mode)
    headers, columns = [f"task ({STD_NOTE})"], []
    for i, method in enumerate(summary.methods):
        algorithm = summary.algorithm_of[method]
        columns.append(("ours", method))
        headers.append(method)
        # the paper's column after the last of this algorithm's methods
        last_of_algorithm = all(summary.algorithm_of[m] != algorithm for m in summary.methods[i + 1:])
        if table and last_of_algorithm and any(paper_numbers.lookup(table, mode, t, algorithm) for t in tasks):
            columns.append(("paper", algorithm))
            headers.append(f"{algorithm} (paper, Table {table})")
    rows = []
    for task in tasks:
        row = [task]
        for kind, key in columns:
            if kind == "paper":
                row.append(_paper(table, mode, task, key))
                continue
            cell = summary.cells.get((task, key, mode))
            row.append(_cell(cell))
        rows.append(row)
    return _md(headers, rows)


def _cell(cell) -> str:
    return f"{_pm(cell.mean, cell.std)} (n={cell.n})" if cell else ""


def algorithm_label(algorithm: str) -> str:
    """How tables name an algorithm: its registry ``label`` (the name itself for one the registry lacks)."""
    try:
        return algorithms.get(algorithm).label or algorithm
    except KeyError:
        return algorithm


def method_label(summary: Summary, method: str) -> str:
    """A method as the Table 3 layout names it: its algorithm's label, then the options that make it a variant."""
    algorithm = summary.algorithm_of.get(method, method)
    rest = method[len(algorithm):] if method.startswith(algorithm) else f" ({method})"
    return algorithm_label(algorithm) + rest


def _scene_columns(summary: Summary, tasks: list[str], with_paper: bool) -> list[tuple[str, str]]:
    """("ours", method) and ("paper", algorithm) columns: algorithms in the paper's Table 3 order, others after
    them in the registry's, the proposed last; each algorithm's methods (plain run first), then its paper column.
    Every algorithm of the paper's table has its column even without runs, so the published row is complete."""
    paper = paper_numbers.methods_of(paper_numbers.SCENE_TABLE)
    ours = [m for m in summary.methods if any((t, m, mode) in summary.cells for t in tasks for mode in summary.modes)]
    names = list(algorithms.NAMES)

    def rank(algorithm: str):
        return (algorithm == algorithms.PROPOSED, paper.index(algorithm) if algorithm in paper else
                len(paper) + (names.index(algorithm) if algorithm in names else len(names)), algorithm)

    columns = []
    for algorithm in sorted({summary.algorithm_of[m] for m in ours} | (set(paper) if with_paper else set()), key=rank):
        columns += [("ours", m) for m in ours if summary.algorithm_of[m] == algorithm]
        if with_paper and algorithm in paper:
            columns.append(("paper", algorithm))
    return columns


def _number(value: float, digits: int) -> str:
    return f"{value:.{digits}f}"


def _scene_cell(cell, success: bool) -> str:
    """``mean ± std (n=runs)``: returns with one decimal (robot returns are tens), success rates with two."""
    if cell is None:
        return ""
    mean, std, n, digits = ((cell.success_mean, cell.success_std, cell.success_n, 2) if success
                            else (cell.mean, cell.std, cell.n, 1))
    if mean is None:
        return ""
    spread = f" ± {_number(std, digits)}" if std is not None else ""
    return f"{_number(mean, digits)}{spread} (n={n})"


def _paper_scene(mode: str, task: str, algorithm: str) -> str:
    found = paper_numbers.lookup(paper_numbers.SCENE_TABLE, mode, task, algorithm)
    if not found:
        return ""
    n = found[0]
    # as printed in the paper: means with one decimal, stds as whole numbers (kept as given, should one not be)
    return f"{n.mean:.1f} ± {n.std:g}" if n.std is not None else f"{n.mean:.1f}"


def scene_table(summary: Summary, scenes, success: bool = False, with_paper: bool = True) -> str:
    """The paper's Table 3 layout over the summary's ``scene_tasks``: a row per task and scene (those of
    ``scenes`` the summary has), a column per method; returns, or with ``success`` each run's success rate
    (no paper columns: the paper gives none). Cells: mean ± sample std over runs (ddof = 1), n."""
    tasks = scene_tasks(summary)
    scenes = [m for m in scenes if m in summary.modes]
    columns = _scene_columns(summary, tasks, with_paper and not success)
    headers = ["task", f"scene ({STD_NOTE})"]
    headers += [method_label(summary, key) if kind == "ours" else
                f"{algorithm_label(key)} (paper, Table {paper_numbers.SCENE_TABLE})" for kind, key in columns]
    rows = []
    for task in tasks:
        for scene in scenes:
            row = [task, scene]
            for kind, key in columns:
                row.append(_paper_scene(scene, task, key) if kind == "paper"
                           else _scene_cell(summary.cells.get((task, key, scene)), success))
            rows.append(row)
    return _md(headers, rows)


def scene_modes(summary: Summary) -> tuple[list[str], list[str]]:
    """(the scenes of the paper's Table 3, the family's other scenes) among the summary's modes."""
    reported = [m for m in paper_numbers.SCENE_TABLE_MODES if m in summary.modes]
    family_modes = [m for t in scene_tasks(summary) for m in _family(t).modes]
    others = [m for m in dict.fromkeys(family_modes) if m in summary.modes and m not in reported]
    return reported, others


def has_success_rates(summary: Summary) -> bool:
    tasks = set(scene_tasks(summary))
    return any(c.run_success_rates for (t, _, _), c in summary.cells.items() if t in tasks)


def ablation_table(summary: Summary, runs: list[RunInfo], mode: str = paper_numbers.ABLATION_MODE) -> str | None:
    """Table 4 layout, or None when the sweep holds fewer than two ablation rows."""
    order = paper_numbers.ABLATION_ORDER
    ablation_of = {}
    for r in runs:
        if r.ablation is not None and r.finished:
            ablation_of.setdefault(r.method, r.ablation)
    if len(set(ablation_of.values())) < 2:
        return None
    rank = lambda row: order.index(row) if row in order else len(order)     # noqa: E731
    methods = sorted(ablation_of, key=lambda m: (rank(ablation_of[m]), ablation_of[m], m))
    headers = [f"method ({STD_NOTE})", "paper's row"]
    for task in summary.tasks:
        headers += [task, f"{task} (paper, Table {paper_numbers.ABLATION_TABLE})"]
    rows = []
    for method in methods:
        row = [method, ablation_of[method]]
        for task in summary.tasks:
            cell = summary.cells.get((task, method, mode))
            row.append(_cell(cell))
            row.append(_paper(paper_numbers.ABLATION_TABLE, mode, task, ablation_of[method]))
        rows.append(row)
    return _md(headers, rows)


def _success_rates(r: RunInfo, modes) -> str:
    return ", ".join(f"{m} {r.zero_shot[m]['success_rate']:.2f}" for m in modes
                     if r.zero_shot.get(m) and r.zero_shot[m].get("success_rate") is not None)


def runs_table(runs: list[RunInfo], modes) -> str:
    """Every run: status, steps, its zero-shot returns, and its success rates where some run has them."""
    success = any(_success_rates(r, modes) for r in runs)      # no column where no run's episodes report success
    rows = []
    for r in runs:
        steps = f"{r.step}/{r.train_steps}" if r.train_steps else str(r.step)
        zs = ", ".join(f"{m} {r.zero_shot[m]['mean']:.0f} ({r.zero_shot[m]['episodes']} ep)"
                       for m in modes if r.zero_shot.get(m)) or (r.zero_shot_error or "")
        rows.append([r.name, r.task, r.method, str(r.seed), r.status, steps, zs] +
                    ([_success_rates(r, modes)] if success else []))
    return _md(["run", "task", "method", "seed", "status", "steps", "zero-shot return (episodes)"] +
               (["zero-shot success rate"] if success else []), rows)


def basis_table(summary: Summary) -> str:
    """How many runs, seeds, steps and episodes each (task, method) rests on."""
    rows = []
    for task in summary.tasks:
        for method in summary.methods:
            cells = [summary.cells[(task, method, m)] for m in summary.modes if (task, method, m) in summary.cells]
            if not cells:
                continue
            c = max(cells, key=lambda c: len(c.runs))
            steps = sorted(set(c.steps))
            eps = sorted({e for c_ in cells for e in c_.episodes})
            rows.append([task, method, str(len(c.runs)), " ".join(map(str, c.seeds)),
                         str(steps[0]) if len(steps) == 1 else f"{steps[0]}-{steps[-1]}",
                         ", ".join(map(str, eps)), ", ".join(c_.mode for c_ in cells)])
    return _md(["task", "method", "runs", "seeds", "agent steps", "episodes per run and mode", "modes"], rows)


def normalisation(summary: Summary) -> str:
    """How the aggregates normalise returns: ``returns / 1000`` for dmc alone; else each family's range."""
    if summary.divisor is not None:
        return f"returns / {summary.divisor:g}"
    return "normalised returns, (return - low) / (high - low): " + ", ".join(
        f"{family} [{low:g}, {high:g}]" for family, (low, high) in summary.family_ranges.items())


def left_out_text(summary: Summary) -> str:
    """One line naming the tasks left out of the aggregates, improvements and retention, and why; "" if none."""
    by_family: dict = {}
    for task, family in summary.left_out.items():
        by_family.setdefault(family, []).append(task)
    if not by_family:
        return ""
    return ("Left out of the aggregates, the probabilities of improvement and the return kept under each shift: " +
            "; ".join(f"{', '.join(tasks)} ({left_out_reason(family)})" for family, tasks in by_family.items())
            + ".")


def aggregate_table(summary: Summary) -> str:
    rows = []
    for mode, per in summary.aggregates.items():
        for method, d in per.items():
            rows.append([mode, method, str(len(d["tasks"])), str(d["iqm"].runs_per_task), d["iqm"].text(),
                         d["mean"].text()])
    return _md(["mode", "method", "tasks", "runs per task", "IQM [95% CI]", "mean [95% CI]"], rows)


def improvement_table(summary: Summary) -> str:
    rows = [[mode, x, y, str(e.tasks), str(e.runs_per_task), e.text(2)]
            for mode, per in summary.improvement.items() for (x, y), e in per.items()]
    return _md(["mode", "X", "Y", "tasks", "runs per task", "P(X > Y) [95% CI]"], rows)


def retention_improvement_table(summary: Summary) -> str:
    rows = [[mode, x, y, str(e.tasks), str(e.runs_per_task), e.text(2)]
            for mode, per in summary.retention_improvement.items() for (x, y), e in per.items()]
    return _md(["mode", "X", "Y", "tasks", "runs per task", "P(X keeps more than Y) [95% CI]"], rows)


def retention_table(summary: Summary) -> str:
    """Per task and method: the train-mode return, and the share of it each test mode keeps (the tasks with a
    normalised return range only: ``Summary.aggregated_tasks``)."""
    test_modes = summary.retention_modes
    rows = []
    for task in summary.aggregated_tasks:
        for method in summary.methods:
            train = summary.cells.get((task, method, train_mode(task)))
            if train is None:
                continue
            row = [task, method, _cell(train)]
            for m in test_modes:
                r = summary.retention.get((task, method, m))
                row.append((f"{np.mean(r):.2f} ± {np.std(r, ddof=STD_DDOF):.2f} (n={len(r)})" if len(r) > 1
                            else f"{r[0]:.2f} (n=1)") if r else "")
            rows.append(row)
    return _md(["task", "method", f"train return ({STD_NOTE})"] + [f"{m} / train" for m in test_modes], rows)


def data_sources(summary: Summary, runs: list[RunInfo]) -> str:
    lines = []
    for mode in summary.modes:
        zs = sorted({s for c in summary.cells.values() if c.mode == mode for s in c.data_sources})
        tr = sorted({s for r in runs for s in r.eval_sources.get(mode, [])})
        text = f"- `{mode}`: zero-shot: {'; '.join(zs) or 'not evaluated'}"
        if tr:
            text += f"; evaluations during training: {'; '.join(tr)}"
        lines.append(text)
    return "\n".join(lines) + "\n"


def overlay_sources(runs: list[RunInfo]) -> str:
    """Which overlay images the runs trained with (only methods that overlay images use them)."""
    by_source: dict[str, list[str]] = {}
    for r in runs:
        if r.overlay_images:
            by_source.setdefault(r.overlay_images, [])
            if r.method not in by_source[r.overlay_images]:
                by_source[r.overlay_images].append(r.method)
    if not by_source:
        return ""
    lines = []
    for source, methods in by_source.items():
        n = sum(r.overlay_images == source for r in runs)
        lines.append(f"- {source}: {n} runs ({', '.join(methods)})")
    if any(s.startswith("procedural") for s in by_source):
        lines.append("\nThe procedural images stand in for Places365, which the published methods overlay: "
                     "results of overlaying methods trained with them are an approximation of those methods.")
    return "\n".join(lines) + "\n"
