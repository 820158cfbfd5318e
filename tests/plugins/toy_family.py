"""A toy environment family registered from a test: a point that should move to the origin, seen as a dot on a
small image; its test mode only recolours the background."""
from __future__ import annotations

import gymnasium as gym
import numpy as np

from cg2a_ext.rl.envs.family import EnvFamily, ObservationDefaults


class DotEnv(gym.Env):
    def __init__(self, mode: str, seed: int, image_size: int, frame_stack: int, episode_length: int) -> None:
        self.mode, self.size, self.stack, self.length = mode, image_size, frame_stack, episode_length
        self.observation_space = gym.spaces.Box(0, 255, (3 * frame_stack, image_size, image_size), np.uint8)
        self.action_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        self.rng = np.random.default_rng(seed)
        self.data_source = "none"

    def _frame(self) -> np.ndarray:
        img = np.full((3, self.size, self.size), 40 if self.mode == "train" else 200, np.uint8)
        i, j = ((self.pos + 1) / 2 * (self.size - 1)).astype(int)
        img[:, i, j] = 255
        return img

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.pos, self.t = self.rng.uniform(-1, 1, 2), 0
        return np.concatenate([self._frame()] * self.stack), {}

    def step(self, action):
        self.pos = np.clip(self.pos + 0.1 * np.asarray(action), -1, 1)
        self.t += 1
        return (np.concatenate([self._frame()] * self.stack), float(-np.linalg.norm(self.pos)), False,
                self.t >= self.length, {})

    def rng_state(self):
        return {"rng": self.rng.bit_generator.state}

    def set_rng_state(self, state):
        self.rng.bit_generator.state = state["rng"]


class DotFamily(EnvFamily):
    name = "toy"
    modes = ("train", "dark")

    def tasks(self):
        return ("dot_reach",)

    def observation_defaults(self, task, preset):
        return ObservationDefaults(image_size=16, frame_stack=1, action_repeat=1, episode_length=10)

    def make_env(self, task, mode, seed, *, image_size, frame_stack, action_repeat, episode_length, data_dir=None,
                 **options):
        return DotEnv(mode, seed, image_size, frame_stack, episode_length)


FAMILY = DotFamily()
