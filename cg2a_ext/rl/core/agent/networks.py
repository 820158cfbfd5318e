"""DMC-GB networks for SAC from pixels (method doc, section 6).

Encoder: a shared convolutional trunk (``SharedCNN``: 3x3 convs of
``num_filters`` channels, the first ``num_stride2`` with stride 2, ReLU between
them, no padding) and, per network, a projection ``Linear -> LayerNorm -> tanh``.
The trunk is owned (and trained) by the critic; the actor reuses it with its
output detached. Heads are MLPs with two hidden layers. Linear layers use
orthogonal init, convolutions delta-orthogonal init (as in DMC-GB / SAC-AE).
"""
from __future__ import annotations

import math
from contextlib import nullcontext

import torch
import torch.nn as nn
import torch.nn.functional as F


def weight_init(m: nn.Module) -> None:
    """Orthogonal init for Linear, delta-orthogonal for Conv2d (biases zero)."""
    if isinstance(m, nn.Linear):
        nn.init.orthogonal_(m.weight.data)
        if m.bias is not None:
            m.bias.data.fill_(0.0)
    elif isinstance(m, nn.Conv2d):
        assert m.weight.size(2) == m.weight.size(3)
        m.weight.data.fill_(0.0)
        if m.bias is not None:
            m.bias.data.fill_(0.0)
        mid = m.weight.size(2) // 2
        gain = nn.init.calculate_gain("relu")
        nn.init.orthogonal_(m.weight.data[:, :, mid, mid], gain)


class AutocastForward:
    """Networks whose ``forward`` may run under autocast (``--precision bf16``).

    ``autocast_dtype`` None (the default) runs the plain float path, op for op. A dtype runs the
    forward under ``torch.autocast`` with it, and the outputs come back as float32 when this
    forward opened the autocast region (parameters, gradients and the losses stay float32).
    """

    autocast_dtype: torch.dtype | None = None

    def _autocast(self, x: torch.Tensor):
        """(context, opened): the autocast context for this forward, and whether it opens a region."""
        if self.autocast_dtype is None or torch.is_autocast_enabled(x.device.type):
            return nullcontext(), False
        return torch.autocast(x.device.type, dtype=self.autocast_dtype), True


def _as_float32(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def set_autocast(modules, dtype: torch.dtype | None) -> None:
    """Set ``autocast_dtype`` on every :class:`AutocastForward` submodule of ``modules``."""
    for module in modules:
        for m in module.modules():
            if isinstance(m, AutocastForward):
                m.autocast_dtype = dtype


class SharedCNN(AutocastForward, nn.Module):
    """Convolutional trunk: pixels in [0, 255], scaled to [0, 1] (x / 255, as DMC-GB) -> feature map."""

    def __init__(self, obs_shape, num_layers: int = 11, num_filters: int = 32, num_stride2: int = 1):
        super().__init__()
        assert len(obs_shape) == 3 and num_layers >= 1 and 1 <= num_stride2 <= num_layers
        layers: list[nn.Module] = [nn.Conv2d(obs_shape[0], num_filters, 3, stride=2)]
        for i in range(1, num_layers):
            layers.append(nn.ReLU())
            layers.append(nn.Conv2d(num_filters, num_filters, 3, stride=2 if i < num_stride2 else 1))
        self.layers = nn.Sequential(*layers)
        with torch.no_grad():
            self.out_shape = tuple(self.layers(torch.zeros(1, *obs_shape)).shape[1:])
        self.apply(weight_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x / 255 as DMC-GB's SharedCNN (pixels in [0, 1], no centring)
        x = x / 255.0
        # No layout conversion here (a memory-format copy is unsupported inside vmap): the convolutions
        # run channels-last when their weights are (SACAgent converts them), whatever the input's layout.
        context, opened = self._autocast(x)
        with context:
            y = self.layers(x)
        return _as_float32(y) if opened else y


class Projection(nn.Module):
    """Flatten -> Linear -> LayerNorm -> tanh."""

    def __init__(self, in_shape, out_dim: int):
        super().__init__()
        self.out_dim = out_dim
        self.projection = nn.Sequential(
            nn.Linear(math.prod(in_shape), out_dim), nn.LayerNorm(out_dim), nn.Tanh()
        )
        self.apply(weight_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        linear, norm, tanh = self.projection
        # LayerNorm in float32 also under bf16 autocast (the statistics want it, and its vmap backward
        # fails on a bfloat16 input with float32 weights); a no-op on the float32 path
        return tanh(norm(_as_float32(linear(x.flatten(1)))))


class Encoder(nn.Module):
    """Shared trunk + own projection; ``detach`` stops gradients into the trunk.

    ``trunk``: the trunk's output for ``x`` when the caller already has it (the
    actor update feeds one detached trunk pass to both the actor and the critic).
    """

    def __init__(self, shared_cnn: SharedCNN, projection: Projection):
        super().__init__()
        self.shared_cnn = shared_cnn
        self.projection = projection
        self.out_dim = projection.out_dim

    def forward(self, x: torch.Tensor, detach: bool = False, trunk: torch.Tensor | None = None) -> torch.Tensor:
        h = self.shared_cnn(x) if trunk is None else trunk
        if detach:
            h = h.detach()
        return self.projection(h)


def mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=False),
        nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=False),
        nn.Linear(hidden_dim, out_dim),
    )


def _gaussian_logprob(noise: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    residual = (-0.5 * noise.pow(2) - log_std).sum(-1, keepdim=True)
    return residual - 0.5 * math.log(2 * math.pi) * noise.size(-1)


class Actor(AutocastForward, nn.Module):
    """Squashed-Gaussian policy on the (detached-trunk) encoder features."""

    def __init__(self, encoder: Encoder, action_dim: int, hidden_dim: int,
                 log_std_min: float = -10.0, log_std_max: float = 2.0):
        super().__init__()
        self.encoder = encoder
        self.log_std_min = log_std_min
        self.log_std_max = log_std_max
        self.mlp = mlp(encoder.out_dim, hidden_dim, 2 * action_dim)
        self.mlp.apply(weight_init)

    def own_parameters(self):
        """Parameters trained by the actor loss (projection + MLP, not the trunk)."""
        return list(self.encoder.projection.parameters()) + list(self.mlp.parameters())

    def forward(self, obs, compute_pi: bool = True, compute_log_pi: bool = True,
                detach: bool = True, generator: torch.Generator | None = None, trunk: torch.Tensor | None = None):
        context, opened = self._autocast(obs)
        with context:
            out = self.mlp(self.encoder(obs, detach=detach, trunk=trunk))
        if opened:   # the Gaussian's sampling and log-probabilities stay in float32
            out = _as_float32(out)
        mu, log_std = out.chunk(2, dim=-1)
        log_std = torch.tanh(log_std)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (log_std + 1)
        pi = log_pi = None
        if compute_pi:
            noise = torch.randn(mu.shape, device=mu.device, dtype=mu.dtype, generator=generator)
            pi = mu + noise * log_std.exp()
            if compute_log_pi:
                log_pi = _gaussian_logprob(noise, log_std)
        mu = torch.tanh(mu)
        if pi is not None:
            pi = torch.tanh(pi)
            if log_pi is not None:
                log_pi = log_pi - torch.log(F.relu(1 - pi.pow(2)) + 1e-6).sum(-1, keepdim=True)
        return mu, pi, log_pi, log_std


class QFunction(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, hidden_dim: int):
        super().__init__()
        self.trunk = mlp(obs_dim + action_dim, hidden_dim, 1)
        self.trunk.apply(weight_init)

    def forward(self, h, action):
        return self.trunk(torch.cat([h, action], dim=-1))


class Critic(AutocastForward, nn.Module):
    """Encoder (owns the trunk) + twin Q heads: ``forward(obs, action) -> (q1, q2)``."""

    def __init__(self, encoder: Encoder, action_dim: int, hidden_dim: int):
        super().__init__()
        self.encoder = encoder
        self.Q1 = QFunction(encoder.out_dim, action_dim, hidden_dim)
        self.Q2 = QFunction(encoder.out_dim, action_dim, hidden_dim)

    def forward(self, obs, action, detach: bool = False, trunk: torch.Tensor | None = None):
        context, opened = self._autocast(obs)
        with context:
            h = self.encoder(obs, detach=detach, trunk=trunk)
            q1, q2 = self.Q1(h, action), self.Q2(h, action)
        return (_as_float32(q1), _as_float32(q2)) if opened else (q1, q2)


def compile_blocks(modules, **compile_options) -> None:
    """``torch.compile`` in place (``nn.Module.compile``: parameter names and state dicts unchanged) every
    building block of ``modules``: trunks, projections, Q heads and the actor's MLP, each forward and
    backward. Blocks only: the actor's sampling noise stays in eager code, so the compiled networks draw
    the same random numbers as the eager ones."""
    done: set[int] = set()
    for module in modules:
        for m in module.modules():
            blocks = [m] if isinstance(m, (SharedCNN, Projection, QFunction)) else \
                [m.mlp] if isinstance(m, Actor) else []
            for block in blocks:
                if id(block) not in done:
                    block.compile(**compile_options)
                    done.add(id(block))


def build_networks(obs_shape, action_dim: int, *, num_conv_layers: int = 11, num_filters: int = 32,
                   num_stride2: int = 1, projection_dim: int = 100, hidden_dim: int = 1024,
                   log_std_min: float = -10.0, log_std_max: float = 2.0):
    """Return (actor, critic, critic_target) with the DMC-GB sharing pattern."""
    import copy

    shared = SharedCNN(obs_shape, num_conv_layers, num_filters, num_stride2)
    actor = Actor(Encoder(shared, Projection(shared.out_shape, projection_dim)), action_dim,
                  hidden_dim, log_std_min, log_std_max)
    critic = Critic(Encoder(shared, Projection(shared.out_shape, projection_dim)), action_dim, hidden_dim)
    critic_target = copy.deepcopy(critic)
    for p in critic_target.parameters():
        p.requires_grad_(False)
    return actor, critic, critic_target
