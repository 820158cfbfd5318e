"""What soda, sgqn and smg share: registry and options, checkpoints and exact resume, non-finite steps,
and end-to-end training through python/train.py with every evaluation mode."""
import csv
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from agent_support import A, OBS, batch, filled_replay, flat_tensors, tiny_cfg
from cg2a_ext.rl import algorithms
from cg2a_ext.rl.core.agent import make_agent
from cg2a_ext.rl.core.replay import FrameReplayBuffer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

import train as train_script  # noqa: E402

BASELINES = ("soda", "sgqn", "smg")


def test_registered_with_options_that_exist():
    from dataclasses import fields

    from cg2a_ext.rl.config import TrainConfig, field_docs
    names = {f.name for f in fields(TrainConfig)}
    docs = field_docs()
    for name in BASELINES:
        cls = algorithms.get(name)
        assert cls.has_auxiliary_update and cls.summary
        options = set(cls.option_docs())
        assert set(cls.method_options) <= names | options and "image_bank" in cls.method_options
        assert cls.draws_overlay_images and all(cls.option_docs().values())
    assert docs.get("image_bank")


def _saved(state):
    buf = io.BytesIO()
    torch.save(state, buf)                       # as a checkpoint: loadable with weights_only=True
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("algorithm", BASELINES)
def test_resume_from_state_is_bit_identical(algorithm):
    cfg = tiny_cfg(algorithm, aux_update_freq=2)
    torch.manual_seed(0)
    a = make_agent(OBS, A, cfg, "cpu")
    rb_a = filled_replay()
    for i in range(3):                           # odd: the saved state sits between auxiliary steps
        torch.manual_seed(100 + i)
        a.update(rb_a)
    agent_state = _saved(a.state_dict())
    replay_state = {k: np.copy(v) for k, v in rb_a.state_dict().items()}
    for key in {"soda": ("projection", "predictor", "target", "optimizer"), "sgqn": ("decoder", "optimizer"),
                "smg": ("fore_head", "back_encoder", "fore_decoder", "back_decoder", "inverse_dynamics",
                        "optimizer", "choice_generator")}[algorithm]:
        assert key in agent_state["algorithm"], key
    torch.manual_seed(1)                         # other initial weights: everything must come from the state
    b = make_agent(OBS, A, cfg, "cpu")
    rb_b = FrameReplayBuffer(OBS, A, 100, frame_stack=3, episode_steps=20, seed=7)
    b.load_state_dict(agent_state)
    rb_b.load_state_dict(replay_state)
    for i in range(5):
        torch.manual_seed(200 + i)
        ma = a.update(rb_a)
        torch.manual_seed(200 + i)
        mb = b.update(rb_b)
        assert {k: float(v) for k, v in ma.items()} == {k: float(v) for k, v in mb.items()}
    sa, sb = flat_tensors(a.state_dict()), flat_tensors(b.state_dict())
    assert sa.keys() == sb.keys() and len(sa) > 50
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert a.algorithm.num_aux_updates == b.algorithm.num_aux_updates == 4


@pytest.mark.parametrize("algorithm", BASELINES)
def test_nonfinite_critic_gradient_is_skipped_or_raised(algorithm):
    torch.manual_seed(0)
    ag = make_agent(OBS, A, tiny_cfg(algorithm), "cpu")
    obs, action, target = batch(obs_shape=ag.obs_shape)          # the network's input (SODA: the crop)
    target[0] = float("nan")
    before = [p.detach().clone() for p in ag.critic_params]
    ag.update_critic(obs, action, target)
    assert ag.skipped_critic_steps == 1
    assert all(torch.equal(p, q) for p, q in zip(ag.critic_params, before))
    strict = make_agent(OBS, A, tiny_cfg(algorithm, nonfinite="raise"), "cpu")
    with pytest.raises(FloatingPointError, match="critic"):
        strict.update_critic(obs, action, target)


def _poison(alg, algorithm):
    """A NaN in a weight only the auxiliary loss reads: its gradients become NaN."""
    module = {"soda": lambda: alg.online.predictor[-1], "sgqn": lambda: alg.decoder.head,
              "smg": lambda: alg.inverse_dynamics[-1]}[algorithm]()
    with torch.no_grad():
        module.weight[0, 0] = float("nan")


@pytest.mark.parametrize("algorithm", BASELINES)
def test_nonfinite_auxiliary_step_is_skipped_or_raised(algorithm):
    torch.manual_seed(0)
    ag = make_agent(OBS, A, tiny_cfg(algorithm, aux_update_freq=1), "cpu")
    alg = ag.algorithm
    _poison(alg, algorithm)
    rb = filled_replay()
    ag.update(rb)                                             # an auxiliary step on every update
    trunk = [p.detach().clone() for p in ag.critic.encoder.shared_cnn.parameters()]
    critic_step = ag.critic_optimizer.step
    ag.critic_optimizer.step = lambda *a, **k: None           # isolate the auxiliary step's effect on the trunk
    m = ag.update(rb)
    ag.critic_optimizer.step = critic_step
    assert alg.skipped_aux_steps == 2 and m["skipped_aux_steps"] == 2 and ag.skipped_critic_steps == 0
    assert all(torch.equal(p, q) for p, q in zip(ag.critic.encoder.shared_cnn.parameters(), trunk))
    assert all(p.grad is None for p in alg.params)
    torch.manual_seed(0)
    strict = make_agent(OBS, A, tiny_cfg(algorithm, aux_update_freq=1, nonfinite="raise"), "cpu")
    _poison(strict.algorithm, algorithm)
    with pytest.raises(FloatingPointError, match="auxiliary"):
        strict.update(rb)


def test_auxiliary_step_clips_the_global_gradient_norm():
    ag = make_agent(OBS, A, tiny_cfg("sgqn"), "cpu")
    alg = ag.algorithm
    w = torch.nn.Parameter(torch.zeros(4))
    opt = torch.optim.SGD([w], lr=1.0, fused=True)     # fused: it can skip a step on the device
    alg.auxiliary_step(opt, [w], (torch.tensor([3.0, 0.0, 4.0, 0.0]) * w).sum() * 100, "test", max_grad_norm=5.0)
    torch.testing.assert_close(w.detach(), -torch.tensor([3.0, 0.0, 4.0, 0.0]))
    assert w.grad is None


# ---------------------------------------------------------------------------------------- end to end
TINY = ["--task", "cartpole_balance", "--preset", "cpu", "--image_size", "32", "--episode_length", "80",
        "--num_conv_layers", "2", "--num_filters", "8", "--projection_dim", "16", "--hidden_dim", "32",
        "--batch_size", "8", "--seed_steps", "20", "--log_freq", "10",
        "--eval_episodes", "1", "--no-progress", "--no-tensorboard", "--device", "cpu"]


def tiny(algorithm: str) -> list[str]:
    return TINY + ["--algorithm", algorithm] + (["--soda_batch_size", "16"] if algorithm == "soda" else [])
AUX_METRICS = {"soda": ["soda_loss"], "sgqn": ["sgqn_consistency_loss", "sgqn_prediction_loss"],
               "smg": ["smg_consistency_loss", "smg_recon_loss", "smg_mask_loss", "smg_back_loss",
                       "smg_action_loss", "smg_fore_loss", "smg_aux_loss"]}


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("algorithm", BASELINES)
def test_trains_end_to_end_and_evaluates_on_every_mode(tmp_path, algorithm):
    d = tmp_path / algorithm
    modes = ["train", "color_easy", "color_hard", "video_easy", "video_hard"]
    train_script.build_and_train(tiny(algorithm) + ["--run_dir", str(d), "--train_steps", "40",
                                         "--eval_freq", "40", "--eval_modes", *modes])
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["algorithm"] == algorithm and cfg["image_size"] == 32      # given explicitly: no SODA enlargement
    upd = _rows(d / "update.csv")
    assert [int(r["step"]) for r in upd] == [10, 20, 30, 40]
    for key in AUX_METRICS[algorithm] + ["skipped_aux_steps"]:
        assert np.isfinite(float(upd[-1][key])), key
    assert float(upd[-1]["skipped_aux_steps"]) == 0 and float(upd[-1]["skipped_critic_steps"]) == 0
    ev = _rows(d / "eval.csv")
    assert {r["mode"] for r in ev} == set(modes) and sorted({int(r["step"]) for r in ev}) == [0, 40]
    assert all(np.isfinite(float(r["mean_return"])) for r in ev)
    state = torch.load(sorted((d / "checkpoints").glob("step_*.pt"))[-1], weights_only=True)
    assert state["agent"]["algorithm"]["num_aux_updates"] == 10 and "optimizer" in state["agent"]["algorithm"]


@pytest.mark.parametrize("algorithm", BASELINES)
def test_killed_and_resumed_run_matches_an_uninterrupted_one(tmp_path, algorithm):
    # the checkpoint at step 40 ends an episode (20 agent steps each), so the resumed run meets the same episodes
    common = tiny(algorithm) + ["--eval_freq", "0", "--checkpoint_freq", "40",
                     "--buffer_capacity", "100"]
    full, part = tmp_path / "full", tmp_path / "part"
    train_script.build_and_train(common + ["--run_dir", str(full), "--train_steps", "60"])
    train_script.build_and_train(common + ["--run_dir", str(part), "--train_steps", "40"])
    train_script.build_and_train(["--resume", "--run_dir", str(part), "--train_steps", "60", "--no-progress"])
    a = torch.load(sorted((full / "checkpoints").glob("step_*.pt"))[-1], weights_only=True)["agent"]
    b = torch.load(sorted((part / "checkpoints").glob("step_*.pt"))[-1], weights_only=True)["agent"]
    sa, sb = flat_tensors(a), flat_tensors(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert [r["critic_loss"] for r in _rows(full / "update.csv")] == [r["critic_loss"] for r in _rows(part / "update.csv")]


@pytest.mark.parametrize("algorithm,decoders", [("sgqn", ("decoder",)), ("smg", ("fore_decoder", "back_decoder"))])
@pytest.mark.parametrize("channels_last", [True, False])
def test_decoders_follow_the_agents_convolution_layout(algorithm, decoders, channels_last):
    """The auxiliary decoders take the layout of the trunk that feeds them (--channels_last)."""
    from agent_support import A, OBS, tiny_cfg
    from cg2a_ext.rl.core.agent import make_agent

    agent = make_agent(OBS, A, tiny_cfg(algorithm, channels_last=channels_last), "cpu")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for name in decoders:
        weights = [p for p in getattr(agent.algorithm, name).parameters() if p.dim() == 4]
        assert weights and all(w.is_contiguous(memory_format=fmt) for w in weights)
        if channels_last:   # a real NHWC layout, not a 1x1 map that is trivially both
            assert not all(w.is_contiguous() for w in weights)
