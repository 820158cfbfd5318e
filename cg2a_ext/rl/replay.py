"""Replay buffer that stores every rendered frame once, as uint8.

An observation is a stack of ``frame_stack`` RGB frames (``(3*k, H, W)``,
oldest first). Consecutive observations share k-1 frames, so the buffer keeps
one ring of single frames and rebuilds stacks by index:

* ``add_first(obs)`` at an episode start stores the newest frame of the reset
  observation (the env's reset stack repeats the first frame k times, so the
  stack is rebuilt by clamping indices to the episode's first frame);
* ``add(action, reward, next_obs, terminated)`` stores the newest frame of
  ``next_obs`` and one transition pointing at it.

Memory: one frame (3*H*W bytes) per agent step plus one per episode. For
500k steps at 84x84 that is 500k * 21,168 B = 10.6 GB (3.5 GB per colour
channel), against 63.5 GB for storing obs and next_obs stacks. The arrays are
allocated with ``np.zeros`` (lazily backed by the OS), so memory grows as the
buffer fills. The buffer only stores and samples; augmentations are elsewhere.
"""
from __future__ import annotations

import json

import numpy as np


class FrameReplayBuffer:
    def __init__(self, obs_shape, action_dim: int, capacity: int, frame_stack: int = 3,
                 episode_steps: int = 250, seed: int | np.random.SeedSequence = 0):
        c, h, w = obs_shape
        assert c % frame_stack == 0, "channels must be a multiple of frame_stack"
        self.k = frame_stack
        self.frame_shape = (c // frame_stack, h, w)
        self.obs_shape = tuple(obs_shape)
        self.capacity = int(capacity)
        # one extra frame per episode (its first) plus slack for the current one
        self.frame_capacity = self.capacity + self.capacity // max(1, episode_steps) + 2 * frame_stack + 2
        self.frames = np.zeros((self.frame_capacity, *self.frame_shape), dtype=np.uint8)
        self.actions = np.zeros((self.capacity, action_dim), dtype=np.float32)
        self.rewards = np.zeros((self.capacity,), dtype=np.float32)
        self.not_dones = np.zeros((self.capacity,), dtype=np.float32)
        self.next_frame = np.zeros((self.capacity,), dtype=np.int64)   # global index of next_obs's newest frame
        self.ep_step = np.zeros((self.capacity,), dtype=np.int64)      # step of the transition within its episode
        self.num_frames = 0          # frames written so far (global counter)
        self.num_transitions = 0     # transitions written so far (global counter)
        self._episode_step = -1      # -1: no episode started
        self.rng = np.random.default_rng(seed)

    # ------------------------------------------------------------------ storing
    def __len__(self) -> int:
        return min(self.num_transitions, self.capacity)

    def _put_frame(self, obs) -> None:
        obs = np.asarray(obs)
        assert obs.shape == self.obs_shape and obs.dtype == np.uint8, (obs.shape, obs.dtype)
        self.frames[self.num_frames % self.frame_capacity] = obs[-self.frame_shape[0]:]
        self.num_frames += 1

    def add_first(self, obs) -> None:
        """Start an episode with its reset observation."""
        self._put_frame(obs)
        self._episode_step = 0

    def add(self, action, reward: float, next_obs, terminated: bool) -> None:
        """Store one transition from the last stored observation to ``next_obs``."""
        if self._episode_step < 0:
            raise RuntimeError("call add_first(obs) at the start of each episode")
        self._put_frame(next_obs)
        i = self.num_transitions % self.capacity
        self.actions[i] = action
        self.rewards[i] = reward
        self.not_dones[i] = 0.0 if terminated else 1.0
        self.next_frame[i] = self.num_frames - 1
        self.ep_step[i] = self._episode_step
        self.num_transitions += 1
        self._episode_step += 1

    # ------------------------------------------------------------------ sampling
    def _valid(self, idx: np.ndarray) -> np.ndarray:
        oldest = self.next_frame[idx] - 1 - np.minimum(self.ep_step[idx], self.k - 1)
        return oldest >= self.num_frames - self.frame_capacity

    def _stack(self, newest: np.ndarray, steps: np.ndarray) -> np.ndarray:
        offsets = np.arange(self.k - 1, -1, -1)                          # oldest first
        g = newest[:, None] - np.minimum(offsets[None, :], steps[:, None])
        out = self.frames[g % self.frame_capacity]                      # [B, k, 3, H, W]
        return out.reshape(len(newest), *self.obs_shape)

    def sample_indices(self, batch_size: int) -> np.ndarray:
        n = len(self)
        if n == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        idx = self.rng.integers(0, n, size=batch_size)
        bad = ~self._valid(idx)
        tries = 0
        while bad.any():   # only when frames of an old transition were overwritten (rare)
            idx[bad] = self.rng.integers(0, n, size=int(bad.sum()))
            bad = ~self._valid(idx)
            tries += 1
            if tries > 1000:
                raise RuntimeError("replay buffer: no valid transitions to sample")
        return idx

    def get(self, idx: np.ndarray):
        """(obs, action, reward, next_obs, not_done) as numpy arrays for transition slots ``idx``."""
        nf, st = self.next_frame[idx], self.ep_step[idx]
        obs = self._stack(nf - 1, st)
        next_obs = self._stack(nf, st + 1)
        return obs, self.actions[idx], self.rewards[idx, None], next_obs, self.not_dones[idx, None]

    def sample(self, batch_size: int, device=None):
        """A batch as torch tensors: obs/next_obs uint8 [B,C,H,W]; action, reward [B,1], not_done [B,1] float32."""
        import torch

        obs, action, reward, next_obs, not_done = self.get(self.sample_indices(batch_size))
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device, non_blocking=True)
        return t(obs), t(action), t(reward), t(next_obs), t(not_done)

    # ------------------------------------------------------------------ state
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.frames, self.actions, self.rewards, self.not_dones,
                                      self.next_frame, self.ep_step))

    def state_dict(self) -> dict:
        """Arrays (only the written part of each ring when it has not wrapped) and counters."""
        nf = min(self.num_frames, self.frame_capacity)
        nt = min(self.num_transitions, self.capacity)
        return {
            "frames": self.frames[:nf], "actions": self.actions[:nt], "rewards": self.rewards[:nt],
            "not_dones": self.not_dones[:nt], "next_frame": self.next_frame[:nt], "ep_step": self.ep_step[:nt],
            "num_frames": np.int64(self.num_frames), "num_transitions": np.int64(self.num_transitions),
            "episode_step": np.int64(self._episode_step), "frame_capacity": np.int64(self.frame_capacity),
            "capacity": np.int64(self.capacity),
            # the sampler's RNG travels with the buffer (as JSON: loads without pickle)
            "rng_state": np.array(json.dumps(self.rng.bit_generator.state)),
        }

    def load_state_dict(self, state) -> None:
        if int(state["capacity"]) != self.capacity or int(state["frame_capacity"]) != self.frame_capacity:
            raise ValueError("replay buffer state has a different capacity")
        nf, nt = len(state["frames"]), len(state["actions"])
        self.frames[:nf] = state["frames"]
        for name in ("actions", "rewards", "not_dones", "next_frame", "ep_step"):
            getattr(self, name)[:nt] = state[name]
        self.num_frames = int(state["num_frames"])
        self.num_transitions = int(state["num_transitions"])
        self._episode_step = int(state["episode_step"])
        self.rng.bit_generator.state = json.loads(str(state["rng_state"]))
