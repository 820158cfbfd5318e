"""The replay (cg2a_ext.rl.core.replay): frames in a numpy or a torch ring give the same batches for a seed,
their state dicts are interchangeable, and where the frames live is chosen and checked."""
import numpy as np
import pytest
import torch

from cg2a_ext.rl.config import ConfigError
from cg2a_ext.rl.core.replay import FrameReplayBuffer, NumpyFrames, TorchFrames, frames_device_for

from agent_support import small_agent_cfg

OBS = (9, 32, 32)
A = 2


def filled_replay(frames_device=None, steps=40, capacity=100, episode_steps=20, seed=0, done_every=0, obs_shape=OBS):
    rb = FrameReplayBuffer(obs_shape, A, capacity, frame_stack=3, episode_steps=episode_steps, seed=seed,
                           frames_device=frames_device)
    rng = np.random.default_rng(seed)
    rb.add_first(rng.integers(0, 256, obs_shape, dtype=np.uint8))
    for t in range(1, steps + 1):
        done = bool(done_every) and t % done_every == 0
        rb.add(rng.uniform(-1, 1, A), rng.uniform(0, 1), rng.integers(0, 256, obs_shape, dtype=np.uint8), done)
        if done:
            rb.add_first(rng.integers(0, 256, obs_shape, dtype=np.uint8))
    return rb


def _same_batches(a: FrameReplayBuffer, b: FrameReplayBuffer, n=5, batch=16):
    for _ in range(n):
        for x, y in zip(a.sample(batch, device="cpu"), b.sample(batch, device="cpu")):
            assert x.dtype == y.dtype and x.shape == y.shape and x.device.type == y.device.type == "cpu"
            assert torch.equal(x, y)


@pytest.mark.parametrize("obs_shape", [OBS, (9, 33, 33), (6, 10, 10)])   # frames of 8-, 1- and 4-byte words
def test_torch_frame_ring_samples_the_numpy_ring_batches(obs_shape):
    """Same seed, same writes (the ring wraps and overwrites frames of old transitions): the same batches."""
    kw = dict(steps=150, capacity=60, episode_steps=15, done_every=37, obs_shape=obs_shape)
    host, dev = filled_replay(None, **kw), filled_replay("cpu", **kw)
    assert isinstance(host.frames, NumpyFrames) and isinstance(dev.frames, TorchFrames)
    assert host.frames.nbytes == dev.frames.nbytes and host.nbytes() == dev.nbytes()
    _same_batches(host, dev)
    idx = host.sample_indices(8)
    for x, y in zip(host.get(idx), dev.get(idx)):
        assert isinstance(y, np.ndarray) and np.array_equal(x, y)
    # the stacks are the environment's: obs of a transition ends with the frame before next_obs's newest
    obs, _, _, next_obs, _ = host.get(idx)
    mid = host.ep_step[idx] > 0   # obs ends with the frame before next_obs's newest (not at an episode start)
    fc = obs_shape[0] // 3
    assert mid.any() and np.array_equal(obs[mid, fc:], next_obs[mid, :-fc])


@pytest.mark.parametrize("source,dest", [(None, "cpu"), ("cpu", None), (None, None), ("cpu", "cpu")])
def test_replay_state_dict_round_trips_between_storages(source, dest):
    src = filled_replay(source, steps=70, capacity=50)
    state = src.state_dict()
    assert isinstance(state["frames"], np.ndarray) and state["frames"].dtype == np.uint8
    dst = FrameReplayBuffer(OBS, A, 50, frame_stack=3, episode_steps=20, seed=123, frames_device=dest)
    dst.load_state_dict({k: np.array(v) for k, v in state.items()})   # as read back from the .npz
    assert (dst.num_frames, dst.num_transitions, len(dst)) == (src.num_frames, src.num_transitions, len(src))
    _same_batches(src, dst)
    obs = np.full(OBS, 7, np.uint8)   # both keep storing the same way
    src.add(np.zeros(A), 1.0, obs, True)
    dst.add(np.zeros(A), 1.0, obs, True)
    _same_batches(src, dst, n=2)


def test_frames_device_choice():
    for choice in ("auto", "cpu"):
        assert frames_device_for(choice, "cpu", OBS, 1000) is None
    with pytest.raises(ValueError, match="needs a CUDA training device"):
        frames_device_for("cuda", "cpu", OBS, 1000)
    with pytest.raises(ValueError, match="unknown replay_device 'gpu'"):
        frames_device_for("gpu", "cpu", OBS, 1000)
    with pytest.raises(ConfigError, match="replay_device cuda needs a CUDA --device"):
        small_agent_cfg(replay_device="cuda").validate()


def test_replay_rebuilds_env_stacks():
    from cg2a_ext.rl.envs import make_env

    env = make_env("cartpole_balance", seed=0, image_size=32, frame_stack=3, action_repeat=4, episode_length=40)
    shape, adim = env.observation_space.shape, env.action_space.shape[0]
    rb = FrameReplayBuffer(shape, adim, capacity=15, frame_stack=3, episode_steps=10, seed=0)
    stored = []   # (obs, next_obs) per transition, most recent 15 kept by the ring
    for ep in range(3):
        obs, _ = env.reset(seed=ep)
        rb.add_first(obs)
        done = False
        while not done:
            a = env.action_space.sample()
            nxt, r, term, trunc, _ = env.step(a)
            rb.add(a, r, nxt, term)
            stored.append((obs, nxt))
            obs, done = nxt, term or trunc
    env.close()
    assert len(rb) == 15 and rb.num_transitions == len(stored) == 30
    idx = np.arange(15)
    o, a, r, n, nd = rb.get(idx)
    for i in idx:
        k = 30 - 15 + ((i - 30) % 15)   # global transition number stored in slot i
        k = [t for t in range(15, 30) if t % 15 == i][0]
        assert np.array_equal(o[i], stored[k][0]), i
        assert np.array_equal(n[i], stored[k][1]), i
    ob, act, rew, nob, notd = rb.sample(6)
    assert ob.dtype == torch.uint8 and ob.shape == (6, *shape) and rew.shape == (6, 1)


def test_replay_memory_frame_once():
    rb = FrameReplayBuffer((9, 84, 84), 6, capacity=500_000, frame_stack=3, episode_steps=250)
    frames = rb.frames.nbytes
    assert frames / 500_000 < 3 * 84 * 84 * 1.01   # one RGB frame per step, not two 9-channel stacks
    assert rb.nbytes() < 11.0e9
