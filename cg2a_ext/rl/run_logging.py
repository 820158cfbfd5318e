"""Run logging: CSV files (one per kind of row), TensorBoard and a progress bar."""
from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import torch


def _scalar(v):
    if isinstance(v, torch.Tensor):
        return float(v.detach().float().mean().item())
    return v


class CSVLog:
    """Append rows to a CSV file; the header grows (file rewritten) when new keys appear."""

    def __init__(self, path):
        self.path = Path(path)
        self.fields: list[str] = []
        if self.path.is_file():
            with open(self.path, newline="") as f:
                r = csv.reader(f)
                self.fields = next(r, [])

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def _rewrite(self, rows):
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        tmp.replace(self.path)

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
        """Drop rows logged after ``step`` (used when resuming from a checkpoint)."""
        rows = self.read()
        keep = [r for r in rows if r.get("step") in (None, "") or int(float(r["step"])) <= step]
        if len(keep) != len(rows):
            self._rewrite(keep)


class RunLogger:
    """``log(kind, row)`` writes row to ``<run>/<kind>.csv`` and to TensorBoard as ``<kind>/<key>``."""

    KINDS = ("train", "update", "diagnostics", "eval")

    def __init__(self, run_dir, tensorboard: bool = True, resume_step: int | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.csv = {k: CSVLog(self.run_dir / f"{k}.csv") for k in self.KINDS}
        if resume_step is not None:
            for c in self.csv.values():
                c.truncate_after(resume_step)
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=resume_step)

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


class Progress:
    """tqdm progress bar with steps/s, ETA (tqdm's) and the latest returns as postfix."""

    def __init__(self, total: int, initial: int = 0, enabled: bool = True, desc: str = "train"):
        self.bar = None
        self.enabled = enabled
        self.info: dict = {}
        self._last = 0.0
        if enabled:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True,
                            smoothing=0.05, mininterval=1.0)

    def set(self, **info) -> None:
        self.info.update({k: (f"{v:.1f}" if isinstance(v, float) else v) for k, v in info.items()})

    def update(self, n: int = 1) -> None:
        if self.bar is None:
            return
        now = time.monotonic()
        if now - self._last > 1.0:
            self.bar.set_postfix(self.info, refresh=False)
            self._last = now
        self.bar.update(n)

    def write(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(msg)
        else:
            print(msg, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix(self.info)
            self.bar.close()
