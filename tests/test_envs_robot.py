"""The robot family (xArm7 Reach / PegInBox re-created on today's MuJoCo): rewards, success,
seeding, the scripted expert, test scenes. Small on purpose: tiny renders, short episodes."""
from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest

from cg2a_ext.rl.envs.robot import MODES, OBSERVATION_DEFAULTS, TASKS, expert_action, make_env, tasks
from cg2a_ext.rl.envs.robot.textures import png_bytes, table_texture


@pytest.fixture
def envs():
    made = []

    def make(*args, **kwargs):
        kwargs.setdefault("image_size", 16)
        env = make_env(*args, **kwargs)
        made.append(env)
        return env

    yield make
    for env in made:
        env.close()


def test_module_api():
    assert TASKS == ("reach", "peg_in_box")
    assert MODES == ("train", "test1", "test2", "test3", "test4", "test5")
    assert OBSERVATION_DEFAULTS == {"frame_stack": 1, "action_repeat": 1, "episode_length": 50, "image_size": 84}


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"task": "push"}, "push"),
        ({"task": "reach", "mode": "video_hard"}, "video_hard"),
        ({"task": "reach", "control": "joint"}, "joint"),
        ({"task": "reach", "image_size": 0}, "image_size"),
        ({"task": "reach", "frame_stack": 1.5}, "frame_stack"),
        ({"task": "reach", "seed": -1}, "seed"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_problem(kwargs, word):
    with pytest.raises(ValueError, match=word):
        make_env(**kwargs)


def test_observations_actions_and_episode_end(envs):
    env = envs("reach", image_size=24, frame_stack=2, episode_length=3)
    assert "procedural" not in repr(env) and env.data_source == "train"
    obs, info = env.reset(seed=0)
    assert obs.shape == (6, 24, 24) == env.observation_space.shape and obs.dtype == np.uint8
    assert info["success"] is False
    assert env.action_space.shape == (2,) and env.action_space.dtype == np.float32
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan, 0.0]))
    for k in range(3):
        obs, reward, terminated, truncated, info = env.step(np.zeros(2, np.float32))
        assert isinstance(info["success"], bool) and not terminated
        assert truncated == (k == 2)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(2))
    # Oldest frame first: after a step the newest frame is the last three channels.
    env.reset(seed=0)
    obs, *_ = env.step(np.ones(2, np.float32))
    assert np.array_equal(obs[3:], env.render_frame().transpose(2, 0, 1))
    assert not np.array_equal(obs[:3], obs[3:])
    for control, dim in (("xyz", 3), ("xyzw", 4)):
        assert envs("reach", control=control).action_space.shape == (dim,)
    # action_repeat counts toward episode_length: 2 + 1 steps of 20 substeps.
    rep = envs("reach", action_repeat=2, episode_length=3)
    rep.reset(seed=0)
    assert rep.step(np.zeros(2))[4]["sim_steps"] == 2
    _, _, _, truncated, info = rep.step(np.zeros(2))
    assert info["sim_steps"] == 1 and truncated


def test_reward_formulas_on_constructed_states():
    # Reach: +1 inside the 0.05 disc, else -3 d - 0.5 |a|^2 rounded to 4 decimals.
    assert tasks.reach_reward([1.6, 0.32, 0.64], [1.6, 0.3, 0.58], 2.0) == 1.0
    assert tasks.reach_reward([1.5, 0.3, 0.64], [1.6, 0.3, 0.58], 0.5) == pytest.approx(-0.55)
    assert tasks.reach_reward([1.5, 0.2, 0.64], [1.6, 0.3, 0.58], 0.0) == round(-3 * math.hypot(0.1, 0.1), 4)
    # PegInBox: -|a|^2 - 4 d_xy + [d_xy <= 0.05] (10 - 20 d_xyz).
    peg, goal = [1.6, 0.3, 0.7], [1.6, 0.33, 0.585]
    expect = -0.2 - 4 * 0.03 + 10 - 20 * math.hypot(0.03, 0.115)
    assert tasks.peg_in_box_reward(peg, goal, 0.2) == pytest.approx(expect)
    assert tasks.peg_in_box_reward([1.5, 0.3, 0.7], goal, 0.2) == pytest.approx(-0.2 - 4 * math.hypot(0.1, 0.03))
    assert tasks.is_success("reach", [1.6, 0.349, 0.9], [1.6, 0.3, 0.58])
    assert not tasks.is_success("reach", [1.6, 0.351, 0.9], [1.6, 0.3, 0.58])
    assert tasks.is_success("peg_in_box", [1.6, 0.379, 0.9], [1.6, 0.3, 0.58])


def test_env_rewards_follow_the_formula_and_success_latches(envs):
    env = envs("reach")
    env.reset(seed=3)
    env.set_state(gripper=[1.45, 0.3, 0.636], goal_object=[1.6, 0.3])
    _, reward, _, _, info = env.step(np.array([1.0, 0.0], np.float32))
    d = tasks.xy_distance(env.achieved_pos, env.goal_pos)
    assert 0.09 < d < 0.15 and not info["success"]
    assert reward == pytest.approx(round(-3 * d - 0.5 * 1.0, 4))
    env.set_state(gripper=[1.6, 0.31, 0.636])
    _, reward, _, _, info = env.step(np.zeros(2, np.float32))
    assert reward == 1.0 and info["success"] is True
    env.set_state(gripper=[1.4, 0.3, 0.636])  # leave the disc: reward drops, success stays
    _, reward, _, _, info = env.step(np.zeros(2, np.float32))
    assert reward < 0 and info["success"] is True
    _, info = env.reset()
    assert info["success"] is False and env.success is False

    peg = envs("peg_in_box")
    peg.reset(seed=3)
    peg.set_state(goal_object=[1.6, 0.3], gripper=[1.6, 0.375, 0.806])
    _, reward, _, _, info = peg.step(np.zeros(2, np.float32))
    achieved, goal = peg.achieved_pos, peg.goal_pos
    assert np.allclose(goal, [1.6, 0.375, 0.585], atol=2e-3)
    assert tasks.xy_distance(achieved, goal) < 0.05 and info["success"]
    assert reward == pytest.approx(tasks.peg_in_box_reward(achieved, goal, 0.0))
    assert reward > 5


def _rollout(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    rewards, positions = [], []
    for a in actions:
        _, r, _, _, _ = env.step(a)
        rewards.append(r)
        positions.append(env.achieved_pos)
    return obs, rewards, np.array(positions)


def test_seeds_decide_the_episode(envs):
    actions = np.random.default_rng(0).uniform(-1, 1, (6, 2)).astype(np.float32)
    a, b = envs("reach", seed=5), envs("reach", seed=5)
    obs_a, rew_a, _ = _rollout(a, 5, actions)
    b.reset()  # the constructor's seed, first episode
    obs_b, rew_b, _ = _rollout(b, 5, actions)
    assert np.array_equal(obs_a, obs_b) and rew_a == rew_b
    a.reset(seed=6)
    goal6 = a.goal_pos
    assert not np.allclose(goal6, b.goal_pos)
    # Unseeded resets continue the stream; rng_state restores it exactly (plain, JSON-able values).
    state = a.rng_state()
    json.dumps(state)
    a.reset()
    g1, s1 = a.goal_pos, a.grasp_pos
    a.set_rng_state(state)
    a.reset()
    assert np.array_equal(a.goal_pos, g1) and np.allclose(a.grasp_pos, s1)
    assert not np.allclose(g1, goal6)


@pytest.mark.parametrize("task, needed", [("reach", 5), ("peg_in_box", 4)])
def test_expert_succeeds(envs, task, needed):
    env = envs(task, seed=11, episode_length=20)
    successes = 0
    for _ in range(5):
        env.reset()
        truncated = False
        while not truncated:
            _, _, _, truncated, info = env.step(expert_action(env))
        successes += info["success"]
    assert successes >= needed


def test_expert_lowers_the_peg_in_the_xyz_control(envs):
    env = envs("peg_in_box", seed=2, control="xyz", episode_length=25)
    env.reset()
    for _ in range(25):
        _, reward, _, _, info = env.step(expert_action(env))
    assert info["success"] and env.achieved_pos[2] < 0.66 and reward > 8


def test_test_scenes_change_pixels_not_dynamics(envs):
    actions = np.random.default_rng(1).uniform(-1, 1, (4, 2)).astype(np.float32)
    obs_train, rew_train, pos_train = _rollout(envs("reach", "train"), 7, actions)
    for mode in MODES[1:]:
        env = envs("reach", mode)
        assert env.data_source == "procedural"
        obs, rew, pos = _rollout(env, 7, actions)
        assert rew == rew_train and np.array_equal(pos, pos_train)
        assert np.abs(obs.astype(int) - obs_train).mean() > 5
    peg_train = _rollout(envs("peg_in_box", "train"), 7, actions)
    peg_test = _rollout(envs("peg_in_box", "test3"), 7, actions)
    assert peg_test[1] == peg_train[1] and np.array_equal(peg_test[2], peg_train[2])


def test_procedural_textures_are_deterministic_and_distinct():
    a, b = table_texture("test3", 64), table_texture("test3", 64)
    assert a.dtype == np.uint8 and a.shape == (64, 64, 3) and np.array_equal(a, b)
    means = [table_texture(m, 64).mean(axis=(0, 1)) for m in MODES[1:]]
    assert min(np.abs(x - y).sum() for i, x in enumerate(means) for y in means[i + 1:]) > 10
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(a)))), a)
    with pytest.raises(ValueError, match="train"):
        table_texture("train")


def test_texture_dir_replaces_the_procedural_texture(envs, tmp_path):
    from PIL import Image

    Image.fromarray(np.full((40, 40, 3), (0, 200, 0), np.uint8)).save(tmp_path / "test2.png")
    env = envs("reach", "test2", texture_dir=tmp_path, image_size=32)
    assert env.data_source == str(tmp_path) and str(tmp_path) in repr(env)
    obs, _ = env.reset(seed=0)
    proc, _ = envs("reach", "test2", image_size=32).reset(seed=0)
    assert not np.array_equal(obs, proc)
    bottom = obs[:, -4:, :4].reshape(3, -1).mean(axis=1)  # table, away from the target
    assert bottom[1] > bottom[0] + 50 and bottom[1] > bottom[2] + 50
    with pytest.raises(ValueError, match="test3"):
        make_env("reach", "test3", texture_dir=tmp_path)


def test_evaluation_reports_the_success_rate_beside_the_return():
    from cg2a_ext.rl.core.evaluation import evaluate_modes
    from cg2a_ext.rl.envs.robot import expert_action, make_env as make_robot_env

    class Expert:                       # acts as the scripted expert would; what evaluate_modes needs of an agent
        def __init__(self, env):
            self.env = env

        def train(self, training=True):
            pass

        def act(self, obs, sample=False):
            return expert_action(self.env)

    env = make_robot_env("reach", mode="test2", seed=3, image_size=32)
    try:
        res = evaluate_modes(Expert(env), {"test2": env}, episodes=2)
    finally:
        env.close()
    assert res["test2"]["success_rate"] == 1.0 and res["test2"]["episodes"] == 2
