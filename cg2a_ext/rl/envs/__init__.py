"""Environment families: one registry line each (``FAMILIES``), one module each.

``make_env(task, mode=..., seed=...)`` finds the task's family and asks it for a gymnasium env; ``family_of``
gives the family itself (its modes, observation defaults and data checks). Families load on first use.

Importing this package chooses the headless rendering backend (EGL, then OSMesa, unless ``MUJOCO_GL`` is
set; see :mod:`.rendering`), which must happen before dm_control or a MuJoCo renderer is created.
"""
from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

# torch.optim loads torch._dynamo, and with it triton's bundled LLVM, lazily; loaded after dm_control's
# Mesa GL stack, the two LLVMs clash and the process segfaults. Loading it first, here where the
# simulators enter, avoids that.
import torch._dynamo  # noqa: F401

from cg2a_ext.rl.envs.rendering import RenderingUnavailableError, ensure_rendering_backend

if TYPE_CHECKING:
    from cg2a_ext.rl.envs.family import EnvFamily

try:
    # Choose the backend now, before anything else can import dm_control.
    ensure_rendering_backend()
except RenderingUnavailableError:
    pass  # raised again, with its message, by make_env / tasks

# name -> module defining FAMILY; searched in this order for a task
FAMILIES: dict[str, str] = {
    "robot": "cg2a_ext.rl.envs.robot",
    "dmc": "cg2a_ext.rl.envs.dmc",
}

__all__ = ["FAMILIES", "get_family", "family_of", "make_env", "all_tasks", "register_family",
           "ensure_rendering_backend", "RenderingUnavailableError"]


def register_family(name: str, module: str) -> None:
    """Add a family (``module`` defines ``FAMILY``) to the registry, e.g. from a test or a plugin package."""
    if name in FAMILIES and FAMILIES[name] != module:
        raise ValueError(f"environment family {name!r} is already registered as {FAMILIES[name]}")
    FAMILIES[name] = module


def get_family(name: str) -> "EnvFamily":
    """The family registered as ``name``."""
    if name not in FAMILIES:
        raise KeyError(f"unknown environment family {name!r}; registered: {', '.join(FAMILIES)}")
    fam = importlib.import_module(FAMILIES[name]).FAMILY
    if fam.name != name:
        raise RuntimeError(f"{FAMILIES[name]}.FAMILY is named {fam.name!r}, registered as {name!r}")
    return fam


def family_of(task: str) -> "EnvFamily":
    """The family that has ``task``; ValueError naming the known tasks otherwise."""
    for name in FAMILIES:
        try:
            fam = get_family(name)
        except ModuleNotFoundError:
            continue
        if fam.has_task(task):
            return fam
    raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(all_tasks())}")


def all_tasks() -> tuple[str, ...]:
    """Every task of every registered family."""
    out: list[str] = []
    for name in FAMILIES:
        try:
            out += get_family(name).tasks()
        except ModuleNotFoundError:
            continue
    return tuple(out)


def make_env(task: str, mode: str = "train", seed: int = 0, *, image_size: int | None = None,
             frame_stack: int | None = None, action_repeat: int | None = None, episode_length: int | None = None,
             data_dir: str | os.PathLike | None = None, preset: str = "paper", **options: Any):
    """A gymnasium env of ``task`` in ``mode`` (see the family's ``make_env``); observation options left None take
    the family's defaults for the preset."""
    fam = family_of(task)
    if mode not in fam.modes:
        raise ValueError(f"unknown mode {mode!r} for {fam.name} task {task!r}; choose one of {', '.join(fam.modes)}")
    d = fam.observation_defaults(task, preset)

    def pick(value, default):
        return default if value is None else value

    return fam.make_env(task, mode, seed, image_size=pick(image_size, d.image_size),
                        frame_stack=pick(frame_stack, d.frame_stack), action_repeat=pick(action_repeat, d.action_repeat),
                        episode_length=pick(episode_length, d.episode_length), data_dir=data_dir, **options)


def __getattr__(name: str) -> Any:
    if name == "TASKS":       # kept for callers of the one-family API
        return all_tasks()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
