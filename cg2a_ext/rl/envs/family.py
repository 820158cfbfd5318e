"""What an environment family is to the rest of the application: its tasks, modes, observation
defaults and data checks, and how it makes an environment.

A family is one module of ``cg2a_ext.rl.envs`` that defines ``FAMILY``, an :class:`EnvFamily`, and one
line of the registry (``cg2a_ext.rl.envs.FAMILIES``). The config, trainer, evaluation and report ask the
family of a task; none of them names a task or a mode.
"""
from __future__ import annotations

import abc
import os
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym


@dataclass(frozen=True)
class ObservationDefaults:
    """How a family's tasks are seen by default: frame side, stacked frames, action repeat, episode length
    (simulator steps for dmc, agent steps where action_repeat is 1)."""

    image_size: int
    frame_stack: int
    action_repeat: int
    episode_length: int


class EnvFamily(abc.ABC):
    """One family of tasks (dm_control suite, xArm manipulation, ...).

    Class attributes:
        name: the registry name.
        modes: every mode, the training mode ``"train"`` first, then the test modes.
        default_modes_described: one line for help and reports on what the test modes change.
        reports_success: whether the envs' step info carries ``success`` (latched for the episode): training logs
            it per episode, evaluations and the report give success rates beside the returns.
        normalised_return_range: (low, high) of an episode's return on every task of the family, to normalise
            returns to [0, 1] for the report's aggregates across tasks and its return-kept ratios; None where
            the family has no such common scale (returns that can be negative, or differ in range between
            tasks): its tasks are then left out of those statistics, and the report says so.
    """

    name: ClassVar[str]
    modes: ClassVar[tuple[str, ...]]
    description: ClassVar[str] = ""
    reports_success: ClassVar[bool] = False
    # None by default: a family must state its scale before its returns are averaged across tasks
    normalised_return_range: ClassVar[tuple[float, float] | None] = None

    @property
    def test_modes(self) -> tuple[str, ...]:
        return tuple(m for m in self.modes if m != "train")

    @abc.abstractmethod
    def tasks(self) -> tuple[str, ...]:
        """Every task of the family (may import the simulator)."""

    def has_task(self, task: str) -> bool:
        return task in self.tasks()

    @abc.abstractmethod
    def observation_defaults(self, task: str, preset: str) -> ObservationDefaults:
        """The observation defaults of ``task`` under the named preset (``paper`` or ``cpu``)."""

    def check_data(self, data_dir: str | os.PathLike | None, modes: tuple[str, ...]) -> str:
        """Check the data the ``modes`` need before a run starts (raise OSError / ValueError naming the problem);
        return a short description of the data used (``"none"`` when the family needs none)."""
        return "none"

    @abc.abstractmethod
    def make_env(self, task: str, mode: str, seed: int, *, image_size: int, frame_stack: int, action_repeat: int,
                 episode_length: int, data_dir: str | os.PathLike | None = None, **options: Any) -> gym.Env:
        """A gymnasium env: uint8 observations [3 * frame_stack, H, W], float32 actions in [-1, 1]; ``rng_state()``
        and ``set_rng_state()`` for checkpoints; ``data_source`` names what the mode draws from."""
