"""End-to-end training on CPU with a tiny configuration: outputs, resume, start-up errors."""
import csv
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

import train as train_script  # noqa: E402

TINY = ["--task", "cartpole_balance", "--preset", "cpu", "--image_size", "32", "--episode_length", "80",
        "--num_conv_layers", "2", "--num_filters", "8", "--projection_dim", "16", "--hidden_dim", "32",
        "--batch_size", "8", "--seed_steps", "20", "--log_freq", "10", "--eval_episodes", "1",
        "--no-progress", "--device", "cpu"]


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run(tmp_path, name, *extra):
    d = tmp_path / name
    train_script.build_and_train(TINY + ["--run_dir", str(d), *extra])
    return d


@pytest.mark.parametrize("algorithm", ["sac", "drq", "svea", "ac", "cg2a"])
def test_algorithm_end_to_end(tmp_path, algorithm):
    extra = ["--algorithm", algorithm, "--train_steps", "100", "--eval_freq", "50", "--checkpoint_freq", "50"]
    if algorithm == "cg2a":
        extra += ["--eval_modes", "train", "color_hard", "video_hard", "--save_video"]
    d = run(tmp_path, algorithm, *extra)
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["algorithm"] == algorithm and cfg["train_steps"] == 100
    train = rows(d / "train.csv")
    assert len(train) == 5 and train[-1]["step"] == "100"          # 20 steps per episode
    upd = rows(d / "update.csv")
    assert [int(r["step"]) for r in upd] == list(range(10, 101, 10))
    assert upd[-1]["critic_loss"] not in ("", None) and float(upd[-1]["skipped_critic_steps"]) == 0
    ev = rows(d / "eval.csv")
    modes = cfg["eval_modes"]
    assert sorted({int(r["step"]) for r in ev}) == [0, 50, 100]
    assert {r["mode"] for r in ev if r["step"] != "100"} == set(modes) and all(r["data_source"] for r in ev)
    # the final evaluation: zero-shot on every mode of the family
    assert [r["mode"] for r in ev if r["step"] == "100"] == cfg["final_eval_modes"] == \
        ["train", "color_easy", "color_hard", "video_easy", "video_hard"]
    assert list((d / "tb").glob("events.out.tfevents.*"))
    ck = sorted((d / "checkpoints").glob("step_*.pt"))
    # due at 50, taken at the next episode end (60); the last two are kept
    assert [p.name for p in ck] == ["step_000000060.pt", "step_000000100.pt"]
    state = torch.load(ck[-1], weights_only=True)
    assert state["step"] == 100 and set(state["agent"]) >= {
        "actor", "critic", "critic_target", "log_alpha", "actor_optimizer", "critic_optimizer", "log_alpha_optimizer"}
    assert (d / "checkpoints" / state["replay_file"]).is_file()
    assert sorted(p.name for p in (d / "checkpoints").glob("replay_*.npz")) == \
        ["replay_000000060.npz", "replay_000000100.npz"]
    finished = json.loads((d / "finished.json").read_text())
    assert finished["final_step"] == 100 and finished["wall_time_s"] > 0
    assert finished["final_evaluation"] == {r["mode"]: pytest.approx(float(r["mean_return"]))
                                            for r in ev if r["step"] == "100"}
    plan = json.loads((d / "plan.json").read_text())
    assert plan["algorithm"] == algorithm and plan["K"] >= 1 and plan["estimated_seconds"] > 0
    from cg2a_ext.rl.core.image_bank import image_bank_source

    assert plan["overlay_images"] == image_bank_source(None)    # no --image_bank: CG2A_OVERLAY_DATA or procedural
    diag = d / "diagnostics.csv"
    if algorithm in ("ac", "cg2a"):
        dr = rows(diag)
        assert [int(r["step"]) for r in dr] == list(range(30, 101, 10))   # every log interval after the seed steps
        last = plan["K"] - 1
        assert plan["K"] == 3                       # the cpu preset's overlay pair
        for key in ("grad_norm_0", f"grad_norm_{last}", f"cos_0_{last}", "conflict_fraction", "weight_0", "gamma"):
            assert dr[-1][key] != ""
    else:
        assert not diag.exists() or not rows(diag)
    if algorithm == "cg2a":
        vids = list((d / "videos").iterdir())
        # the evaluations at 0 and 50 on the eval modes, the final one on every mode
        assert len(vids) == 2 * len(modes) + len(cfg["final_eval_modes"]) and all(v.stat().st_size > 0 for v in vids)


def _state(d):
    p = sorted((d / "checkpoints").glob("step_*.pt"))[-1]
    return torch.load(p, weights_only=True)


def test_resume_continues_with_saved_state(tmp_path):
    # the 40-step run finishes; resuming it with a larger --train_steps extends it, bit-identically
    common = ["--algorithm", "cg2a", "--eval_freq", "0", "--checkpoint_freq", "40", "--buffer_capacity", "100"]
    full = run(tmp_path, "full", *common, "--train_steps", "80")
    part = run(tmp_path, "part", *common, "--train_steps", "40")     # "killed" right after its step-40 checkpoint
    assert _state(part)["step"] == 40
    train_script.build_and_train(["--resume", "--run_dir", str(part), "--train_steps", "80", "--no-progress"])
    assert json.loads((part / "config.json").read_text())["train_steps"] == 80     # the run's options as resumed
    assert json.loads((part / "finished.json").read_text())["final_step"] == 80
    a, b = _state(full), _state(part)
    assert b["step"] == 80 and a["agent"]["num_updates"] == b["agent"]["num_updates"] == 60
    for net in ("actor", "critic", "critic_target"):
        for k in a["agent"][net]:
            assert torch.equal(a["agent"][net][k], b["agent"][net][k]), (net, k)
    assert torch.equal(a["agent"]["log_alpha"], b["agent"]["log_alpha"])
    ra, rb = rows(full / "update.csv"), rows(part / "update.csv")
    assert [r["step"] for r in ra] == [r["step"] for r in rb]
    assert [r["critic_loss"] for r in ra] == [r["critic_loss"] for r in rb]
    assert [r["episode_return"] for r in rows(full / "train.csv")] == \
        [r["episode_return"] for r in rows(part / "train.csv")]


class Killed(BaseException):
    """A hard kill: nothing in the program handles it (unlike Ctrl-C)."""


def kill_at_transition(monkeypatch, n, capacity):
    """Storing transition ``n`` in the run's buffer (not the speed measurement's scratch one) raises Killed."""
    from cg2a_ext.rl.core.replay import FrameReplayBuffer

    orig_add = FrameReplayBuffer.add

    def add_then_die(self, *a, **k):
        orig_add(self, *a, **k)
        if self.num_transitions == n and self.capacity == capacity:
            raise Killed

    monkeypatch.setattr(FrameReplayBuffer, "add", add_then_die)
    return lambda: monkeypatch.setattr(FrameReplayBuffer, "add", orig_add)


def test_killed_run_resumes_mid_episode_from_last_checkpoint(tmp_path, monkeypatch):
    revive = kill_at_transition(monkeypatch, 45, capacity=60)
    with pytest.raises(Killed):
        run(tmp_path, "killed", "--algorithm", "drq", "--train_steps", "60", "--eval_freq", "0",
            "--checkpoint_freq", "30", "--no-checkpoint_at_episode_end")
    revive()
    d = tmp_path / "killed"
    assert _state(d)["step"] == 30 and _state(d)["episode"] == 1          # mid-episode (20 steps per episode)
    assert _state(d)["episode_in_progress"]
    assert [int(r["step"]) for r in rows(d / "update.csv")] == [10, 20, 30, 40]
    train_script.build_and_train(["--resume", "--run_dir", str(d), "--no-progress"])
    st = _state(d)
    assert st["step"] == 60 and st["agent"]["num_updates"] == 40
    assert [int(r["step"]) for r in rows(d / "update.csv")] == [10, 20, 30, 40, 50, 60]
    assert [int(r["episode"]) for r in rows(d / "train.csv")] == [0, 1]   # episode 1 restarted at step 30


@pytest.mark.parametrize("argv,msg", [
    (["--task", "no_such_task"], "unknown task"),
    (["--algorithm", "ppo"], "unknown algorithm 'ppo'"),
    (["--gamma", "0.5"], "--gamma"),
    (["--gamma", "0.3", "0.2"], "need finite 0 <= A <= B <= 1"),
    (["--augmentations", "conv", "bogus"], "invalid choice 'bogus'"),
    (["--checkpoint_minutes", "-1"], "--checkpoint_minutes must be >= 0"),
])
def test_bad_options_fail_at_start(tmp_path, capsys, argv, msg):
    with pytest.raises(SystemExit) as e:
        train_script.build_and_train(TINY + ["--run_dir", str(tmp_path / "x")] + argv)
    assert e.value.code == 2
    assert msg in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_resume_without_checkpoint_fails_clearly(tmp_path, capsys):
    d = tmp_path / "empty"
    d.mkdir()
    with pytest.raises(SystemExit):
        train_script.build_and_train(["--resume", "--run_dir", str(d)])
    assert "no config.json" in capsys.readouterr().err
    from cg2a_ext.rl.config import TrainConfig
    TrainConfig(task="cartpole_balance").save(d / "config.json")
    with pytest.raises(SystemExit):
        train_script.build_and_train(["--resume", "--run_dir", str(d), "--device", "cpu"])
    assert "no checkpoint" in capsys.readouterr().err


def test_auto_preset_suits_the_machine():
    from cg2a_ext.rl.cli.options import config_from_args
    from cg2a_ext.rl.config import PRESETS
    cfg = config_from_args(["--task", "finger_spin"])
    if torch.cuda.is_available():
        assert cfg.preset == "paper" and cfg.device == "auto"
    else:
        assert cfg.preset == "cpu" and cfg.device == "cpu"
        assert cfg.num_filters == PRESETS["cpu"]["num_filters"] and cfg.train_steps == PRESETS["cpu"]["train_steps"]


def test_default_command_is_paper_configuration():
    from cg2a_ext.rl.cli.options import config_from_args
    cfg = config_from_args(["--task", "finger_spin", "--preset", "paper"])
    assert (cfg.algorithm, cfg.train_steps, cfg.eval_freq, cfg.batch_size, cfg.image_size, cfg.action_repeat) == \
        ("cg2a", 500_000, 10_000, 128, 84, 4)
    assert cfg.eval_modes == ("train", "color_easy", "color_hard", "video_easy", "video_hard")
    assert cfg.device == "auto" and cfg.options.augmentations == ("conv", "overlay", "overlay_s")


def test_help_lists_every_option(capsys):
    from dataclasses import fields

    from cg2a_ext.rl.config import TrainConfig
    with pytest.raises(SystemExit) as e:
        train_script.build_and_train(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    from cg2a_ext.rl.algorithms import get as get_algorithm

    names = [f.name for f in fields(TrainConfig) if f.name != "options"]   # options: the algorithm's own
    names += [f.name for f in fields(get_algorithm("cg2a").Options)]
    missing = [n for n in names if f"--{n}" not in out]
    assert not missing, f"options missing from --help: {missing}"


def test_env_overlap_gives_the_same_run(tmp_path):
    """Stepping the environment in a worker thread while the update runs changes nothing: same rows, same networks."""
    common = ["--algorithm", "drq", "--train_steps", "50", "--eval_freq", "0", "--checkpoint_freq", "50"]
    serial = run(tmp_path, "serial", *common, "--env_overlap", "off")
    overlapped = run(tmp_path, "overlapped", *common, "--env_overlap", "on")
    assert [r["episode_return"] for r in rows(serial / "train.csv")] == \
        [r["episode_return"] for r in rows(overlapped / "train.csv")]
    assert [r["critic_loss"] for r in rows(serial / "update.csv")] == \
        [r["critic_loss"] for r in rows(overlapped / "update.csv")]
    a, b = _state(serial), _state(overlapped)
    for k in a["agent"]["critic"]:
        assert torch.equal(a["agent"]["critic"][k], b["agent"]["critic"][k]), k


def test_speed_measurement_leaves_first_compilations_out(monkeypatch):
    """The start-of-run speed estimate times updates after a whole warm-up cycle: the actor's and
    the auxiliary step's first (compiling) updates come every 2nd update and must not be timed."""
    import time as time_module

    import cg2a_ext.rl.core.agent as agent_module
    from cg2a_ext.rl.cli.options import config_from_args
    from cg2a_ext.rl.training import measure_rates

    class FirstCallsSlow:
        def __init__(self):
            self.calls = 0

        def update(self, replay):
            self.calls += 1
            if self.calls <= 2:   # the critic's and then the actor's first compilation
                time_module.sleep(0.3)
            return {}

        def act(self, obs, sample=False):
            return torch.zeros(1)

    class StillEnv:
        def reset(self, seed=None):
            return None, {}

        def step(self, action):
            return None, 0.0, False, False, {}

    fake = FirstCallsSlow()
    monkeypatch.setattr(agent_module, "make_agent", lambda *a, **k: fake)
    cfg = config_from_args(["--preset", "cpu", "--task", "cartpole_balance"])
    rates = measure_rates(cfg, StillEnv(), (3 * cfg.frame_stack, 8, 8), 1, torch.device("cpu"))
    cycle = max(cfg.actor_update_freq, cfg.aux_update_freq, 2)
    # one warm-up cycle, then whole cycles timed (for up to 3 s: a few updates are noise on a busy machine)
    assert fake.calls > cycle and fake.calls % cycle == 0
    assert rates.train_step < 0.1, rates


def test_update_rows_hold_the_window_means_of_every_metric():
    """Tensor metrics (averaged on their device, read back once) and plain numbers alike: the float64 mean of
    the window's values, in the metrics' own order."""
    import numpy as np

    from cg2a_ext.rl.core.trainer import window_means

    rng = np.random.default_rng(0)
    losses = rng.normal(size=7).astype(np.float32)
    values = {"critic_loss": [torch.tensor(v) for v in losses],
              "skipped_critic_steps": [torch.tensor(0.0), torch.tensor(1.0)],
              "shaped": [torch.tensor([2.0]), torch.tensor([[4.0]])],
              "skipped_aux_steps": [3, 5], "alpha": [torch.tensor(0.1, dtype=torch.float64)]}
    means = window_means(values)
    assert list(means) == list(values)
    assert means["critic_loss"] == pytest.approx(float(np.mean(losses.astype(np.float64))), rel=1e-12)
    assert (means["skipped_critic_steps"], means["shaped"], means["skipped_aux_steps"]) == (0.5, 3.0, 4.0)
    assert means["alpha"] == 0.1 and all(type(v) is float for v in means.values())
