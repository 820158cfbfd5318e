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
    """One Q head: an MLP of two hidden layers on [h, action]. The critic holds its two heads stacked
    (:class:`TwinQ`); this form initialises them (and serves tests and the state-dict conversion)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_dim: int):
        super().__init__()
        self.trunk = mlp(obs_dim + action_dim, hidden_dim, 1)
        self.trunk.apply(weight_init)

    def forward(self, h, action):
        return self.trunk(torch.cat([h, action], dim=-1))


class StackedLinear(nn.Module):
    """G linear layers of one shape applied to G inputs at once: ``x`` [G, N, in] -> [G, N, out], one batched
    matmul. ``weight`` [G, out, in], ``bias`` [G, out]; left uninitialised (the owner copies values in)."""

    def __init__(self, groups: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(groups, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(groups, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))

    def split_weight_grads(self, x: torch.Tensor, g: torch.Tensor, k: int, want: set[str]) -> dict:
        """per_group_grads' "split" method: the K per-group gradients [K, *shape] of ``want`` from this layer's
        input ``x`` [G, K*B, in] and output gradient ``g`` [G, K*B, out] (rows of group k: k*B .. (k+1)*B)."""
        groups = x.shape[0]
        x4 = x.to(g.dtype).reshape(groups * k, -1, x.shape[-1])      # [G*K, B, in]
        g4 = g.reshape(groups * k, -1, g.shape[-1])
        out = {}
        if "weight" in want:
            out["weight"] = torch.bmm(g4.transpose(1, 2), x4).view(groups, k, *self.weight.shape[1:]).transpose(0, 1)
        if "bias" in want:
            out["bias"] = g4.sum(1).view(groups, k, -1).transpose(0, 1)
        return out


class TwinQ(nn.Module):
    """The critic's twin Q heads as one module: ``(h, action) -> (q1, q2)``, each head an MLP of two hidden layers
    (``QFunction``), their layers stacked: the first as one Linear with both heads' units, the others as
    :class:`StackedLinear`. Half the launches of two separate heads, the same values up to float rounding.

    Initialised by building the two ``QFunction`` heads (the same random draws as before the stacking) and
    copying them in. ``head_state_dict`` and ``stack_state_dict`` convert to and from the two heads' keys
    (``Q1.trunk.0.weight`` ...), so checkpoints of separate heads load."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_dim: int):
        super().__init__()
        heads = [QFunction(obs_dim, action_dim, hidden_dim) for _ in range(2)]
        self.hidden_dim = hidden_dim
        like = heads[0].trunk[0].weight      # where the heads were built (the meta device for training's check)
        self.first = torch.nn.utils.skip_init(nn.Linear, obs_dim + action_dim, 2 * hidden_dim,   # no draw
                                              device=like.device, dtype=like.dtype)
        self.relu1 = nn.ReLU(inplace=False)
        self.hidden = StackedLinear(2, hidden_dim, hidden_dim)
        self.relu2 = nn.ReLU(inplace=False)
        self.out = StackedLinear(2, hidden_dim, 1)
        stacked = self.stack_state_dict({f"Q{i + 1}.{k}": v for i, head in enumerate(heads)
                                         for k, v in head.state_dict().items()})
        with torch.no_grad():     # copy_, not load_state_dict: also on the meta device (training's shape check)
            for name, value in self.named_parameters():
                value.copy_(stacked[name])

    def forward(self, h: torch.Tensor, action: torch.Tensor):
        y = self.relu1(self.first(torch.cat([h, action], dim=-1)))        # [B, 2H]: head 1's units, then head 2's
        y = self.relu2(self.hidden(y.view(y.shape[0], 2, self.hidden_dim).transpose(0, 1)))   # [2, B, H]
        q = self.out(y)                                                   # [2, B, 1]
        return q[0], q[1]

    @staticmethod
    def stack_state_dict(heads: dict) -> dict:
        """The two heads' state (``Q1.trunk.{0,2,4}.{weight,bias}``, ``Q2...``) as this module's."""
        t = lambda i, layer, name: heads[f"Q{i}.trunk.{layer}.{name}"]   # noqa: E731
        return {"first.weight": torch.cat([t(1, 0, "weight"), t(2, 0, "weight")]),
                "first.bias": torch.cat([t(1, 0, "bias"), t(2, 0, "bias")]),
                "hidden.weight": torch.stack([t(1, 2, "weight"), t(2, 2, "weight")]),
                "hidden.bias": torch.stack([t(1, 2, "bias"), t(2, 2, "bias")]),
                "out.weight": torch.stack([t(1, 4, "weight"), t(2, 4, "weight")]),
                "out.bias": torch.stack([t(1, 4, "bias"), t(2, 4, "bias")])}

    def head_state_dict(self, i: int) -> dict:
        """Head ``i`` (1 or 2) as a ``QFunction``'s state dict (views)."""
        h = self.hidden_dim
        rows = slice((i - 1) * h, i * h)
        return {"trunk.0.weight": self.first.weight[rows], "trunk.0.bias": self.first.bias[rows],
                "trunk.2.weight": self.hidden.weight[i - 1], "trunk.2.bias": self.hidden.bias[i - 1],
                "trunk.4.weight": self.out.weight[i - 1], "trunk.4.bias": self.out.bias[i - 1]}


def _stack_heads_in_state_dict(module, state_dict, prefix, *args) -> None:
    """Load-state-dict pre-hook of :class:`Critic`: a state with separate heads (``Q1.trunk...``, checkpoints
    written before the heads were stacked) is converted to the stacked keys in place."""
    old = [k for k in state_dict if k.startswith(f"{prefix}Q1.trunk.") or k.startswith(f"{prefix}Q2.trunk.")]
    if not old:
        return
    heads = {k[len(prefix):]: state_dict.pop(k) for k in old}
    for key, value in TwinQ.stack_state_dict(heads).items():
        state_dict[f"{prefix}Q.{key}"] = value


def stack_heads_in_optimizer_state(state: dict, critic_state: dict) -> dict:
    """A critic optimizer's state dict saved with separate heads (``critic_state``, the critic's saved state dict,
    has ``Q1.trunk...`` keys) for the stacked heads: the parameters were the encoder's, then Q1's six, then Q2's
    six; now the encoder's, then the six stacked ones, whose moments are the heads' stacked alike. Returned as it
    is when the heads were stacked already."""
    if "Q1.trunk.0.weight" not in critic_state:
        return state
    (group,) = state["param_groups"]
    params = list(group["params"])
    n_encoder = len(params) - 12
    old = state["state"]
    new = {i: old[params[i]] for i in range(n_encoder) if params[i] in old}
    for j in range(6):                  # first.weight, first.bias (concatenated), then stacked layers
        one, two = old.get(params[n_encoder + j]), old.get(params[n_encoder + 6 + j])
        if one is None or two is None:
            continue
        join = torch.cat if j < 2 else torch.stack
        new[n_encoder + j] = {key: join([one[key], two[key]]) if key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
                              else one[key] for key in one}
    return {"state": new, "param_groups": [{**group, "params": list(range(n_encoder + 6))}]}


class Critic(AutocastForward, nn.Module):
    """Encoder (owns the trunk) + twin Q heads (one stacked module): ``forward(obs, action) -> (q1, q2)``."""

    def __init__(self, encoder: Encoder, action_dim: int, hidden_dim: int):
        super().__init__()
        self.encoder = encoder
        self.Q = TwinQ(encoder.out_dim, action_dim, hidden_dim)
        self.register_load_state_dict_pre_hook(_stack_heads_in_state_dict)

    def forward(self, obs, action, detach: bool = False, trunk: torch.Tensor | None = None):
        context, opened = self._autocast(obs)
        with context:
            h = self.encoder(obs, detach=detach, trunk=trunk)
            q1, q2 = self.Q(h, action)
        return (_as_float32(q1), _as_float32(q2)) if opened else (q1, q2)


def compile_blocks(modules, **compile_options) -> None:
    """``torch.compile`` in place (``nn.Module.compile``: parameter names and state dicts unchanged) every
    building block of ``modules``: trunks, projections, Q heads and the actor's MLP, each forward and
    backward. Blocks only: the actor's sampling noise stays in eager code, so the compiled networks draw
    the same random numbers as the eager ones."""
    done: set[int] = set()
    for module in modules:
        for m in module.modules():
            blocks = [m] if isinstance(m, (SharedCNN, Projection, TwinQ)) else \
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
