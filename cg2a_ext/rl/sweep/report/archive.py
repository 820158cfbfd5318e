"""A sweep's results without its checkpoints: what a study needs to be kept, shared or committed.

A sweep root holds gigabytes of checkpoints and replay buffers, and it lives on one machine. The
archive keeps the rest, in the same layout: ``sweep.json``, the report folder, and per run its
configuration, plan, finished marker, CSV logs, zero-shot cache and evaluation images. That is
everything the report reads, so ``report.py ARCHIVE --no_eval`` writes the same tables again, and
the learning curves, on any machine. A finished run's step is then read from its finished marker,
as the checkpoint it names is not there.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from cg2a_ext.rl.run.folder import CHECKPOINTS, LOCK, TENSORBOARD, VIDEOS, is_temporary
from cg2a_ext.rl.sweep.manifest import STATE_DIR

# Run contents the archive leaves out: weights and replay, event files, videos; and the sweep
# driver's own state (locks, worker records), which belongs to the machine that ran it.
LEFT_OUT_DIRS = frozenset({CHECKPOINTS, TENSORBOARD, VIDEOS, STATE_DIR})
MAX_FILE_BYTES = 8 * 1024 * 1024


def check_target(root, out) -> tuple[Path, Path]:
    """``(root, out)`` resolved; ValueError unless ``out`` can take the archive of ``root``: outside it,
    and new or empty."""
    root, out = Path(root).resolve(), Path(out).resolve()
    if out == root or root in out.parents:
        raise ValueError(f"--archive {out}: the archive must lie outside the sweep root {root}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--archive {out}: not a new or empty folder")
    return root, out


def write_archive(root, out) -> tuple[int, int, list[str]]:
    """Copy ``root``'s results into ``out`` (see ``check_target``).

    Returns (files copied, bytes copied, files left out for their size, as paths relative to ``root``)."""
    root, out = check_target(root, out)
    files, total, too_large = 0, 0, []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or path.is_symlink() or LEFT_OUT_DIRS.intersection(rel.parts[:-1]):
            continue
        if path.name == LOCK or is_temporary(path.name):      # a run's lock; a file still being written
            continue
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            too_large.append(str(rel))
            continue
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        files += 1
        total += size
    return files, total, too_large
