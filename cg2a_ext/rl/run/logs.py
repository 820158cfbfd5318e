"""Run logging: CSV files (one per kind of row), TensorBoard, and the progress display with its ETA."""
from __future__ import annotations

import csv
import math
import os
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import torch

from cg2a_ext.rl.run.folder import LOG_KINDS, DamagedFileError, RunFolder, read_csv_header, read_csv_rows, temporary_path


def _scalar(v):
    if isinstance(v, torch.Tensor):
        return float(v.detach().float().mean().item())
    return v


class CSVLog:
    """Append rows to a CSV file; the header grows (file rewritten) when new keys appear."""

    def __init__(self, path):
        self.path = Path(path)
        self.fields: list[str] = []
        self.fields = read_csv_header(self.path)

    def read(self) -> list[dict]:
        """The complete rows (a last line cut short by a killed process or a full disk is left out)."""
        return read_csv_rows(self.path)

    def _rewrite(self, rows):
        tmp = temporary_path(self.path)
        try:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
                w.writeheader()
                w.writerows(rows)
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def write(self, row: dict) -> None:
        row = {k: _scalar(v) for k, v in row.items()}
        new = [k for k in row if k not in self.fields]
        if new:
            old_rows = self.read()
            self.fields += new
            self._rewrite(old_rows)
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore").writerow(row)

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after ``step`` and any cut-short last line (resuming from a checkpoint)."""
        if not self.path.is_file():
            return
        rows = self.read()
        try:
            keep = [r for r in rows if r.get("step") in (None, "") or int(float(r["step"])) <= step]
        except ValueError as e:
            raise DamagedFileError(f"{self.path}: damaged (a step that is not a number: {e})") from None
        with open(self.path, "rb") as f:
            complete = f.read().endswith(b"\n")
        if len(keep) != len(rows) or not complete:
            self._rewrite(keep)


class RunLogger:
    """``log(kind, row)`` writes row to ``<run>/<kind>.csv`` and to TensorBoard as ``<kind>/<key>``.

    ``resume_step``: the run continues from its checkpoint at that step: every CSV loses its rows
    after it and TensorBoard hides the events after it (``purge_step``), so a resumed run's logs
    read as if it had never stopped."""

    KINDS = LOG_KINDS

    def __init__(self, run_dir, tensorboard: bool = True, resume_step: int | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        folder = RunFolder(self.run_dir)
        self.csv = {k: CSVLog(folder.log(k)) for k in self.KINDS}
        if resume_step is not None:
            for c in self.csv.values():
                c.truncate_after(resume_step)
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            # purge_step hides events at steps >= it; rows at resume_step itself are kept
            self.tb = SummaryWriter(str(folder.tensorboard),
                                    purge_step=None if resume_step is None else resume_step + 1)

    def log(self, kind: str, row: dict) -> None:
        row = {k: _scalar(v) for k, v in row.items()}
        self.csv[kind].write(row)
        if self.tb is not None and "step" in row:
            prefix = kind if kind != "eval" else f"eval/{row.get('mode', '')}"
            for k, v in row.items():
                if k in ("step", "mode") or not isinstance(v, (int, float)) or isinstance(v, bool):
                    continue
                if isinstance(v, float) and not math.isfinite(v):
                    continue
                self.tb.add_scalar(f"{prefix}/{k}", v, int(row["step"]))

    def flush(self) -> None:
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):     # no isatty, or a closed stream
        return False


def format_duration(seconds: float) -> str:
    """``45s``, ``12m 30s``, ``5h 12m``, ``3d 4h``."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(max(seconds, 0.0)))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d {h}h"
    if h:
        return f"{h}h {m:02d}m"
    if m:
        return f"{m}m {s:02d}s"
    return f"{s}s"


@dataclass
class Rates:
    """Seconds per unit of work: a seed step (random action, no update), a training step (act,
    update, env step) and an evaluation episode."""

    seed_step: float
    train_step: float
    eval_episode: float


def evaluations_after(cfg, step: int) -> int:
    """How many evaluations a run at ``step`` still has to do (periodic ones after it and the final one)."""
    if cfg.eval_freq <= 0 or step >= cfg.train_steps:
        return 0
    return (cfg.train_steps - 1) // cfg.eval_freq - step // cfg.eval_freq + 1


def remaining_seconds(cfg, step: int, rates: Rates, evaluation_pending: bool = False) -> float:
    """Estimated wall time from ``step`` to the end of the run (``evaluation_pending``: one more at ``step``)."""
    seed_left = max(0, cfg.seed_steps - step)
    train_left = max(0, cfg.train_steps - max(step, cfg.seed_steps))
    evals = evaluations_after(cfg, step) + (1 if evaluation_pending and cfg.eval_freq > 0 else 0)
    # the last of them is the final evaluation, over its own modes
    final_modes = getattr(cfg, "final_eval_modes", None) or cfg.eval_modes
    episodes = (max(evals - 1, 0) * len(cfg.eval_modes) + min(evals, 1) * len(final_modes)) * cfg.eval_episodes
    # a phase with nothing left costs nothing, even when its rate is unknown (NaN)
    return sum(n * sec for n, sec in ((seed_left, rates.seed_step), (train_left, rates.train_step),
                                      (episodes, rates.eval_episode)) if n)


class WindowRate:
    """Mean seconds per unit over the most recent ``window`` seconds of measured units (the rate of the last
    minutes: the first seconds of a run, or a busy spell an hour ago, stop counting once they fall out)."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._durations: deque[float] = deque()
        self.total = 0.0       # seconds held now

    def add(self, seconds: float) -> None:
        self._durations.append(seconds)
        self.total += seconds
        while len(self._durations) > 1 and self.total - self._durations[0] >= self.window:
            self.total -= self._durations.popleft()

    def mean(self) -> float:
        return self.total / len(self._durations) if self._durations else float("nan")


class Progress:
    """The progress display: a bar whose label names the phase (``seed steps``, ``training``,
    ``evaluating <mode> episode i/n``) and whose ETA comes from the rate of each phase over the last
    ``WINDOW`` seconds of that phase (the training rate for the training steps: the fast seed steps
    never shorten it). Until a phase has been measured for ``MIN_MEASURED`` seconds its rate is the
    estimate made at start (``rates``), not the noise of its first steps.

    On a terminal the bar redraws about once a second; written to a file (stderr not a terminal) it is
    one line per update: every ``LOG_INTERVAL`` seconds, when the phase changes and at the end."""

    WINDOW = 300.0
    MIN_MEASURED = 60.0
    TERMINAL_INTERVAL = 1.0
    LOG_INTERVAL = 60.0

    def __init__(self, cfg, initial: int = 0, enabled: bool = True, rates: Rates | None = None,
                 desc: str = "") -> None:
        self.cfg = cfg
        self.step = initial
        self.enabled = enabled
        self.start_rates = rates or Rates(float("nan"), float("nan"), float("nan"))
        self._windows = {name: WindowRate(self.WINDOW) for name in ("seed_step", "train_step", "eval_episode")}
        self.info: dict = {}
        self.prefix = desc
        self._phase = ""
        self._last = -math.inf
        self._started = time.monotonic()
        self.bar = None
        self.stream = sys.stderr
        self.terminal = _is_terminal(self.stream)
        self.interval = self.TERMINAL_INTERVAL if self.terminal else self.LOG_INTERVAL
        if enabled and self.terminal:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=cfg.train_steps, initial=initial, unit="step", dynamic_ncols=True,
                            mininterval=self.interval, maxinterval=self.interval, file=self.stream,
                            bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")

    # ------------------------------------------------------------------ measurements
    @property
    def rates(self) -> Rates:
        """Seconds per unit of each phase: the recent measured rate, or the start estimate until measured."""
        def pick(name: str) -> float:
            window, start = self._windows[name], getattr(self.start_rates, name)
            if window.total >= self.MIN_MEASURED or (window.total > 0 and not math.isfinite(start)):
                return window.mean()
            return start
        return Rates(pick("seed_step"), pick("train_step"), pick("eval_episode"))

    def eta(self) -> float:
        return remaining_seconds(self.cfg, self.step, self.rates)

    def rate_text(self) -> str:
        training = self.step >= self.cfg.seed_steps
        sec = self.rates.train_step if training else self.rates.seed_step
        if not math.isfinite(sec) or sec <= 0:
            return ""
        return f"{1.0 / sec:.3g} steps/s" if sec < 1 else f"{sec:.3g} s/step"

    # ------------------------------------------------------------------ display
    def phase(self, text: str) -> None:
        """Name what the run does now. A terminal shows it at once; a log gets a line when its kind changes
        (``evaluating train`` once, not once per episode)."""
        if text == self._phase:
            return
        kind = lambda t: t.split(" episode ")[0]   # noqa: E731
        changed = kind(text) != kind(self._phase)
        self._phase = text
        if self.bar is not None:
            self.bar.set_description_str(f"{self.prefix} {text}".strip(), refresh=False)
            self._refresh(force=True)
        elif changed:
            self._refresh(force=True)

    def set(self, **info) -> None:
        self.info.update({k: (f"{v:.1f}" if isinstance(v, float) else v) for k, v in info.items()})

    def status(self) -> str:
        parts = [p for p in (self.rate_text(), f"ETA {format_duration(self.eta())}") if p]
        return ", ".join(parts + [f"{k}={v}" for k, v in self.info.items()])

    def _refresh(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(", " + self.status(), refresh=False)
            self.bar.refresh()
        else:
            total = self.cfg.train_steps
            print(f"{self.prefix} {self._phase}".strip() + f" {100 * self.step / max(total, 1):3.0f}% "
                  f"{self.step}/{total} [{format_duration(now - self._started)}, {self.status()}]",
                  file=self.stream, flush=True)
        self._last = now

    def advance(self, seconds: float, training: bool) -> None:
        """One agent step was done in ``seconds`` (a training step, or a seed step when not ``training``)."""
        self._windows["train_step" if training else "seed_step"].add(seconds)
        self.update(1)

    def evaluation_done(self, seconds: float, episodes: int) -> None:
        for _ in range(episodes):
            self._windows["eval_episode"].add(seconds / episodes)

    def update(self, n: int = 1) -> None:
        """Advance ``n`` steps (``advance`` also times them)."""
        self.step += n
        if self.bar is not None:
            self.bar.update(n)
        self._refresh()

    def write(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(msg)
        else:
            print(msg, flush=True)

    def close(self) -> None:
        if self.enabled:
            self._refresh(force=True)
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.enabled = False
