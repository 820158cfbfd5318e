"""SMG's mechanics: soft-mask composition, views, stop-gradients, reconstruction targets, the mask gate."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from agent_support import aux_step, A, OBS, batch, filled_replay, tiny_cfg
from cg2a_ext.rl.core.agent import make_agent
from cg2a_ext.rl.algorithms.base import Batch
from cg2a_ext.rl.cli.options import config_from_args
from cg2a_ext.rl.core.image_bank import ImageBank


def _agent(**kw):
    torch.manual_seed(0)
    return make_agent(OBS, A, tiny_cfg("smg", **kw), "cpu")


def _batch(b=8, seed=0):
    obs, action, _ = batch(b, seed=seed)
    next_obs, _, _ = batch(b, seed=seed + 100)
    return Batch(obs, action, torch.zeros(b, 1), next_obs, torch.ones(b, 1))


@pytest.mark.parametrize("b", [1, 5, 64])
def test_foreground_decodes_each_frame_and_reassembles_in_stack_order(b):
    ag = _agent()
    alg = ag.algorithm
    z = torch.randn(b, 16)
    with torch.no_grad():
        image, mask = alg.fore_from_latent(z)
    assert image.shape == mask.shape == (b, *OBS)
    vectors = torch.relu(alg.fore_head.linear(z)).reshape(b, 3, 16)     # frame k's vector: the k-th d-chunk
    for k in range(3):
        with torch.no_grad():
            img_k, mask_k = alg.fore_decoder(vectors[:, k])
        torch.testing.assert_close(image[:, 3 * k:3 * k + 3], img_k)
        torch.testing.assert_close(mask[:, 3 * k:3 * k + 3], mask_k.expand(-1, 3, -1, -1))
    assert 0 <= float(image.min()) and float(image.max()) <= 255 and 0 < float(mask.min()) and float(mask.max()) < 1
    assert alg.back(torch.rand(b, *OBS) * 255).shape == (b, *OBS)


def test_views_compose_the_soft_mask_with_one_background_per_sample():
    ag = _agent()
    alg = ag.algorithm
    obs, _, _ = batch(6)
    alg.generator.manual_seed(5)
    views = alg.make_views(ag.nets, obs)
    with torch.no_grad():
        _, mask = alg.fore(ag.nets, obs)
    assert ((mask > 0.01) & (mask < 0.99)).float().mean() > 0.5                     # soft, not binarised
    bg = views.background
    assert torch.equal(bg[:, 0:3], bg[:, 3:6]) and torch.equal(bg[:, 0:3], bg[:, 6:9])   # shared by the frames
    # eps is the bank's overlay draw from the augmentation generator (the view's first draw)
    alg.generator.manual_seed(5)
    assert torch.equal(bg[:, :3], alg.image_bank.draw(6, 32, 32, generator=alg.generator))
    torch.testing.assert_close(views.attribution, obs * mask + bg * (1 - mask))
    assert not views.attribution.requires_grad
    assert views.consistency is views.attribution or not torch.equal(views.consistency, views.attribution)


class _ColumnRowBank(ImageBank):
    """One pool image whose red channel is its column and green its row (0 to 255): a crop narrows the ranges,
    a horizontal flip makes red fall from left to right."""

    def _build(self, side):
        cols = torch.arange(side).float().expand(side, side)
        img = torch.stack([cols, cols.t(), torch.zeros(side, side)])
        return img.mul(255.0 / (side - 1)).round().to(torch.uint8)[None]

    def __len__(self):
        return 1


def test_backgrounds_are_fresh_resized_crops_and_flips_of_the_pool():
    ag = _agent()
    alg = ag.algorithm
    alg.image_bank = _ColumnRowBank()
    obs, _, _ = batch(64)
    bg = alg.make_views(ag.nets, obs).background[:, :3]
    red_left, red_right = bg[:, 0, :, 0].mean(1), bg[:, 0, :, -1].mean(1)
    flipped = red_left > red_right
    assert 0.2 < flipped.float().mean() < 0.8                        # flips with probability 1/2
    red_span = bg[:, 0].amax((1, 2)) - bg[:, 0].amin((1, 2))
    green_span = bg[:, 1].amax((1, 2)) - bg[:, 1].amin((1, 2))
    # a box of U(0.08, 1) of the area: most are well inside the image, never wider than it
    assert (red_span < 200).float().mean() > 0.5 and (green_span < 200).float().mean() > 0.5
    assert red_span.max() <= 255 and len(set(red_span.tolist())) > 10    # the crops differ from sample to sample
    assert not torch.equal(alg.make_views(ag.nets, obs).background[:, :3], bg)   # and from update to update


def test_backgrounds_differ_between_updates_and_follow_the_run_seed():
    obs, _, _ = batch(6)

    def backgrounds(seed):
        ag = _agent(seed=seed)
        return [ag.algorithm.make_views(ag.nets, obs).background for _ in range(2)]

    first, again, other = backgrounds(0), backgrounds(0), backgrounds(1)
    assert not torch.equal(first[0], first[1])                              # a fresh draw every update
    assert len({tuple(first[0][i, :3].flatten()[:64].tolist()) for i in range(6)}) == 6   # and per sample
    assert all(torch.equal(a, b) for a, b in zip(first, again))             # the same seed: the same draws
    assert not any(torch.equal(a, b) for a, b in zip(first, other))


def test_attribution_view_is_chosen_for_a_quarter_of_the_updates():
    ag = _agent()
    alg = ag.algorithm
    obs, _, _ = batch(2)
    picks = [alg.make_views(ag.nets, obs) for _ in range(400)]
    frac = np.mean([v.consistency is v.attribution for v in picks])
    assert 0.18 < frac < 0.32
    for v in picks[:20]:
        if v.consistency is not v.attribution:    # an overlay of o with fresh images: 0.5 o + 0.5 * 255 eps'
            eps = (v.consistency - 0.5 * obs) / 0.5
            assert torch.equal(eps[:, 0:3], eps[:, 3:6]) and float(eps.min()) > -1e-3


def test_q_consistency_stops_the_gradient_at_the_clean_q():
    ag = _agent()
    alg = ag.algorithm
    obs, action, target = batch(8)
    alg.generator.manual_seed(2)
    alg.choice_generator.manual_seed(2)
    out = alg.critic_gradient(ag.critic_step(obs, action, target))
    got = [p.grad.clone() for p in ag.critic_params]
    tau = alg.views.consistency

    def grads(stop: bool):
        q1, q2 = ag.critic(obs, action)
        t1, t2 = ag.critic(tau, action)
        c1, c2 = (q1.detach(), q2.detach()) if stop else (q1, q2)
        loss = F.mse_loss(q1, target) + F.mse_loss(q2, target) + 0.5 * (F.mse_loss(t1, c1) + F.mse_loss(t2, c2))
        return loss, torch.autograd.grad(loss, ag.critic_params)

    loss, ref = grads(True)
    torch.testing.assert_close(out.loss, loss.detach(), rtol=1e-5, atol=1e-7)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-7)
    _, both = grads(False)
    assert any(not torch.allclose(g, r, rtol=1e-3, atol=1e-6) for g, r in zip(got, both))


def test_auxiliary_losses_targets_and_the_foreground_stop_gradient():
    ag = _agent()
    alg = ag.algorithm
    b = _batch(8)
    alg.critic_gradient(ag.critic_step(b.obs, b.action, torch.zeros(8, 1)))
    views = alg.views
    ag.num_updates = 2000                                                # mask term active
    losses = alg.auxiliary_losses(aux_step(ag, b, num_transitions=0))
    enc = ag.critic.encoder
    fore, mask = alg.fore(ag.nets, b.obs)
    back = alg.back(b.obs)
    recon = fore * mask + back * (1 - mask)
    torch.testing.assert_close(losses["smg_recon_loss"], (recon - b.obs).abs().mean())         # target: o in 0-255
    area = mask[:, ::3].mean((2, 3))                                                            # [B, frames]
    torch.testing.assert_close(losses["smg_mask_loss"], ((area.double() - 0.06) ** 2).mean().float())
    torch.testing.assert_close(losses["smg_back_loss"], (alg.back(views.attribution) - views.background).abs().mean())
    pred = alg.inverse_dynamics(torch.cat([enc(b.obs), enc(b.next_obs)], 1))
    torch.testing.assert_close(losses["smg_action_loss"], F.mse_loss(pred, b.action))
    fore_t, mask_t = alg.fore(ag.nets, views.consistency)
    torch.testing.assert_close(losses["smg_fore_loss"], (fore_t * mask_t - fore * mask).abs().mean())
    total = (losses["smg_recon_loss"] + losses["smg_mask_loss"] + 2 * losses["smg_back_loss"]
             + losses["smg_action_loss"] + 0.1 * losses["smg_fore_loss"])
    torch.testing.assert_close(losses["smg_aux_loss"], total)
    # the foreground target F(o) M(o) is a constant: L_fore's gradient is the one with sg on the clean side
    params = list(alg.fore_decoder.parameters())
    got = torch.autograd.grad(losses["smg_fore_loss"], params, retain_graph=True)
    stop = torch.autograd.grad(F.l1_loss(fore_t * mask_t, (fore * mask).detach()), params, retain_graph=True)
    both = torch.autograd.grad(F.l1_loss(fore_t * mask_t, fore * mask), params)
    for g, s in zip(got, stop):
        torch.testing.assert_close(g, s, rtol=1e-4, atol=1e-8)
    assert any(not torch.allclose(g, s, rtol=1e-3, atol=1e-7) for g, s in zip(got, both))


def test_mask_area_loss_starts_after_the_gate():
    ag = _agent()
    alg = ag.algorithm
    b = _batch(4)

    def aux_minus_mask(updates, transitions):
        alg.generator.manual_seed(0)
        alg.choice_generator.manual_seed(0)
        alg.critic_gradient(ag.critic_step(b.obs, b.action, torch.zeros(4, 1)))
        ag.num_updates = updates
        losses = alg.auxiliary_losses(aux_step(ag, b, num_transitions=transitions))
        rest = (losses["smg_recon_loss"] + 2 * losses["smg_back_loss"] + losses["smg_action_loss"]
                + 0.1 * losses["smg_fore_loss"])
        return float((losses["smg_aux_loss"] - rest).detach()), float(losses["smg_mask_loss"].detach()), \
            float(losses["smg_mask_active"])

    off = aux_minus_mask(1000, 5000)
    on = aux_minus_mask(1001, 0)
    assert abs(off[0]) < 1e-5 and off[2] == 0.0
    assert abs(on[0] - on[1]) < 1e-5 and on[1] > 0 and on[2] == 1.0
    alg.options.mask_gate = "env_steps"                                   # the option: the agent step
    assert aux_minus_mask(5000, 1000)[2] == 0.0 and aux_minus_mask(0, 1001)[2] == 1.0


def test_predictor_optimizer_covers_every_module_and_clips():
    ag = _agent()
    alg = ag.algorithm
    ids = {id(p) for p in alg.params}
    assert len(ids) == len(alg.params)
    assert {id(p) for p in ag.critic.encoder.parameters()} <= ids
    assert not {id(p) for p in list(ag.critic.Q.parameters()) + ag.actor_params} & ids
    for name in ("fore_head", "back_encoder", "fore_decoder", "back_decoder", "inverse_dynamics"):
        assert {id(p) for p in getattr(alg, name).parameters()} <= ids
    # the background branch has its own trunk and projection, a copy of the critic's at construction
    for p, q in zip(ag.critic.encoder.parameters(), alg.back_encoder.encoder.parameters()):
        assert torch.equal(p, q) and p is not q
    assert alg.optimizer.defaults["lr"] == 1e-3 and alg.optimizer is not ag.critic_optimizer
    inv = alg.inverse_dynamics[0].weight.detach()                          # orthogonal init: [1024, 2d]
    torch.testing.assert_close(inv.T @ inv, torch.eye(inv.shape[1]), atol=1e-4, rtol=0)
    rb = filled_replay()
    before = [p.detach().clone() for p in alg.back_encoder.parameters()]
    m = ag.update(rb)
    m = ag.update(rb)
    assert float(m["smg_aux_loss"]) > 0 and float(m["smg_mask_active"]) == 0.0
    assert any(not torch.equal(a, b) for a, b in zip(before, alg.back_encoder.parameters()))


@pytest.mark.parametrize("b", [5, 64])
def test_updates_run_at_any_batch_size(b):
    ag = _agent(batch_size=b)
    rb = filled_replay()
    for _ in range(2):
        m = ag.update(rb)
    assert np.isfinite(float(m["smg_aux_loss"])) and ag.algorithm.num_aux_updates == 1


def test_protocol_defaults():
    official = config_from_args(["--algorithm", "smg", "--preset", "cpu"])
    assert (official.batch_size, official.projection_dim) == (64, 256)
    dmcgb = config_from_args(["--algorithm", "smg", "--preset", "cpu", "--smg_protocol", "dmcgb"])
    assert (dmcgb.batch_size, dmcgb.projection_dim) == (128, 50)
    given = config_from_args(["--algorithm", "smg", "--preset", "paper", "--batch_size", "32", "--device", "cpu"])
    assert (given.batch_size, given.projection_dim) == (32, 256)


def test_evaluation_images_show_reconstruction_and_mask():
    ag = _agent()
    obs = torch.randint(0, 256, (2, *OBS), dtype=torch.uint8)
    images = ag.algorithm.evaluation_images(ag.nets, obs)
    assert set(images) == {"smg_observation", "smg_foreground", "smg_mask", "smg_background", "smg_reconstruction"}
    for v in images.values():
        assert v.shape == (2, 32, 32, 3) and v.dtype == np.uint8
    m = images["smg_mask"]
    assert np.array_equal(m[..., 0], m[..., 1])


def test_auxiliary_step_without_its_critic_step_fails_clearly():
    ag = _agent()
    with pytest.raises(RuntimeError, match="critic step"):
        ag.algorithm.auxiliary_update(aux_step(ag, _batch(4), filled_replay()))
