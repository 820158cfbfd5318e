"""The environment stepper (cg2a_ext.rl.core.env_stepper): its protocol and errors, and stepping in a worker
thread gives the transitions of stepping inline."""
import numpy as np
import pytest
import torch

from cg2a_ext.rl.core.env_stepper import EnvStepper


class CountingEnv:
    """A stand-in environment: the observation encodes the step and the action; step 3 can raise."""

    def __init__(self, fail_at=None):
        self.t = 0
        self.fail_at = fail_at
        self.threads = set()
        self.closed = False

    def reset(self, seed=None):
        import threading
        self.threads.add(threading.get_ident())
        self.t = 0
        return np.zeros(2), {}

    def step(self, action):
        import threading
        self.threads.add(threading.get_ident())
        self.t += 1
        if self.t == self.fail_at:
            raise ValueError("boom at step 3")
        return np.array([self.t, float(action[0])]), float(self.t), False, self.t >= 5, {}

    def close(self):
        self.closed = True


def test_env_stepper_protocol_and_errors():
    import threading
    env = CountingEnv(fail_at=3)
    stepper = EnvStepper(env)
    stepper.reset(seed=1)
    action = np.array([0.5])
    stepper.step_async(action)
    action[0] = 9.0   # the stepper copied it
    with pytest.raises(RuntimeError, match="a step is in flight"):
        stepper.step_async(action)
    obs, reward, terminated, truncated, _ = stepper.wait()
    assert obs.tolist() == [1.0, 0.5] and reward == 1.0 and not terminated and not truncated
    with pytest.raises(RuntimeError, match="no step in flight"):
        stepper.wait()
    stepper.step(np.array([1.0]))
    stepper.step_async(np.array([1.0]))
    with pytest.raises(ValueError, match="boom at step 3"):
        stepper.wait()
    stepper.close()
    assert env.closed and len(env.threads) == 1 and threading.get_ident() not in env.threads
    with pytest.raises(RuntimeError, match="closed"):
        stepper.step_async(action)
    inline_env = CountingEnv()
    with EnvStepper(inline_env, overlap=False) as inline:
        inline.reset()
        assert inline.step(np.array([2.0]))[0].tolist() == [1.0, 2.0]
    assert inline_env.threads == {threading.get_ident()} and inline_env.closed


def test_env_stepper_gives_the_transitions_of_direct_stepping():
    """A real renderer-backed environment (cartpole_balance, 32 px) stepped in the worker thread, overlapped
    with torch work on the main thread, yields the transitions of stepping it directly."""
    from cg2a_ext.rl.envs import make_env   # first: it picks the headless GL backend before dm_control loads

    kw = dict(seed=3, image_size=32, frame_stack=3, action_repeat=8, episode_length=64)
    actions = np.random.default_rng(0).uniform(-1, 1, (10, 1)).astype(np.float32)

    def rollout(step_fn, reset_fn):
        obs, _ = reset_fn(seed=11)
        out = [obs]
        for a in actions:
            o, r, term, trunc, _ = step_fn(a)
            out.append((o, r, term, trunc))
            if term or trunc:
                out.append(reset_fn(seed=12)[0])
        return out

    env = make_env("cartpole_balance", **kw)
    try:
        direct = rollout(env.step, env.reset)
    finally:
        env.close()
    x = torch.randn(64, 64)
    stepper = EnvStepper(make_env("cartpole_balance", **kw))
    try:
        def overlapped_step(a):
            stepper.step_async(a)
            for _ in range(5):   # work on this thread while the environment steps
                torch.mm(x, x)
            return stepper.wait()
        threaded = rollout(overlapped_step, stepper.reset)
    finally:
        stepper.close()
    assert len(direct) == len(threaded) and any(isinstance(t, np.ndarray) for t in direct[1:])
    for d, t in zip(direct, threaded):
        if isinstance(d, np.ndarray):
            assert np.array_equal(d, t)
        else:
            assert np.array_equal(d[0], t[0]) and d[1:] == t[1:]
