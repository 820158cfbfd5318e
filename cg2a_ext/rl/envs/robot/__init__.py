"""The ``robot`` family: xArm7 Reach and PegInBox from pixels, re-created on today's MuJoCo.

The published tasks (Look Closer / SGQN) ran on mujoco_py with the xArm7's
meshes; this re-creation uses the ``mujoco`` bindings and an arm of primitive
geoms on the xArm7's kinematic chain, with the published numbers for the
workspace, camera, physics, rewards, reset draws and test scenes (colours
and table textures; the textures are procedural look-alikes unless
``texture_dir`` is given).
"""
from __future__ import annotations

import os

from cg2a_ext.rl.envs.robot.env import MODES, RobotEnv
from cg2a_ext.rl.envs.robot.expert import expert_action
from cg2a_ext.rl.envs.robot.tasks import CONTROLS, TASKS

from cg2a_ext.rl.envs.family import EnvFamily, ObservationDefaults

__all__ = ["TASKS", "MODES", "CONTROLS", "OBSERVATION_DEFAULTS", "RobotEnv", "make_env", "expert_action", "FAMILY"]

OBSERVATION_DEFAULTS = {"frame_stack": 1, "action_repeat": 1, "episode_length": 50, "image_size": 84}


def make_env(
    task: str,
    mode: str = "train",
    seed: int = 0,
    image_size: int = 84,
    frame_stack: int = 1,
    action_repeat: int = 1,
    episode_length: int = 50,
    control: str = "xy",
    texture_dir: str | os.PathLike | None = None,
) -> RobotEnv:
    """Create robot ``task`` (``"reach"`` or ``"peg_in_box"``) in ``mode``.

    Args:
        mode: ``train`` (white table) or ``test1`` .. ``test5`` (colours and
            table texture change; dynamics do not).
        control: ``xy`` (published runs), ``xyz`` or ``xyzw`` (adds the gripper):
            action dims 2, 3, 4.
        texture_dir: a folder with ``test1.png`` ... to use as table textures
            instead of the procedural ones (ignored in ``train``).
    """
    return RobotEnv(task, mode, seed, image_size, frame_stack, action_repeat, episode_length, control, texture_dir)


class RobotFamily(EnvFamily):
    """The family's registry entry: its tasks and modes, one 84 px frame, no action repeat, 50-step episodes (the
    published protocol, at both presets: a single frame is cheap on a CPU), and an optional folder of table textures
    (``data_dir``: test1.png ...) in place of the procedural ones."""

    name = "robot"
    modes = MODES
    description = "xArm7 reach and peg_in_box (a re-creation on today's MuJoCo); test modes recolour the scene"
    reports_success = True
    # no range: a step's reward is a penalty (reach: -3 d - 0.5 |a|^2 outside 5 cm, +1 inside; peg_in_box:
    # -|a|^2 - 4 d_xy, + up to 10 over the box), so returns can be negative and differ in scale between the
    # tasks: normalised scores and ratios of returns would mean nothing
    normalised_return_range = None

    def tasks(self) -> tuple[str, ...]:
        return tuple(TASKS)

    def observation_defaults(self, task: str, preset: str) -> ObservationDefaults:
        return ObservationDefaults(**OBSERVATION_DEFAULTS)

    def check_data(self, data_dir, modes) -> str:
        if not data_dir:
            return "procedural table textures"
        from cg2a_ext.rl.envs.robot.textures import load_texture_dir

        for mode in modes:
            if mode != "train":
                load_texture_dir(data_dir, mode)
        return f"table textures {data_dir}"

    def make_env(self, task, mode, seed, *, image_size, frame_stack, action_repeat, episode_length, data_dir=None,
                 **options):
        return make_env(task, mode, seed, image_size, frame_stack, action_repeat, episode_length,
                        texture_dir=data_dir or None, **options)


FAMILY = RobotFamily()
