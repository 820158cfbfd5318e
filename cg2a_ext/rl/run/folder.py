"""The run folder: its layout, its lock and the rules that keep it truthful.

Layout of ``<run>/``::

    config.json      the run's options (a TrainConfig), written when the run starts
    plan.json        what the run does and how long it should take (rewritten at each start)
    train.csv  update.csv  diagnostics.csv  eval.csv      the logs, one kind of row per file
    tb/              TensorBoard event files
    checkpoints/     step_<N>.pt and replay_<N>.npz, the last two (``checkpoint.py``)
    videos/  images/ evaluation videos and algorithm images, named by their step
    finished.json    written when the run reaches train_steps: final step, final evaluation, wall time
    .lock            the PID of the process training in the folder, while it runs

Rules:

* One process per folder: :class:`RunLock` holds an ``flock`` on ``.lock`` for the whole run. A
  second process fails at start naming the holder's PID; a lock file left by a killed process (its
  flock died with it) is taken over with a warning.
* A new run refuses a folder holding any earlier run's files unless told to overwrite them
  (:func:`open_new_run`); a resumed run truncates its logs to the checkpoint's step (``RunLogger``)
  and its media (:func:`truncate_media`), so no row or file is ever duplicated or left over.
* Temporaries (``.<name>.tmp<pid>``) left by a killed process are removed at start.
* :func:`run_status` tells a sweep runner whether a folder is new, partial or finished.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Literal

CONFIG = "config.json"
PLAN = "plan.json"
FINISHED = "finished.json"
LOCK = ".lock"
LOGS = ("train.csv", "update.csv", "diagnostics.csv", "eval.csv")
TENSORBOARD = "tb"
CHECKPOINTS = "checkpoints"
VIDEOS = "videos"
IMAGES = "images"
# Everything a run writes (the lock aside): a new run refuses a folder holding any of these.
RUN_FILES = (CONFIG, PLAN, *LOGS, TENSORBOARD, CHECKPOINTS, VIDEOS, IMAGES, FINISHED)

_TEMPORARY = re.compile(r"^\..+\.tmp\d+$")

RunStatus = Literal["new", "partial", "finished"]


class DamagedFileError(ValueError):
    """A run-folder file (config.json, plan.json, a CSV log) exists but cannot be read; the message names it."""


def read_json(path):
    """The JSON value in ``path``; DamagedFileError naming the file when it is truncated, not UTF-8 or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise DamagedFileError(f"{path} is damaged ({type(e).__name__}: {e})") from None


def read_csv_rows(path) -> list[dict]:
    """The rows of CSV log ``path`` as dicts ([] when it does not exist); DamagedFileError naming a damaged one."""
    import csv
    import io

    path = Path(path)
    if not path.is_file():
        return []
    try:
        return list(csv.DictReader(io.StringIO(path.read_bytes().decode("utf-8"), newline="")))
    except (UnicodeDecodeError, csv.Error) as e:
        raise DamagedFileError(f"{path} is damaged ({type(e).__name__}: {e})") from None


class DamagedFileError(ValueError):
    """A run-folder file (config.json, plan.json, a CSV log, a checkpoint) exists but cannot be read; the
    message starts with the file's path."""


def read_json(path):
    """The JSON value in ``path``; DamagedFileError naming the file when it is truncated, not UTF-8 or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise DamagedFileError(f"{path}: damaged ({type(e).__name__}: {e})") from None


def read_json_object(path) -> dict:
    """``read_json`` for files that hold one JSON object (config.json, plan.json, finished.json)."""
    value = read_json(path)
    if not isinstance(value, dict):
        raise DamagedFileError(f"{path}: damaged (a JSON object expected, got {type(value).__name__})")
    return value


def read_csv_rows(path) -> list[dict]:
    """The rows of CSV log ``path`` as dicts ([] when it does not exist). A last line cut short by a killed
    process or a full disk is left out; DamagedFileError naming a damaged file (not UTF-8, not CSV).
    The one CSV reader of run folders: the logger, the plots and the sweep's run state read through it."""
    import csv
    import io

    path = Path(path)
    if not path.is_file():
        return []
    try:
        text = path.read_bytes().decode("utf-8")
        if "\0" in text:
            raise ValueError("NUL bytes in a text file")
        if text and not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]
        return list(csv.DictReader(io.StringIO(text, newline="")))
    except (UnicodeDecodeError, ValueError, csv.Error) as e:
        raise DamagedFileError(f"{path}: damaged ({type(e).__name__}: {e})") from None


class RunDirError(RuntimeError):
    """The run folder cannot be used as asked (in use, holds another run, not a run)."""


# --------------------------------------------------------------------------- naming
def temporary_path(path) -> Path:
    """Where to write ``path`` before moving it into place: ``.<name>.tmp<pid>`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def is_temporary(name: str) -> bool:
    """Whether ``name`` is a file being written (``temporary_path``'s form), not yet in place."""
    return bool(_TEMPORARY.match(name))


def default_run_dir(runs_root, task: str, algorithm: str, seed: int) -> Path:
    return Path(runs_root) / task / algorithm / f"seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def existing_run_files(run_dir) -> list[str]:
    """The run files (``RUN_FILES``) present in ``run_dir``."""
    run_dir = Path(run_dir)
    return [name for name in RUN_FILES if (run_dir / name).exists()]


def run_status(run_dir) -> RunStatus:
    """``new``: no run files (or no folder); ``finished``: finished.json is there; else ``partial``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not existing_run_files(run_dir):
        return "new"
    return "finished" if (run_dir / FINISHED).is_file() else "partial"


def read_finished(run_dir) -> dict | None:
    path = Path(run_dir) / FINISHED
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def write_json_atomic(path, obj) -> None:
    path = Path(path)
    tmp = temporary_path(path)
    try:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_finished(run_dir, final_step: int, final_evaluation: dict, wall_time_s: float) -> Path:
    path = Path(run_dir) / FINISHED
    write_json_atomic(path, {"final_step": int(final_step), "final_evaluation": final_evaluation,
                             "wall_time_s": round(float(wall_time_s), 3),
                             "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return path


# --------------------------------------------------------------------------- the lock
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 64, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None


class RunLock:
    """An exclusive ``flock`` on ``<run>/.lock`` holding the owner's PID (see the module doc).

    The kernel drops an flock when its process dies, so a lock file whose flock is free was left by
    a killed process: it is taken over with a warning naming that PID.
    """

    def __init__(self, run_dir) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunLock":
        if self._fd is not None:
            return self
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = _read_pid(fd)
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                who = f"process {holder}" if holder is not None else "another process"
                raise RunDirError(f"run folder {self.run_dir} is in use by {who} (lock file {self.path}); "
                                  "wait for it to finish, stop it, or choose another --run_dir") from None
            # A releasing holder unlinks the file: the flock may be on a file that no longer has this name.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _read_pid(fd)
        if previous is not None and previous != os.getpid():
            state = "still running but not holding it" if _pid_alive(previous) else "no longer running"
            print(f"warning: taking over the stale lock of process {previous} ({state}) in {self.run_dir}",
                  file=sys.stderr, flush=True)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)   # unlink before unlocking: a waiter re-checks the name
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# --------------------------------------------------------------------------- opening a folder
def clean_stale_temporaries(run_dir) -> list[Path]:
    """Remove temporaries of killed processes and replay files without their checkpoint (call under the lock)."""
    run_dir = Path(run_dir)
    removed = []
    ck = run_dir / CHECKPOINTS
    for folder in (run_dir, ck):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if is_temporary(p.name) and p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    if ck.is_dir():
        steps = {m.group(1) for p in ck.iterdir() if (m := re.match(r"^step_(\d+)\.pt$", p.name))}
        for p in ck.iterdir():
            m = re.match(r"^replay_(\d+)\.npz$", p.name)
            if m and m.group(1) not in steps:
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def open_new_run(run_dir, overwrite: bool = False) -> RunLock:
    """Create/lock ``run_dir`` for a new run; refuse (RunDirError) if it holds run files, unless ``overwrite``."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"--run_dir {run_dir} exists and is not a folder")
    # created by this process only if this very mkdir made it (exists-then-mkdir would race another launch)
    try:
        run_dir.mkdir(parents=True)
        created = True
    except FileExistsError:
        created = False
    lock = RunLock(run_dir)
    lock.acquire()          # refused: nothing is removed, the folder is the holder's
    try:
        found = existing_run_files(run_dir)
        if found and not overwrite:
            status = run_status(run_dir)
            raise RunDirError(
                f"{run_dir} holds an earlier run ({status}: {', '.join(found)}); use --resume to continue it, "
                "--overwrite to delete it and start anew, or another --run_dir")
        for name in found:
            p = run_dir / name
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        clean_stale_temporaries(run_dir)
    except BaseException:
        lock.release()      # unlinks the lock file
        if created:
            try:            # only if still empty: rmdir never deletes what another process wrote since
                run_dir.rmdir()
            except OSError:
                pass
        raise
    return lock


def open_existing_run(run_dir) -> RunLock:
    """Lock the run folder ``run_dir`` for resuming and remove stale temporaries."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise RunDirError(f"{run_dir} is not a run folder (no {CONFIG})")
    lock = RunLock(run_dir).acquire()
    try:
        for p in clean_stale_temporaries(run_dir):
            print(f"removed a temporary left by a killed process: {p}", file=sys.stderr, flush=True)
    except BaseException:
        lock.release()
        raise
    return lock


def truncate_media(run_dir, step: int) -> None:
    """Remove videos and images written after ``step`` (resuming from the checkpoint at ``step``)."""
    run_dir = Path(run_dir)
    videos = run_dir / VIDEOS
    if videos.is_dir():
        for p in videos.iterdir():
            m = re.match(r"^step(\d+)_", p.name)
            if m and int(m.group(1)) > step:
                p.unlink(missing_ok=True)
    images = run_dir / IMAGES
    if images.is_dir():
        for p in images.iterdir():
            m = re.match(r"^step_(\d+)$", p.name)
            if m and int(m.group(1)) > step:
                shutil.rmtree(p, ignore_errors=True)
