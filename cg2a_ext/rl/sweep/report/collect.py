"""The runs of a sweep root, as the report sees them: identity, method, status, steps, evaluations.

Runs come from ``sweep.json`` (a run that never got a folder is listed as new); without it, every
folder under the root that holds a ``config.json``. A run's *method* is its algorithm plus the
sweep's named options (``cg2a augmentations=overlay,overlay_s``); without a manifest, plotting's
label (the algorithm's method options that differ from their defaults). Runs of one task and
method differ only by seed, and are the samples of one table cell.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from cg2a_ext.rl import algorithms
from cg2a_ext.rl.sweep import manifest
from cg2a_ext.rl.sweep.run_state import FINISHED, NEW, checkpoint_steps, run_status
from cg2a_ext.rl.run.folder import CONFIG, RunFolder


@dataclass
class RunInfo:
    name: str
    dir: Path
    task: str
    algorithm: str
    seed: int
    method: str
    status: str
    config: dict = field(default_factory=dict)
    step: int = 0                                             # newest checkpoint
    zero_shot: dict = field(default_factory=dict)             # mode -> result (report.zero_shot)
    zero_shot_error: str | None = None
    eval_sources: dict = field(default_factory=dict)          # mode -> data sources seen in eval.csv
    overlay_images: str = ""                                   # plan.json's record (see overlay_images())

    @property
    def train_steps(self) -> int | None:
        return self.config.get("train_steps")

    @property
    def finished(self) -> bool:
        return self.status == FINISHED

    @property
    def options(self):
        """The algorithm's options the run trained with (config.json's ``options``); None for an unknown algorithm."""
        return run_options(self.algorithm, self.config)

    @property
    def ablation(self) -> str | None:
        """The row of the CG2A paper's Table 4 this run's configuration is (None if none): its algorithm's
        ``ablation(options)``."""
        options = self.options
        return None if options is None else algorithms.get(self.algorithm).ablation(options)


def run_options(algorithm: str, config: dict):
    """The Options of ``algorithm`` recorded in a config.json (``run.plots.recorded_options``)."""
    from cg2a_ext.rl.run.plots import recorded_options

    return recorded_options(algorithm, config)


def _method_without_manifest(run_dir: Path, task: str) -> str:
    from cg2a_ext.rl.run.plots import run_label

    label = run_label(run_dir)
    return label[len(task) + 1:] if label.startswith(task + " ") else label


def _eval_sources(run_dir: Path) -> dict:
    out: dict[str, set] = {}
    for row in RunFolder(run_dir).rows("eval"):
        if row.get("mode") and row.get("data_source"):
            out.setdefault(row["mode"], set()).add(row["data_source"])
    return {m: sorted(s) for m, s in out.items()}


def collect(root) -> list[RunInfo]:
    root = Path(root)
    specs = manifest.manifest_runs(root)
    if specs:
        entries = [(s.name, s.task, s.algorithm, s.seed, s.method) for s in specs]
    else:
        entries = []
        for cfg_path in sorted(root.glob(f"*/{CONFIG}")) + sorted(root.glob(f"*/*/*/{CONFIG}")):
            d = cfg_path.parent
            cfg = json.loads(cfg_path.read_text())
            name = str(d.relative_to(root))
            entries.append((name, cfg["task"], cfg["algorithm"], int(cfg["seed"]),
                            _method_without_manifest(d, cfg["task"])))
    runs = []
    for name, task, algorithm, seed, method in entries:
        d = root / name
        cfg = {}
        if RunFolder(d).config.is_file():
            cfg = RunFolder(d).read_config_dict()
        status = run_status(d) if d.is_dir() else NEW
        steps = checkpoint_steps(d)
        runs.append(RunInfo(name, d, task, algorithm, seed, method, status, cfg, steps[-1] if steps else _final_step(d),
                             eval_sources=_eval_sources(d), overlay_images=overlay_images(d, cfg)))
    return runs


def _final_step(run_dir: Path) -> int:
    """The step a finished run's marker records (an archive keeps no checkpoints), else 0."""
    from cg2a_ext.rl.run.folder import read_finished

    try:
        return int((read_finished(run_dir) or {}).get("final_step", 0))
    except (OSError, ValueError, TypeError):
        return 0


def overlay_images(run_dir: Path, cfg: dict) -> str:
    """The overlay images the run trained with (``run.plots.overlay_images``: plan.json's record, else its
    config); "" for a run of an algorithm that overlays no images."""
    from cg2a_ext.rl.run.plots import overlay_images as recorded

    unrecorded = "procedural, unless CG2A_OVERLAY_DATA was set (not recorded by this run)"
    return recorded(run_dir, cfg, unrecorded) if cfg else ""
