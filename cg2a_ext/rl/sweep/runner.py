"""The sweep driver: runs every run of the grid as a Ray task, retries, skips, stops.

One Ray task per run (``worker.execute_run``), with ``--cpus_per_run`` CPUs and ``--gpus_per_run``
GPUs (fractions pack several runs on one GPU); Ray places them on the local machine or the cluster.
Ray's own task retries are off: the driver retries itself, so that every retry is logged and counted
and a permanent failure is never retried.

- Before launching, each run is checked in the driver (configuration parsed as the worker will,
  ``--resume`` for a run with a checkpoint): a refused option, or a run folder made with other
  options, fails that run at once. Finished runs are skipped.
- A worker that dies, or a transient error, is retried up to ``retries`` times; the retry resumes
  from the run's last checkpoint (``worker`` decides new / resume from the run folder).
- ``stop()`` (Ctrl-C, SIGTERM) cancels the runs (``ray.cancel``: KeyboardInterrupt in each run, which
  keeps its last checkpoint), waits ``stop_timeout`` seconds for them to end, then kills the rest.
  Launching the same sweep again resumes them.

The sweep root must be visible at the same path from every node (a shared file system) on a cluster.
"""
from __future__ import annotations

import contextlib
import fcntl
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from cg2a_ext.rl.sweep import manifest
from cg2a_ext.rl.sweep.grid import RunSpec
from cg2a_ext.rl.sweep.progress import DONE, FAILED, FINISHED, QUEUED, RETRYING, RUNNING, SKIPPED, STOPPED, ProgressTable
from cg2a_ext.rl.sweep.run_state import FINISHED as RUN_FINISHED, PARTIAL, checkpoint_steps, run_status
from cg2a_ext.rl.sweep.worker import run_config


@dataclass
class RunnerOptions:
    root: Path
    address: str | None = None          # a running Ray cluster ("auto", "ray://host:10001"); None: local Ray
    num_cpus: int | None = None         # local Ray: CPUs to use (default: all)
    num_gpus: float | None = None       # local Ray: GPUs to use (default: Ray's detection)
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    retries: int = 3
    refresh: float | None = None        # progress interval in seconds (None: 5 on a terminal, 30 otherwise)
    stop_timeout: float = 120.0         # seconds a stopped run gets to write its checkpoint and end
    zero_shot_episodes: int = 0         # > 0: each run, once trained, is evaluated zero-shot in its slot
    zero_shot_modes: tuple[str, ...] = ()

    def resources(self) -> dict:
        return {"address": self.address, "num_cpus": self.num_cpus, "num_gpus": self.num_gpus,
                "cpus_per_run": self.cpus_per_run, "gpus_per_run": self.gpus_per_run, "retries": self.retries}


@dataclass
class RunRecord:
    spec: RunSpec
    state: str = QUEUED
    attempt: int = 0
    train_steps: int | None = None
    error: str | None = None
    results: list = field(default_factory=list)


class SweepLocked(RuntimeError):
    """Another sweep driver is running on this root."""


@contextlib.contextmanager
def root_lock(root: Path):
    path = root / manifest.STATE_DIR / "driver.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip()
        f.close()
        raise SweepLocked(f"another sweep is running on {root} ({holder or 'unknown process'}); "
                          "wait for it or stop it first") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}")
    f.flush()
    try:
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def check_run(run: RunSpec, root: Path, threads: int) -> tuple[str, int | None, str | None]:
    """(run folder status, train_steps, error): the run's config checked as its worker will. A task whose
    environment family this machine lacks is left to the worker (a cluster node may have the simulator the
    driver has not): it fails there, once, if no node has it."""
    from cg2a_ext.rl.config import ConfigError
    from cg2a_ext.rl.envs import family_of

    run_dir = root / run.name
    status = run_status(run_dir)
    try:
        family_of(run.task)
    except ValueError:
        return status, None, None
    try:
        cfg = run_config(run, run_dir, resume=status != "new", threads=threads)
    except ConfigError as e:
        what = "the run folder was made with other options: " if status != "new" else ""
        return status, None, what + str(e)
    return status, cfg.train_steps, None


class SweepRunner:
    """``SweepRunner(runs, options).run()`` -> exit code (0 all finished, 1 a run failed, 130 stopped)."""

    def __init__(self, runs: list[RunSpec], options: RunnerOptions, spec: dict | None = None,
                 stream: TextIO | None = None, tty: bool | None = None, handle_signals: bool = False) -> None:
        if not runs:
            raise ValueError("the sweep has no runs")
        self.options = options
        self.root = Path(options.root)
        self.spec = spec or {}
        self.records = {r.name: RunRecord(r) for r in runs}
        self.progress = ProgressTable(self.root, stream=stream, interval=options.refresh, tty=tty)
        self.stop_event = threading.Event()
        self.force_event = threading.Event()
        self.events: manifest.EventLog | None = None
        self._running: dict = {}            # ObjectRef -> run name
        self._remote = None
        self.launch_id = f"{os.getpid()}-{time.time():.3f}"
        self.handle_signals = handle_signals

    # ------------------------------------------------------------------ control
    def stop(self, force: bool = False) -> None:
        """Ask the sweep to stop (thread- and signal-safe); ``force`` kills runs without waiting."""
        if force:
            self.force_event.set()
        self.stop_event.set()

    def _install_signal_handlers(self) -> None:
        """Ctrl-C / SIGTERM stop the sweep (installed after ray.init, which sets its own SIGTERM
        handler); a second one kills the runs without waiting for their checkpoints."""
        import signal

        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum, frame):
            self.stop(force=self.stop_event.is_set())

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    @property
    def threads(self) -> int:
        return max(1, int(math.floor(self.options.cpus_per_run)))

    def _states(self) -> dict:
        out = {}
        for name, rec in self.records.items():
            state = rec.state
            if state == QUEUED and rec.attempt:
                worker = manifest.read_worker_record(self.root, name)
                if worker and worker.get("attempt") == rec.attempt and worker.get("launch") == self.launch_id:
                    state = RUNNING
            out[name] = (state, rec.attempt, rec.train_steps)
        return out

    def _event(self, rec: RunRecord, event: str, message: str, **info) -> None:
        self.events.write(rec.spec.name, event, attempt=rec.attempt, **info)
        self.progress.message(f"{rec.spec.name}: {message}")

    # ------------------------------------------------------------------ run
    def run(self) -> int:
        self.root.mkdir(parents=True, exist_ok=True)
        with root_lock(self.root):
            self.events = manifest.EventLog(self.root)
            manifest.write_manifest(self.root, [r.spec for r in self.records.values()], self.spec,
                                    self.options.resources())
            todo = self._plan()
            if todo and not self.stop_event.is_set():
                owns_ray = self._start_ray()
                if self.handle_signals:
                    self._install_signal_handlers()
                try:
                    self._launch_all(todo)
                    self._loop()
                finally:
                    if owns_ray:
                        import ray
                        ray.shutdown()
            self.progress.show(self._states(), force=True)
        return self._exit_code()

    def _plan(self) -> list[RunRecord]:
        todo = []
        for rec in self.records.values():
            status, rec.train_steps, error = check_run(rec.spec, self.root, self.threads)
            if error:
                rec.state, rec.error = FAILED, error
                self._event(rec, "failed", f"not started: {error}", permanent=True, error=error)
            elif status == RUN_FINISHED:
                rec.state = SKIPPED
                step = (checkpoint_steps(self.root / rec.spec.name) or [0])[-1]
                note = ""
                if rec.train_steps and step < rec.train_steps:
                    note = f" (finished at step {step}; a finished run is not extended to {rec.train_steps})"
                self._event(rec, "skipped", "finished already" + note, step=step)
            else:
                todo.append(rec)
        # runs with a checkpoint first (finish what has started), then in the order given (stable sort)
        todo.sort(key=lambda rec: run_status(self.root / rec.spec.name) != PARTIAL)
        return todo

    def _start_ray(self) -> bool:
        import ray

        owns = False
        if not ray.is_initialized():
            kwargs = dict(log_to_driver=False)
            if self.options.address:
                ray.init(address=self.options.address, **kwargs)
            else:
                ray.init(num_cpus=self.options.num_cpus or os.cpu_count(), num_gpus=self.options.num_gpus,
                         include_dashboard=False, **kwargs)
            owns = True
        total = ray.cluster_resources()
        for key, need in (("CPU", self.options.cpus_per_run), ("GPU", self.options.gpus_per_run)):
            if need > total.get(key, 0):
                if owns:
                    ray.shutdown()
                raise RuntimeError(f"each run asks for {need} {key} but the Ray cluster has {total.get(key, 0)}")
        from cg2a_ext.rl.sweep.worker import execute_run

        self._remote = ray.remote(execute_run)
        return owns

    def _submit(self, rec: RunRecord) -> None:
        rec.attempt += 1
        rec.state = QUEUED
        ref = self._remote.options(num_cpus=self.options.cpus_per_run, num_gpus=self.options.gpus_per_run,
                                   max_retries=0, retry_exceptions=False, name=f"sweep:{rec.spec.name}") \
            .remote(str(self.root.resolve()), rec.spec.to_dict(), rec.attempt, self.threads, self.launch_id,
                    {"modes": list(self.options.zero_shot_modes), "episodes": self.options.zero_shot_episodes})
        self._running[ref] = rec.spec.name

    def _launch_all(self, todo: list[RunRecord]) -> None:
        for rec in todo:
            status = run_status(self.root / rec.spec.name)
            self._submit(rec)
            step = (checkpoint_steps(self.root / rec.spec.name) or [None])[-1] if status == PARTIAL else None
            self.events.write(rec.spec.name, "launched", attempt=rec.attempt, resume_from=step)
        self.progress.message(f"launched {len(todo)} runs ({self.options.cpus_per_run} CPU, "
                              f"{self.options.gpus_per_run} GPU each); root {self.root}")

    def _loop(self) -> None:
        import ray

        while self._running:
            if self.stop_event.is_set():
                self._stop_all()
                return
            ready, _ = ray.wait(list(self._running), num_returns=1, timeout=0.5)
            for ref in ready:
                self._handle(ref)
            self.progress.show(self._states())

    def _handle(self, ref, stopping: bool = False) -> None:
        import ray

        name = self._running.pop(ref)
        rec = self.records[name]
        try:
            result = ray.get(ref, timeout=60 if stopping else None)
        except ray.exceptions.TaskCancelledError:
            result = {"status": "cancelled"}
        except ray.exceptions.RayTaskError as e:          # an exception the worker did not sort
            result = {"status": "error", "error": str(e).strip().splitlines()[-1]}
        except ray.exceptions.RayError as e:              # the worker or its node died
            result = {"status": "lost", "error": f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"}
        rec.results.append(result)
        status = result["status"]
        if status == "finished":
            rec.state = FINISHED
            how = {"resumed": f", resumed from step {result.get('resumed_from')}",
                   "skipped": ", already finished"}.get(result.get("action"), "")
            zero_shot = f"; {result['zero_shot']}" if result.get("zero_shot") else ""
            self._event(rec, "finished", f"finished at step {result.get('step')}{how}{zero_shot}",
                        step=result.get("step"), action=result.get("action"), resumed_from=result.get("resumed_from"))
        elif status == "failed":
            rec.state, rec.error = FAILED, result["error"]
            self._event(rec, "failed", f"failed (not retried): {result['error']}", permanent=True,
                        error=result["error"])
        elif stopping or self.stop_event.is_set() or status == "cancelled":
            rec.state = STOPPED
            step = (checkpoint_steps(self.root / name) or [0])[-1]
            self._event(rec, "stopped", f"stopped; keeps its checkpoint at step {step}", step=step)
        elif rec.attempt <= self.options.retries:
            rec.state = RETRYING
            error = result.get("error") or "returned before its last step"
            self._event(rec, "retry", f"attempt {rec.attempt} ended ({error}); retrying", error=error,
                        reason=status)
            self._submit(rec)
        else:
            rec.state, rec.error = FAILED, result.get("error") or status
            self._event(rec, "failed", f"failed after {rec.attempt} attempts: {rec.error}", permanent=False,
                        error=rec.error)

    def _stop_all(self) -> None:
        import ray

        self.progress.message(f"stopping {len(self._running)} runs (each keeps its last checkpoint)...")
        for ref in list(self._running):
            ray.cancel(ref, force=self.force_event.is_set())
        deadline = time.monotonic() + self.options.stop_timeout
        while self._running and time.monotonic() < deadline and not self.force_event.is_set():
            ready, _ = ray.wait(list(self._running), num_returns=1, timeout=0.5)
            for ref in ready:
                self._handle(ref, stopping=True)
        for ref in list(self._running):                 # out of time (or a second Ctrl-C): kill them
            ray.cancel(ref, force=True)
        for ref in list(self._running):
            self._handle(ref, stopping=True)

    def _exit_code(self) -> int:
        states = [r.state for r in self.records.values()]
        if any(s == FAILED for s in states):
            return 1
        if any(s not in DONE for s in states):
            return 130
        return 0

    def summary(self) -> str:
        lines = []
        for name, rec in self.records.items():
            line = f"{rec.state:9s} {name}"
            if rec.attempt > 1:
                line += f" ({rec.attempt} attempts)"
            if rec.error:
                line += f": {rec.error.splitlines()[-1]}"
            lines.append(line)
        return "\n".join(lines)
