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

Where the frames live (``frames_device``, chosen by :func:`frames_device_for` from
``--replay_device``): a numpy ring in host memory (``None``), or a torch tensor on a
device (``"cuda"``: sampling gathers on the GPU and only the indices travel). Both sit
behind one interface (:class:`NumpyFrames`, :class:`TorchFrames`); the indices always
come from the buffer's numpy RNG and its host-side bookkeeping, so a seed samples the
same transitions whatever the storage. Batches for a CUDA device from a host ring are
gathered into pinned memory and copied without blocking the host.
"""
from __future__ import annotations

import json
import math

import numpy as np
import torch

# Free GPU memory that ``--replay_device auto`` leaves to the networks, their activations and other
# processes: the frame ring goes on the GPU only if it fits with this much (or a quarter of the GPU) to spare.
GPU_HEADROOM_BYTES = 8 << 30


def _to_device(a: np.ndarray, device) -> torch.Tensor:
    """A host array as a tensor on ``device``: through pinned memory, without blocking, for CUDA."""
    t = torch.from_numpy(np.ascontiguousarray(a))
    if device is not None and torch.device(device).type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


class NumpyFrames:
    """The frame ring as a numpy array in host memory (``np.zeros``: pages are mapped as they are written)."""

    def __init__(self, num_frames: int, frame_shape: tuple[int, ...]):
        self.frame_shape = tuple(frame_shape)
        self.array = np.zeros((num_frames, *frame_shape), dtype=np.uint8)
        self.device = None

    def __len__(self) -> int:
        return len(self.array)

    @property
    def nbytes(self) -> int:
        return self.array.nbytes

    def put(self, i: int, frame: np.ndarray) -> None:
        self.array[i] = frame

    def gather(self, g: np.ndarray, device) -> torch.Tensor:
        """Frames ``g`` (any shape of ring indices) as a uint8 tensor ``[*g.shape, *frame_shape]`` on ``device``."""
        shape = (*g.shape, *self.frame_shape)
        if device is not None and torch.device(device).type == "cuda":
            staging = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
            np.take(self.array, g, axis=0, out=staging.numpy())
            # the pinned block is not reused by the caching host allocator until this copy has run
            return staging.to(device, non_blocking=True)
        return torch.from_numpy(self.array[g]).to(device)

    def read(self, n: int) -> np.ndarray:
        return self.array[:n]

    def write(self, n: int, frames: np.ndarray) -> None:
        self.array[:n] = frames


class TorchFrames:
    """The frame ring as a uint8 tensor on ``device`` (on the CPU it wraps lazily mapped numpy zeros)."""

    def __init__(self, num_frames: int, frame_shape: tuple[int, ...], device):
        self.frame_shape = tuple(frame_shape)
        self.device = torch.device(device)
        shape = (num_frames, *frame_shape)
        self.tensor = torch.from_numpy(np.zeros(shape, dtype=np.uint8)) if self.device.type == "cpu" else \
            torch.zeros(shape, dtype=torch.uint8, device=self.device)
        # the frames as rows of the widest words that divide them: index_select copies 8-byte words
        # about 50x faster than single bytes on the CPU
        frame_bytes = math.prod(frame_shape)
        word = next(dt for dt in (torch.int64, torch.int32, torch.int16, torch.uint8)
                    if frame_bytes % dt.itemsize == 0)
        self._rows = self.tensor.view(num_frames, frame_bytes).view(word)

    def __len__(self) -> int:
        return self.tensor.shape[0]

    @property
    def nbytes(self) -> int:
        return self.tensor.numel() * self.tensor.element_size()

    def put(self, i: int, frame: np.ndarray) -> None:
        src = torch.from_numpy(np.ascontiguousarray(frame))
        if self.device.type == "cuda":   # staged in pinned memory: the host does not wait for the GPU
            src = src.pin_memory()
        self.tensor[i].copy_(src, non_blocking=True)

    def gather(self, g: np.ndarray, device) -> torch.Tensor:
        idx = _to_device(g.reshape(-1), self.device)
        out = torch.index_select(self._rows, 0, idx).view(torch.uint8).view(*g.shape, *self.frame_shape)
        return out if device is None else out.to(device, non_blocking=True)

    def read(self, n: int) -> np.ndarray:
        return self.tensor[:n].cpu().numpy()

    def write(self, n: int, frames: np.ndarray) -> None:
        self.tensor[:n].copy_(torch.from_numpy(np.ascontiguousarray(frames)))


def frame_capacity_for(capacity: int, frame_stack: int, episode_steps: int) -> int:
    """Frames held by a buffer of ``capacity`` transitions: one per transition, one extra per episode (its
    first) and slack for the current one."""
    return capacity + capacity // max(1, episode_steps) + 2 * frame_stack + 2


def frames_device_for(replay_device: str, device, obs_shape, capacity: int, frame_stack: int = 3,
                      episode_steps: int = 250) -> str | None:
    """``--replay_device`` resolved for training on ``device``: a CUDA device name (frames on the GPU) or
    None (the host ring). ``auto`` picks the GPU when ``device`` is CUDA and the ring fits in its free memory
    with ``max(GPU_HEADROOM_BYTES, a quarter of the GPU)`` to spare.

    Raises:
        ValueError: an unknown name, or ``cuda`` while ``device`` is not a CUDA device.
    """
    if replay_device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown replay_device {replay_device!r}; choose auto, cpu or cuda")
    device = torch.device(device)
    if replay_device == "cuda" and device.type != "cuda":
        raise ValueError(f"replay_device cuda needs a CUDA training device, got {device}")
    if replay_device == "cpu" or device.type != "cuda":
        return None
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if replay_device == "auto":
        c, h, w = obs_shape
        ring_bytes = frame_capacity_for(capacity, frame_stack, episode_steps) * (c // frame_stack) * h * w
        free, total = torch.cuda.mem_get_info(device)
        if ring_bytes + max(GPU_HEADROOM_BYTES, total // 4) > free:
            return None
    return str(device)


class FrameReplayBuffer:
    def __init__(self, obs_shape, action_dim: int, capacity: int, frame_stack: int = 3,
                 episode_steps: int = 250, seed: int | np.random.SeedSequence = 0, frames_device=None):
        """``frames_device``: None keeps the frames in a host numpy ring; a torch device (``"cuda"``,
        ``"cpu"``) keeps them in a tensor there (see :func:`frames_device_for`)."""
        c, h, w = obs_shape
        assert c % frame_stack == 0, "channels must be a multiple of frame_stack"
        self.k = frame_stack
        self.frame_shape = (c // frame_stack, h, w)
        self.obs_shape = tuple(obs_shape)
        self.capacity = int(capacity)
        # one extra frame per episode (its first) plus slack for the current one
        self.frame_capacity = frame_capacity_for(self.capacity, frame_stack, episode_steps)
        self.frames = NumpyFrames(self.frame_capacity, self.frame_shape) if frames_device is None else \
            TorchFrames(self.frame_capacity, self.frame_shape, frames_device)
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
        self.frames.put(self.num_frames % self.frame_capacity, obs[-self.frame_shape[0]:])
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

    def _stack_indices(self, newest: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """Ring indices [B, k] of the stacks ending at global frames ``newest`` (oldest first, clamped to the
        episode's first frame)."""
        offsets = np.arange(self.k - 1, -1, -1)
        g = newest[:, None] - np.minimum(offsets[None, :], steps[:, None])
        return g % self.frame_capacity

    def _gather_stacks(self, idx: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor]:
        """obs and next_obs [B, C, H, W] uint8 of transition slots ``idx``, in one gather."""
        nf, st = self.next_frame[idx], self.ep_step[idx]
        g = np.stack([self._stack_indices(nf - 1, st), self._stack_indices(nf, st + 1)])   # [2, B, k]
        both = self.frames.gather(g, device)                                                # [2, B, k, 3, H, W]
        return both[0].reshape(len(idx), *self.obs_shape), both[1].reshape(len(idx), *self.obs_shape)

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
        obs, next_obs = self._gather_stacks(idx, "cpu")
        return obs.numpy(), self.actions[idx], self.rewards[idx, None], next_obs.numpy(), self.not_dones[idx, None]

    def sample(self, batch_size: int, device=None):
        """A batch as torch tensors on ``device``: obs/next_obs uint8 [B,C,H,W]; action, reward [B,1], not_done [B,1]
        float32. Gathered where the frames live; for CUDA the copies do not block the host."""
        idx = self.sample_indices(batch_size)
        obs, next_obs = self._gather_stacks(idx, device)
        return (obs, _to_device(self.actions[idx], device), _to_device(self.rewards[idx, None], device), next_obs,
                _to_device(self.not_dones[idx, None], device))

    # ------------------------------------------------------------------ state
    def nbytes(self) -> int:
        return self.frames.nbytes + sum(a.nbytes for a in (self.actions, self.rewards, self.not_dones,
                                                           self.next_frame, self.ep_step))

    def state_dict(self) -> dict:
        """Arrays (only the written part of each ring when it has not wrapped) and counters."""
        nf = min(self.num_frames, self.frame_capacity)
        nt = min(self.num_transitions, self.capacity)
        return {
            "frames": self.frames.read(nf), "actions": self.actions[:nt], "rewards": self.rewards[:nt],
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
        self.frames.write(nf, state["frames"])
        for name in ("actions", "rewards", "not_dones", "next_frame", "ep_step"):
            getattr(self, name)[:nt] = state[name]
        self.num_frames = int(state["num_frames"])
        self.num_transitions = int(state["num_transitions"])
        self._episode_step = int(state["episode_step"])
        self.rng.bit_generator.state = json.loads(str(state["rng_state"]))
