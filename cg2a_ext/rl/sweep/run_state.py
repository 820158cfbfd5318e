"""What a run folder holds: its status (new / partial / finished) and its latest numbers.

``run_status`` is the run folder's own rule (``cg2a_ext.rl.run.folder.run_status``), except that a
run with files but no checkpoint yet (its attempt died before the first one) counts as new: there
is nothing to resume, and the sweep starts it again.

``snapshot`` reads the latest step, speed and evaluation from the run's CSV logs (update.csv:
step, steps_per_s; train.csv: step, elapsed_s; eval.csv: step, mode, mean_return). The logs may be
half-written while the run is going: unreadable rows are skipped.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from cg2a_ext.rl.run.folder import DamagedFileError, RunFolder

NEW, PARTIAL, FINISHED = "new", "partial", "finished"
def checkpoint_steps(run_dir) -> list[int]:
    return [step for step, _ in RunFolder(run_dir).checkpoints()]


def _train_steps(run_dir) -> int | None:
    try:
        return int(RunFolder(run_dir).read_config_dict()["train_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_status(run_dir) -> str:
    """``"new"``, ``"partial"`` (resumable: it has a checkpoint) or ``"finished"``."""
    from cg2a_ext.rl.run.folder import run_status as owner

    status = owner(run_dir)
    if status == PARTIAL and not checkpoint_steps(run_dir):
        return NEW
    return status


def _rows(run_dir, kind: str) -> list[dict]:
    """A log's rows for the live table: a log being written or damaged shows as empty, it never stops the sweep."""
    try:
        return RunFolder(run_dir).rows(kind)
    except (OSError, DamagedFileError):
        return []


def _int(v) -> int | None:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return None


def _float(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


@dataclass
class Snapshot:
    """The latest numbers of one run, from its logs."""

    status: str = NEW
    step: int = 0
    train_steps: int | None = None
    steps_per_s: float | None = None
    # agent steps per second of wall time over the last RATE_WINDOW steps, evaluations included:
    # what the run's remaining steps will take (steps_per_s is the last log interval's alone)
    wall_steps_per_s: float | None = None
    eval_step: int | None = None
    evaluation: dict[str, float] = field(default_factory=dict)   # mode -> mean return at eval_step


RATE_WINDOW = 2000


def wall_rate(train_rows: list[dict], window: int = RATE_WINDOW) -> float | None:
    """Steps per wall second between the last train.csv row and the first within ``window`` steps of it."""
    points = [(s, e) for row in train_rows
              if (s := _int(row.get("step"))) is not None and (e := _float(row.get("elapsed_s"))) is not None]
    if len(points) < 2:
        return None
    last_step, last_elapsed = points[-1]
    first_step, first_elapsed = next((s, e) for s, e in points if s >= last_step - window)
    if (first_step, first_elapsed) == points[-1]:
        first_step, first_elapsed = points[-2]
    if last_step <= first_step or last_elapsed <= first_elapsed:
        return None
    return (last_step - first_step) / (last_elapsed - first_elapsed)


def snapshot(run_dir) -> Snapshot:
    run_dir = Path(run_dir)
    snap = Snapshot(status=run_status(run_dir), train_steps=_train_steps(run_dir))
    for row in reversed(_rows(run_dir, "update")):
        step, speed = _int(row.get("step")), _float(row.get("steps_per_s"))
        if step is not None and speed is not None:
            snap.step, snap.steps_per_s = step, speed
            break
    train_rows = _rows(run_dir, "train")
    snap.wall_steps_per_s = wall_rate(train_rows)
    for row in reversed(train_rows):
        if (step := _int(row.get("step"))) is not None:
            snap.step = max(snap.step, step)
            break
    ckpt = checkpoint_steps(run_dir)
    if ckpt:
        snap.step = max(snap.step, ckpt[-1])
    evals = [(s, row) for row in _rows(run_dir, "eval") if (s := _int(row.get("step"))) is not None]
    if evals:
        last = max(s for s, _ in evals)
        snap.eval_step = last
        snap.evaluation = {row["mode"]: v for s, row in evals
                           if s == last and row.get("mode") and (v := _float(row.get("mean_return"))) is not None}
        snap.step = max(snap.step, last)
    if snap.status == FINISHED and snap.train_steps:
        snap.step = max(snap.step, snap.train_steps)
    return snap
