"""A sweep root's own files: ``sweep.json`` (what the sweep is) and ``_sweep/`` (what happened).

Layout of a sweep root::

    sweep.json                 the grid and every run (name, task, algorithm, seed, options, config, command);
                               a relaunch with more runs adds them, runs already listed stay
    <run name>/                one run folder per run (config.json, CSV logs, checkpoints/, finished.json)
    _sweep/events.jsonl        one JSON line per event: launched, resumed, finished, retry, failed,
                               skipped, stopped (with the attempt and the error where there is one)
    _sweep/logs/<run>.log      the run's stdout and stderr, every attempt appended
    _sweep/workers/<run>.json  the worker of the run's current attempt (host, pid, attempt, start time)
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from cg2a_ext.rl.sweep.grid import RunSpec

MANIFEST = "sweep.json"
STATE_DIR = "_sweep"


def manifest_path(root) -> Path:
    return Path(root) / MANIFEST


def events_path(root) -> Path:
    return Path(root) / STATE_DIR / "events.jsonl"


def log_path(root, name: str) -> Path:
    return Path(root) / STATE_DIR / "logs" / f"{name}.log"


def worker_path(root, name: str) -> Path:
    return Path(root) / STATE_DIR / "workers" / f"{name}.json"


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


def load_manifest(root) -> dict | None:
    path = manifest_path(root)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None


def manifest_runs(root) -> list[RunSpec]:
    doc = load_manifest(root)
    return [RunSpec.from_dict(r) for r in doc.get("runs", [])] if doc else []


def write_manifest(root, runs: list[RunSpec], spec: dict, resources: dict) -> dict:
    """Write sweep.json: the runs of this launch plus those of earlier launches not in it."""
    old = load_manifest(root) or {}
    names = {r.name for r in runs}
    kept = [r for r in old.get("runs", []) if r["name"] not in names]
    launches = old.get("launches", []) + [{"time": time.strftime("%Y-%m-%d %H:%M:%S"), "spec": spec,
                                           "resources": resources, "runs": sorted(names)}]
    doc = {"version": 1, "created": old.get("created", time.strftime("%Y-%m-%d %H:%M:%S")),
           "runs": kept + [r.to_dict() for r in runs], "launches": launches}
    _atomic_write(manifest_path(root), json.dumps(doc, indent=2))
    return doc


class EventLog:
    """Append-only JSON lines; the driver is the only writer."""

    def __init__(self, root) -> None:
        self.path = events_path(root)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, run: str, event: str, **info) -> dict:
        row = {"time": time.time(), "run": run, "event": event, **info}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        return row


def read_events(root) -> list[dict]:
    path = events_path(root)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:     # a line cut by a crash of the driver
            continue
    return out


def write_worker_record(root, name: str, attempt: int, action: str, launch: str = "") -> dict:
    rec = {"run": name, "attempt": attempt, "launch": launch, "action": action, "host": socket.gethostname(), "pid": os.getpid(),
           "started": time.time()}
    _atomic_write(worker_path(root, name), json.dumps(rec))
    return rec


def read_worker_record(root, name: str) -> dict | None:
    try:
        return json.loads(worker_path(root, name).read_text())
    except (OSError, json.JSONDecodeError):
        return None
