"""Guided backpropagation (Springenberg et al. 2015) through a critic, for SGQN's saliency maps.

Guided backprop is the gradient of an output with respect to the input, except that at every ReLU
the backward pass also drops negative gradients: delta_in = max(delta_out * 1[x > 0], 0). The switch
is temporary (a forward hook on each ``nn.ReLU`` module while ``guided_relus`` is active) and the
gradient is taken with ``torch.autograd.grad`` to the input alone, so no parameter's ``.grad`` is
touched and no higher-order graph is kept.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn


class GuidedReLU(torch.autograd.Function):
    """ReLU forward; backward ``max(grad * 1[x > 0], 0)``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.clamp_min(0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        return (grad * (out > 0)).clamp_min(0)


def _guided_output(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    # relu(relu(x)) = relu(x) and 1[relu(x) > 0] = 1[x > 0], so this is right for in-place ReLUs as well
    return GuidedReLU.apply(inputs[0])


@contextmanager
def guided_relus(model: nn.Module) -> Iterator[None]:
    """Within the block, every ``nn.ReLU`` of ``model`` back-propagates as a guided ReLU."""
    handles = [m.register_forward_hook(_guided_output) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def q1_guided_backprop(critic: nn.Module, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """Guided-backprop gradient of sum_b Q1(obs_b, action_b) with respect to ``obs`` (same shape).

    ``critic`` has an ``encoder`` and the twin heads ``Q`` (``cg2a_ext.rl.core.agent.networks.Critic``); the
    stacked heads run both, and only Q1's output is differentiated, so Q2 takes no part in the gradient.
    """
    x = obs.detach().requires_grad_(True)
    with torch.enable_grad(), guided_relus(critic):
        q1 = critic.Q(critic.encoder(x), action.detach())[0]
        (grad,) = torch.autograd.grad(q1.sum(), x)
    return grad
