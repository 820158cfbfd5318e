"""``cg2a-report`` / ``python python/report.py SWEEP_DIR``: the report of a sweep.

    python python/report.py runs/sweep                         # every mode of the tasks, 10 episodes per run and mode
    python python/report.py runs/sweep --episodes 100 --jobs 2 --modes train video_hard
    python python/report.py runs/sweep --archive results/sweep   # then keep the results, not the checkpoints

1. Evaluates every finished run zero-shot on the modes its cache lacks (the same number of episodes
   for every run; results kept in each run folder, so a rerun evaluates nothing new).
2. Writes ``SWEEP_DIR/report/``: ``report.md`` (tables in the CG2A paper's layouts with the paper's
   numbers beside ours, the robot tasks in its Table 3 layout with success rates and the scenes it does
   not report, aggregates with 95 % bootstrap intervals, probability of improvement, return kept under
   each shift (these three over the tasks whose family gives a normalised return range: dmc; the
   others named), how many runs / seeds / steps each cell rests on, the data each mode used),
   ``report.json`` (the same numbers) and the figures as PNG.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from cg2a_ext.rl import algorithms
from cg2a_ext.rl.sweep import paper_numbers
from cg2a_ext.rl.sweep.grid import format_value
from cg2a_ext.rl.sweep.manifest import load_manifest
from cg2a_ext.rl.sweep.report import figures, tables
from cg2a_ext.rl.sweep.report.archive import check_target, write_archive
from cg2a_ext.rl.sweep.report.collect import collect
from cg2a_ext.rl.sweep.report.summary import add_statistics, build_cells
from cg2a_ext.rl.sweep.report.zero_shot import evaluate_runs



def task_modes(tasks) -> list[str]:
    """The modes of the tasks' environment families, each once, in family order (train modes first)."""
    from cg2a_ext.rl.envs import family_of

    modes: list[str] = []
    for task in tasks:
        try:
            family = family_of(task)
        except ValueError:
            continue
        modes += [m for m in family.modes if m not in modes]
    return modes


def _overlaying_algorithms() -> str:
    return ", ".join(n for n in algorithms.NAMES if algorithms.get(n).draws_overlay_images)


def _fixed_options(spec: dict) -> str:
    """The sweep's fixed options as ``key=value`` (values as run names show them)."""
    return " ".join(f"{k}={format_value(tuple(v) if isinstance(v, list) else v)}"
                    for k, v in spec.get("fixed", {}).items())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="report.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_dir", help="the sweep's --root (sweep.json and one folder per run)")
    p.add_argument("--modes", nargs="+", default=None, metavar="MODE",
                   help="zero-shot modes (default: every mode of the runs' environment families)")
    p.add_argument("--episodes", type=int, default=10, help="zero-shot episodes per run and mode")
    p.add_argument("--jobs", type=int, default=1, help="runs evaluated at once (processes)")
    p.add_argument("--device", default="cpu", help="torch device for the evaluation")
    p.add_argument("--data_dir", default=None, help="DMC-GB data folder (default: each run's own setting)")
    p.add_argument("--bootstrap_reps", type=int, default=2000, help="bootstrap resamples for the intervals")
    p.add_argument("--out", default=None, help="output folder (default: SWEEP_DIR/report)")
    p.add_argument("--no_eval", action="store_true", help="use the cached evaluations only; evaluate nothing")
    p.add_argument("--archive", default=None, metavar="DIR",
                   help="then copy the sweep's results without checkpoints (configs, logs, zero-shot caches, "
                        "images, the report) into DIR, a new folder: `report.py DIR --no_eval` rebuilds the report")
    return p


def write_page(root: Path, out: Path, runs, summary, curve_paths, diag_paths, agg_path, args) -> Path:
    modes = summary.modes
    n_finished = sum(r.finished for r in runs)
    doc = load_manifest(root) or {}
    lines = [f"# Sweep report: {root.name}", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M')} by `python python/report.py {root}"
             f" --episodes {args.episodes} --modes {' '.join(modes)}`.", "",
             f"{len(runs)} runs ({n_finished} finished), {len(summary.tasks)} tasks, {len(summary.methods)} methods. "
             f"Zero-shot: {args.episodes} episodes per finished run and mode, the final checkpoint's mean action. "
             "Cells: mean ± sample standard deviation (ddof = 1) over seeds of each run's mean return, with n, "
             "the number of runs; only finished runs.", ""]
    if doc.get("launches"):
        spec = doc["launches"][-1]["spec"]
        fixed = _fixed_options(spec)
        lines += [f"Options of every run: `{fixed or '(defaults)'}`.", ""]
    lines += ["## What each cell rests on", "", tables.basis_table(summary), "## Data used by each mode", "",
              tables.data_sources(summary, runs)]
    overlays = tables.overlay_sources(runs)
    if overlays:
        lines += ["## Overlay images used in training", "",
                  f"Drawn by the overlay augmentations of {_overlaying_algorithms()} (the algorithms that can "
                  "overlay images; an algorithm that combines augmentations only when its combination has one); "
                  "the others do not overlay images.", "", overlays]
    for mode in modes:
        per_mode_tasks = tables.mode_tasks(summary, mode)
        if not per_mode_tasks:           # every task with this mode is in the Table 3 layout below
            continue
        table = paper_numbers.MODE_TABLE.get(mode)
        title = f"## {mode}: " + (f"the paper's Table {table} layout" if table else "not reported in the paper")
        lines += [title, "", tables.mode_table(summary, mode, per_mode_tasks)]
    if tables.scene_tasks(summary):
        lines += scene_section(summary)
    ablation_mode = paper_numbers.ABLATION_MODE
    abl = tables.ablation_table(summary, runs, ablation_mode) if ablation_mode in modes else None
    if abl:
        lines += [f"## Ablations on {ablation_mode}: the paper's Table {paper_numbers.ABLATION_TABLE} layout", "",
                  abl]
    left_out = tables.left_out_text(summary)
    if summary.aggregated_tasks:
        lines += [f"## Aggregates across tasks ({tables.normalisation(summary)})", "",
                  "IQM and mean over the (runs x tasks) scores; 95 % percentile intervals of a bootstrap over runs "
                  "stratified by task. Estimators from rliable.", ""]
        if len(summary.aggregated_families) > 1:      # normalised scores of two families are not one scale
            lines += ["Each environment family is aggregated on its own (rows `mode (family)`).", ""]
        lines += [left_out, ""] if left_out else []
        lines += [tables.aggregate_table(summary)]
    else:
        lines += ["## Aggregates across tasks", "", "No aggregates, probabilities of improvement or return kept "
                  "under each shift: no task of the sweep has a normalised return range.", "", left_out, ""]
    if agg_path:
        lines += [f"![aggregates]({agg_path.name})", ""]
    if any(summary.improvement.values()):
        lines += ["## Probability of improvement", "",
                  "P(X > Y): the chance that a run of X scores above a run of Y on a task drawn at random "
                  "(ties count half), with its 95 % stratified-bootstrap interval.", "",
                  tables.improvement_table(summary)]
    if summary.train_modes & set(modes) and summary.retention_modes:
        lines += ["## Return kept under each shift", "",
                  "Each run's zero-shot return on a test mode divided by its train-mode return; mean ± sample std (ddof = 1) over runs, with n.",
                  ""]
        if left_out:
            lines += ["The tasks of the aggregates only (those left out are named above).", ""]
        lines += [tables.retention_table(summary)]
        if any(summary.retention_improvement.values()):
            lines += ["The same ratios compared: the chance that a run of X keeps a larger share of its train "
                      "return than a run of Y (ties count half), with its 95 % stratified-bootstrap interval.", "",
                      tables.retention_improvement_table(summary)]
    lines += ["## Learning curves", "", "Periodic evaluations during training (each run's eval.csv); "
              "band: ± one sample std (ddof = 1) over seeds.", ""]
    lines += [f"![{p.stem}]({p.name})" for p in curve_paths] + [""]
    if diag_paths:
        lines += ["## Gradient diagnostics", "", "One run per method and task (its lowest seed).", ""]
        lines += [f"### {task}, {method}\n\n![{p.stem}]({p.name})\n" for task, method, p in diag_paths]
    lines += ["## Runs", "", tables.runs_table(runs, modes)]
    page = out / "report.md"
    page.write_text("\n".join(lines))
    return page


def scene_section(summary) -> list[str]:
    """The robot tasks in the paper's Table 3 layout: returns beside the paper's, success rates, and the scenes
    the paper does not report."""
    number = paper_numbers.SCENE_TABLE
    reported, others = tables.scene_modes(summary)
    success = tables.has_success_rates(summary)
    lines = [f"## Robot manipulation: the paper's Table {number} layout", "",
             "These tasks are a re-creation of the paper's xArm tasks on today's MuJoCo, with an arm of primitive "
             "geoms on the xArm7's kinematic chain (not the published meshes and simulator): the paper's numbers "
             "are a reference, not directly comparable with ours. Returns per 50-step episode.", ""]
    if number in paper_numbers.TABLE_NOTES:
        lines += [paper_numbers.TABLE_NOTES[number], ""]
    if reported:
        lines += [f"### Returns, beside the paper's Table {number}", "", tables.scene_table(summary, reported)]
        if success:
            lines += ["### Success rates", "",
                      "Each run's share of its zero-shot episodes that succeeded (success is latched for the "
                      "episode); mean ± sample std over runs (ddof = 1), n = runs. The paper gives no success rates.",
                      "", tables.scene_table(summary, reported, success=True)]
    if others:
        lines += [f"### Scenes the paper does not report ({', '.join(others)}): ours only", "",
                  tables.scene_table(summary, others, with_paper=False)]
        if success:
            lines += ["Success rates:", "", tables.scene_table(summary, others, success=True)]
    return lines


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    root = Path(args.sweep_dir)
    if not root.is_dir():
        p.error(f"{root} is not a folder")
    if args.episodes <= 0:
        p.error("--episodes must be positive")
    if args.archive:
        try:
            check_target(root, args.archive)      # before the evaluation, not after it
        except ValueError as error:
            p.error(str(error))
    runs = collect(root)
    if not runs:
        p.error(f"{root} holds no runs (no sweep.json and no run folder with config.json)")
    known = task_modes(sorted({r.task for r in runs}))
    args.modes = args.modes or known
    unknown = [m for m in args.modes if m not in known]
    if unknown:
        p.error(f"unknown --modes {', '.join(unknown)}; the runs' tasks have: {', '.join(known)}")
    finished = [r for r in runs if r.finished]
    if not args.no_eval and finished:
        results = evaluate_runs([r.dir for r in finished], args.modes, args.episodes, jobs=args.jobs,
                                device=args.device, data_dir=args.data_dir)
    else:
        from cg2a_ext.rl.sweep.report.zero_shot import cached_result, load_cache
        results = {}
        for r in finished:
            doc = load_cache(r.dir)
            results[str(r.dir)] = {m: c for m in args.modes if (c := cached_result(doc, m, r.step, args.episodes))}
    for r in finished:
        res = results.get(str(r.dir))
        if isinstance(res, str):
            r.zero_shot_error = res
        elif res:
            r.zero_shot = {m: v for m, v in res.items() if v}
    summary = add_statistics(build_cells(runs, args.modes), runs, reps=args.bootstrap_reps)
    out = Path(args.out) if args.out else root / "report"
    out.mkdir(parents=True, exist_ok=True)
    curve_paths = figures.learning_curves(runs, out)
    diag_paths = figures.diagnostics(runs, out)
    agg_path = figures.aggregates(summary, out / "aggregates.png")
    page = write_page(root, out, runs, summary, curve_paths, diag_paths, agg_path, args)
    data = {"sweep": str(root), "episodes": args.episodes, "modes": args.modes,
            "runs": [{"name": r.name, "task": r.task, "method": r.method, "algorithm": r.algorithm, "seed": r.seed,
                      "status": r.status, "step": r.step, "train_steps": r.train_steps, "zero_shot": r.zero_shot,
                      "zero_shot_error": r.zero_shot_error} for r in runs],
            **summary.to_dict()}
    (out / "report.json").write_text(json.dumps(data, indent=1))
    print(f"wrote {page} and {out / 'report.json'} ({len(runs)} runs, {len(finished)} finished)")
    errors = [r for r in finished if r.zero_shot_error]
    for r in errors:
        print(f"report.py: zero-shot evaluation of {r.name} failed: {r.zero_shot_error}", file=sys.stderr)
    if args.archive:
        files, size, too_large = write_archive(root, args.archive)
        print(f"archived {files} files ({size / 1e6:.1f} MB) in {args.archive}; "
              f"`python python/report.py {args.archive} --no_eval` rebuilds the report")
        for rel in too_large:
            print(f"report.py: left out of the archive for its size: {rel}", file=sys.stderr)
    return 1 if errors else 0
