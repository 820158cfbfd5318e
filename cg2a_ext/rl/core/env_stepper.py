"""Environment steps in a worker thread, overlapped with the agent's update (``--env_overlap``).

The trainer starts the step of agent step t, runs the update of step t, then collects the
transition::

    stepper.step_async(action)          # env.step(action) starts in the worker thread
    agent.update(replay)                # samples from the buffer *before* transition t is stored
    next_obs, reward, terminated, truncated, info = stepper.wait()
    replay.add(action, reward, next_obs, terminated)

This is the order of the serial loop (update, then env.step, then store), so the sampled batches,
the updates and the transitions are the same as without overlap: the environment and the update
share no state and no random generator. What runs in parallel is whatever releases the GIL:
MuJoCo's physics, the OpenGL renderer and PyTorch's kernels (BENCHMARKS.md measures how much).

Every call to the environment (reset, step, close) runs on the one worker thread: an OpenGL
context current on one thread cannot be made current on another (dm_control refuses), so an
environment driven by a stepper must not also be rendered from another thread. With
``overlap=False`` the same interface calls the environment inline on the caller's thread.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np


def resolve_env_overlap(setting: str, device) -> bool:
    """``--env_overlap``: on, off, or auto (on for a CPU device, off for CUDA: BENCHMARKS.md)."""
    import torch

    if setting not in ("auto", "on", "off"):
        raise ValueError(f"unknown env_overlap setting {setting!r}; choose auto, on or off")
    return setting == "on" or (setting == "auto" and torch.device(device).type != "cuda")


class EnvStepper:
    """Drives one environment from a dedicated worker thread (or inline, ``overlap=False``)."""

    def __init__(self, env, overlap: bool = True):
        self.env = env
        self.overlap = bool(overlap)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="env-stepper") if overlap else None
        self._pending: Future | None = None
        self._closed = False

    def _call(self, fn, *args, **kwargs) -> Any:
        """Run ``fn`` on the environment's thread and return its result."""
        if self._executor is None:
            return fn(*args, **kwargs)
        return self._executor.submit(fn, *args, **kwargs).result()

    def _check_idle(self, what: str) -> None:
        if self._closed:
            raise RuntimeError(f"EnvStepper.{what}: the stepper is closed")
        if self._pending is not None:
            raise RuntimeError(f"EnvStepper.{what}: a step is in flight; call wait() first")

    def reset(self, **kwargs) -> tuple[np.ndarray, dict]:
        """``env.reset(**kwargs)`` on the environment's thread."""
        self._check_idle("reset")
        return self._call(self.env.reset, **kwargs)

    def step_async(self, action) -> None:
        """Start ``env.step(action)``; the action is copied, so the caller may reuse its array."""
        self._check_idle("step_async")
        action = np.array(action, copy=True)
        if self._executor is None:
            future: Future = Future()
            try:
                future.set_result(self.env.step(action))
            except BaseException as e:   # re-raised by wait(), as from the worker
                future.set_exception(e)
            self._pending = future
        else:
            self._pending = self._executor.submit(self.env.step, action)

    def wait(self) -> tuple[np.ndarray, float, bool, bool, dict]:
        """The result of the step started by ``step_async``: (obs, reward, terminated, truncated, info).
        An exception raised by ``env.step`` is raised here."""
        if self._pending is None:
            raise RuntimeError("EnvStepper.wait: no step in flight; call step_async(action) first")
        pending, self._pending = self._pending, None
        return pending.result()

    def step(self, action) -> tuple[np.ndarray, float, bool, bool, dict]:
        """``step_async(action)`` then ``wait()``."""
        self.step_async(action)
        return self.wait()

    def close(self, close_env: bool = True) -> None:
        """Finish a step in flight, close the environment (on its thread) and stop the worker. Idempotent."""
        if self._closed:
            return
        try:
            if self._pending is not None:
                try:
                    self.wait()
                except Exception:   # closing anyway; the step's error was the caller's to collect
                    pass
            if close_env:
                self._call(self.env.close)
        finally:
            self._closed = True
            if self._executor is not None:
                self._executor.shutdown(wait=True)

    def __enter__(self) -> "EnvStepper":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
