"""The critic's twin Q heads stacked in one module: the same initial values and draws as two heads, the same
outputs and gradients up to float rounding, old checkpoints (separate heads) load, split handles it."""
from __future__ import annotations

import torch

from agent_support import A, OBS, filled_replay, small_agent_cfg
from cg2a_ext import per_group_grads
from cg2a_ext.rl.algorithms.base import critic_loss
from cg2a_ext.rl.core.agent import make_agent
from cg2a_ext.rl.core.agent.networks import (Actor, Encoder, Projection, QFunction, SharedCNN, TwinQ,
                                             build_networks)

SHAPE = dict(num_conv_layers=2, num_filters=8, num_stride2=1, projection_dim=16, hidden_dim=32)


def test_initial_values_and_draws_are_those_of_two_heads():
    torch.manual_seed(0)
    _, critic, target = build_networks(OBS, A, **SHAPE)
    after = torch.get_rng_state()
    torch.manual_seed(0)     # the construction before the stacking, step by step
    shared = SharedCNN(OBS, 2, 8, 1)
    Actor(Encoder(shared, Projection(shared.out_shape, 16)), A, 32)
    Encoder(shared, Projection(shared.out_shape, 16))
    heads = [QFunction(16, A, 32), QFunction(16, A, 32)]
    assert torch.equal(torch.get_rng_state(), after)
    for i, head in enumerate(heads, 1):
        for key, value in head.state_dict().items():
            assert torch.equal(critic.Q.head_state_dict(i)[key], value), (i, key)
            assert torch.equal(target.Q.head_state_dict(i)[key], value), (i, key)


def test_outputs_and_gradients_equal_two_separate_heads():
    torch.manual_seed(1)
    twin = TwinQ(16, A, 32).double()
    heads = []
    for i in (1, 2):
        head = QFunction(16, A, 32).double()
        head.load_state_dict(twin.head_state_dict(i))
        heads.append(head)
    h, a = torch.randn(5, 16, dtype=torch.float64), torch.randn(5, A, dtype=torch.float64)
    q1, q2 = twin(h, a)
    r1, r2 = heads[0](h, a), heads[1](h, a)
    torch.testing.assert_close(q1, r1, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(q2, r2, rtol=1e-12, atol=1e-12)
    (q1.square().sum() + 3 * q2.sum()).backward()
    (r1.square().sum() + 3 * r2.sum()).backward()
    for i, head in enumerate(heads, 1):
        for key, p in head.named_parameters():
            grads = TwinQ.head_state_dict(_GradView(twin), i)
            torch.testing.assert_close(grads[key], p.grad, rtol=1e-12, atol=1e-12)


class _GradView:
    """``twin`` with each parameter replaced by its .grad, for ``head_state_dict``."""

    def __init__(self, twin: TwinQ) -> None:
        self.hidden_dim = twin.hidden_dim
        for name in ("first", "hidden", "out"):
            layer = getattr(twin, name)
            setattr(self, name, type("G", (), {"weight": layer.weight.grad, "bias": layer.bias.grad})())


def test_a_state_with_separate_heads_loads():
    """Checkpoints written before the stacking: the critic's and target's heads as Q1.trunk..., Q2.trunk..., and
    the critic optimizer's moments per head."""
    cfg = small_agent_cfg(algorithm="drq")
    torch.manual_seed(0)
    agent = make_agent(OBS, A, cfg, "cpu")
    replay = filled_replay()
    for _ in range(2):
        agent.update(replay)
    state = agent.state_dict()
    old = dict(state)
    for name in ("critic", "critic_target"):
        net = getattr(agent, name)
        old[name] = {k: v for k, v in state[name].items() if not k.startswith("Q.")}
        for i in (1, 2):
            old[name].update({f"Q{i}.{k}": v.clone() for k, v in net.Q.head_state_dict(i).items()})
    opt = state["critic_optimizer"]
    n_enc = len(agent.critic_params) - 6
    moments = {}
    for j in range(6):
        s = opt["state"][n_enc + j]
        split = (lambda t: t.chunk(2)) if j < 2 else (lambda t: t.unbind(0))
        parts = {k: split(v) if k in ("exp_avg", "exp_avg_sq") else (v, v) for k, v in s.items()}
        moments[n_enc + j] = {k: v[0].clone() for k, v in parts.items()}
        moments[n_enc + 6 + j] = {k: v[1].clone() for k, v in parts.items()}
    old["critic_optimizer"] = {"state": {**{i: opt["state"][i] for i in range(n_enc)}, **moments},
                               "param_groups": [{**opt["param_groups"][0], "params": list(range(n_enc + 12))}]}
    torch.manual_seed(5)
    fresh = make_agent(OBS, A, cfg, "cpu")
    fresh.load_state_dict(old)
    for a, b in zip(agent.critic.state_dict().values(), fresh.critic.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(agent.critic_target.state_dict().values(), fresh.critic_target.state_dict().values()):
        assert torch.equal(a, b)
    sa, sb = agent.critic_optimizer.state_dict()["state"], fresh.critic_optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for key in sa[i]:
            assert torch.equal(sa[i][key], sb[i][key]), (i, key)


def test_split_per_loss_gradients_of_the_stacked_heads_equal_the_loop():
    torch.manual_seed(0)
    _, critic, _ = build_networks(OBS, A, **SHAPE)
    critic.double()
    params = [p for p in critic.parameters() if p.requires_grad]
    g = torch.Generator().manual_seed(0)
    views = torch.randint(0, 256, (3, 4, *OBS), generator=g).double()
    action, target = torch.rand(4, A, generator=g, dtype=torch.float64), torch.randn(4, 1, generator=g,
                                                                                       dtype=torch.float64)
    split, split_losses = per_group_grads(critic, critic_loss, (views,), (action, target), params=params,
                                          method="split")
    loop, loop_losses = per_group_grads(critic, critic_loss, (views,), (action, target), params=params,
                                        method="loop")
    torch.testing.assert_close(split_losses, loop_losses, rtol=1e-12, atol=1e-12)
    for a, b in zip(split, loop):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
