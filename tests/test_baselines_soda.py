"""SODA's mechanics: crops, loss scale, momentum target, BatchNorm mode, optimizer, defaults."""
import copy

import pytest
import torch

from agent_support import A, OBS, batch, filled_replay, tiny_cfg
from cg2a_ext.rl.core.agent import make_agent
from cg2a_ext.rl.algorithms.soda import center_crop, random_crop, soda_loss
from cg2a_ext.rl.cli.options import config_from_args
from cg2a_ext.rl.config import ConfigError


def test_random_crop_draws_offsets_below_the_margin_shared_by_frames():
    h, size = 20, 4                                   # margin 16: offsets 0..15, as DMC-GB's 100 -> 84 crop
    x = torch.arange(2000 * 6 * h * h, dtype=torch.int64).reshape(2000, 6, h, h)
    out = random_crop(x, size, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2000, 6, size, size)
    top = (out[:, 0, 0, 0] - x[:, 0, 0, 0]) // h
    left = (out[:, 0, 0, 0] - x[:, 0, 0, 0]) % h
    assert set(top.tolist()) == set(range(16)) and set(left.tolist()) == set(range(16))
    for i in range(0, 2000, 97):                     # each sample is a window of its own frames at one offset
        t, l_ = int(top[i]), int(left[i])
        assert torch.equal(out[i], x[i, :, t:t + size, l_:l_ + size])
    u8 = torch.randint(0, 256, (3, 9, 100, 100), dtype=torch.uint8)
    assert random_crop(u8, 84).dtype == torch.uint8
    assert torch.equal(center_crop(u8, 84), u8[:, :, 8:92, 8:92])
    with pytest.raises(ValueError, match="crop size"):
        random_crop(u8, 100)


def test_soda_loss_is_elementwise_mse_of_normalised_vectors():
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(32, 100, generator=g), torch.randn(32, 100, generator=g)
    cos = torch.nn.functional.cosine_similarity(u.double(), v.double(), dim=1)
    expected = ((2 - 2 * cos) / 100).mean()
    assert torch.allclose(soda_loss(u, v).double(), expected, rtol=1e-5)
    assert torch.allclose(soda_loss(3 * u, 0.5 * v), soda_loss(u, v), rtol=1e-5)   # scale-free
    assert torch.allclose(soda_loss(u, u), torch.tensor(0.0), atol=1e-7)


def test_network_input_is_the_crop_and_the_policy_acts_on_the_centre():
    ag = make_agent(OBS, A, tiny_cfg("soda"), "cpu")               # 32 px frames, margin 16
    assert ag.obs_shape == (9, 16, 16)
    x = torch.rand(2, *OBS) * 255
    assert torch.equal(ag.algorithm.acting_view(x), x[:, :, 8:24, 8:24])
    obs_u8 = torch.randint(0, 256, (4, *OBS), dtype=torch.uint8)
    assert ag.preprocess(obs_u8).shape == (4, 9, 16, 16)
    assert ag.act(x[0].to(torch.uint8).numpy()).shape == (A,)
    shift = make_agent(OBS, A, tiny_cfg("soda", soda_crop="shift"), "cpu")
    assert shift.obs_shape == OBS and torch.equal(shift.algorithm.acting_view(x), x)
    assert shift.preprocess(obs_u8).shape == (4, *OBS)


def test_default_frames_are_rendered_larger_unless_given():
    paper = config_from_args(["--algorithm", "soda", "--preset", "paper", "--task", "walker_walk", "--device", "cpu"])
    assert paper.image_size == 100 and paper.options.crop == "random"
    cpu = config_from_args(["--algorithm", "soda", "--preset", "cpu", "--task", "walker_walk"])
    assert cpu.image_size == 48 + 16
    shift = config_from_args(["--algorithm", "soda", "--preset", "paper", "--soda_crop", "shift", "--device", "cpu"])
    assert shift.image_size == 84
    given = config_from_args(["--algorithm", "soda", "--preset", "paper", "--image_size", "90", "--device", "cpu"])
    assert given.image_size == 90
    drq = config_from_args(["--algorithm", "drq", "--preset", "paper", "--device", "cpu"])
    assert drq.image_size == 84
    with pytest.raises(ConfigError, match="soda_crop_margin"):
        tiny_cfg("soda", soda_crop_margin=32)
    with pytest.raises(ConfigError, match="soda_tau"):
        tiny_cfg("soda", soda_tau=0.0)


def test_views_use_independent_crops_and_augment_only_the_online_view():
    ag = make_agent(OBS, A, tiny_cfg("soda"), "cpu")
    alg = ag.algorithm
    obs_u8 = torch.randint(0, 256, (64, *OBS), dtype=torch.uint8)
    alg.generator.manual_seed(5)
    online, clean = alg.views(obs_u8)
    g = torch.Generator().manual_seed(5)
    crop1 = random_crop(obs_u8, 16, generator=g).float()
    expected_online = alg.augmentation(crop1, generator=g)[0]
    crop2 = random_crop(obs_u8, 16, generator=g).float()
    assert torch.equal(online, expected_online) and torch.equal(clean, crop2)
    assert not torch.equal(crop1, crop2)                        # two crops, not one shared
    assert not torch.equal(online, crop1)                      # the online view is overlaid


def test_optimizer_covers_trunk_projection_predictor_with_its_own_moments():
    ag = make_agent(OBS, A, tiny_cfg("soda"), "cpu")
    alg = ag.algorithm
    ids = {id(p) for p in alg.params}
    trunk = list(ag.critic.encoder.shared_cnn.parameters())
    assert all(id(p) in ids for p in trunk)
    assert all(id(p) in ids for m in (alg.online.projection, alg.online.predictor) for p in m.parameters())
    assert not ids & {id(p) for p in ag.critic.encoder.projection.parameters()}   # P_c is not trained by SODA
    assert not ids & {id(p) for p in ag.actor_params}
    assert alg.optimizer is not ag.critic_optimizer
    assert alg.optimizer.defaults["lr"] == 3e-4 and alg.optimizer.defaults["betas"] == (0.9, 0.999)
    # the projection g reads the flattened trunk output, not the critic's projection
    assert alg.online.projection[0].in_features == int(torch.tensor(ag.critic.encoder.shared_cnn.out_shape).prod())
    # target = copy of (f, g, h) at construction, with its own trunk
    for p, q in zip(alg.online.parameters(), alg.target.parameters()):
        assert torch.equal(p, q) and p is not q and not q.requires_grad


def test_target_moves_only_on_soda_steps_by_parameters_only():
    ag = make_agent(OBS, A, tiny_cfg("soda"), "cpu")
    alg = ag.algorithm
    rb = filled_replay()
    before = copy.deepcopy(alg.target.state_dict())
    ag.update(rb)                                               # update 1: no SODA step
    assert all(torch.equal(before[k], v) for k, v in alg.target.state_dict().items())
    assert alg.num_aux_updates == 0
    old_target = [p.detach().clone() for p in alg.target.parameters()]
    online_after = {}
    step = alg.optimizer.step

    def step_and_record(*a, **k):
        out = step(*a, **k)
        online_after["params"] = [p.detach().clone() for p in alg.online.parameters()]
        return out

    alg.optimizer.step = step_and_record
    m = ag.update(rb)                                           # update 2: SODA step, then the EMA
    assert alg.num_aux_updates == 1 and float(m["soda_loss"]) > 0
    for old, new, online in zip(old_target, alg.target.parameters(), online_after["params"]):
        torch.testing.assert_close(new, old + 0.005 * (online - old), rtol=0, atol=1e-7)
    # BatchNorm buffers are not averaged: the EMA alone leaves them as they are
    bn_online = alg.online.projection[1]
    bn_online.running_mean.add_(100.0)
    buffers = {k: v.clone() for k, v in alg.target.named_buffers()}
    alg.update_target()
    assert all(torch.equal(buffers[k], v) for k, v in alg.target.named_buffers())


def test_batchnorm_runs_on_batch_statistics_even_in_evaluation():
    ag = make_agent(OBS, A, tiny_cfg("soda"), "cpu")
    alg = ag.algorithm
    ag.train(False)                                             # as evaluation does
    bns = [m for br in (alg.online, alg.target) for m in br.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(bns) == 4 and all(m.training for m in bns)
    obs, _, _ = batch(16)
    views = (obs[:, :, :16, :16], obs[:, :, 8:24, 8:24])
    loss = alg.loss(*views)
    for m in bns:
        m.running_mean.fill_(1e3)
        m.running_var.fill_(1e-3)
    assert torch.allclose(alg.loss(*views), loss)


def test_soda_batch_comes_from_its_own_replay_draw():
    ag = make_agent(OBS, A, tiny_cfg("soda", soda_batch_size=24), "cpu")
    rb = filled_replay()
    sizes = []
    sample = rb.sample

    def spy(n, device=None):
        sizes.append(n)
        return sample(n, device=device)

    rb.sample = spy
    ag.update(rb)
    ag.update(rb)
    assert sizes == [8, 8, 24]                                  # critic batches, then the SODA draw
