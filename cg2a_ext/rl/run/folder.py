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
# The report's zero-shot results (``sweep.report.zero_shot``): written after training, not by the run itself.
ZERO_SHOT_CACHE = "zero_shot_report.json"
# Everything a run writes (the lock aside): a new run refuses a folder holding any of these.
RUN_FILES = (CONFIG, PLAN, *LOGS, TENSORBOARD, CHECKPOINTS, VIDEOS, IMAGES, FINISHED)

_TEMPORARY = re.compile(r"^\..+\.tmp\d+$")

RunStatus = Literal["new", "partial", "finished"]


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


def read_csv_header(path) -> list[str]:
    """The column names of CSV log ``path`` ([] when it does not exist or is empty); DamagedFileError naming it."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        with open(path, "rb") as f:
            first = f.readline().decode("utf-8")
        if "\0" in first:
            raise ValueError("NUL bytes in a text file")
    except (UnicodeDecodeError, ValueError) as e:
        raise DamagedFileError(f"{path}: damaged ({type(e).__name__}: {e})") from None
    return first.rstrip("\r\n").split(",") if first.strip() else []


class RunDirError(RuntimeError):
    """The run folder cannot be used as asked (in use, holds another run, not a run)."""


# --------------------------------------------------------------------------- the folder
_STEP_PT = re.compile(r"^step_(\d+)\.pt$")
_REPLAY = re.compile(r"^replay_(\d+)\.npz$")
_IMAGE_STEP = re.compile(r"^step_(\d+)$")
_VIDEO_STEP = re.compile(r"^step(\d+)_")
LOG_KINDS = ("train", "update", "diagnostics", "eval")


class RunFolder:
    """One run folder: every file name in it, the readers of its files (a damaged one raises
    :class:`DamagedFileError` naming it) and its markers. The only place that spells a run file's name.

        f = RunFolder(path)
        f.config  f.plan  f.finished  f.lock_file  f.log("eval")  f.checkpoint(step)  f.replay(step)  f.tensorboard
        f.read_config()  f.read_plan()  f.read_finished()  f.rows("eval")  f.checkpoints()  f.status()
    """

    CHECKPOINT_FORM = "step_<N>.pt"     # how the checkpoints are named, for messages

    def __init__(self, path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # ---- names
    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def plan(self) -> Path:
        return self.path / PLAN

    @property
    def finished(self) -> Path:
        return self.path / FINISHED

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def videos(self) -> Path:
        return self.path / VIDEOS

    @property
    def images(self) -> Path:
        return self.path / IMAGES

    @property
    def zero_shot(self) -> Path:
        """The prefix of cg2a-eval's report (``zero_shot.json`` and ``zero_shot.md``)."""
        return self.path / "zero_shot"

    @property
    def zero_shot_cache(self) -> Path:
        """The report's cache of zero-shot results (``sweep.report.zero_shot``)."""
        return self.path / ZERO_SHOT_CACHE

    def log(self, kind: str) -> Path:
        """``<run>/<kind>.csv``, kind one of train, update, diagnostics, eval."""
        if kind not in LOG_KINDS:
            raise ValueError(f"unknown log {kind!r}; one of {', '.join(LOG_KINDS)}")
        return self.path / f"{kind}.csv"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints_dir / f"step_{int(step):09d}.pt"

    def replay(self, step: int) -> Path:
        return self.checkpoints_dir / f"replay_{int(step):09d}.npz"

    def image_step(self, step: int) -> Path:
        return self.images / f"step_{int(step)}"

    # ---- discovery
    def checkpoints(self) -> list[tuple[int, Path]]:
        """(step, path) of every ``step_<N>.pt``, oldest first."""
        return self._numbered(self.checkpoints_dir, _STEP_PT)

    def replays(self) -> list[tuple[int, Path]]:
        """(step, path) of every ``replay_<N>.npz``, oldest first."""
        return self._numbered(self.checkpoints_dir, _REPLAY)

    def image_steps(self) -> list[tuple[int, Path]]:
        """(step, folder) of every ``images/step_<N>/``, oldest first."""
        return [(s, p) for s, p in self._numbered(self.images, _IMAGE_STEP) if p.is_dir()]

    def video_steps(self) -> list[tuple[int, Path]]:
        """(step, file) of every ``videos/step<N>_*``, oldest first."""
        return self._numbered(self.videos, _VIDEO_STEP)

    @staticmethod
    def _numbered(folder: Path, pattern) -> list[tuple[int, Path]]:
        if not folder.is_dir():
            return []
        return sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := pattern.match(p.name)))

    def existing_files(self) -> list[str]:
        """The run files (``RUN_FILES``) present."""
        return [name for name in RUN_FILES if (self.path / name).exists()]

    def has_logs(self) -> bool:
        return any(self.log(k).is_file() for k in LOG_KINDS)

    def status(self) -> "RunStatus":
        """``new``: no run files (or no folder); ``finished``: finished.json is there; else ``partial``."""
        if not self.path.is_dir() or not self.existing_files():
            return "new"
        return "finished" if self.finished.is_file() else "partial"

    # ---- readers (DamagedFileError naming the file)
    def rows(self, kind: str) -> list[dict]:
        """The complete rows of ``<kind>.csv`` ([] without one)."""
        return read_csv_rows(self.log(kind))

    def read_config_dict(self) -> dict:
        return read_json_object(self.config)

    def read_config(self):
        """The run's TrainConfig; DamagedFileError naming config.json when it is damaged or not a config."""
        from cg2a_ext.rl.config import ConfigError, TrainConfig

        data = self.read_config_dict()
        try:
            return TrainConfig.from_dict(data)
        except (ConfigError, TypeError, ValueError) as e:
            raise DamagedFileError(f"{self.config}: not a run config ({e})") from None

    def read_plan(self) -> dict | None:
        return read_json_object(self.plan) if self.plan.is_file() else None

    def read_finished(self) -> dict | None:
        """finished.json ({final_step, final_evaluation, ...}), None without one."""
        if not self.finished.is_file():
            return None
        doc = read_json_object(self.finished)
        step, evaluation = doc.get("final_step"), doc.get("final_evaluation")
        if (not isinstance(step, int) or isinstance(step, bool) or not isinstance(evaluation, dict)
                or not all(isinstance(v, (int, float)) for v in evaluation.values())):
            raise DamagedFileError(f"{self.finished}: damaged (final_step must be an integer and final_evaluation "
                                   "an object of numbers)")
        return doc

    # ---- markers
    def write_finished(self, final_step: int, final_evaluation: dict, wall_time_s: float) -> Path:
        write_json_atomic(self.finished, {"final_step": int(final_step), "final_evaluation": final_evaluation,
                                          "wall_time_s": round(float(wall_time_s), 3),
                                          "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        return self.finished


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
    return RunFolder(run_dir).existing_files()


def run_status(run_dir) -> RunStatus:
    """``new``: no run files (or no folder); ``finished``: finished.json is there; else ``partial``."""
    return RunFolder(run_dir).status()


def read_finished(run_dir) -> dict | None:
    """finished.json's contents, None without one; DamagedFileError naming a damaged one."""
    return RunFolder(run_dir).read_finished()


def write_json_atomic(path, obj) -> None:
    path = Path(path)
    tmp = temporary_path(path)
    try:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_finished(run_dir, final_step: int, final_evaluation: dict, wall_time_s: float) -> Path:
    return RunFolder(run_dir).write_finished(final_step, final_evaluation, wall_time_s)


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

    def remove_empty_folder(self) -> bool:
        """Under the lock: unlink the lock file, remove the folder if nothing else is in it, then unlock.

        rmdir removes an empty folder only, so a file another process put there meanwhile (its own lock
        file included) keeps the folder. Returns whether the folder was removed."""
        if self._fd is None:
            raise RuntimeError(f"the lock of {self.run_dir} is not held: its folder is not this process's to remove")
        try:
            self.path.unlink(missing_ok=True)
            try:
                self.run_dir.rmdir()
                return True
            except OSError:
                return False
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
    for folder in (run_dir, RunFolder(run_dir).checkpoints_dir):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if is_temporary(p.name) and p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    folder = RunFolder(run_dir)
    steps = {step for step, _ in folder.checkpoints()}
    for step, p in folder.replays():
        if step not in steps:
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def open_new_run(run_dir, overwrite: bool = False) -> RunLock:
    """Create/lock ``run_dir`` for a new run; refuse (RunDirError) if it holds run files, unless ``overwrite``."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"--run_dir {run_dir} exists and is not a folder")
    # created by this process only if this very mkdir made it (exists-then-mkdir races another launch)
    try:
        run_dir.mkdir(parents=True)
        created = True
    except FileExistsError:
        created = False
    lock = RunLock(run_dir)
    lock.acquire()      # refused (another process holds it): nothing is removed, the folder is the holder's
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
        if created:
            lock.remove_empty_folder()  # under the lock, and only while empty
        else:
            lock.release()
        raise
    return lock


def open_existing_run(run_dir) -> RunLock:
    """Lock the run folder ``run_dir`` for resuming and remove stale temporaries."""
    run_dir = Path(run_dir)
    if not RunFolder(run_dir).config.is_file():
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
    folder = RunFolder(run_dir)
    for s, p in folder.video_steps():
        if s > step:
            p.unlink(missing_ok=True)
    for s, p in folder.image_steps():
        if s > step:
            shutil.rmtree(p, ignore_errors=True)
