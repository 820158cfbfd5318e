"""SGQN's mechanics: guided backprop, the quantile mask, the consistency loss, the predictor's target."""
import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from agent_support import aux_step, A, OBS, batch, filled_replay, tiny_cfg
from cg2a_ext.rl.core.agent import make_agent
from cg2a_ext.rl.core.agent.networks import QFunction
from cg2a_ext.rl.algorithms.parts.guided_backprop import q1_guided_backprop
from cg2a_ext.rl.algorithms.sgqn import fill_unsalient, saliency_mask
from cg2a_ext.rl.cli.options import config_from_args


def _guided_reference(critic, obs, action):
    """Float64 guided backprop with tensor hooks: at each ReLU the incoming gradient is masked by x > 0 (autograd)
    and then clamped at 0 (hook on the ReLU's input), through Q1 only."""
    net = copy.deepcopy(critic).double()
    x = obs.detach().double().requires_grad_(True)

    def run(layers, h):
        for layer in layers:
            if isinstance(layer, nn.ReLU):
                h.register_hook(lambda g: g.clamp_min(0))
                h = torch.relu(h)
            else:
                h = layer(h)
        return h

    h = run(net.encoder.shared_cnn.layers, x / 255.0)
    z = net.encoder.projection(h)
    q1_head = QFunction(z.shape[1], action.shape[1], net.Q.hidden_dim).double()
    q1_head.load_state_dict(net.Q.head_state_dict(1))
    q1 = run(q1_head.trunk, torch.cat([z, action.double()], 1))
    (grad,) = torch.autograd.grad(q1.sum(), x)
    return grad


def test_guided_backprop_matches_reference_uses_q1_and_touches_no_parameter():
    torch.manual_seed(0)
    ag = make_agent(OBS, A, tiny_cfg("sgqn"), "cpu")
    obs, action, _ = batch(6)
    for p in ag.critic_params:
        p.grad = torch.full_like(p, 7.0)
    got = q1_guided_backprop(ag.critic, obs, action)
    assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in ag.critic_params)   # .grad untouched
    ref = _guided_reference(ag.critic, obs, action)
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())
    x = obs.clone().requires_grad_(True)
    vanilla = torch.autograd.grad(ag.critic(x, action)[0].sum(), x)[0]
    assert not torch.allclose(vanilla, got, rtol=1e-3, atol=1e-9)                       # not the plain gradient
    with torch.no_grad():
        for p in ag.critic.Q.head_state_dict(2).values():
            p.mul_(-3.0)
    assert torch.equal(q1_guided_backprop(ag.critic, obs, action), got)                 # Q2 plays no part
    x = obs.clone().requires_grad_(True)                                                # the switch is undone
    assert torch.equal(torch.autograd.grad(ag.critic(x, action)[0].sum(), x)[0], vanilla)


def _mask_reference(attribution: np.ndarray, quantile: float) -> np.ndarray:
    b, c, h, w = attribution.shape
    out = np.zeros((b, c, h, w), dtype=bool)
    for i in range(b):
        for k in range(c // 3):
            s = np.abs(attribution[i, 3 * k:3 * k + 3]).max(0)
            t = np.quantile(s.reshape(-1).astype(np.float64), quantile)    # linear interpolation
            out[i, 3 * k:3 * k + 3] = s >= t
    return out


@pytest.mark.parametrize("quantile", [0.9, 0.95, 0.98])
def test_mask_is_a_per_sample_per_frame_quantile_of_the_channel_max(quantile):
    g = torch.Generator().manual_seed(1)
    attribution = torch.randn(4, 9, 21, 21, generator=g)
    attribution[1] *= 1000.0                                   # another sample's scale: its own thresholds
    attribution[2, 3:6] *= 1e-3                                # and another frame's
    mask = saliency_mask(attribution, quantile)
    assert torch.equal(mask, torch.from_numpy(_mask_reference(attribution.double().numpy(), quantile)))
    kept = mask.reshape(4, 3, 3, -1)[:, :, 0].float().mean(-1)
    assert torch.allclose(kept, torch.full_like(kept, 1 - quantile), atol=2.0 / 441)
    assert torch.equal(mask[:, 0], mask[:, 1]) and torch.equal(mask[:, 0], mask[:, 2])   # RGB share the frame mask


def test_mask_keeps_ties_at_the_threshold():
    attribution = torch.zeros(2, 9, 10, 10)                    # e.g. zero saliency early in training
    attribution[0, 0, 0, :3] = 1.0                             # 3 pixels of frame 0 above zero
    mask = saliency_mask(attribution, 0.95)
    assert mask[0, :3].all()                                   # threshold 0: >= keeps all 100 pixels
    assert mask[1].all()
    attribution[0, 0, :, :] = torch.arange(100.0).reshape(10, 10)
    attribution[0, 0, 9, 9] = 98.0                             # a tie at the top
    m = saliency_mask(attribution, 0.98)                       # threshold 98.0: both 98s kept
    assert int(m[0, 0].sum()) == 2 and m[0, 0, 9, 8] and m[0, 0, 9, 9]


def test_masked_view_fills_with_one_grey_level_in_the_batch_range():
    ag = make_agent(OBS, A, tiny_cfg("sgqn"), "cpu")
    obs, _, _ = batch(4)
    mask = torch.rand(obs.shape) > 0.7
    value = ag.algorithm.fill_value(obs)
    assert value.dim() == 0 and obs.min() <= value <= obs.max()
    masked = fill_unsalient(obs, mask, value)
    assert torch.equal(masked[mask], obs[mask]) and (masked[~mask] == value).all()


def test_consistency_loss_has_no_stop_gradient():
    torch.manual_seed(0)
    ag = make_agent(OBS, A, tiny_cfg("sgqn"), "cpu")
    alg = ag.algorithm
    obs, action, target = batch(8)
    alg.generator.manual_seed(3)
    out = alg.critic_gradient(ag.critic_step(obs, action, target))
    got = [p.grad.clone() for p in ag.critic_params]
    # the same mask and fill value, the loss written out
    alg.generator.manual_seed(3)
    masked = fill_unsalient(obs, alg.mask(ag.critic, obs, action), alg.fill_value(obs))

    def grads(detach_masked: bool):
        q1, q2 = ag.critic(obs, action)
        m1, m2 = ag.critic(masked, action)
        if detach_masked:
            m1, m2 = m1.detach(), m2.detach()
        loss = F.mse_loss(q1, target) + F.mse_loss(q2, target) + 0.5 * (F.mse_loss(q1, m1) + F.mse_loss(q2, m2))
        return loss, torch.autograd.grad(loss, ag.critic_params)

    loss, ref = grads(False)
    torch.testing.assert_close(out.loss, loss.detach(), rtol=1e-5, atol=1e-7)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-7)
    _, one_sided = grads(True)
    assert any(not torch.allclose(g, r, rtol=1e-3, atol=1e-6) for g, r in zip(got, one_sided))
    assert float(out.metrics["sgqn_consistency_loss"]) > 0
    assert 0 < float(out.metrics["sgqn_mask_fraction"]) < 0.5


def test_prediction_target_is_the_mask_of_the_critic_after_its_step():
    torch.manual_seed(0)
    ag = make_agent(OBS, A, tiny_cfg("sgqn", aux_update_freq=1), "cpu")
    alg = ag.algorithm
    rb = filled_replay()
    seen = {}
    critic_step = ag.critic_optimizer.step

    def step_and_snapshot(*a, **k):
        seen["before"] = copy.deepcopy(ag.critic)
        out = critic_step(*a, **k)
        seen["after"] = copy.deepcopy(ag.critic)
        return out

    target_fn = alg.prediction_target

    def record_target(agent, obs, action):
        seen["obs"], seen["action"] = obs.clone(), action.clone()
        seen["target"] = target_fn(agent, obs, action)
        return seen["target"]

    bce = F.binary_cross_entropy_with_logits

    def record_bce(logits, target, *a, **k):
        seen["bce_target"] = target
        return bce(logits, target, *a, **k)

    ag.critic_optimizer.step = step_and_snapshot
    alg.prediction_target = record_target
    F.binary_cross_entropy_with_logits = record_bce
    try:
        m = ag.update(rb)
    finally:
        F.binary_cross_entropy_with_logits = bce
    after = alg.mask(seen["after"], seen["obs"], seen["action"]).float()
    before = alg.mask(seen["before"], seen["obs"], seen["action"]).float()
    assert seen["bce_target"] is seen["target"] and not seen["target"].requires_grad
    assert torch.equal(seen["target"], after) and not torch.equal(after, before)
    assert float(m["sgqn_prediction_loss"]) > 0


def test_predictor_optimizer_trains_encoder_and_decoder_only():
    torch.manual_seed(0)
    ag = make_agent(OBS, A, tiny_cfg("sgqn"), "cpu")
    alg = ag.algorithm
    ids = {id(p) for p in alg.params}
    assert ids == {id(p) for p in ag.critic.encoder.parameters()} | {id(p) for p in alg.decoder.parameters()}
    assert alg.optimizer is not ag.critic_optimizer and alg.optimizer.defaults["lr"] == 3e-4
    assert alg.decoder(torch.zeros(3, 16), torch.zeros(3, A)).shape == (3, *OBS)
    rb = filled_replay()
    ag.update(rb)
    heads = [p.detach().clone() for p in list(ag.critic.Q.parameters()) + ag.actor_params]
    dec = [p.detach().clone() for p in alg.decoder.parameters()]
    enc = [p.detach().clone() for p in ag.critic.encoder.parameters()]
    alg.auxiliary_update(aux_step(ag, _batch_of(ag, rb), rb))
    assert all(torch.equal(a, b) for a, b in zip(heads, list(ag.critic.Q.parameters()) + ag.actor_params))
    assert all(not torch.equal(a, b) for a, b in zip(dec, alg.decoder.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(enc, ag.critic.encoder.parameters()))
    assert all(p.grad is None for p in alg.params)


def _batch_of(ag, rb):
    from cg2a_ext.rl.algorithms.base import Batch

    obs, action, reward, next_obs, not_done = rb.sample(8)
    return Batch(ag.preprocess(obs), action, reward, ag.preprocess(next_obs), not_done)


def test_quantile_defaults_per_task():
    def q(*argv):
        return config_from_args(["--algorithm", "sgqn", "--preset", "cpu", *argv]).options.quantile

    assert q("--task", "cartpole_swingup") == 0.98 and q("--task", "ball_in_cup_catch") == 0.98
    assert q("--task", "walker_walk") == 0.95 and q("--task", "finger_spin") == 0.95
    assert q("--task", "cartpole_swingup", "--sgqn_quantile", "0.9") == 0.9


def test_evaluation_images_show_saliency_and_masks():
    ag = make_agent(OBS, A, tiny_cfg("sgqn"), "cpu")
    obs = torch.randint(0, 256, (3, *OBS), dtype=torch.uint8)
    images = ag.algorithm.evaluation_images(ag.nets, obs)
    assert set(images) == {"sgqn_observation", "sgqn_saliency", "sgqn_mask", "sgqn_predicted_mask"}
    for v in images.values():
        assert v.shape == (3, 32, 32, 3) and v.dtype == np.uint8
    assert np.array_equal(images["sgqn_observation"], obs[:, -3:].permute(0, 2, 3, 1).numpy())
    assert images["sgqn_saliency"].max() == 255
    assert all(p.grad is None for p in ag.critic_params)
