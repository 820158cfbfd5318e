"""Headless OpenGL backend selection for MuJoCo / dm_control.

dm_control binds its rendering backend (and PyOpenGL its platform) when it is
first imported, so :func:`ensure_rendering_backend` must run before any
``dm_control`` import. It respects a ``MUJOCO_GL`` set by the user; otherwise
it probes EGL, then OSMesa, each in a throw-away subprocess (a failed probe
in-process would leave PyOpenGL bound to the wrong platform) and exports the
first that creates a context.
"""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from typing import Callable

__all__ = ["ensure_rendering_backend", "choose_backend", "RenderingUnavailableError"]

# Backends tried in order, with the Debian packages that provide them.
_CANDIDATES: tuple[tuple[str, str], ...] = (
    ("egl", "libegl1 and libgl1-mesa-dri (Mesa EGL), or an NVIDIA driver"),
    ("osmesa", "libosmesa6"),
)

# Creates and frees a 16x16 context with the backend named in MUJOCO_GL.
_PROBE = (
    "import os, mujoco\n"
    "gl = os.environ['MUJOCO_GL']\n"
    "mod = __import__('mujoco.' + gl, fromlist=['GLContext'])\n"
    "ctx = mod.GLContext(16, 16)\n"
    "ctx.make_current()\n"
    "ctx.free()\n"
)

_chosen: str | None = None


class RenderingUnavailableError(RuntimeError):
    """Raised when no headless OpenGL backend can create a context."""


def _probe(backend: str, timeout: float = 120.0) -> tuple[bool, str]:
    env = dict(os.environ, MUJOCO_GL=backend, PYOPENGL_PLATFORM=backend)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:  # pragma: no cover
        return False, repr(exc)
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    return proc.returncode == 0, (lines[-1] if lines else "")


def ensure_rendering_backend() -> str:
    """Return the MuJoCo GL backend in use, choosing one if the user did not.

    Sets ``MUJOCO_GL`` (and ``PYOPENGL_PLATFORM`` for EGL/OSMesa) in
    ``os.environ`` so that dm_control and any child process use it.

    Raises:
        RenderingUnavailableError: neither EGL nor OSMesa works; the message
            names the system packages to install.
    """
    global _chosen
    if _chosen is not None:
        return _chosen
    user = os.environ.get("MUJOCO_GL")
    if user:
        _chosen = user.lower()
        return _chosen
    if "dm_control" in sys.modules or "OpenGL" in sys.modules:
        # Too late to choose: whatever was imported already fixed the backend.
        warnings.warn(
            "dm_control/OpenGL was imported before cg2a_ext.rl.envs could choose a headless rendering "
            "backend and MUJOCO_GL is unset, so dm_control uses its default (GLFW, which needs a "
            "display). Import cg2a_ext.rl.envs first, or set MUJOCO_GL=egl (or osmesa).",
            RuntimeWarning,
            stacklevel=2,
        )
        _chosen = "glfw"
        return _chosen
    backend = choose_backend()
    os.environ["MUJOCO_GL"] = backend
    os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    _chosen = backend
    return backend


def choose_backend(probe: Callable[[str], tuple[bool, str]] = _probe) -> str:
    """Return the first of EGL, OSMesa that ``probe`` accepts.

    Raises:
        RenderingUnavailableError: none works; the message names the packages.
    """
    errors = []
    for backend, packages in _CANDIDATES:
        ok, err = probe(backend)
        if ok:
            return backend
        errors.append(f"  {backend}: needs {packages}; probe said: {err or 'no output'}")
    raise RenderingUnavailableError(
        "No headless OpenGL backend for MuJoCo works on this machine.\n"
        + "\n".join(errors)
        + "\nInstall one, e.g. `apt-get install libegl1 libgl1-mesa-dri` (EGL) or "
        "`apt-get install libosmesa6` (OSMesa), or set MUJOCO_GL yourself."
    )
