"""Checkpoints of a training run: atomic writes, the last two kept, a damaged one reported and skipped.

Layout (``<run>/checkpoints/``): ``step_<N>.pt`` holds state dicts only (networks, optimizers,
temperature, counters, RNG states, the config) and loads with ``torch.load(weights_only=True)``;
``replay_<N>.npz`` holds the replay buffer's arrays (when ``save_buffer``). Each file is written
to a temporary name beside it (``.<name>.tmp<pid>``) and moved into place with ``os.replace``;
the buffer is written before the ``.pt`` file, so a ``.pt`` file on disk is always a complete
checkpoint. The two newest checkpoints are kept: older ones are removed only once a new one is
in place, so a damaged newest file (a disk that lied, a truncated copy) leaves the previous one.

A write that fails (disk full, read-only file system) raises :class:`CheckpointWriteError` with a
plain message ("no space left on <path>: need about N MB"), after removing its temporaries and the
new buffer file; the previous checkpoints are untouched, so the run resumes in place once space
is freed. Reading errors never surface torch's unpickling advice: they are rephrased as
:class:`CheckpointError` naming the file.
"""
from __future__ import annotations

import errno
import io
import os
import pickle
import shutil
import time
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from cg2a_ext.rl.run.folder import RunFolder, temporary_path

KEEP_LAST = 2
_REQUIRED = ("step", "agent", "rng", "episode")


class CheckpointError(RuntimeError):
    """No usable checkpoint: missing, truncated, corrupt or without what resuming needs."""


class CheckpointWithoutBuffer(CheckpointError):
    """The checkpoint is intact but holds no replay buffer (written with ``--no-save_buffer``)."""


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (no space, read-only, no permission); nothing half-written is left."""


# --------------------------------------------------------------------------- names
# The names are the run folder's (RunFolder); these functions are kept for their callers.
def checkpoint_dir(run_dir) -> Path:
    return RunFolder(run_dir).checkpoints_dir


def checkpoint_path(run_dir, step: int) -> Path:
    return RunFolder(run_dir).checkpoint(step)


def replay_path(run_dir, step: int) -> Path:
    return RunFolder(run_dir).replay(step)


def list_checkpoints(run_dir) -> list[tuple[int, Path]]:
    """(step, path) of every ``step_<N>.pt``, oldest first."""
    return RunFolder(run_dir).checkpoints()


def latest_checkpoint(run_dir) -> Path:
    """Path of the newest checkpoint; CheckpointError with a clear message if none."""
    cks = list_checkpoints(run_dir)
    if not cks:
        raise CheckpointError(f"no checkpoint in {checkpoint_dir(run_dir)} "
                              f"(expected {RunFolder.CHECKPOINT_FORM} files)")
    return cks[-1][1]


# --------------------------------------------------------------------------- writing
def _mb(nbytes: int) -> int:
    return max(1, -(-int(nbytes) // 2**20))


def _write_error(e: OSError, folder: Path, need: int, what: str) -> CheckpointWriteError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = f" ({shutil.disk_usage(folder).free // 2**20} MB free)"
        except OSError:
            free = ""
        msg = f"no space left on {folder}: need about {_mb(need)} MB for {what}{free}"
    elif e.errno == errno.EROFS:
        msg = f"cannot write {what} to {folder}: read-only file system"
    elif e.errno in (errno.EACCES, errno.EPERM):
        msg = f"cannot write {what} to {folder}: permission denied"
    else:
        msg = f"cannot write {what} to {folder}: {e.strerror or e}"
    return CheckpointWriteError(msg)


def _remove(path: Path) -> None:
    """Best-effort removal of a temporary (on a read-only file system even a missing file fails)."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _write_atomic(path: Path, write: Callable, need: int, what: str) -> None:
    """``write(file)`` into a temporary beside ``path``, fsync, move into place; clean up on failure."""
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        raise _write_error(e, path.parent, need, what) from None
    except BaseException:
        _remove(tmp)
        raise


def atomic_torch_save(obj, path) -> None:
    path = Path(path)
    data = _serialise(obj)
    _write_atomic(path, lambda f: f.write(data), len(data), path.name)


def atomic_npz_save(arrays: dict, path) -> None:
    path = Path(path)
    need = sum(np.asarray(a).nbytes for a in arrays.values())
    _write_atomic(path, lambda f: np.savez(f, **arrays), need, path.name)


def _serialise(obj) -> memoryview:
    buf = io.BytesIO()
    torch.save(obj, buf)          # in memory: a full disk then fails the plain file write with ENOSPC
    return buf.getbuffer()


def save_checkpoint(run_dir, step: int, state: dict, replay=None, keep_last: int = KEEP_LAST) -> Path:
    """Write ``state`` (plain state dicts) and optionally ``replay``'s buffer for ``step``; keep ``keep_last``.

    Raises CheckpointWriteError (the previous checkpoints untouched, no temporary left)."""
    d = checkpoint_dir(run_dir)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _write_error(e, d.parent, 0, "the checkpoint folder") from None
    buf = replay_path(run_dir, step)
    path = checkpoint_path(run_dir, step)
    replay_state = replay.state_dict() if replay is not None else None
    state = {**state, "step": int(step), "replay_file": buf.name if replay_state is not None else None}
    data = _serialise(state)
    need = len(data) + (sum(np.asarray(a).nbytes for a in replay_state.values()) if replay_state else 0)
    what = f"checkpoint {path.name}" + (f" and {buf.name}" if replay_state is not None else "")
    try:
        if replay_state is not None:
            _write_atomic(buf, lambda f: np.savez(f, **replay_state), need, what)
        _write_atomic(path, lambda f: f.write(data), need, what)
    except BaseException:
        if replay_state is not None and not path.exists():
            _remove(buf)      # a buffer without its checkpoint is of no use
        raise
    prune_checkpoints(run_dir, keep_last)
    return path


def prune_checkpoints(run_dir, keep_last: int = KEEP_LAST) -> None:
    """Remove all but the ``keep_last`` newest checkpoints, and replay files without a checkpoint."""
    cks = list_checkpoints(run_dir)
    for s, p in cks[:-keep_last] if keep_last > 0 else []:
        p.unlink(missing_ok=True)
        replay_path(run_dir, s).unlink(missing_ok=True)
    kept = {s for s, _ in list_checkpoints(run_dir)}
    for s, p in RunFolder(run_dir).replays():
        if s not in kept:
            p.unlink(missing_ok=True)


# --------------------------------------------------------------------------- reading
def _reason(e: BaseException) -> str:
    """Why a file could not be read, in words that never advise unsafe loading."""
    if isinstance(e, pickle.UnpicklingError):
        return "it holds objects other than tensors and plain containers: not a checkpoint of this program, or damaged"
    if isinstance(e, (EOFError, zipfile.BadZipFile)):
        return "truncated or not a checkpoint file"
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    if "weights_only" in text or "Weights only" in text:
        return "it holds objects other than tensors and plain containers: not a checkpoint of this program, or damaged"
    if "zip archive" in text or "central directory" in text or "unexpected pos" in text:
        return "truncated or not a checkpoint file"
    return f"{type(e).__name__}: {text}"


def load_checkpoint(path, map_location="cpu") -> dict:
    """The state dict of checkpoint ``path``; CheckpointError naming it if missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for damaged files
        raise CheckpointError(f"checkpoint {path} is unreadable ({_reason(e)})") from None
    if not isinstance(state, dict) or any(k not in state for k in _REQUIRED):
        raise CheckpointError(f"checkpoint {path} is not a training checkpoint (it lacks "
                              f"{', '.join(k for k in _REQUIRED if not isinstance(state, dict) or k not in state)})")
    return state


def load_replay(state: dict, ckpt_path, replay) -> bool:
    """Restore ``replay`` from the checkpoint's buffer file; False if the checkpoint has none."""
    name = state.get("replay_file")
    if not name:
        return False
    p = Path(ckpt_path).parent / name
    if not p.is_file():
        raise CheckpointError(f"checkpoint {ckpt_path} refers to a missing replay file {p}")
    try:
        with np.load(p, allow_pickle=False) as z:
            replay.load_state_dict({k: z[k] for k in z.files})
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"replay file {p} of checkpoint {Path(ckpt_path).name} is unreadable "
                              f"({_reason(e)})") from None
    return True


def load_resumable(run_dir, replay, map_location="cpu", warn: Callable[[str], None] = print) -> tuple[dict, Path]:
    """The newest checkpoint that loads completely (its state and its buffer into ``replay``).

    A damaged checkpoint is reported by name through ``warn``, renamed ``<name>.corrupt`` (so it is
    neither used nor kept as one of the last two) and the previous one is tried. Raises
    CheckpointError listing every failure when none loads."""
    cks = list_checkpoints(run_dir)
    if not cks:
        raise CheckpointError(f"no checkpoint in {checkpoint_dir(run_dir)} "
                              f"(expected {RunFolder.CHECKPOINT_FORM} files)")
    failures: list[str] = []
    damaged: list[Path] = []
    for step, path in reversed(cks):
        try:
            state = load_checkpoint(path, map_location=map_location)
            if not load_replay(state, path, replay):
                raise CheckpointWithoutBuffer(f"checkpoint {path} has no replay buffer (it was written "
                                              "with --no-save_buffer; resuming needs the buffer)")
        except CheckpointError as e:
            failures.append(str(e))
            if not isinstance(e, CheckpointWithoutBuffer):
                damaged.append(path)
            warn(f"warning: {e}; trying the previous checkpoint")
            continue
        for bad in damaged:
            os.replace(bad, bad.with_name(bad.name + ".corrupt"))
        prune_checkpoints(run_dir)
        return state, path
    raise CheckpointError("no usable checkpoint in " + str(checkpoint_dir(run_dir)) + ": "
                          + "; ".join(failures))


class CheckpointSchedule:
    """When the periodic checkpoints of a run fall due and when they are taken.

    Due every ``every_steps`` agent steps (0: never by steps) and every ``every_minutes`` of wall time since the
    last one (0: never by time); taken at once, or at the first episode end after falling due when
    ``at_episode_end`` (a resumed run is then bit-identical to an uninterrupted one). The end of the run is the
    trainer's own checkpoint, never a periodic one."""

    def __init__(self, every_steps: int, every_minutes: float, at_episode_end: bool, clock=time.monotonic) -> None:
        self.every_steps = every_steps
        self.every_minutes = every_minutes
        self.at_episode_end = at_episode_end
        self.clock = clock
        self.due = False
        self._last_time = clock()

    def restart_clock(self) -> None:
        """Count the wall-clock interval from now (a process resuming a run starts its own clock)."""
        self._last_time = self.clock()

    def step_done(self, step: int) -> None:
        if self.every_steps > 0 and step % self.every_steps == 0:
            self.due = True
        if self.every_minutes > 0 and self.clock() - self._last_time >= 60.0 * self.every_minutes:
            self.due = True

    def take_now(self, step: int, train_steps: int, in_episode: bool) -> bool:
        return self.due and step < train_steps and (not in_episode or not self.at_episode_end)

    def taken(self) -> None:
        self.due = False
        self._last_time = self.clock()
