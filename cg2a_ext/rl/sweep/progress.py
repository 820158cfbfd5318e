"""The live table of a sweep: one row per run (state, step, steps/s, latest evaluation, ETA).

Numbers come from the run folders (``run_state.snapshot``), states from the driver. On a terminal
the table is redrawn in place; otherwise (a log file, CI) it is printed as plain text with a time
stamp each time.

The ETAs use each run's wall-clock speed over its last few thousand steps, evaluations included
(``Snapshot.wall_steps_per_s``). The sweep's ETA plays the remaining runs through as many slots as
there are runs going now: a queued run takes the speed measured for its configuration (its other
seeds, finished or going), or the median speed of all runs when none has been measured.
"""
from __future__ import annotations

import heapq
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from cg2a_ext.rl.sweep.run_state import Snapshot, snapshot

# Driver-side states of a run.
QUEUED, RUNNING, RETRYING, FINISHED, SKIPPED, FAILED, STOPPED = (
    "queued", "running", "retrying", "finished", "skipped", "failed", "stopped")
DONE = (FINISHED, SKIPPED)


def short_mode(mode: str) -> str:
    """A mode's name for the narrow table: its first word's initial and the rest (``video_hard`` -> ``v_hard``)."""
    head, sep, rest = mode.partition("_")
    return f"{head[0]}_{rest}" if sep and head and rest else mode


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@dataclass
class Row:
    name: str
    state: str
    attempt: int
    snap: Snapshot
    total: int | None


_SEED_SUFFIX = re.compile(r"--seed\d+$")


def configuration(name: str) -> str:
    """A run's name without its seed: the runs that should go at the same speed."""
    return _SEED_SUFFIX.sub("", name)


def run_speed(row: Row) -> float | None:
    """Agent steps per wall second: the recent wall-clock speed, else the last logged one."""
    return row.snap.wall_steps_per_s or row.snap.steps_per_s or None


def run_eta(row: Row) -> float | None:
    speed = run_speed(row)
    if row.state != RUNNING or not speed or not row.total:
        return None
    return max(0, row.total - row.snap.step) / speed


def sweep_eta(rows: list[Row]) -> float | None:
    """Seconds until every unfinished run is done; None if no speed is known yet."""
    todo = [r for r in rows if r.state not in DONE + (FAILED,) and max(0, (r.total or 0) - r.snap.step) > 0]
    if not todo:
        return 0.0
    measured: dict[str, list[float]] = {}
    for r in rows:
        if (speed := run_speed(r)) is not None:
            measured.setdefault(configuration(r.name), []).append(speed)
    if not measured:
        return None
    fallback = statistics.median(s for speeds in measured.values() for s in speeds)

    def seconds(r: Row) -> float:
        speeds = measured.get(configuration(r.name))
        speed = run_speed(r) or (statistics.median(speeds) if speeds else fallback)
        return max(0, (r.total or 0) - r.snap.step) / speed

    running = [seconds(r) for r in todo if r.state == RUNNING]
    slots = running or [0.0]           # nothing going now: one slot (the runs start one after another)
    heapq.heapify(slots)
    for r in todo:
        if r.state != RUNNING:
            heapq.heappush(slots, heapq.heappop(slots) + seconds(r))
    return max(slots)


def render(rows: list[Row], now: float | None = None) -> str:
    headers = ["run", "state", "step", "steps/s", "latest evaluation", "run ETA"]
    body = []
    for r in rows:
        total = r.total or r.snap.train_steps
        step = f"{r.snap.step}/{total}" if total else str(r.snap.step)
        steps_per_s, seconds_left = run_speed(r), run_eta(r)
        speed = f"{steps_per_s:.1f}" if steps_per_s is not None and r.state == RUNNING else ""
        evaluation = " ".join(f"{short_mode(m)}={v:.0f}" for m, v in r.snap.evaluation.items())
        if evaluation:
            evaluation += f" @{r.snap.eval_step}"
        eta = format_duration(seconds_left) if seconds_left is not None else ""
        state = r.state + (f" #{r.attempt}" if r.attempt > 1 and r.state in (RUNNING, RETRYING, QUEUED) else "")
        body.append([r.name, state, step, speed, evaluation, eta])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    out = [line(headers), line(["-" * w for w in widths])] + [line(b) for b in body]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    out.append(f"{len(rows)} runs: {summary}; sweep ETA {format_duration(sweep_eta(rows))}")
    return "\n".join(out)


class ProgressTable:
    """Redraws the table (terminal) or prints it (plain text) at most every ``interval`` seconds."""

    def __init__(self, root, stream: TextIO | None = None, interval: float | None = None,
                 tty: bool | None = None) -> None:
        self.root = Path(root)
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = interval if interval is not None else (5.0 if self.tty else 30.0)
        self._drawn_lines = 0
        self._last = 0.0
        self._cache: dict[str, tuple[str, Snapshot]] = {}

    def rows(self, states: dict[str, tuple[str, int, int | None]]) -> list[Row]:
        """``states``: run name -> (state, attempt, train_steps)."""
        out = []
        for name, (state, attempt, total) in states.items():
            # a run that is done does not change: read it once in that state
            cached = self._cache.get(name)
            if state not in (FINISHED, SKIPPED, FAILED) or cached is None or cached[0] != state:
                cached = self._cache[name] = (state, snapshot(self.root / name))
            out.append(Row(name, state, attempt, cached[1], total))
        return out

    def message(self, text: str) -> None:
        """A line above the table (run finished, retried, failed...)."""
        self._clear()
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=self.stream, flush=True)

    def show(self, states, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        text = render(self.rows(states))
        self._clear()
        if not self.tty:
            text = f"--- sweep progress {time.strftime('%Y-%m-%d %H:%M:%S')}\n{text}"
        print(text, file=self.stream, flush=True)
        self._drawn_lines = text.count("\n") + 1 if self.tty else 0

    def _clear(self) -> None:
        if self.tty and self._drawn_lines:
            self.stream.write(f"\x1b[{self._drawn_lines}F\x1b[J")   # cursor up N lines, clear below
            self._drawn_lines = 0
