"""Run logging: CSV files (one per kind of row), TensorBoard, and the progress display with its ETA."""
from __future__ import annotations

import csv
import math
import os
import sys
import time
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
    episodes = evals * cfg.eval_episodes * len(cfg.eval_modes)
    return seed_left * rates.seed_step + train_left * rates.train_step + episodes * rates.eval_episode


class Progress:
    """The progress display: a bar whose label names the phase (``seed steps``, ``training``,
    ``evaluating <mode> episode i/n``) and whose ETA comes from the rate of each phase measured so
    far (the training rate for the training steps: the fast seed steps never shorten it).

    ``rates``: the estimate made at start, used until a phase has been measured."""

    SMOOTHING = 0.05   # weight of the newest step in the moving average of step times
    # Seconds between redraws: a terminal gets a live bar; a log file (stderr not a terminal) a line
    # now and then, not the ~10 redraws a second that would bloat a long run's log.
    TERMINAL_INTERVAL = 1.0
    LOG_INTERVAL = 60.0

    def __init__(self, cfg, initial: int = 0, enabled: bool = True, rates: Rates | None = None,
                 desc: str = "") -> None:
        self.cfg = cfg
        self.step = initial
        self.enabled = enabled
        self.rates = rates or Rates(float("nan"), float("nan"), float("nan"))
        self._measured = {"seed_step": False, "train_step": False, "eval_episode": False}
        self.info: dict = {}
        self.prefix = desc
        self._phase = ""
        self._last = 0.0
        self.bar = None
        terminal = _is_terminal(sys.stderr)
        self.interval = self.TERMINAL_INTERVAL if terminal else self.LOG_INTERVAL
        if enabled:
            from tqdm.auto import tqdm

            tqdm_interval = self.interval if terminal else math.inf
            self.bar = tqdm(total=cfg.train_steps, initial=initial, unit="step", dynamic_ncols=True,
                            # in a log, only _refresh draws: tqdm's own timing (and its monitor thread,
                            # which forces a redraw 10 s after a print) would add lines between
                            mininterval=tqdm_interval, maxinterval=tqdm_interval, file=sys.stderr,
                            bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")

    # ------------------------------------------------------------------ measurements
    def _observe(self, name: str, seconds: float) -> None:
        if not self._measured[name] or not math.isfinite(getattr(self.rates, name)):
            setattr(self.rates, name, seconds)
            self._measured[name] = True
        else:
            old = getattr(self.rates, name)
            setattr(self.rates, name, old + self.SMOOTHING * (seconds - old))

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
        """Name what the run does now (shown at once)."""
        self._phase = text
        if self.bar is not None:
            self.bar.set_description_str(f"{self.prefix} {text}".strip(), refresh=False)
            self._refresh(force=True)

    def set(self, **info) -> None:
        self.info.update({k: (f"{v:.1f}" if isinstance(v, float) else v) for k, v in info.items()})

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.bar is None or (not force and now - self._last < self.interval):
            return
        parts = [p for p in (self.rate_text(), f"ETA {format_duration(self.eta())}") if p]
        parts += [f"{k}={v}" for k, v in self.info.items()]
        self.bar.set_postfix_str(", ".join(parts), refresh=False)
        self.bar.refresh()
        self._last = now

    def advance(self, seconds: float, training: bool) -> None:
        """One agent step was done in ``seconds`` (a training step, or a seed step when not ``training``)."""
        self._observe("train_step" if training else "seed_step", seconds)
        self.step += 1
        if self.bar is not None:
            self.bar.update(1)
            self._refresh()

    def evaluation_done(self, seconds: float, episodes: int) -> None:
        if episodes > 0:
            self._observe("eval_episode", seconds / episodes)

    def update(self, n: int = 1) -> None:
        """Advance ``n`` steps without a timing (kept for callers that do not measure)."""
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
        if self.bar is not None:
            self._refresh(force=True)
            self.bar.close()
            self.bar = None
