"""The environment saves and restores the RNG state that decides its next unseeded episodes."""
import numpy as np
import pytest

from cg2a_ext.rl.envs import make_env


@pytest.mark.parametrize("mode", ["train", "color_hard", "video_easy"])
def test_env_rng_state_round_trip(mode):
    a = make_env("cartpole_balance", mode=mode, seed=3, image_size=32, episode_length=16)
    a.reset()
    state = a.rng_state()
    first, _ = a.reset()
    steps_a = [a.step(np.full(1, 0.5))[0] for _ in range(2)]
    b = make_env("cartpole_balance", mode=mode, seed=99, image_size=32, episode_length=16)
    b.reset()
    other, _ = b.reset()
    b.set_rng_state(state)
    again, _ = b.reset()
    steps_b = [b.step(np.full(1, 0.5))[0] for _ in range(2)]
    a.close()
    b.close()
    assert np.array_equal(first, again)
    assert all(np.array_equal(x, y) for x, y in zip(steps_a, steps_b))
    assert not np.array_equal(first, other)   # the seed matters, so the restore is what made them equal
