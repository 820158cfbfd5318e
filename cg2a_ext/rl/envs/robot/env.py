"""The robot tasks (xArm7 Reach, PegInBox) as gymnasium envs from pixels.

A re-creation on today's MuJoCo (``mujoco`` bindings, no mujoco_py / gym) of
the published xArm7 tasks, with an arm built from primitive geoms (see
:mod:`.scene`). Conventions follow :class:`cg2a_ext.rl.envs.dmc.DMCEnv`:
uint8 observations ``[3 * frame_stack, H, W]`` (oldest frame first), float32
actions in [-1, 1], ``reset(seed=...)``, ``rng_state()`` / ``set_rng_state()``.
"""
from __future__ import annotations

import os
from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np

from ..rendering import ensure_rendering_backend
from . import scene, tasks
from cg2a_ext.rl.envs.robot.textures import load_texture_dir, png_bytes, table_texture

__all__ = ["MODES", "RobotEnv"]

MODES: tuple[str, ...] = ("train", "test1", "test2", "test3", "test4", "test5")

_SETTLE_SECONDS = 0.5  # simulated time for the arm to reach the start pose at reset


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"seed must be a non-negative integer, got {value!r}")
    return int(value)


class RobotEnv(gym.Env):
    """An xArm7 task seen by the third-person camera, in one of :data:`MODES`.

    One env step sets the mocap target (moved by ``0.05 * action``, clipped to
    the workspace box) and runs 20 physics substeps; ``action_repeat`` repeats
    that, summing rewards. ``truncated`` is True after ``episode_length`` such
    steps. ``info["success"]`` is latched for the episode once reached.
    """

    metadata = {"render_modes": ["rgb_array"]}
    render_mode = "rgb_array"

    def __init__(
        self,
        task: str,
        mode: str = "train",
        seed: int = 0,
        image_size: int = 84,
        frame_stack: int = 1,
        action_repeat: int = 1,
        episode_length: int = 50,
        control: str = "xy",
        texture_dir: str | os.PathLike | None = None,
    ) -> None:
        if task not in tasks.TASKS:
            raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(tasks.TASKS)}")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; valid modes: {', '.join(MODES)}")
        if control not in tasks.CONTROLS:
            raise ValueError(f"unknown control {control!r}; valid controls: {', '.join(tasks.CONTROLS)}")
        self.task, self.mode, self.control = task, mode, control
        self.seed_value = _seed(seed)
        self.image_size = _positive_int("image_size", image_size)
        self.frame_stack = _positive_int("frame_stack", frame_stack)
        self.action_repeat = _positive_int("action_repeat", action_repeat)
        self.episode_length = _positive_int("episode_length", episode_length)

        import mujoco

        assets: dict[str, bytes] = {}
        if mode == "train":
            self.data_source = "train"
        elif texture_dir is not None:
            image = load_texture_dir(texture_dir, mode)
            assets[scene.texture_asset_name(mode)] = png_bytes(image)
            self.data_source = str(texture_dir)
        else:
            assets[scene.texture_asset_name(mode)] = png_bytes(table_texture(mode))
            self.data_source = "procedural"
        self.model = mujoco.MjModel.from_xml_string(scene.scene_xml(task, mode), assets)
        self.data = mujoco.MjData(self.model)
        self.model.vis.global_.offwidth = max(self.model.vis.global_.offwidth, self.image_size)
        self.model.vis.global_.offheight = max(self.model.vis.global_.offheight, self.image_size)
        self._grasp = self.model.site("grasp").id
        self._peg = self.model.site("peg").id if task == "peg_in_box" else -1
        self._target = self.model.site("target").id if task == "reach" else -1
        self._box_qadr = self.model.joint("box").qposadr[0] if task == "peg_in_box" else -1
        self._box_dadr = self.model.joint("box").dofadr[0] if task == "peg_in_box" else -1
        self._box_body = self.model.body("box").id if task == "peg_in_box" else -1

        ensure_rendering_backend()
        self._renderer = mujoco.Renderer(self.model, self.image_size, self.image_size)
        self._camera = "third_person"

        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(tasks.CONTROLS[control],), dtype=np.float32)
        self.observation_space = gym.spaces.Box(
            0, 255, shape=(3 * self.frame_stack, self.image_size, self.image_size), dtype=np.uint8
        )
        self._frames: deque[np.ndarray] = deque(maxlen=self.frame_stack)
        self._last_frame: np.ndarray | None = None
        self._rng = np.random.default_rng(self.seed_value)
        self._steps = 0
        self._done = True
        self.success = False

    # -------------------------------------------------------------- state
    @property
    def grasp_pos(self) -> np.ndarray:
        return self.data.site_xpos[self._grasp].copy()

    @property
    def mocap_target(self) -> np.ndarray:
        """Where the mocap asks the grasp site to be (the weld pulls it there)."""
        return self.data.mocap_pos[0] + scene.GRASP_OFFSET

    @property
    def achieved_pos(self) -> np.ndarray:
        """The grasp site (reach) or the peg (peg_in_box)."""
        return self.data.site_xpos[self._peg if self.task == "peg_in_box" else self._grasp].copy()

    @property
    def goal_pos(self) -> np.ndarray:
        """The target disc (reach) or the box position + (0, 0.075, -0.035) (peg_in_box)."""
        if self.task == "reach":
            return self.model.site_pos[self._target].copy()
        return self.data.xpos[self._box_body] + scene.BOX_TO_GOAL

    def goal_distance(self) -> float:
        return tasks.xy_distance(self.achieved_pos, self.goal_pos)

    def set_state(self, gripper=None, goal_object=None, settle: bool = True) -> None:
        """Place the grasp site and the target disc / box (xy) and recompute (for tests and demos)."""
        import mujoco

        if goal_object is not None:
            self._place_object(np.asarray(goal_object, float)[:2])
        if gripper is not None:
            self.data.mocap_pos[0] = np.asarray(gripper, float) - scene.GRASP_OFFSET
            if settle:
                self._settle()
        mujoco.mj_forward(self.model, self.data)

    def _place_object(self, xy: np.ndarray) -> None:
        if self.task == "reach":
            self.model.site_pos[self._target, :2] = xy
        else:
            a = self._box_qadr
            self.data.qpos[a:a + 7] = [xy[0], xy[1], 0.62, 1.0, 0.0, 0.0, 0.0]
            self.data.qvel[self._box_dadr:self._box_dadr + 6] = 0.0

    def _settle(self) -> None:
        import mujoco

        for _ in range(int(round(_SETTLE_SECONDS / self.model.opt.timestep))):
            mujoco.mj_step(self.model, self.data)
        self.data.qvel[:] = 0.0
        self.data.qacc_warmstart[:] = 0.0

    # ------------------------------------------------------------ seeding
    def rng_state(self) -> dict[str, Any]:
        """What decides the next unseeded episodes (plain Python values, for weights_only checkpoints)."""
        return {"rng": self._rng.bit_generator.state}

    def set_rng_state(self, state: dict[str, Any]) -> None:
        self._rng.bit_generator.state = state["rng"]

    # ---------------------------------------------------------- gymnasium
    def _render(self) -> np.ndarray:
        self._renderer.update_scene(self.data, camera=self._camera)
        frame = self._renderer.render()
        self._last_frame = frame
        return np.ascontiguousarray(frame.transpose(2, 0, 1))

    def _obs(self) -> np.ndarray:
        return np.concatenate(self._frames, axis=0)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        """Start an episode; ``seed`` reseeds as ``make_env(seed=seed)`` would."""
        import mujoco

        if seed is not None:
            self._rng = np.random.default_rng(_seed(seed))
        draw = tasks.draw_reset(self.task, self._rng, self.control)
        mujoco.mj_resetData(self.model, self.data)
        self.data.mocap_quat[0] = scene.GRIPPER_QUAT
        self._place_object(draw.object_xy)
        self.data.mocap_pos[0] = draw.gripper - scene.GRASP_OFFSET
        self.data.ctrl[:] = self._finger_ctrl(0.0)
        self._settle()
        mujoco.mj_forward(self.model, self.data)
        self._steps = 0
        self._done = False
        self.success = False
        frame = self._render()
        for _ in range(self.frame_stack):
            self._frames.append(frame)
        info = {"task": self.task, "mode": self.mode, "data_source": self.data_source, "success": False}
        return self._obs(), info

    @staticmethod
    def _finger_ctrl(grip: float) -> float:
        return 0.0175 * (1.0 + grip)  # finger opening in [0, 0.035] m

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        import mujoco

        if self._done:
            raise RuntimeError("episode is over (or never started): call reset() before step()")
        a = np.asarray(action, dtype=np.float64)
        if a.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape} for control {self.control!r}, got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action must be finite, got {a}")
        internal = np.zeros(4)
        internal[: a.size] = np.clip(a, -1.0, 1.0)
        pos, grip = internal[:3], internal[3]
        norm2 = float(np.dot(pos, pos))
        total, n = 0.0, 0
        for _ in range(min(self.action_repeat, self.episode_length - self._steps)):
            target = np.clip(self.mocap_target + tasks.ACTION_SCALE * pos, tasks.WORKSPACE_LOW, tasks.WORKSPACE_HIGH)
            self.data.mocap_pos[0] = target - scene.GRASP_OFFSET
            self.data.ctrl[:] = self._finger_ctrl(grip)
            mujoco.mj_step(self.model, self.data, nstep=scene.N_SUBSTEPS)
            achieved, goal = self.achieved_pos, self.goal_pos
            total += tasks.reward(self.task, achieved, goal, norm2)
            self.success = self.success or tasks.is_success(self.task, achieved, goal)
            n += 1
        self._steps += n
        truncated = self._steps >= self.episode_length
        self._done = truncated
        self._frames.append(self._render())
        info = {"success": bool(self.success), "goal_distance": self.goal_distance(), "sim_steps": n}
        return self._obs(), float(total), False, bool(truncated), info

    def render_frame(self) -> np.ndarray:
        """The latest frame as the agent sees it, uint8 ``[H, W, 3]``."""
        if self._last_frame is None:
            raise RuntimeError("nothing rendered yet: call reset() first")
        return self._last_frame

    def render(self) -> np.ndarray:  # gymnasium API
        return self.render_frame()

    def close(self) -> None:
        renderer = getattr(self, "_renderer", None)
        if renderer is not None:
            renderer.close()
            self._renderer = None

    def __repr__(self) -> str:
        return (f"RobotEnv({self.task!r}, mode={self.mode!r}, seed={self.seed_value}, control={self.control!r}, "
                f"data={self.data_source!r})")
