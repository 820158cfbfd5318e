"""Rewards, success and reset draws of the robot tasks (the published numbers).

Distances are taken between positions rounded to 4 decimals, as the
published tasks do. ``action_norm2`` is ``|a|^2`` of the position part
(dx, dy, dz) of the internal action, as given by the agent (in [-1, 1],
before the workspace clipping and the 0.05 scale).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "TASKS", "CONTROLS", "SUCCESS_THRESHOLD", "ACTION_SCALE", "WORKSPACE_LOW", "WORKSPACE_HIGH", "START_Z",
    "ResetDraw", "xy_distance", "xyz_distance", "reach_reward", "peg_in_box_reward", "reward", "is_success",
    "draw_reset",
]

TASKS: tuple[str, ...] = ("reach", "peg_in_box")
# control name -> how many of the internal (dx, dy, dz, grip) the agent drives
CONTROLS: dict[str, int] = {"xy": 2, "xyz": 3, "xyzw": 4}
SUCCESS_THRESHOLD = {"reach": 0.05, "peg_in_box": 0.08}
ACTION_SCALE = 0.05  # metres of mocap motion per unit action and step
# The box (grasp-site coordinates) the mocap target is clipped to: over the table,
# wide enough for every target and goal of the reset draws.
WORKSPACE_LOW = np.array([1.20, 0.05, 0.60])
WORKSPACE_HIGH = np.array([1.75, 0.60, 1.00])
# Grasp-site height at the start of an episode (held there in the ``xy`` control).
START_Z = {"reach": 0.636, "peg_in_box": 0.806}
# Extra start height drawn in the xyz controls (published ranges).
START_Z_RANGE = {"reach": (-0.05, 0.1), "peg_in_box": (-0.05, 0.05)}


def _dist(a, b, dims: int) -> float:
    a = np.round(np.asarray(a, float)[:dims], 4)
    b = np.round(np.asarray(b, float)[:dims], 4)
    return float(np.linalg.norm(a - b))


def xy_distance(a, b) -> float:
    return _dist(a, b, 2)


def xyz_distance(a, b) -> float:
    return _dist(a, b, 3)


def reach_reward(grasp, target, action_norm2: float) -> float:
    """+1 inside the 0.05 disc, else ``-3 d - 0.5 |a|^2`` (``d`` the xy distance), rounded to 4 decimals."""
    d = xy_distance(grasp, target)
    if d < SUCCESS_THRESHOLD["reach"]:
        return 1.0
    return float(np.round(-3.0 * d - 0.5 * action_norm2, 4))


def peg_in_box_reward(peg, goal, action_norm2: float) -> float:
    """``-|a|^2 - 4 d_xy + [d_xy <= 0.05] (10 - 20 d_xyz)`` between the peg and the goal in the box."""
    d_xy = xy_distance(peg, goal)
    r = -action_norm2 - 4.0 * d_xy
    if d_xy <= 0.05:
        r += 10.0 - 20.0 * xyz_distance(peg, goal)
    return float(r)


def reward(task: str, achieved, goal, action_norm2: float) -> float:
    """The reward of ``task``; ``achieved`` is the grasp site (reach) or the peg (peg_in_box)."""
    if task == "reach":
        return reach_reward(achieved, goal, action_norm2)
    return peg_in_box_reward(achieved, goal, action_norm2)


def is_success(task: str, achieved, goal) -> bool:
    """xy distance below 0.05 (reach) or 0.08 (peg_in_box)."""
    return xy_distance(achieved, goal) < SUCCESS_THRESHOLD[task]


@dataclass(frozen=True)
class ResetDraw:
    """What an episode starts from: the grasp-site start and the target disc / box position."""

    gripper: np.ndarray  # grasp-site start (x, y, z)
    object_xy: np.ndarray  # reach: target disc centre; peg_in_box: box origin


def draw_reset(task: str, rng: np.random.Generator, control: str) -> ResetDraw:
    """Gripper x in [1.206, 1.356], y = 0.3 +- 0.1; target / box x = 1.605 +- 0.1, y = 0.3 +- 0.2."""
    gripper = np.array([1.2561169 + rng.uniform(-0.05, 0.1), 0.3 + rng.uniform(-0.1, 0.1), START_Z[task]])
    if control != "xy":
        gripper[2] += rng.uniform(*START_Z_RANGE[task])
    obj = np.array([1.605 + rng.uniform(-0.1, 0.1), 0.3 + rng.uniform(-0.2, 0.2)])
    return ResetDraw(gripper, obj)
