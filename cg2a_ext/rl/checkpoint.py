"""Atomic checkpoints of a training run.

Layout (``<run>/checkpoints/``): ``step_<N>.pt`` holds state dicts only
(networks, optimizers, temperature, counters, RNG states, the config) and loads
with ``torch.load(weights_only=True)``; ``replay_<N>.npz`` holds the replay
buffer's arrays (when ``save_buffer``). Each file is written to a temporary
name in the same folder and moved into place with ``os.replace``; the buffer
is written before the ``.pt`` file, so a ``.pt`` file on disk is always a
complete checkpoint. Older checkpoints are removed after a new one is in place.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

_PT = re.compile(r"^step_(\d+)\.pt$")


class CheckpointError(FileNotFoundError):
    pass


def _fsync_replace(tmp: Path, path: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_torch_save(obj, path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    _fsync_replace(tmp, path)


def atomic_npz_save(arrays: dict, path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    _fsync_replace(tmp, path)


def checkpoint_dir(run_dir) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir) -> list[tuple[int, Path]]:
    d = checkpoint_dir(run_dir)
    if not d.is_dir():
        return []
    out = [(int(m.group(1)), p) for p in d.iterdir() if (m := _PT.match(p.name))]
    return sorted(out)


def latest_checkpoint(run_dir) -> Path:
    """Path of the newest complete checkpoint; CheckpointError with a clear message if none."""
    cks = list_checkpoints(run_dir)
    if not cks:
        raise CheckpointError(f"no checkpoint in {checkpoint_dir(run_dir)} (expected step_<N>.pt files)")
    return cks[-1][1]


def save_checkpoint(run_dir, step: int, state: dict, replay=None, keep_last: int = 1) -> Path:
    """Write ``state`` (plain state dicts) and optionally ``replay`` atomically for ``step``."""
    d = checkpoint_dir(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    state = dict(state)
    state["step"] = int(step)
    if replay is not None:
        buf = d / f"replay_{step:09d}.npz"
        atomic_npz_save(replay.state_dict(), buf)
        state["replay_file"] = buf.name
    else:
        state["replay_file"] = None
    path = d / f"step_{step:09d}.pt"
    atomic_torch_save(state, path)
    # remove older checkpoints (and their buffers)
    cks = list_checkpoints(run_dir)
    for s, p in cks[:-keep_last] if keep_last > 0 else []:
        p.unlink(missing_ok=True)
        (d / f"replay_{s:09d}.npz").unlink(missing_ok=True)
    for p in d.glob("replay_*.npz"):
        m = re.match(r"replay_(\d+)\.npz", p.name)
        if m and int(m.group(1)) not in {s for s, _ in list_checkpoints(run_dir)}:
            p.unlink(missing_ok=True)
    return path


def load_checkpoint(path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return torch.load(path, map_location=map_location, weights_only=True)


def load_replay(state: dict, ckpt_path, replay) -> bool:
    """Restore ``replay`` from the checkpoint's buffer file; False if the checkpoint has none."""
    name = state.get("replay_file")
    if not name:
        return False
    p = Path(ckpt_path).parent / name
    if not p.is_file():
        raise CheckpointError(f"checkpoint {ckpt_path} refers to a missing replay file {p}")
    with np.load(p) as z:
        replay.load_state_dict({k: z[k] for k in z.files})
    return True
