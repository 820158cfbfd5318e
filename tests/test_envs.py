"""Tests of the DMC-GB environments (cg2a_ext.rl.envs).

Both data paths are exercised: the DMC-GB folder (``CG2A_DMCGB_DATA``, read by
conftest.py's ``dmcgb_data`` fixture) and the procedural sets (the variable
removed). Episodes are kept short: rendering runs on the CPU.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from cg2a_ext.rl.envs import TASKS, make_env
from cg2a_ext.rl.envs.dmc import MODES
from cg2a_ext.rl.envs import rendering
from cg2a_ext.rl.envs.dmc.color import GREEN
from cg2a_ext.rl.envs.dmc.data import DATA_ENV_VAR
from cg2a_ext.rl.envs.dmc.procedural import procedural_color_entries
from cg2a_ext.rl.envs.dmc.video import CLIP_CACHE, green_mask, green_screen, green_screen_reference

SIZE = 64  # smaller than 84 to keep CPU rendering cheap; the logic does not depend on it


@pytest.fixture(params=["procedural", "dmcgb"])
def source(request, monkeypatch) -> Path | None:
    """None for the procedural sets, else the DMC-GB data folder (passed as data_dir)."""
    # The data folder is read first: conftest.py took it from CG2A_DMCGB_DATA at start.
    folder = None if request.param == "procedural" else request.getfixturevalue("dmcgb_data")
    monkeypatch.delenv(DATA_ENV_VAR, raising=False)
    return folder


def _erode(mask: np.ndarray) -> np.ndarray:
    """Drop pixels on the border of a region (anti-aliased edges mix two surfaces)."""
    p = np.pad(mask, 1, constant_values=False)
    return mask & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]


def _regions(env) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sky, floor, agent) masks of the current frame from MuJoCo's segmentation."""
    physics = env.physics
    seg = physics.render(env.image_size, env.image_size, camera_id=0, segmentation=True)[..., 0]
    grid = physics.model.name2id("grid", "material")
    floor_geoms = np.flatnonzero(physics.model.geom_matid == grid)
    sky = seg == -1
    floor = np.isin(seg, floor_geoms)
    return sky, floor, ~sky & ~floor


def _cos(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _rollout(env, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    obs, info = env.reset()
    out = [obs]
    rewards = []
    for _ in range(n):
        obs, r, term, trunc, _ = env.step(rng.uniform(-1, 1, env.action_space.shape))
        out.append(obs)
        rewards.append(r)
    return np.stack(out), np.array(rewards), info


# --------------------------------------------------------------------------- api
def test_task_and_mode_lists():
    assert MODES == ("train", "color_easy", "color_hard", "video_easy", "video_hard")
    for t in ("walker_walk", "walker_stand", "ball_in_cup_catch", "finger_spin", "cartpole_swingup", "cheetah_run"):
        assert t in TASKS


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="unknown task 'walker_fly'.*walker_walk"):
        make_env("walker_fly")
    with pytest.raises(ValueError, match="unknown mode 'video_medium'.*color_easy.*video_hard"):
        make_env("walker_walk", mode="video_medium")
    for kw in ({"frame_stack": 0}, {"action_repeat": -1}, {"image_size": 8.5}, {"seed": -3}):
        with pytest.raises(ValueError, match=next(iter(kw))):
            make_env("walker_walk", **kw)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_env("walker_walk", mode="color_easy", data_dir="/nonexistent/dmcgb")


def test_gymnasium_conventions_and_episode_length():
    env = make_env("cartpole_swingup", seed=0, image_size=SIZE, frame_stack=3, action_repeat=4, episode_length=10)
    assert env.observation_space.shape == (9, SIZE, SIZE) and env.observation_space.dtype == np.uint8
    assert env.action_space.shape == (1,) and env.action_space.dtype == np.float32
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(1))
    obs, info = env.reset()
    assert obs.dtype == np.uint8 and env.observation_space.contains(obs)
    assert info["data_source"] == env.data_source == "train"
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(2))
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan]))
    sim_steps, flags = [], []
    done = False
    while not done:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert isinstance(reward, float) and obs.shape == (9, SIZE, SIZE)
        sim_steps.append(info["sim_steps"])
        flags.append((terminated, truncated))
        done = terminated or truncated
    # 10 simulator steps with a repeat of 4: 4 + 4 + 2, truncated only at the end.
    assert sim_steps == [4, 4, 2]
    assert flags == [(False, False), (False, False), (False, True)]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(1))
    frame = env.render_frame()
    assert frame.shape == (SIZE, SIZE, 3) and frame.dtype == np.uint8
    env.close()


def test_action_repeat_sums_rewards_and_rescales_actions():
    from dm_control import suite

    env = make_env("walker_walk", seed=5, image_size=SIZE, action_repeat=3, episode_length=30)
    raw = suite.load("walker", "walk", task_kwargs={"random": 5})
    env.reset()
    raw.reset()
    spec = raw.action_spec()
    rng = np.random.default_rng(1)
    for _ in range(4):
        a = rng.uniform(-1.2, 1.2, env.action_space.shape)  # out of range parts are clipped
        _, reward, *_ = env.step(a)
        scaled = spec.minimum + (np.clip(a, -1, 1) + 1) / 2 * (spec.maximum - spec.minimum)
        expected = sum(raw.step(scaled).reward for _ in range(3))
        assert reward == pytest.approx(expected, rel=1e-12, abs=1e-12)
    np.testing.assert_array_equal(env.physics.get_state(), raw.physics.get_state())
    env.close()


def test_frame_stacking():
    env = make_env("cheetah_run", seed=2, image_size=SIZE, frame_stack=4, episode_length=40)
    obs, _ = env.reset()
    assert obs.shape == (12, SIZE, SIZE)
    # At reset the stack holds the first frame four times.
    for k in range(1, 4):
        np.testing.assert_array_equal(obs[3 * k : 3 * k + 3], obs[:3])
    prev = obs
    for _ in range(3):
        obs, *_ = env.step(env.action_space.sample())
        np.testing.assert_array_equal(obs[:9], prev[3:])  # oldest frame dropped
        np.testing.assert_array_equal(obs[9:], env.render_frame().transpose(2, 0, 1))  # newest last
        assert not np.array_equal(obs[9:], prev[9:])  # the cheetah moved
        prev = obs
    env.close()


@pytest.mark.parametrize("mode", ["train", "color_hard", "video_hard"])
def test_same_seed_same_episode(mode, monkeypatch):
    monkeypatch.delenv(DATA_ENV_VAR, raising=False)
    kw = dict(image_size=SIZE, episode_length=24)
    a = make_env("walker_walk", mode, seed=7, **kw)
    b = make_env("walker_walk", mode, seed=7, **kw)
    c = make_env("walker_walk", mode, seed=8, **kw)
    obs_a, rew_a, info_a = _rollout(a, 3)
    obs_b, rew_b, info_b = _rollout(b, 3)
    obs_c, _, info_c = _rollout(c, 3)
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rew_a, rew_b)
    assert info_a == info_b
    assert not np.array_equal(obs_a[0], obs_c[0])
    # reset(seed=s) replays make_env(seed=s), whatever ran before.
    obs_c2, rew_c2, info_c2 = _rollout(c, 1)
    obs, info = c.reset(seed=7)
    np.testing.assert_array_equal(obs, obs_a[0])
    assert info == info_a
    for env in (a, b, c):
        env.close()


# ------------------------------------------------------------------ colour modes
@pytest.mark.parametrize("mode", ["color_easy", "color_hard"])
def test_colour_mode_follows_drawn_entry(mode, source):
    env = make_env("walker_walk", mode, seed=3, image_size=SIZE, episode_length=8, data_dir=source)
    train = make_env("walker_walk", "train", seed=3, image_size=SIZE, episode_length=8)
    assert ("procedural" in env.data_source) == (source is None)
    if source is not None:
        assert env.data_source.startswith("dmcgb:") and "100 entries" in env.data_source
    drawn = []
    for _ in range(3):
        _, info = env.reset()
        train.reset()
        assert info["data_source"] == env.data_source
        entry = env.color_entries[info["color_index"]]
        drawn.append(info["color_index"])
        frame, ref = env.render_frame().astype(float), train.render_frame().astype(float)
        sky, floor, agent = (_erode(m) for m in _regions(env))
        assert sky.sum() > 100 and floor.sum() > 100 and agent.sum() > 30
        # The sky is a gradient from skybox_rgb to black: its colour is proportional to the entry.
        assert _cos(np.median(frame[sky], 0), entry["skybox_rgb"]) > 0.999
        # The lit floor keeps the hue of its checker colours.
        assert _cos(frame[floor].mean(0), np.add(entry["grid_rgb1"], entry["grid_rgb2"])) > 0.99
        assert _cos(np.median(frame[agent], 0), entry["self_rgb"]) > 0.97
        # Same camera, same gradient weight per sky pixel: the ratio to the train
        # frame is the ratio of the entry to dm_control's default skybox colour.
        bright = sky & (ref.min(-1) > 20)
        ratio = np.median(frame[bright] / ref[bright], axis=0)
        np.testing.assert_allclose(ratio, np.divide(entry["skybox_rgb"], [0.4, 0.6, 0.8]), rtol=0.05, atol=0.02)
        for region in (floor, agent):  # and they differ from the train colours
            assert np.abs(frame[region] - ref[region]).mean() > 0.5
    assert len(set(drawn)) > 1  # one entry per episode, drawn again at each reset
    env.close()
    train.close()


def test_colour_reload_keeps_physics_state():
    import mujoco

    a = make_env("walker_walk", seed=4, image_size=SIZE, episode_length=40)
    b = make_env("walker_walk", seed=4, image_size=SIZE, episode_length=40)
    a.reset()
    b.reset()
    acts = np.random.default_rng(0).uniform(-1, 1, (6, 6))
    for act in acts[:3]:
        a.step(act)
        b.step(act)

    def full_state(env):
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        m, d = env.physics.model.ptr, env.physics.data.ptr
        out = np.empty(mujoco.mj_stateSize(m, spec))
        mujoco.mj_getState(m, d, out, spec)
        return out

    before = full_state(a)
    old_model = a.physics.model.ptr
    a.set_colors(procedural_color_entries("color_hard")[0])
    assert a.physics.model.ptr is not old_model  # really recompiled
    np.testing.assert_array_equal(full_state(a), before)
    assert a.physics.data.time > 0
    for act in acts[3:]:
        _, ra, *_ = a.step(act)
        _, rb, *_ = b.step(act)
        assert ra == rb
        np.testing.assert_array_equal(a.physics.get_state(), b.physics.get_state())
    assert not np.array_equal(a.render_frame(), b.render_frame())  # colours did change
    a.close()
    b.close()


def test_procedural_colour_set_distribution():
    for mode, sigma in (("color_easy", 0.1), ("color_hard", 0.2)):
        entries = procedural_color_entries(mode)
        assert entries == procedural_color_entries(mode) and len(entries) == 100
        sky = np.array([e["skybox_rgb"] for e in entries])
        assert sky.min() >= 0 and sky.max() <= 1
        assert np.allclose(sky.mean(0), [0.4, 0.6, 0.8], atol=0.06)
        assert np.all(np.abs(sky.std(0) - sigma) < 0.05)
        for e in entries:
            np.testing.assert_allclose(e["grid_rgb2"], np.minimum(np.add(e["grid_rgb1"], 0.1), 1.0))


# ------------------------------------------------------------------- video modes
@pytest.mark.parametrize("mode", ["video_easy", "video_hard"])
def test_green_screen_replaces_background_only(mode, source):
    task = "walker_walk" if mode == "video_easy" else "finger_spin"
    env = make_env(task, mode, seed=1, image_size=SIZE, episode_length=16, data_dir=source)
    train = make_env(task, "train", seed=1, image_size=SIZE, episode_length=16)
    if source is None:
        assert "procedural" in env.data_source
    else:
        n = len(list((source / mode).glob("video*.mp4")))
        expected = 10 if mode == "video_easy" else 100
        assert f"({n} of {expected} clips)" in env.data_source
    clips = []
    for episode in range(2):
        _, info = env.reset()
        train.reset()
        assert info["data_source"] == env.data_source
        clips.append(info["clip"])
        backgrounds = []
        for act in np.random.default_rng(episode).uniform(-1, 1, (2, *env.action_space.shape)):
            env.step(act)
            train.step(act)
            frame, ref, bg = env.render_frame(), train.render_frame(), env.background_frame()
            backgrounds.append(bg.copy())
            sky, floor, agent = _regions(env)
            sky, floor, agent = _erode(sky), _erode(floor), _erode(agent)
            from_bg = (frame == bg).all(-1)
            unchanged = (frame == ref).all(-1)
            assert from_bg[sky].mean() > 0.99
            if mode == "video_hard":
                assert from_bg[floor].mean() > 0.99
            else:
                assert unchanged[floor].mean() > 0.99 and from_bg[floor].mean() < 0.01
            assert agent.sum() > 30
            assert unchanged[agent].mean() > 0.97 and from_bg[agent].mean() < 0.01
        assert not np.array_equal(backgrounds[0], backgrounds[1])  # the clip plays
    assert clips[0] != clips[1]  # next clip at each reset
    env.close()
    train.close()


def test_green_mask_matches_per_pixel_reference():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (60, 60, 3), dtype=np.uint8)
    # Pixels on the thresholds: hue 100 / 185 degrees, S 80, V 70, greys, pure green.
    edge = np.array(
        [[0, 255, 85], [0, 255, 0], [0, 196, 255], [0, 200, 255], [70, 70, 48], [70, 70, 47],
         [128, 128, 128], [0, 0, 0], [255, 255, 255], [51, 204, 51], [43, 255, 0], [42, 255, 0]],
        dtype=np.uint8,
    )
    pixels[0, : len(edge)] = edge
    bg = rng.integers(0, 256, pixels.shape, dtype=np.uint8)
    np.testing.assert_array_equal(green_screen(pixels, bg), green_screen_reference(pixels, bg))
    # The integer fast path against colorsys's float64 arithmetic on many colours.
    from cg2a_ext.rl.envs.dmc.video import _green_mask_float

    many = rng.integers(0, 256, (512, 1024, 3), dtype=np.uint8)
    np.testing.assert_array_equal(green_mask(many), _green_mask_float(many))
    green = np.round(np.array(GREEN) * 255).astype(np.uint8)
    assert green_mask(green[None, None])[0, 0]
    assert 0 < green_mask(pixels).mean() < 0.5
    with pytest.raises(ValueError, match="uint8"):
        green_mask(pixels.astype(np.float32))


def test_incomplete_data_folder_and_clip_cache(tmp_path, monkeypatch, dmcgb_data):
    shared = dmcgb_data
    (tmp_path / "video_easy").mkdir()
    for i in (2, 0):
        (tmp_path / "video_easy" / f"video{i}.mp4").symlink_to(shared / "video_easy" / f"video{i}.mp4")
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path))  # the variable is honoured
    env = make_env("cartpole_swingup", "video_easy", seed=0, image_size=32, episode_length=4)
    assert env.data_source == f"dmcgb:{tmp_path.resolve() / 'video_easy'} (2 of 10 clips)"
    decodes = CLIP_CACHE.decodes
    clips = [env.reset()[1]["clip"] for _ in range(4)]
    assert sorted(set(clips)) == ["video0.mp4", "video2.mp4"]
    assert clips[0] != clips[1] and clips[0] == clips[2]  # cycles over what is there
    assert CLIP_CACHE.decodes - decodes <= 2  # each clip decoded once
    env.close()
    with pytest.raises(FileNotFoundError, match="no video<i>.mp4 clip"):
        make_env("cartpole_swingup", "video_hard", image_size=32)
    with pytest.raises(FileNotFoundError, match="color_easy.json"):
        make_env("cartpole_swingup", "color_easy", image_size=32)
    (tmp_path / "color_hard.json").write_text('[{"skybox_rgb": [2, 0, 0]}]')
    with pytest.raises(ValueError, match="missing keys"):
        make_env("cartpole_swingup", "color_hard", image_size=32)


# --------------------------------------------------------------------- rendering
def test_rendering_backend_choice():
    assert rendering.ensure_rendering_backend() == os.environ["MUJOCO_GL"]
    assert rendering.choose_backend(lambda b: (b == "osmesa", "")) == "osmesa"
    assert rendering.choose_backend(lambda b: (True, "")) == "egl"
    with pytest.raises(rendering.RenderingUnavailableError, match="libegl1.*libosmesa6"):
        rendering.choose_backend(lambda b: (False, "no display"))
