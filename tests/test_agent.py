"""Agent-level tests: per-loss gradients, strategies, networks, replay, config errors."""
import numpy as np
import json

import pytest
import torch

from cg2a_ext.rl.core.agent import make_agent
from cg2a_ext.rl.core.agent.networks import build_networks
from cg2a_ext.rl.algorithms.base import critic_loss
from cg2a_ext.rl.cli.options import config_from_args
from cg2a_ext.rl.config import ConfigError, TrainConfig, field_docs
from cg2a_ext.rl.core.replay import FrameReplayBuffer

from agent_support import filled_replay, small_agent_cfg

OBS = (9, 32, 32)
A = 2


def batch(b=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randint(0, 256, (b, *OBS), generator=g).float()
    action = torch.rand(b, A, generator=g) * 2 - 1
    target = torch.randn(b, 1, generator=g)
    return obs, action, target


def test_paper_encoder_shape():
    actor, critic, target = build_networks((9, 84, 84), 2)
    assert critic.encoder.shared_cnn.out_shape == (32, 21, 21)
    n_conv = sum(isinstance(m, torch.nn.Conv2d) for m in critic.encoder.shared_cnn.modules())
    assert n_conv == 11
    assert actor.encoder.shared_cnn is critic.encoder.shared_cnn          # trunk shared
    assert actor.encoder.projection is not critic.encoder.projection      # one projection each
    assert critic.Q.first.out_features == 2 * 1024 and critic.encoder.out_dim == 100     # the twin heads, stacked
    # delta-orthogonal conv init: only the centre tap is non-zero
    w = critic.encoder.shared_cnn.layers[2].weight
    assert torch.count_nonzero(w[:, :, 0, 0]) == 0 and torch.count_nonzero(w[:, :, 1, 1]) > 0
    mu, pi, log_pi, log_std = actor(torch.zeros(3, 9, 84, 84))
    assert mu.shape == (3, 2) and pi.abs().max() <= 1 and log_pi.shape == (3, 1)
    assert log_std.min() >= -10 and log_std.max() <= 2


@pytest.mark.parametrize("algorithm", ["ac", "cg2a"])
def test_per_loss_grads_equal_separate_backward(algorithm):
    torch.manual_seed(0)
    agent = make_agent(OBS, A, small_agent_cfg(algorithm=algorithm), "cpu")
    strat = agent.algorithm
    obs, action, target = batch()
    views = strat.views(obs)
    assert views.shape[0] == strat.K == 4 and torch.equal(views[0], obs)
    params = agent.critic_params
    from cg2a_ext import per_group_grads
    grads, losses = per_group_grads(agent.critic, critic_loss, (views,), (action, target), params=params)
    for k in range(strat.K):
        lk = critic_loss(agent.critic, views[k], action, target)
        ref = torch.autograd.grad(lk, params)
        assert torch.allclose(losses[k], lk.detach(), rtol=1e-5, atol=1e-6)
        for g, r in zip(grads, ref):
            assert torch.allclose(g[k], r, rtol=1e-4, atol=1e-6), (k, (g[k] - r).abs().max())


def _grads_after(agent, obs, action, target, diagnostics):
    out = agent.algorithm.critic_gradient(agent.critic_step(obs, action, target, diagnostics=diagnostics))
    return [p.grad.clone() for p in agent.critic_params], out


def test_ac_mean_equals_diagnostic_path_and_cg2a_without_gas_sgs():
    torch.manual_seed(0)
    obs, action, target = batch()
    ac = make_agent(OBS, A, small_agent_cfg(algorithm="ac"), "cpu")
    cg = make_agent(OBS, A, small_agent_cfg(algorithm="cg2a", gas=False, sgs=False), "cpu")
    cg.critic.load_state_dict(ac.critic.state_dict())
    # same augmentation draws: identical generator states
    def run(agent, diag):
        agent.algorithm.generator.manual_seed(5)
        return _grads_after(agent, obs, action, target, diag)
    g_fast, out_fast = run(ac, False)
    g_diag, out_diag = run(ac, True)
    g_cg, out_cg = run(cg, True)
    for a, b, c in zip(g_fast, g_diag, g_cg):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
        assert torch.allclose(a, c, rtol=1e-4, atol=1e-6)
    assert torch.allclose(out_fast.loss, out_diag.loss, rtol=1e-5)
    d = out_cg.diagnostics
    for key in ("grad_norm_0", "cos_0_1", "conflict_fraction", "weight_3", "gamma"):
        assert key in d
    assert 0.0 <= d["conflict_fraction"] <= 1.0 and abs(d["weight_0"] - 0.25) < 1e-6


def test_cg2a_full_changes_gradient_and_reports_gamma():
    torch.manual_seed(0)
    obs, action, target = batch()
    cg = make_agent(OBS, A, small_agent_cfg(algorithm="cg2a", gamma=(0.2, 0.2)), "cpu")
    g, out = _grads_after(cg, obs, action, target, True)
    assert not out.zeroed and abs(out.diagnostics["gamma"] - 0.2) < 1e-6
    assert abs(sum(out.diagnostics[f"weight_{i}"] for i in range(4))) <= 1 + 1e-5


def test_svea_loss_is_weighted_sum():
    torch.manual_seed(0)
    obs, action, target = batch()
    ag = make_agent(OBS, A, small_agent_cfg(algorithm="svea"), "cpu")
    strat = ag.algorithm
    strat.generator.manual_seed(3)
    out = strat.critic_gradient(ag.critic_step(obs, action, target))
    strat.generator.manual_seed(3)
    aug = strat.augment(obs)
    with torch.no_grad():
        ref = 0.5 * critic_loss(ag.critic, obs, action, target) + 0.5 * critic_loss(ag.critic, aug, action, target)
    assert torch.allclose(out.loss, ref, rtol=1e-5)


def test_nonfinite_gradient_skips_step():
    torch.manual_seed(0)
    for algo in ("drq", "cg2a"):
        ag = make_agent(OBS, A, small_agent_cfg(algorithm=algo), "cpu")
        obs, action, target = batch()
        target[0] = float("nan")
        before = [p.detach().clone() for p in ag.critic_params]
        ag.update_critic(obs, action, target)
        assert ag.skipped_critic_steps == 1, algo
        for p, b in zip(ag.critic_params, before):
            assert torch.equal(p, b)
        ag2 = make_agent(OBS, A, small_agent_cfg(algorithm=algo, nonfinite="raise"), "cpu")
        with pytest.raises(FloatingPointError):
            ag2.update_critic(obs, action, target)


def test_agent_update_runs_and_state_roundtrip():
    torch.manual_seed(0)
    cfg = small_agent_cfg(algorithm="cg2a")
    ag = make_agent(OBS, A, cfg, "cpu")
    rb = FrameReplayBuffer(OBS, A, 100, frame_stack=3, episode_steps=10, seed=0)
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 256, OBS, dtype=np.uint8)
    rb.add_first(obs)
    for t in range(30):
        rb.add(rng.uniform(-1, 1, A), 1.0, rng.integers(0, 256, OBS, dtype=np.uint8), False)
    m1 = ag.update(rb, diagnostics=True)
    m2 = ag.update(rb)
    assert "actor_loss" in m2 and "conflict_fraction" in m1.diagnostics
    ag2 = make_agent(OBS, A, cfg, "cpu")
    ag2.load_state_dict(ag.state_dict())
    x = torch.rand(2, *OBS) * 255
    assert torch.equal(ag.actor(x, compute_pi=False)[0], ag2.actor(x, compute_pi=False)[0])
    assert ag2.num_updates == 2


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


def test_config_cli_and_errors(tmp_path, capsys):
    docs = field_docs()
    from dataclasses import fields
    assert all(docs.get(f.name) for f in fields(TrainConfig)), "every field needs a docstring"
    cfg = config_from_args(["--task", "finger_spin", "--device", "cpu", "--preset", "paper"])
    assert cfg.algorithm == "cg2a" and cfg.train_steps == 500_000 and cfg.batch_size == 128 and cfg.eval_freq == 10_000
    cpu = config_from_args(["--task", "cartpole_balance", "--preset", "cpu", "--batch_size", "32", "--no-gas",
                            "--gamma", "0.3", "0.3", "--augmentations", "overlay", "overlay_s"])
    assert cpu.num_conv_layers == 4 and cpu.batch_size == 32 and cpu.options.gas is False
    assert cpu.options.sgs_damping == (0.3, 0.3) and cpu.options.augmentations == ("overlay", "overlay_s")
    assert cpu.K == 3
    # parse-level errors: the CLI library names the option and the valid choices
    for argv, msg in ([["--gamma", "0.2"], "--gamma"],
                      [["--mask", "x"], "invalid choice 'x'"], [["--augmentations", "conv", "bogus"], "bogus"]):
        with pytest.raises(SystemExit):
            config_from_args(argv + ["--device", "cpu"])
        assert msg in capsys.readouterr().err
    # semantic errors: ConfigError with the reason
    for argv, msg in ([["--algorithm", "ppo"], "unknown algorithm 'ppo'"], [["--gamma", "0.4", "0.3"], "0 <= A <= B <= 1"], [["--batch_size", "0"], "must be positive"],
                      [["--algorithm", "cg2a", "--augmentations"], "at least one augmentation"],
                      [["--resume", "--run_dir", str(tmp_path)], "no config.json"]):
        with pytest.raises(ConfigError, match=msg):
            config_from_args(argv + ["--device", "cpu"])
    with pytest.raises(SystemExit):
        config_from_args(["--preset", "huge"])
    assert "invalid choice 'huge'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown preset"):
        TrainConfig(preset="huge").validate()


def test_config_validates_objects_built_in_code():
    from cg2a_ext.rl.algorithms.cg2a import CG2AOptions
    from cg2a_ext.rl.algorithms.sgqn import SGQNOptions

    with pytest.raises(ConfigError, match="at least one augmentation in --augmentations"):
        TrainConfig(options=CG2AOptions(augmentations="conv,overlay")).validate()
    with pytest.raises(ConfigError, match="unknown algorithm"):
        TrainConfig(algorithm="ppo").validate()
    with pytest.raises(ConfigError, match="unknown evaluation mode 'nope'"):
        TrainConfig(eval_modes=("train", "nope")).validate()
    with pytest.raises(ConfigError, match="options of cg2a must be"):
        TrainConfig(options=SGQNOptions()).validate()
    # per-algorithm and per-task defaults apply in Python as on the command line
    assert TrainConfig(algorithm="sgqn", task="cartpole_swingup").validate().options.quantile == 0.98
    assert TrainConfig(algorithm="sgqn", task="walker_walk").validate().options.quantile == 0.95
    smg = TrainConfig(algorithm="smg", task="walker_stand", preset="paper", device="cpu").validate()
    assert (smg.batch_size, smg.projection_dim, smg.train_steps) == (64, 256, 250_000)
    assert TrainConfig(algorithm="smg", task="walker_walk", preset="paper", device="cpu").validate().train_steps == 500_000
    assert TrainConfig(algorithm="smg", task="walker_stand", preset="paper", device="cpu",
                       train_steps=2000).validate().train_steps == 2000
    # the same defaults from the command line
    assert config_from_args(["--algorithm", "sgqn", "--task", "cartpole_swingup"]).options.quantile == 0.98
    # defect 3 of issue 19: options that passed the checks and crashed after the run folder existed
    for kw, msg in ((dict(critic_lr=float("nan")), "critic_lr must be a finite"), (dict(discount=2.0), "discount"),
                    (dict(buffer_capacity=10), "below --batch_size"),
                    (dict(seed_steps=5000, train_steps=300), "never update"), (dict(actor_lr=-1.0), "actor_lr"),
                    (dict(critic_tau=float("inf")), "critic_tau")):
        with pytest.raises(ConfigError, match=msg):
            TrainConfig(task="cartpole_balance", **kw).validate()


def test_config_json_round_trip(tmp_path):
    from cg2a_ext.rl.algorithms.cg2a import CG2AOptions

    cfg = TrainConfig(task="walker_walk", options=CG2AOptions(augmentations=("overlay",), sgs_damping=(0.1, 0.2)),
                      eval_modes=("train",)).validate()
    cfg.save(tmp_path / "c.json")
    assert TrainConfig.load(tmp_path / "c.json") == cfg
    # a config.json written before the algorithms owned their options: the flat keys are taken over
    old = {k: v for k, v in cfg.to_dict().items() if k != "options"}
    old.update(gamma=[0.1, 0.2], augmentations=["overlay"], gas=True, sgs=True, mask="agree", soda_crop="random",
               sgqn_quantile=0.95, svea_alpha=0.5)
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert TrainConfig.load(tmp_path / "old.json") == cfg
    (tmp_path / "bad.json").write_text('{"task": "walker_walk", "no_such_option": 1}')
    with pytest.raises(ConfigError, match="unknown config keys: no_such_option"):
        TrainConfig.load(tmp_path / "bad.json")


def test_parsing_options_imports_no_environment():
    import subprocess
    import sys
    code = ("import sys; from cg2a_ext.rl.cli.options import parse; "
            "parse(['--task', 'walker_walk', '--preset', 'cpu']); "
            "bad = [m for m in ('dm_control', 'mujoco', 'cg2a_ext.rl.envs') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registry_declares_every_algorithm():
    from typing import get_args

    from cg2a_ext.rl import algorithms
    from cg2a_ext.rl.algorithms.base import Algorithm
    assert set(algorithms.NAMES) >= {"sac", "drq", "svea", "ac", "cg2a", "soda", "sgqn", "smg"}
    for name in algorithms.NAMES:
        cls = algorithms.get(name)
        assert issubclass(cls, Algorithm) and cls.name == name and cls.summary and cls.label
        assert all(docs for docs in cls.option_docs().values()) and len(cls.option_docs()) == len(
            cls.cli_names()), f"every option of {name} needs a docstring"
    assert TrainConfig(algorithm="svea").K == 2 and TrainConfig(algorithm="drq").K == 1
    from cg2a_ext.rl.algorithms.cg2a import CG2AOptions
    assert TrainConfig(algorithm="cg2a", options=CG2AOptions(augmentations=("conv", "overlay"))).K == 3
    with pytest.raises(KeyError, match="unknown algorithm 'ppo'"):
        algorithms.get("ppo")


def test_config_names_match_environments_and_augmentations():
    from typing import get_args

    from cg2a_ext.rl.algorithms.parts.combination import AUGMENTATION_NAMES, AugmentationName
    from cg2a_ext.rl.core.augmentations import AUGMENTATIONS
    assert set(get_args(AugmentationName)) == set(AUGMENTATIONS) == set(AUGMENTATION_NAMES)


def test_seed_streams_are_named_and_independent():
    from cg2a_ext.rl.run.seeding import SeedStreams
    a, b = SeedStreams(0), SeedStreams(1)
    assert a.integer("replay") == SeedStreams(0).integer("replay")
    assert len({a.integer("replay"), a.integer("augment"), b.integer("replay"), a.integer("episodes", 0),
                a.integer("episodes", 1)}) == 5
    g1, g2 = a.torch_generator("augment"), a.torch_generator("augment")
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))
    assert 0 <= a.integer("episodes", 5, bits=31) < 2**31
    with pytest.raises(ValueError, match="seed must be >= 0"):
        SeedStreams(-1)


def test_agent_and_replay_own_their_rng_state():
    """Every generator of the agent (its algorithm's) and the buffer's sampler come back from their state dicts."""
    cfg = small_agent_cfg(algorithm="cg2a")
    ag = make_agent(OBS, A, cfg, "cpu")
    rb = filled_replay()
    ag.update(rb)
    agent_state, replay_state = ag.state_dict(), rb.state_dict()
    obs = torch.randint(0, 256, (4, *OBS), dtype=torch.uint8)
    expected = (ag.algorithm.views(ag.preprocess(obs)), ag.algorithm.aggregator.draw_gamma(), rb.sample_indices(5))
    ag2 = make_agent(OBS, A, cfg, "cpu")
    rb2 = FrameReplayBuffer(OBS, A, 100, frame_stack=3, episode_steps=20, seed=99)
    ag2.load_state_dict(agent_state)
    rb2.load_state_dict(replay_state)
    got = (ag2.algorithm.views(ag2.preprocess(obs)), ag2.algorithm.aggregator.draw_gamma(), rb2.sample_indices(5))
    assert torch.equal(expected[0], got[0]) and expected[1] == got[1] and np.array_equal(expected[2], got[2])


def test_trunk_layout_and_normalisation_match_plain_formula():
    """The trunk's fused x/255 - 0.5 and channels-last convolutions equal the plain NCHW forward."""
    actor, critic, _ = build_networks(OBS, A, num_conv_layers=3, num_filters=8, num_stride2=2)
    trunk = critic.encoder.shared_cnn.double()
    x = torch.randint(0, 256, (4, *OBS)).double()
    expected = x / 255.0
    for layer in trunk.layers:
        expected = layer(expected.contiguous())
    torch.testing.assert_close(trunk(x), expected, rtol=1e-10, atol=1e-12)
    # non-contiguous input (a channel slice) is handled too
    wide = torch.randint(0, 256, (4, OBS[0] + 3, *OBS[1:])).double()
    torch.testing.assert_close(trunk(wide[:, 3:]), trunk(wide[:, 3:].contiguous()), rtol=0, atol=0)


def test_actor_update_with_one_trunk_pass_equals_separate_passes():
    """The actor update runs the (detached) trunk once for actor and critic: same loss and gradients."""
    cfg = small_agent_cfg(algorithm="drq")
    torch.manual_seed(0)
    ag = make_agent(OBS, A, cfg, "cpu")
    obs, _, _ = batch()
    torch.manual_seed(1)
    _, pi, log_pi, _ = ag.actor(obs, detach=True)
    q1, q2 = ag.critic(obs, pi, detach=True)
    ref_loss = (ag.alpha.detach() * log_pi - torch.min(q1, q2)).mean()
    ref_grads = torch.autograd.grad(ref_loss, ag.actor_params)
    torch.manual_seed(1)
    m = ag.update_actor_and_alpha(obs)
    torch.testing.assert_close(m["actor_loss"], ref_loss.detach(), rtol=0, atol=0)
    # the optimizer stepped with those gradients: Adam's first step is lr * g / (|g| + eps)
    torch.manual_seed(0)
    fresh = make_agent(OBS, A, cfg, "cpu")
    for g_ref, p, p0 in zip(ref_grads, ag.actor_params, fresh.actor_params):
        torch.testing.assert_close(p0 - p, cfg.actor_lr * g_ref / (g_ref.abs() + 1e-8), rtol=1e-4, atol=1e-8)
    assert all(p.grad is None for p in ag.critic_params)


def test_cg2a_with_identity_copies_takes_drq_step():
    """The whole cg2a path (preprocess, K-view per-loss gradients, GAS, SGS, Adam) with a copy that is the
    clean batch itself must reduce to drq: equal gradients get w = 1/2 each and agree in sign everywhere."""
    drq = make_agent(OBS, A, small_agent_cfg(algorithm="drq"), "cpu")
    cg = make_agent(OBS, A, small_agent_cfg(algorithm="cg2a", augmentations=("identity",)), "cpu")
    for name in ("actor", "critic", "critic_target"):
        getattr(cg, name).load_state_dict(getattr(drq, name).state_dict())
    rb_drq, rb_cg = filled_replay(), filled_replay()
    for step in range(4):   # covers actor and target updates (every 2)
        torch.manual_seed(step)   # the actor's sampling noise in the TD target
        m_drq = drq.update(rb_drq)
        torch.manual_seed(step)
        m_cg = cg.update(rb_cg, diagnostics=True)
        assert torch.allclose(m_drq["critic_loss"], m_cg["critic_loss"], rtol=1e-6)
        assert abs(m_cg.diagnostics["weight_0"] - 0.5) < 1e-6 and abs(m_cg.diagnostics["cos_0_1"] - 1.0) < 1e-5
    # cg2a runs clean and copy as one batch of 2B, so float32 sums are blocked differently than drq's (and
    # differently on each CPU's SIMD width); Adam divides by sqrt(v), which turns that rounding in gradients
    # near eps into parameter differences of a few 1e-6. A wrong step (a weight other than 1/2, a masked sign)
    # moves a parameter by about lr, hence the bound of 1 % of a step.
    for name, lr in (("critic", drq.cfg.critic_lr), ("actor", drq.cfg.actor_lr)):
        for a, b in zip(getattr(drq, name).parameters(), getattr(cg, name).parameters()):
            assert torch.allclose(a, b, rtol=1e-5, atol=0.01 * lr), (name, (a - b).abs().max())
