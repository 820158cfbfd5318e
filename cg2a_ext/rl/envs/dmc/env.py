"""dm_control suite tasks from pixels with DMC-GB's test modes, as gymnasium envs."""
from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from collections import deque
from functools import lru_cache
from typing import Any, Mapping

import gymnasium as gym
import numpy as np

from cg2a_ext.rl.envs.dmc.data import EXPECTED_CLIPS, find_clips, load_color_entries, resolve_data_dir, validate_entry
from cg2a_ext.rl.envs.dmc.procedural import PROCEDURAL_CLIPS, procedural_color_entries
from cg2a_ext.rl.envs.rendering import ensure_rendering_backend

__all__ = ["MODES", "DMCEnv", "make_env", "task_table"]

log = logging.getLogger(__name__)

from cg2a_ext.rl.envs.dmc import MODES  # noqa: E402  (the family names its modes)

_record_lock = threading.Lock()


@lru_cache(maxsize=1)
def task_table() -> dict[str, tuple[str, str]]:
    """``{"domain_task": (domain, task)}`` for every dm_control suite task."""
    ensure_rendering_backend()
    from dm_control import suite

    return {f"{d}_{t}": (d, t) for d, t in suite.ALL_TASKS}


@contextlib.contextmanager
def _record_model():
    """Record the MJCF string and assets a suite task compiles its physics from.

    dm_control does not keep them, and reloading with edited colours needs the
    exact model (cartpole_two_poles, swimmer_swimmer15, ... build theirs on the
    fly), so ``Physics.from_xml_string`` is wrapped while the task loads.
    """
    from dm_control.mujoco import engine

    original = engine.Physics.__dict__["from_xml_string"]
    record: dict[str, Any] = {}

    def recorder(cls, xml_string, assets=None):
        if "xml" not in record:
            record["xml"], record["assets"] = xml_string, dict(assets or {})
        return original.__func__(cls, xml_string, assets)

    with _record_lock:
        engine.Physics.from_xml_string = classmethod(recorder)
        try:
            yield record
        finally:
            engine.Physics.from_xml_string = original


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class DMCEnv(gym.Env):
    """A dm_control task seen through camera 0, in one of :data:`MODES`.

    Observations are uint8 ``[3 * frame_stack, H, W]`` (oldest frame first),
    actions float32 in [-1, 1] (rescaled to the task's bounds), rewards summed
    over ``action_repeat`` simulator steps; ``truncated`` becomes True once
    ``episode_length`` simulator steps are done. See :func:`make_env`.
    """

    metadata = {"render_modes": ["rgb_array"]}
    render_mode = "rgb_array"

    def __init__(
        self,
        task: str,
        mode: str = "train",
        seed: int = 0,
        image_size: int = 84,
        frame_stack: int = 3,
        action_repeat: int = 4,
        episode_length: int = 1000,
        data_dir: str | os.PathLike | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; valid modes: {', '.join(MODES)}")
        table = task_table()
        if task not in table:
            raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(sorted(table))}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.task, self.mode, self.seed_value = task, mode, int(seed)
        self.image_size = _positive_int("image_size", image_size)
        self.frame_stack = _positive_int("frame_stack", frame_stack)
        self.action_repeat = _positive_int("action_repeat", action_repeat)
        self.episode_length = _positive_int("episode_length", episode_length)

        from dm_control import suite

        domain, task_name = table[task]
        with _record_model() as rec:
            # Infinite dm_control time limit: the episode length is counted here.
            self._env = suite.load(domain, task_name, task_kwargs={"random": self.seed_value, "time_limit": math.inf})
        if "xml" not in rec:  # pragma: no cover - every suite task uses from_xml_string
            raise RuntimeError(f"could not capture the MJCF model of {task}; colour modes unavailable")
        self._xml: str = rec["xml"]
        self._assets: dict[str, Any] = rec["assets"]

        self._colors: list[dict[str, list[float]]] | None = None
        self._video = None
        self.color_index: int | None = None
        try:
            self.data_source = self._setup_mode(resolve_data_dir(data_dir) if mode != "train" else None)
        except BaseException:
            self.close()  # free the GL context of a half-built env
            raise

        spec = self._env.action_spec()
        self._act_low = np.asarray(spec.minimum, np.float64) * np.ones(spec.shape)
        self._act_high = np.asarray(spec.maximum, np.float64) * np.ones(spec.shape)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=spec.shape, dtype=np.float32)
        self.observation_space = gym.spaces.Box(
            0, 255, shape=(3 * self.frame_stack, self.image_size, self.image_size), dtype=np.uint8
        )
        self._frames: deque[np.ndarray] = deque(maxlen=self.frame_stack)
        self._last_frame: np.ndarray | None = None
        self._sim_steps = 0
        self._agent_steps = 0
        self._done = True
        self._reseed(self.seed_value)

    # ----------------------------------------------------------------- modes
    def _setup_mode(self, data_dir) -> str:
        from cg2a_ext.rl.envs.dmc.color import green_screen_entry
        from cg2a_ext.rl.envs.dmc.video import VideoBackground

        if self.mode == "train":
            return "train"
        if self.mode.startswith("color"):
            if data_dir is not None:
                self._colors = load_color_entries(data_dir, self.mode)
                return f"dmcgb:{data_dir / (self.mode + '.json')} ({len(self._colors)} entries)"
            self._colors = procedural_color_entries(self.mode)
            return f"procedural ({len(self._colors)} built-in {self.mode} entries)"
        # Video modes: the green screen is painted once; it survives resets.
        self._reload(green_screen_entry(floor=self.mode == "video_hard"))
        if data_dir is not None:
            clips = find_clips(data_dir, self.mode)
            self._video = VideoBackground(self.mode, self.image_size, clips)
            expected = EXPECTED_CLIPS[self.mode]
            if len(clips) < expected:
                log.warning("%s: using %d of the %d clips (folder %s)", self.mode, len(clips), expected, data_dir)
            return f"dmcgb:{data_dir / self.mode} ({len(clips)} of {expected} clips)"
        n = PROCEDURAL_CLIPS[self.mode]
        self._video = VideoBackground(self.mode, self.image_size, None, n_procedural=n)
        return f"procedural ({n} built-in {self.mode} clips)"

    def _reload(self, entry: Mapping[str, Any]) -> None:
        from cg2a_ext.rl.envs.dmc.color import edit_assets, reload_keep_state

        reload_keep_state(self._env.physics, self._xml, edit_assets(self._assets, entry))

    def set_colors(self, entry: Mapping[str, Any]) -> None:
        """Apply a colour entry now, keeping the physics state (see ``color.reload_keep_state``)."""
        self._reload(validate_entry(dict(entry)))

    @property
    def color_entries(self) -> list[dict[str, list[float]]] | None:
        """The colour set of a ``color_*`` mode (None otherwise)."""
        return self._colors

    @property
    def physics(self):
        """The dm_control physics (for tests and diagnostics)."""
        return self._env.physics

    def background_frame(self) -> np.ndarray | None:
        """The clip frame behind the latest observation (video modes), uint8 ``[H, W, 3]``."""
        if self._video is None:
            return None
        return self._video.frame(self._agent_steps)

    # ------------------------------------------------------------ gymnasium
    def _reseed(self, seed: int) -> None:
        self._env.task._random = np.random.RandomState(seed)
        # A separate stream for the mode's draws, so they do not shift the task's.
        self._mode_rng = np.random.default_rng([seed, 0x0C2A])
        self._first_episode = True

    def rng_state(self) -> dict[str, Any]:
        """What decides the next unseeded episodes: the task's and the mode's RNGs and the video clip.

        Mid-episode physics is not included: a checkpoint taken between episodes restores exactly."""
        task_random = self._env.task._random.get_state(legacy=False)
        # plain Python values only, so checkpoints load with torch.load(weights_only=True)
        task_random["state"] = {"key": task_random["state"]["key"].tolist(), "pos": int(task_random["state"]["pos"])}
        state: dict[str, Any] = {
            "task_random": task_random,
            "mode_rng": self._mode_rng.bit_generator.state,
            "first_episode": self._first_episode,
        }
        if self._video is not None:
            state["video_clip"] = self._video.index
        return state

    def set_rng_state(self, state: dict[str, Any]) -> None:
        task_random = dict(state["task_random"])
        task_random["state"] = {"key": np.asarray(task_random["state"]["key"], dtype=np.uint32),
                                "pos": int(task_random["state"]["pos"])}
        self._env.task._random.set_state(task_random)
        self._mode_rng.bit_generator.state = state["mode_rng"]
        self._first_episode = bool(state["first_episode"])
        if self._video is not None and state.get("video_clip", -1) >= 0:
            self._video.next_clip(int(state["video_clip"]))

    def _render(self) -> np.ndarray:
        frame = self._env.physics.render(height=self.image_size, width=self.image_size, camera_id=0)
        if self._video is not None:
            from cg2a_ext.rl.envs.dmc.video import green_screen

            frame = green_screen(frame, self._video.frame(self._agent_steps))
        self._last_frame = frame
        return np.ascontiguousarray(frame.transpose(2, 0, 1))

    def _obs(self) -> np.ndarray:
        return np.concatenate(self._frames, axis=0)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        """Start an episode; ``seed`` reseeds it as ``make_env(seed=seed)`` would."""
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
                raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
            self._reseed(int(seed))
        info: dict[str, Any] = {"mode": self.mode, "task": self.task, "data_source": self.data_source}
        if self._colors is not None:
            # Reload before dm_control's reset so the task's own model edits apply to the new model.
            self.color_index = int(self._mode_rng.integers(len(self._colors)))
            self._reload(self._colors[self.color_index])
            info["color_index"] = self.color_index
        if self._video is not None:
            start = int(self._mode_rng.integers(self._video.n_clips)) if self._first_episode else None
            self._video.next_clip(start)
            info["clip"] = self._video.clip_name
        self._first_episode = False
        self._env.reset()
        self._sim_steps = self._agent_steps = 0
        self._done = False
        frame = self._render()
        for _ in range(self.frame_stack):
            self._frames.append(frame)
        return self._obs(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._done:
            raise RuntimeError("episode is over (or never started): call reset() before step()")
        a = np.asarray(action, dtype=np.float64)
        if a.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action must be finite, got {a}")
        a = np.clip(a, -1.0, 1.0)
        scaled = self._act_low + (a + 1.0) * 0.5 * (self._act_high - self._act_low)
        reward, terminated, n = 0.0, False, 0
        for _ in range(min(self.action_repeat, self.episode_length - self._sim_steps)):
            ts = self._env.step(scaled)
            reward += ts.reward or 0.0
            n += 1
            if ts.last():
                # With an infinite time limit, last() means the task terminated.
                terminated = ts.discount == 0.0 or ts.discount is None
                break
        self._sim_steps += n
        self._agent_steps += 1
        truncated = not terminated and self._sim_steps >= self.episode_length
        self._done = terminated or truncated or ts.last()
        self._frames.append(self._render())
        return self._obs(), float(reward), bool(terminated), bool(truncated), {"sim_steps": n}

    def render_frame(self) -> np.ndarray:
        """The latest frame as the agent sees it, uint8 ``[H, W, 3]``."""
        if self._last_frame is None:
            raise RuntimeError("nothing rendered yet: call reset() first")
        return self._last_frame

    def render(self) -> np.ndarray:  # gymnasium API
        return self.render_frame()

    def close(self) -> None:
        env = getattr(self, "_env", None)
        if env is not None:
            env.physics.free()
            self._env = None

    def __repr__(self) -> str:
        return f"DMCEnv({self.task!r}, mode={self.mode!r}, seed={self.seed_value}, data={self.data_source!r})"


def make_env(
    task: str,
    mode: str = "train",
    seed: int = 0,
    image_size: int = 84,
    frame_stack: int = 3,
    action_repeat: int = 4,
    episode_length: int = 1000,
    data_dir: str | os.PathLike | None = None,
) -> DMCEnv:
    """Create a dm_control ``domain_task`` environment from pixels in ``mode``.

    Args:
        task: e.g. ``"walker_walk"``; see ``TASKS``.
        mode: one of :data:`MODES`. ``color_*`` draw one colour entry per
            episode from the env's seed; ``video_*`` paint the skybox (and the
            floor for ``video_hard``) green and key in a clip, the next clip at
            each reset (the first drawn from the seed).
        seed: seeds the task's initial states and the mode's draws.
        data_dir: DMC-GB data folder (else ``CG2A_DMCGB_DATA``, else the
            procedural sets); ignored in ``train``.
    """
    return DMCEnv(task, mode, seed, image_size, frame_stack, action_repeat, episode_length, data_dir)
