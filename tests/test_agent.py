"""Agent-level tests: per-loss gradients, the algorithms' update paths, networks."""
import numpy as np

import pytest
import torch

from cg2a_ext.rl.core.agent import make_agent
from cg2a_ext.rl.core.agent.networks import build_networks
from cg2a_ext.rl.algorithms.base import critic_loss
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
