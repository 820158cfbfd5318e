"""per_group_grads on the package's own DMC-GB critic, in every layout the
trainer uses (channels-last input and channels-last weights included): vmap ==
loop == split == K separate backward passes, in float64; "auto" measures once
per device and model signature; "split" on every layer option it handles, and
its refusals."""
from __future__ import annotations

import copy

import pytest
import torch

from cg2a_ext import per_group_grads
from cg2a_ext.per_group_grads import _AUTO_CHOICE

K, B, ACTIONS = 3, 4, 2


def package_critic():
    from cg2a_ext.rl.core.agent.networks import build_networks

    torch.manual_seed(0)
    _, critic, _ = build_networks((9, 24, 24), ACTIONS, num_conv_layers=2, num_filters=4,
                                  projection_dim=8, hidden_dim=16)
    return critic.double()


def critic_loss(model, obs, action, target):
    q1, q2 = model(obs, action)
    return ((q1 - target) ** 2).mean() + ((q2 - target) ** 2).mean()


def inputs(layout: str):
    gen = torch.Generator().manual_seed(1)
    obs = torch.rand(K, B, 9, 24, 24, generator=gen, dtype=torch.float64) * 255
    if layout in ("channels_last_input", "channels_last_both"):
        obs = obs.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (K, B))
    action = torch.rand(B, ACTIONS, generator=gen, dtype=torch.float64) * 2 - 1
    target = torch.randn(B, 1, generator=gen, dtype=torch.float64)
    return obs, action, target


LAYOUTS = ["contiguous", "channels_last_input", "channels_last_weights", "channels_last_both"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_vmap_loop_and_separate_passes_agree_on_the_package_critic(layout):
    critic = package_critic()
    if layout in ("channels_last_weights", "channels_last_both"):
        critic = copy.deepcopy(critic).to(memory_format=torch.channels_last)
    obs, action, target = inputs(layout)
    params = [p for p in critic.parameters() if p.requires_grad]
    separate = [torch.autograd.grad(critic_loss(critic, obs[i], action, target), params) for i in range(K)]
    for method in ("vmap", "loop", "split", "auto"):
        grads, losses = per_group_grads(critic, critic_loss, (obs,), (action, target), method=method)
        assert len(grads) == len(params)
        for i in range(K):
            torch.testing.assert_close(losses[i], critic_loss(critic, obs[i], action, target).detach())
            for g, e in zip(grads, separate[i]):
                assert g.shape == (K, *e.shape)
                torch.testing.assert_close(g[i], e, rtol=1e-10, atol=1e-12)


def test_auto_measures_once_per_signature_and_reuses_the_choice(monkeypatch):
    critic = package_critic()
    obs, action, target = inputs("contiguous")
    _AUTO_CHOICE.clear()
    calls = {"vmap": 0, "loop": 0, "split": 0}
    import sys

    module = sys.modules["cg2a_ext.per_group_grads"]  # the package attribute is the function

    real_vmap, real_loop, real_split = module._vmap, module._loop, module._split

    def counted_vmap(*args, **kwargs):
        calls["vmap"] += 1
        return real_vmap(*args, **kwargs)

    def counted_loop(*args, **kwargs):
        calls["loop"] += 1
        return real_loop(*args, **kwargs)

    def counted_split(*args, **kwargs):
        calls["split"] += 1
        return real_split(*args, **kwargs)

    monkeypatch.setattr(module, "_split", counted_split)
    monkeypatch.setattr(module, "_vmap", counted_vmap)
    monkeypatch.setattr(module, "_loop", counted_loop)
    first, _ = per_group_grads(critic, critic_loss, (obs,), (action, target), method="auto")
    assert calls == {"vmap": 2, "loop": 2, "split": 2}  # warm-up and one timed run of each
    assert len(_AUTO_CHOICE) == 1
    (choice,) = _AUTO_CHOICE.values()
    assert choice in ("vmap", "loop", "split")
    again, _ = per_group_grads(critic, critic_loss, (obs,), (action, target), method="auto")
    assert calls[choice] == 3 and sum(calls.values()) == 7  # the cached choice, run once
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b)
    # another signature (batch size) is measured again
    per_group_grads(critic, critic_loss, (obs[:, :2],), (action[:2], target[:2]), method="auto")
    assert len(_AUTO_CHOICE) == 2


class ChannelsLastRequest(torch.nn.Module):
    """A model that asks for channels-last inputs itself (as oneDNN-tuned trunks do)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.head = torch.nn.Linear(4 * 6 * 6, 1)

    def forward(self, x):
        x = x.contiguous(memory_format=torch.channels_last)
        y = self.conv(x).to(memory_format=torch.channels_last).clone(memory_format=torch.channels_last)
        return self.head(torch.relu(y).flatten(1))


def test_vmap_serves_memory_format_requests_of_the_model():
    """vmap alone refuses channels-last requests (NYI); per_group_grads serves
    them as contiguous ones, and the gradients equal the loop's and K
    separate backward passes."""
    torch.manual_seed(2)
    model = ChannelsLastRequest().double()
    obs = torch.randn(K, B, 3, 8, 8, dtype=torch.float64)
    target = torch.randn(B, 1, dtype=torch.float64)

    def loss(m, x, y):
        return ((m(x) - y) ** 2).mean()

    params = list(model.parameters())
    vmapped, _ = per_group_grads(model, loss, (obs,), (target,), method="vmap")
    looped, _ = per_group_grads(model, loss, (obs,), (target,), method="loop")
    for i in range(K):
        expected = torch.autograd.grad(loss(model, obs[i], target), params)
        for v, lp, e in zip(vmapped, looped, expected):
            torch.testing.assert_close(v[i], e, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(lp[i], e, rtol=1e-10, atol=1e-12)
    # without the hook, plain vmap refuses the same model: the test exercises it
    from torch.func import functional_call, grad, vmap

    variables = {n: p.detach() for n, p in model.named_parameters()}
    with pytest.raises(RuntimeError, match="memory_format"):
        vmap(grad(lambda v, x: loss(lambda *a: functional_call(model, v, a), x, target)), in_dims=(None, 0))(variables, obs)
