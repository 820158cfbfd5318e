"""DMC-GB environments: dm_control tasks from pixels in train and the four test modes.

``TASKS`` is computed on first access (it imports dm_control, which needs the
headless rendering backend chosen first, see :mod:`.rendering`).
"""
from __future__ import annotations

from typing import Any

from .dmc import MODES, DMCEnv, make_env, task_table
from .rendering import RenderingUnavailableError, ensure_rendering_backend

__all__ = ["make_env", "TASKS", "MODES", "DMCEnv", "ensure_rendering_backend", "RenderingUnavailableError"]


def __getattr__(name: str) -> Any:
    if name == "TASKS":
        return tuple(sorted(task_table()))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
