"""The report's figures (PNG): learning curves per task, gradient diagnostics per method, aggregates.

Learning curves and diagnostics are ``cg2a_ext.rl.run.plots``'s: one figure per task with a panel
per evaluation mode, the runs of a method averaged with a band of +- one std over seeds; the
diagnostics of each method from its lowest-seed run (diagnostics are per run; the algorithms with gradient_diagnostics log them).
"""
from __future__ import annotations

import re
from pathlib import Path

from cg2a_ext.rl.sweep.report.collect import RunInfo
from cg2a_ext.rl.sweep.report.summary import Summary
from cg2a_ext.rl.run.folder import RunFolder


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", text).strip("_")


def learning_curves(runs: list[RunInfo], out_dir: Path) -> list[Path]:
    from cg2a_ext.rl.run.plots import plot_learning_curves

    written = []
    for task in sorted({r.task for r in runs}):
        dirs = [r.dir for r in runs if r.task == task and r.finished and RunFolder(r.dir).log("eval").is_file()]
        if dirs:
            written.append(plot_learning_curves(dirs, out_dir / f"curves_{_safe(task)}.png"))
    return written


def diagnostics(runs: list[RunInfo], out_dir: Path) -> list[tuple[str, str, Path]]:
    from cg2a_ext.rl.run.plots import plot_gradient_diagnostics

    first: dict[tuple[str, str], RunInfo] = {}
    for r in sorted((r for r in runs if r.finished), key=lambda r: r.seed):
        first.setdefault((r.task, r.method), r)
    out = []
    for (task, method), r in first.items():
        path = plot_gradient_diagnostics(r.dir, out_dir / f"diagnostics_{_safe(task)}_{_safe(method)}.png")
        if path is not None:
            out.append((task, method, path))
    return out


def aggregates(summary: Summary, out_path: Path) -> Path | None:
    """IQM and mean (normalised returns) with their 95 % intervals, one panel per mode (per mode and family when
    several families are aggregated: ``Summary.groups``)."""
    modes = [key for key, per in summary.aggregates.items() if per]
    if not modes:
        return None
    from cg2a_ext.rl.run.plots import _plt

    plt = _plt()
    fig, axes = plt.subplots(1, len(modes), figsize=(3.6 * len(modes), 0.5 + 0.45 * len(summary.methods) + 1),
                             squeeze=False, sharey=True)
    methods = summary.methods
    labelled: set[str] = set()   # each metric named once in the legend, at its first plotted point
    for ax, mode in zip(axes[0], modes):
        per = summary.aggregates[mode]
        for k, (metric, offset, colour) in enumerate((("iqm", -0.15, "C0"), ("mean", 0.15, "C1"))):
            for i, method in enumerate(methods):
                if method not in per:
                    continue
                e = per[method][metric]
                y = i + offset
                ax.plot([e.value], [y], "o", color=colour, label=None if metric in labelled else metric.upper())
                labelled.add(metric)
                if e.low is not None:
                    ax.plot([e.low, e.high], [y, y], "-", color=colour, lw=2)
        ax.set_title(mode)
        ax.set_xlim(0, 1)
        ax.set_xlabel(f"normalised return (/{summary.divisor:g})" if summary.divisor is not None
                      else "normalised return")
        ax.grid(alpha=0.3)
    axes[0][0].set_yticks(range(len(methods)))
    axes[0][0].set_yticklabels(methods, fontsize=8)
    fig.legend(loc="lower center", ncol=2, frameon=False, fontsize=8)
    fig.suptitle("aggregate over tasks: IQM and mean with 95% stratified-bootstrap intervals", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path
