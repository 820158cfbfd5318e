"""One run of a sweep, executed inside a Ray worker (or any process): start it, resume it or skip it.

``execute_run`` looks at the run folder first, so a retried or relaunched run continues where it
stopped: finished -> nothing to do; partial (a checkpoint exists) -> resumed (the run's config.json is
the base; the sweep's options must agree with it, as ``train.py --resume`` checks);
new -> a fresh start (leftovers of an attempt that died before its first checkpoint are removed:
there is nothing in them to resume, and the CSV logs would otherwise get that attempt's rows twice).

Errors come back as a result, sorted by whether retrying can help:

- permanent (``"failed"``): the configuration is refused (ConfigError, or ``train``'s RunError: bad
  options, inputs or folders, a failed write), a file is missing (FileNotFoundError: DMC-GB data, a
  checkpoint), or the code cannot be imported. The same attempt would fail again.
- transient (``"error"``): any other exception; the driver retries it while it has retries left.

A worker that dies (killed, out of memory, node lost) returns nothing; the driver sees Ray's error
and retries. KeyboardInterrupt (``ray.cancel`` on Ctrl-C) is let through.

With ``zero_shot`` (``sweep.py --zero_shot_episodes N``), a run that finishes training is then
evaluated zero-shot in the same slot and the results are cached in the run folder, as ``report.py``
does (``report.zero_shot``), so the report has nothing left to evaluate. An evaluation that fails or
is stopped leaves the run finished: the report evaluates what the cache lacks.
"""
from __future__ import annotations

import contextlib
import io
import shutil
import signal
import sys
import traceback
from pathlib import Path

from cg2a_ext.rl.config import ConfigError

from cg2a_ext.rl.sweep import manifest
from cg2a_ext.rl.sweep.grid import RunSpec
from cg2a_ext.rl.sweep.run_state import FINISHED, PARTIAL, checkpoint_steps, run_status
from cg2a_ext.rl.run.folder import RunFolder

PERMANENT_ERRORS: tuple[type[BaseException], ...] = (ConfigError, FileNotFoundError, ImportError)


# RunError exit codes of a run interrupted by Ctrl-C / SIGTERM (128 + the signal's number)
STOPPED_EXIT_CODES = (128 + signal.SIGINT, 128 + signal.SIGTERM)
# the command a run's messages name (how to resume it by hand)
COMMAND = "python python/train.py"


class _Tee(io.TextIOBase):
    """Write to a log file and keep the last characters for the error report.

    A library can keep the stream it found as sys.stderr while a run's output was redirected here:
    absl's logging handler, created when dm_control is first imported. Ray reuses worker processes
    for later runs, so once this run's log is closed, what still arrives goes to the process's own
    stderr (Ray's worker log) instead of failing."""

    def __init__(self, file, keep: int = 4000) -> None:
        self.file = file
        self.keep = keep
        self.tail = ""

    def write(self, s: str) -> int:
        if self.file.closed:
            return sys.__stderr__.write(s) if sys.__stderr__ is not None else len(s)
        self.file.write(s)
        self.file.flush()
        self.tail = (self.tail + s)[-self.keep:]
        return len(s)

    def flush(self) -> None:
        if not self.file.closed:
            self.file.flush()


def _last_lines(text: str, n: int = 6) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join(lines[-n:])


def run_config(run: RunSpec, run_dir: Path, resume: bool, threads: int):
    """The validated TrainConfig the worker trains: the run's config in ``run_dir``, without a progress bar
    (the sweep shows its own table) and with ``threads`` torch threads unless the sweep sets them; resumed
    from the run folder's config.json when ``resume``. ConfigError when refused."""
    import copy

    from cg2a_ext.rl.cli.options import _resume_config

    cfg = copy.deepcopy(run.config)
    given = run.explicit()
    if "progress" not in given:
        cfg.progress = False
    if "num_threads" not in given and threads > 0:
        cfg.num_threads = threads
    cfg.run_dir = str(run_dir)
    if not resume:
        return cfg.validate()
    cfg.resume = True
    return _resume_config(cfg, given | {"progress", "num_threads"})


def _zero_shot(run_dir: Path, zero_shot: dict, threads: int, out) -> str:
    """Evaluates the finished run on zero_shot["modes"] x zero_shot["episodes"]; returns a one-line summary."""

    from cg2a_ext.rl.sweep.report.zero_shot import evaluate_run, own_modes

    try:
        device = RunFolder(run_dir).read_config_dict().get("device", "cpu")
    except (OSError, ValueError):
        device = "cpu"
    device = "cpu" if device in ("", "auto") or not str(device).startswith("cuda") else device
    try:
        modes = own_modes(run_dir, zero_shot["modes"])
        results = evaluate_run(run_dir, modes, int(zero_shot["episodes"]), device=device, threads=threads)
    except KeyboardInterrupt:
        return "zero-shot evaluation stopped (report.py evaluates what is missing)"
    except Exception as e:                                              # noqa: BLE001 - the run itself is done
        out.write(traceback.format_exc())
        return f"zero-shot evaluation failed ({type(e).__name__}: {e}); report.py evaluates what is missing"
    return "zero-shot: " + ", ".join(f"{m}={r['mean']:.0f}" for m, r in results.items())


def execute_run(root: str, run: dict, attempt: int, threads: int = 1, launch: str = "",
                zero_shot: dict | None = None) -> dict:
    """Run (or resume, or skip) one run of the sweep in this process; see the module docstring.
    ``zero_shot``: {"modes": [...], "episodes": N} to evaluate the run once it has finished training."""
    spec = RunSpec.from_dict(run)
    root_path = Path(root)
    run_dir = root_path / spec.name
    status = run_status(run_dir)
    if status == FINISHED:
        return {"status": "finished", "action": "skipped", "step": (checkpoint_steps(run_dir) or [0])[-1]}
    resume = status == PARTIAL
    resumed_from = checkpoint_steps(run_dir)[-1] if resume else None
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)
    action = "resumed" if resume else "started"
    manifest.write_worker_record(root_path, spec.name, attempt, action, launch)
    if threads > 0:
        import torch
        torch.set_num_threads(threads)
    log = manifest.log_path(root_path, spec.name)
    log.parent.mkdir(parents=True, exist_ok=True)
    result = {"action": action, "resumed_from": resumed_from}
    with open(log, "a") as f:
        tee = _Tee(f)
        f.write(f"==== attempt {attempt}: {action}: train {' '.join(spec.command_line())}\n")
        f.flush()
        try:
            with contextlib.redirect_stdout(tee), contextlib.redirect_stderr(tee):
                from cg2a_ext.rl.core.trainer import TrainingStopped
                from cg2a_ext.rl.training import RunError, train

                try:
                    train(run_config(spec, run_dir, resume, threads), command=COMMAND)
                except TrainingStopped:         # stopped by a signal after writing a checkpoint
                    steps = checkpoint_steps(run_dir)
                    return {**result, "status": "incomplete", "step": steps[-1] if steps else 0}
                except RunError as e:
                    f.write(f"train: error: {e}\n")
                    if e.exit_code in STOPPED_EXIT_CODES:
                        steps = checkpoint_steps(run_dir)
                        return {**result, "status": "incomplete", "step": steps[-1] if steps else 0}
                    return {**result, "status": "failed", "permanent": True, "error": str(e)}
        except KeyboardInterrupt:
            raise
        except Exception as e:                                          # noqa: BLE001 - sorted below
            text = "".join(traceback.format_exception_only(type(e), e)).strip()
            f.write(traceback.format_exc())
            permanent = isinstance(e, PERMANENT_ERRORS)
            return {**result, "status": "failed" if permanent else "error", "permanent": permanent, "error": text}
        steps = checkpoint_steps(run_dir)
        step = steps[-1] if steps else 0
        if not RunFolder(run_dir).finished.is_file():
            return {**result, "status": "incomplete", "step": step}
        if zero_shot and zero_shot.get("episodes", 0) > 0 and zero_shot.get("modes"):
            # the same log and tee as the training: streams kept from it (absl's) still land in this log
            f.write(f"==== zero-shot evaluation: {' '.join(zero_shot['modes'])}, "
                    f"{zero_shot['episodes']} episodes each\n")
            f.flush()
            with contextlib.redirect_stdout(tee), contextlib.redirect_stderr(tee):
                summary = _zero_shot(run_dir, zero_shot, threads, tee)
            f.write(summary + "\n")
            result["zero_shot"] = summary
    return {**result, "status": "finished", "step": step}
