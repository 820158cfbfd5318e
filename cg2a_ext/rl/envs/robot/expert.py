"""A scripted expert for the robot tasks, from privileged state.

It steers the mocap target (not the lagging grasp site) straight to the goal
in xy at up to the full action; in the ``xyz`` controls PegInBox then lowers
the peg into the box. Used for demonstrations and as a check that every
episode is solvable.
"""
from __future__ import annotations

import numpy as np

from . import tasks

__all__ = ["expert_action"]

# Grasp-site height above the goal with the peg's bottom just above the box floor.
_PEG_IN_BOX_HEIGHT = 0.10


def expert_action(env) -> np.ndarray:
    """The expert's action for ``env`` (a :class:`RobotEnv` mid-episode), float32 in [-1, 1]."""
    target = env.mocap_target
    goal = env.goal_pos
    delta = np.zeros(4)
    delta[:2] = goal[:2] - target[:2]
    if env.task == "peg_in_box" and env.control != "xy":
        # Hold the start height until the peg hangs still above the box, then lower it in.
        peg = env.achieved_pos
        aligned = np.linalg.norm(goal[:2] - peg[:2]) < 0.015 and np.linalg.norm(delta[:2]) < 0.01
        z = goal[2] + _PEG_IN_BOX_HEIGHT if aligned else tasks.START_Z["peg_in_box"]
        delta[2] = z - target[2]
    a = np.clip(delta / tasks.ACTION_SCALE, -1.0, 1.0)
    return a[: env.action_space.shape[0]].astype(np.float32)
