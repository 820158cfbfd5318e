"""per_group_grads(method="split"): one backward over the K*B batch, per-group weight-gradient steps.

Checked against the loop method (K separate backward passes, the plain-PyTorch reference) in float64
on random networks of every layer option split handles; under bfloat16 autocast to the agreement
"auto" asks for; every refusal names its cause; and "auto" never keeps split for a model that mixes
the samples of a batch, however fast split looks."""
from __future__ import annotations

import sys
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from cg2a_ext import per_group_grads
from cg2a_ext.per_group_grads import _AUTO_CHOICE, SPLIT_AGREEMENT_RTOL, _agree

pgg = sys.modules["cg2a_ext.per_group_grads"]   # the package attribute is the function


def assert_same(a, b, rtol=1e-10, atol=1e-12):
    (ga, la), (gb, lb) = a, b
    torch.testing.assert_close(la, lb, rtol=rtol, atol=atol)
    for x, y in zip(ga, gb, strict=True):
        assert x.shape == y.shape
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol)


class RandomNet(nn.Module):
    """Conv2d -> ReLU -> Conv2d -> flatten -> Linear -> LayerNorm -> Linear (applied twice: a shared
    layer) on per-token features [B, T, D]; options drawn by the test."""

    def __init__(self, channels, size, conv1, conv2, hidden, tokens, ln_affine, ln_bias, bias, extra_input):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, conv1["out"], 3, stride=conv1["stride"], padding=conv1["padding"],
                               dilation=conv1["dilation"], bias=bias)
        self.conv2 = nn.Conv2d(conv1["out"], conv2["out"], 3, padding=1, groups=conv2["groups"], bias=not bias)
        with torch.no_grad():
            n = self.conv2(self.conv1(torch.zeros(1, channels, size, size))).numel()
        self.tokens = tokens
        self.fc = nn.Linear(n // tokens + extra_input, hidden, bias=bias)
        self.norm = nn.LayerNorm(hidden, elementwise_affine=ln_affine, bias=ln_bias)
        self.shared = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, 1)
        self.unused = nn.Linear(3, 3)

    def forward(self, x, extra=None, scale=1.0):
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        h = h.flatten(1).reshape(x.shape[0], self.tokens, -1)                     # [B, T, D]
        if extra is not None:
            h = torch.cat([h, extra[:, None, :].expand(-1, self.tokens, -1)], -1)
        h = torch.tanh(self.norm(self.fc(h)))
        h = torch.relu(self.shared(torch.relu(self.shared(h))))
        return scale * self.head(h).mean(1)


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(1, 3), b=st.integers(1, 3), size=st.integers(7, 10),
    stride=st.integers(1, 2), padding=st.integers(0, 1), dilation=st.integers(1, 2),
    groups=st.sampled_from([1, 2]), tokens=st.sampled_from([1, 2]),
    ln_affine=st.booleans(), ln_bias=st.booleans(), bias=st.booleans(), extra=st.booleans(),
    subset=st.booleans(), seed=st.integers(0, 2**16),
)
def test_split_equals_the_loop_on_random_networks(k, b, size, stride, padding, dilation, groups, tokens,
                                                  ln_affine, ln_bias, bias, extra, subset, seed):
    torch.manual_seed(seed)
    net = RandomNet(3, size, dict(out=4, stride=stride, padding=padding, dilation=dilation), dict(out=4, groups=groups),
                    hidden=6, tokens=tokens, ln_affine=ln_affine, ln_bias=ln_bias, bias=bias,
                    extra_input=2 if extra else 0).double()
    obs = torch.randn(k, b, 3, size, size, dtype=torch.float64)
    shared_extra = torch.randn(b, 2, dtype=torch.float64) if extra else None
    target = torch.randn(b, 1, dtype=torch.float64)
    params = [p for i, p in enumerate(net.parameters()) if not subset or i % 2 == 0]

    def loss(model, x, y):
        out = model(x, shared_extra, scale=2.0) if extra else model(x, scale=2.0)
        return ((out - y) ** 2).mean()

    reference = per_group_grads(net, loss, (obs,), (target,), params=params, method="loop")
    split = per_group_grads(net, loss, (obs,), (target,), params=params, method="split")
    assert_same(split, reference)
    # the layer never called gets zero gradients, as in the loop
    for p, g in zip(params, split[0]):
        if any(p is q for q in net.unused.parameters()):
            assert not g.any()


def test_split_takes_two_group_inputs_and_keyword_arguments():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 1)).double()

    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x, *, offset):
            return self.net(x + offset)

    model = TwoInputs()
    xs, offsets = torch.randn(3, 2, 5, dtype=torch.float64), torch.randn(3, 2, 5, dtype=torch.float64)

    def loss(m, x, offset):
        return m(x, offset=offset).pow(2).sum()

    assert_same(per_group_grads(model, loss, (xs, offsets), method="split"),
                per_group_grads(model, loss, (xs, offsets), method="loop"))


def package_critic(autocast=None, channels_last=False):
    from cg2a_ext.rl.core.agent.networks import build_networks, set_autocast

    torch.manual_seed(0)
    _, critic, _ = build_networks((9, 24, 24), 2, num_conv_layers=3, num_filters=8, projection_dim=8, hidden_dim=16)
    if channels_last:
        critic = critic.to(memory_format=torch.channels_last)
    set_autocast([critic], autocast)
    return critic


def critic_batch(k=3, b=16):
    gen = torch.Generator().manual_seed(1)
    obs = torch.rand(k, b, 9, 24, 24, generator=gen) * 255
    return obs, torch.rand(b, 2, generator=gen) * 2 - 1, torch.randn(b, 1, generator=gen)


def critic_loss(model, obs, action, target):
    q1, q2 = model(obs, action)
    return ((q1 - target) ** 2).mean() + ((q2 - target) ** 2).mean()


def test_split_agrees_with_the_loop_under_bfloat16_autocast():
    """The trainer's bf16 precision: both methods compute in bfloat16, in different batch shapes; they must
    agree to the tolerance "auto" asks before it keeps split."""
    critic = package_critic(autocast=torch.bfloat16, channels_last=True)
    obs, action, target = critic_batch()
    loop = per_group_grads(critic, critic_loss, (obs,), (action, target), method="loop")
    split = per_group_grads(critic, critic_loss, (obs,), (action, target), method="split")
    assert all(g.dtype == torch.float32 for g in split[0])
    assert _agree(split, loop, SPLIT_AGREEMENT_RTOL)
    # and the comparison is not vacuous: bf16 changed the numbers
    fp32 = per_group_grads(package_critic(channels_last=True), critic_loss, (obs,), (action, target), method="loop")
    assert not _agree(loop, fp32, 1e-6)


# ------------------------------------------------------------------ refusals

class WithBatchNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.bn = nn.Linear(3, 3), nn.BatchNorm1d(3)

    def forward(self, x):
        return self.bn(self.fc(x))


class BareParameter(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.scale = nn.Linear(3, 3), nn.Parameter(torch.ones(3))

    def forward(self, x):
        return self.fc(x) * self.scale


class InPlaceAfterLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(x).relu_()


def _mean_loss(model, x, mode=0):
    return model(x).pow(2).mean()


@pytest.mark.parametrize("model, loss, match", [
    (WithBatchNorm(), _mean_loss, "BatchNorm1d.*mixes the samples"),
    (BareParameter(), _mean_loss, "'<root>' \\(BareParameter\\).*Linear, Conv2d, LayerNorm layers only"),
    (InPlaceAfterLinear(), _mean_loss, "Linear 'fc'.*modified in place"),
    (nn.Linear(3, 3), lambda m, x: m(x).sum() + m(x).sum(), "calls the model more than once"),
    (nn.Linear(3, 3), lambda m, x: x.sum(), "without calling the model"),
    (nn.Linear(3, 3), lambda m, x: m(x + torch.randn_like(x)).sum(), "other arguments the second time"),
    (nn.Linear(3, 3), lambda m, x: m(x[0]).sum(), "failed on the groups' arguments concatenated"),
])
def test_split_refuses_what_it_cannot_compute_exactly(model, loss, match):
    x = torch.randn(2, 4, 3)
    with pytest.raises(ValueError, match=match):
        per_group_grads(model, loss, (x,), method="split")
    # "auto" leaves split out and still answers, equal to the loop (when the loop can run at all)
    if "calls the model" in match or "without" in match or "second time" in match:
        return
    _AUTO_CHOICE.clear()
    auto = per_group_grads(model, loss, (x,), method="auto")
    assert list(_AUTO_CHOICE.values()) != ["split"]
    assert_same(auto, per_group_grads(model, loss, (x,), method="loop"), rtol=1e-5, atol=1e-6)


def test_split_refuses_a_non_tensor_argument_that_differs_between_groups():
    model = nn.Linear(3, 1)
    calls = iter(range(100))

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = model

        def forward(self, x, scale):
            return self.fc(x) * scale

    with pytest.raises(ValueError, match="argument #1 is not a tensor and differs between groups"):
        per_group_grads(Scaled(), lambda m, x: m(x, float(next(calls))).sum(), (torch.randn(2, 4, 3),), method="split")


def test_split_refuses_a_compiled_submodule():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))
    model[0].compile()      # marks it; nothing compiles until it is called
    with pytest.raises(ValueError, match="submodule '0' is compiled"):
        per_group_grads(model, lambda m, x: m(x).sum(), (torch.randn(2, 4, 3),), method="split")


# ------------------------------------------------------------------ auto's guard

class MixesSamples(nn.Module):
    """Only Linear layers, but the forward subtracts the batch mean: the samples interact, which no
    layer type shows. Split's per-group gradients are then wrong, and auto must notice."""

    def __init__(self):
        super().__init__()
        self.fc, self.head = nn.Linear(4, 8), nn.Linear(8, 1)

    def forward(self, x):
        h = torch.tanh(self.fc(x))
        return self.head(h - h.mean(0, keepdim=True))


class Separable(MixesSamples):
    def forward(self, x):
        return self.head(torch.tanh(self.fc(x)))


@pytest.mark.parametrize("model_type, split_kept", [(MixesSamples, False), (Separable, True)])
def test_auto_keeps_split_only_when_it_agrees_with_the_loop(monkeypatch, model_type, split_kept):
    torch.manual_seed(0)
    model = model_type()
    x = torch.randn(3, 6, 4)
    loss = lambda m, xs: m(xs).pow(2).mean()    # noqa: E731

    def slowed(real):
        def run(*args, **kwargs):
            time.sleep(0.05)    # split looks fastest by far
            return real(*args, **kwargs)
        return run

    monkeypatch.setattr(pgg, "_loop", slowed(pgg._loop))
    monkeypatch.setattr(pgg, "_vmap", slowed(pgg._vmap))
    _AUTO_CHOICE.clear()
    result = per_group_grads(model, loss, (x,), method="auto")
    (choice,) = _AUTO_CHOICE.values()
    assert (choice == "split") == split_kept
    assert_same(result, per_group_grads(model, loss, (x,), method="loop"), rtol=1e-5, atol=1e-6)
    if not split_kept:   # the guard is what decided: split alone gives other numbers
        assert not _agree(per_group_grads(model, loss, (x,), method="split"), result, SPLIT_AGREEMENT_RTOL)
