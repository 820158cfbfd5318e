"""CG2A (the high-level aggregator) and per_group_grads (K per-loss gradients in
one batched backward)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cg2a_ext import CG2A, per_group_grads, reference


def test_gamma_is_drawn_in_range_and_reproducible():
    agg = CG2A(generator=torch.Generator().manual_seed(0))
    draws = [agg.draw_gamma() for _ in range(200)]
    assert all(0.22 <= d <= 0.28 for d in draws)
    assert max(draws) - min(draws) > 0.04  # spread over the interval
    again = CG2A(generator=torch.Generator().manual_seed(0))
    assert [again.draw_gamma() for _ in range(200)] == draws
    assert CG2A(alpha=0.3, beta=0.3).draw_gamma() == 0.3


@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_call_uses_drawn_gamma(backend):
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(4, 30, dtype=torch.float64, generator=gen), torch.randn(4, 2, 3, dtype=torch.float64, generator=gen)]
    agg = CG2A(generator=torch.Generator().manual_seed(5), backend=backend)
    result = agg(grads)
    expected = reference.aggregate(grads, result.gamma)
    for a, e in zip(result.grads, expected.grads):
        torch.testing.assert_close(a, e)
    assert 0.22 <= result.gamma <= 0.28


def test_apply_writes_parameter_grads():
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    params = list(net.parameters())
    grads = [torch.randn(3, *p.shape, dtype=torch.float64) for p in params]
    result = CG2A(alpha=0.25, beta=0.25).apply_(params, grads)
    expected = reference.aggregate(grads, 0.25)
    for p, e, r in zip(params, expected.grads, result.grads):
        assert r is p.grad
        torch.testing.assert_close(p.grad, e)


@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_apply_fills_fresh_grads_whole_and_leaves_none_behind_when_it_raises(backend):
    """Fresh .grad are allocated without a zero fill (the aggregate writes every element): filled with NaN
    beforehand by the allocator, they must come out equal to the reference; a refused aggregate leaves them None."""
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    params = list(net.parameters())
    grads = [torch.randn(3, *p.shape, dtype=torch.float64) for p in params]
    agg = CG2A(alpha=0.25, beta=0.25, backend=backend)
    real_empty_like = torch.empty_like
    try:
        torch.empty_like = lambda t, **kw: real_empty_like(t, **kw).fill_(float("nan"))   # garbage, visibly
        agg.apply_(params, grads)
    finally:
        torch.empty_like = real_empty_like
    for p, e in zip(params, reference.aggregate(grads, 0.25).grads):
        torch.testing.assert_close(p.grad, e)
    for p in params:
        p.grad = None
    grads[1][0, 0] = float("nan")
    with pytest.raises(FloatingPointError):
        agg.apply_(params, grads)
    assert all(p.grad is None for p in params)


def test_ablation_switches():
    gen = torch.Generator().manual_seed(2)
    grads = [torch.randn(3, 50, dtype=torch.float64, generator=gen)]
    plain = CG2A(gas=False, sgs=False)(grads)
    torch.testing.assert_close(plain.grads[0], grads[0].mean(0))  # AC: the plain mean
    gas_only = CG2A(sgs=False)(grads)
    torch.testing.assert_close(gas_only.grads[0], (gas_only.weights[:, None] * grads[0]).sum(0))


def test_bad_options():
    with pytest.raises(ValueError, match="alpha <= beta"):
        CG2A(alpha=0.5, beta=0.1)
    with pytest.raises(ValueError, match="unknown mask"):
        CG2A(mask="all")
    with pytest.raises(ValueError, match="unknown nonfinite"):
        CG2A(nonfinite="ignore")
    with pytest.raises(ValueError, match="unknown backend"):
        CG2A(backend="gpu")


class TinyCritic(nn.Module):
    """Conv encoder + two heads, the shape of a DMC-GB critic in miniature."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Conv2d(4, 4, 3))
        self.norm = nn.LayerNorm(16)
        self.proj = nn.Linear(4 * 3 * 3, 16)
        self.q1 = nn.Linear(16 + 2, 1)
        self.q2 = nn.Linear(16 + 2, 1)

    def forward(self, obs, action):
        h = torch.tanh(self.norm(self.proj(self.conv(obs).flatten(1))))
        x = torch.cat([h, action], dim=-1)
        return self.q1(x), self.q2(x)


def critic_loss(model, obs, action, target):
    q1, q2 = model(obs, action)
    return ((q1 - target) ** 2).mean() + ((q2 - target) ** 2).mean()


@pytest.mark.parametrize("method", ["vmap", "loop", "split", "auto"])
@pytest.mark.parametrize("k", [1, 4])
def test_per_group_grads_equal_separate_backward_passes(k, method):
    torch.manual_seed(k)
    critic = TinyCritic().double()
    obs = torch.randn(k, 5, 3, 11, 11, dtype=torch.float64)
    action = torch.randn(5, 2, dtype=torch.float64)
    target = torch.randn(5, 1, dtype=torch.float64)
    grads, losses = per_group_grads(critic, critic_loss, (obs,), (action, target), method=method)
    params = list(critic.parameters())
    assert len(grads) == len(params)
    for i in range(k):
        loss = critic_loss(critic, obs[i], action, target)
        expected = torch.autograd.grad(loss, params)
        torch.testing.assert_close(losses[i], loss.detach())
        for g, e in zip(grads, expected):
            assert g.shape == (k, *e.shape)
            torch.testing.assert_close(g[i], e)


@pytest.mark.parametrize("method", ["vmap", "loop", "split"])
def test_per_group_grads_subset_of_params(method):
    critic = TinyCritic().double()
    obs = torch.randn(2, 3, 3, 11, 11, dtype=torch.float64)
    action, target = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 1, dtype=torch.float64)
    heads = list(critic.q1.parameters())
    grads, _ = per_group_grads(critic, critic_loss, (obs,), (action, target), params=heads, method=method)
    expected = torch.autograd.grad(critic_loss(critic, obs[1], action, target), heads)
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g[1], e)
    with pytest.raises(ValueError, match="not parameters of the module"):
        per_group_grads(critic, critic_loss, (obs,), (action, target), params=[nn.Parameter(torch.zeros(1))])
    with pytest.raises(ValueError, match="unknown method"):
        per_group_grads(critic, critic_loss, (obs,), (action, target), method="fast")
    with pytest.raises(ValueError, match="expected K = 2"):
        per_group_grads(critic, critic_loss, (obs, torch.zeros(3, 1)), ())


@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_one_result_type_with_the_drawn_gamma(backend):
    from cg2a_ext import AggregateResult

    gen = torch.Generator().manual_seed(3)
    net = nn.Linear(3, 2).double()
    params = list(net.parameters())
    grads = [torch.randn(4, *p.shape, dtype=torch.float64, generator=gen) for p in params]
    result = CG2A(generator=torch.Generator().manual_seed(1), backend=backend).apply_(params, grads)
    assert isinstance(result, AggregateResult)
    assert 0.22 <= result.gamma <= 0.28
    # the fields the trainer reads
    assert result.gram.shape == (4, 4) and result.weights.shape == (4,)
    assert not bool(result.nonfinite) and not bool(result.zeroed)
    assert 0.0 <= float(result.conflict_fraction) <= 1.0
    expected = reference.aggregate(grads, result.gamma)
    for p, e in zip(params, expected.grads):
        torch.testing.assert_close(p.grad, e)


@pytest.mark.parametrize("backend", ["reference", "auto"])
@pytest.mark.parametrize("alpha, beta, name", [
    (1.5, 1.5, "alpha"), (float("inf"), float("inf"), "alpha"), (0.2, 1.5, "beta"),
    (0.2, float("inf"), "beta"), (float("nan"), 0.3, "alpha"), (0.2, float("nan"), "beta"), (-0.1, 0.3, "alpha"),
])
def test_gamma_range_outside_0_1_is_refused_at_construction(backend, alpha, beta, name):
    with pytest.raises(ValueError, match=rf"CG2A: {name} = .*\[0, 1\]"):
        CG2A(alpha=alpha, beta=beta, backend=backend)


def test_apply_writes_into_grad_buffers_that_do_not_require_grad():
    model = nn.Linear(3, 2)
    params = list(model.parameters())
    grads = [torch.randn(2, *p.shape) for p in params]
    CG2A(backend="reference").apply_(params, grads)
    assert all(p.grad is not None and not p.grad.requires_grad for p in params)


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_out_that_requires_grad_is_refused(backend):
    param = nn.Parameter(torch.zeros(4))
    with pytest.raises(ValueError, match=r"out\[0\] requires grad.*\.grad"):
        CG2A(backend=backend)([torch.randn(2, 4)], out=[param])
    with torch.no_grad(), pytest.raises(ValueError, match=r"out\[0\] requires grad"):
        CG2A(backend=backend)([torch.randn(2, 4)], out=[param])
    assert param.abs().sum().item() == 0.0
