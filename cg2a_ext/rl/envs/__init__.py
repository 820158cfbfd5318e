"""DMC-GB environments: dm_control tasks from pixels in train and the four test modes.

Importing this package chooses the headless rendering backend (EGL, then
OSMesa, unless ``MUJOCO_GL`` is set; see :mod:`.rendering`), which must happen
before dm_control is imported. ``TASKS`` is computed on first access.
"""
from __future__ import annotations

from typing import Any

# torch.optim loads torch._dynamo, and with it triton's bundled LLVM, lazily;
# loaded after dm_control's Mesa GL stack, the two LLVMs clash and the process
# segfaults. Loading it first, here where dm_control enters, avoids that.
import torch._dynamo  # noqa: F401

from .rendering import RenderingUnavailableError, ensure_rendering_backend

try:
    # Choose the backend now, before anything else can import dm_control.
    ensure_rendering_backend()
except RenderingUnavailableError:
    pass  # raised again, with its message, by make_env / TASKS

from .dmc import MODES, DMCEnv, make_env, task_table  # noqa: E402

__all__ = ["make_env", "TASKS", "MODES", "DMCEnv", "ensure_rendering_backend", "RenderingUnavailableError"]


def __getattr__(name: str) -> Any:
    if name == "TASKS":
        return tuple(sorted(task_table()))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
