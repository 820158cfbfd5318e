"""soda: SODA (Hansen & Wang, ICRA 2021), soft data augmentation by representation matching.

The RL losses never see the strong augmentation: the critic is trained with the plain TD loss on
cropped (or shifted) observations, and the actor as in SAC. Separately, every ``aux_update_freq``
updates, a BYOL-style step draws its own batch of ``soda_batch_size`` observations from the replay
and makes two views of each, with independent crops: an online view that is also overlaid (or
randomly convolved), and a clean target view. The online branch maps its view through the critic's
shared conv trunk f, a projection g (Linear -> BatchNorm -> ReLU -> Linear on the flattened conv map,
not on the critic's LayerNorm projection) and a predictor h of the same form; the target branch
maps the clean view through momentum copies of f and g, without gradient. The loss is the element-wise
mean squared error between the two L2-normalised vectors, i.e. (2 - 2 cos) / d per sample, a
hundredth of BYOL's loss at d = 100 (the learning rate was tuned for that scale). One Adam optimizer
of its own (its own moments, though it shares the trunk with the critic) steps f, g and h; then the
momentum copies move towards the online ones, parameters only (BatchNorm statistics are not
averaged), on SODA steps only. Both branches' BatchNorms always use batch statistics.

Protocols (``--soda_crop``):

* ``random`` (official): frames are rendered ``soda_crop_margin`` pixels larger (100 px for the
  84 px network), every training batch (critic, actor, both SODA views) is randomly cropped with
  offsets 0 .. margin - 1 per sample and axis, and the policy acts on the centre crop.
* ``shift`` (protocol-matched): frames at ``image_size``, the project's DrQ shift on training batches
  and two independent shifts for the SODA views.

Overlay images come from ``--image_bank`` (Places365 for fidelity); the default procedural bank is an
approximation and results made with it must say so (``image_bank`` is one of the method options).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from cg2a_ext.rl.core.agent.optim import adam, load_state

from cg2a_ext.rl.algorithms.base import Algorithm, CriticGradOutput, critic_loss


def random_crop(x: torch.Tensor, size: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random ``size`` x ``size`` window of each sample of ``x`` [B, C, H, W] (any dtype), shared by its
    stacked frames. Offsets are uniform in [0, H - size) and [0, W - size), per sample and axis: the
    largest offset H - size is never drawn, as in DMC-GB's crop (0 .. 15 for 100 -> 84)."""
    b, c, h, w = x.shape
    if not (0 < size < h and size < w):
        raise ValueError(f"random_crop: crop size {size} must be positive and smaller than the frame {h}x{w}")
    offsets = torch.stack([torch.randint(0, h - size, (b,), device=x.device, generator=generator),
                           torch.randint(0, w - size, (b,), device=x.device, generator=generator)], 1)
    rows = offsets[:, :1] + torch.arange(size, device=x.device)                    # [B, size]
    cols = offsets[:, 1:] + torch.arange(size, device=x.device)                    # [B, size]
    index = (rows[:, :, None] * w + cols[:, None, :]).view(b, 1, size * size).expand(b, c, size * size)
    return x.reshape(b, c, h * w).gather(2, index).view(b, c, size, size)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` window of ``x`` [..., H, W] (8 px per side for 100 -> 84)."""
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


def soda_mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Linear -> BatchNorm1d -> ReLU -> Linear, orthogonal weights and zero biases (BatchNorm: 1 and 0)."""
    from cg2a_ext.rl.core.agent.networks import weight_init

    mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(),
                        nn.Linear(hidden_dim, out_dim))
    mlp.apply(weight_init)
    return mlp


class SODABranch(nn.Module):
    """Trunk f, projection g, predictor h: ``embed(x) = g(f(x))``, ``forward(x) = h(g(f(x)))``."""

    def __init__(self, trunk: nn.Module, projection: nn.Module, predictor: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk
        self.projection = projection
        self.predictor = predictor

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.trunk(x).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.embed(x))


def soda_loss(online: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Element-wise MSE of the L2-normalised vectors: mean over samples of (2 - 2 cos) / d."""
    return F.mse_loss(F.normalize(online, p=2, dim=1), F.normalize(target, p=2, dim=1))


@dataclass
class SODAOptions:
    crop: Literal["random", "shift"] = "random"
    """random (the official protocol: frames rendered crop_margin px larger, independent random crops for the critic,
    the actor and both SODA views, a centre crop when acting) or shift (frames at image_size, DrQ shift, two
    independent shifts for the SODA views)."""
    crop_margin: int = 16
    """crop=random: pixels the crops remove (100 px frames -> 84 px network input); unless --image_size is given,
    soda renders the family's frame size + this margin."""
    augmentation: Literal["overlay", "conv"] = "overlay"
    """Augmentation of the online view: overlay (SODA) or conv (the SODA(conv) variant)."""
    batch_size: int = 256
    """Observations drawn from the replay for each SODA step (a separate draw)."""
    projection_dim: int = 100
    """Width of the BatchNorm projection and predictor MLPs on the flattened trunk output."""
    tau: float = 0.005
    """Rate of the momentum target (trunk, projection, predictor copies) after each SODA step."""
    aux_lr: float = 3e-4
    """Adam learning rate of the SODA optimizer (trunk, projection, predictor); the script value 3e-4 (the
    argument default 1e-3 is an option)."""
    aux_beta1: float = 0.9
    """Adam beta1 of the SODA optimizer."""


class SODA(Algorithm):
    name = "soda"
    label = "SODA"
    gpu_steps_per_s = (24.1, "measured")
    Options = SODAOptions
    cli_prefix = "soda_"
    draws_overlay_images = True

    @classmethod
    def overlays_with(cls, options) -> bool:
        return options.augmentation == "overlay"
    summary = "SODA: plain TD loss on clean crops + BYOL-style matching of overlaid and clean trunk embeddings"
    capturable = False
    not_capturable_because = ("its auxiliary update samples its own batch from the replay on the host (the replay's "
                              "numpy RNG) every aux_update_freq updates, and its BatchNorm projections are outside "
                              "the captured update")
    has_auxiliary_update = True
    logged_metrics = ("soda_loss", "skipped_aux_steps")
    method_options = ("crop", "augmentation", "aux_lr", "image_bank")

    @classmethod
    def core_defaults(cls, options, cfg, given) -> dict:
        # the official protocol renders larger frames (100 px for the 84 px network)
        return {"image_size": cfg.image_size + options.crop_margin} if options.crop == "random" else {}

    @classmethod
    def check_config(cls, options, cfg) -> None:
        from cg2a_ext.rl.config import ConfigError

        if options.crop == "random" and not 0 < options.crop_margin < cfg.image_size:
            raise ConfigError(f"--soda_crop_margin must be between 1 and --image_size - 1 ({cfg.image_size - 1}), "
                              f"got {options.crop_margin}")
        if options.batch_size < 2:
            raise ConfigError(f"--soda_batch_size must be at least 2 (BatchNorm statistics), got {options.batch_size}")
        if options.projection_dim <= 0:
            raise ConfigError(f"--soda_projection_dim must be positive, got {options.projection_dim}")
        if not 0.0 < options.tau <= 1.0:
            raise ConfigError(f"--soda_tau must be in (0, 1], got {options.tau}")
        if not options.aux_lr > 0 or not 0.0 <= options.aux_beta1 < 1.0:
            raise ConfigError(f"--soda_aux_lr must be positive and --soda_aux_beta1 in [0, 1), got "
                              f"{options.aux_lr} and {options.aux_beta1}")

    def __init__(self, cfg, device, seeds) -> None:
        super().__init__(cfg, device, seeds)
        from cg2a_ext.rl.core.augmentations import make_combination, overlay_options

        self.crop = self.options.crop
        self.margin = self.options.crop_margin if self.crop == "random" else 0
        self.augmentation = make_combination([self.options.augmentation], **overlay_options(cfg, seeds))

    # ------------------------------------------------------------------ views
    @classmethod
    def network_obs_shape_for(cls, options, obs_shape):
        c, h, w = obs_shape
        margin = options.crop_margin if options.crop == "random" else 0
        if margin == 0:
            return (c, h, w)
        if h != w or h <= margin:
            raise ValueError(f"soda: random crops need square frames larger than the crop margin "
                             f"{margin}, got {h}x{w}")
        return (c, h - margin, w - margin)

    def augment_observations(self, obs_u8: torch.Tensor) -> torch.Tensor:
        if self.crop == "random":
            return random_crop(obs_u8, obs_u8.shape[-1] - self.margin, generator=self.generator)
        return super().augment_observations(obs_u8)

    def acting_view(self, obs: torch.Tensor) -> torch.Tensor:
        return center_crop(obs, obs.shape[-1] - self.margin) if self.crop == "random" else obs

    # ------------------------------------------------------------------ modules
    def attach(self, nets) -> None:
        trunk = nets.critic.encoder.shared_cnn
        d = self.options.projection_dim
        projection = soda_mlp(math.prod(trunk.out_shape), d, d).to(self.device)
        predictor = soda_mlp(d, d, d).to(self.device)
        self.online = SODABranch(trunk, projection, predictor)
        # the momentum copy is taken after every module is built (so f-bar starts equal to f)
        self.target = copy.deepcopy(self.online)
        for p in self.target.parameters():
            p.requires_grad_(False)
        # BatchNorm always on batch statistics, online and target (the official code never leaves train mode)
        self.online.projection.train()
        self.online.predictor.train()
        self.target.train()
        self.params = list(self.online.parameters())      # f, g, h
        self.optimizer = adam(self.params, self.options.aux_lr, self.options.aux_beta1)

    # ------------------------------------------------------------------ losses
    def critic_gradient(self, step) -> CriticGradOutput:
        nets, obs, action, target, diagnostics = step
        return self.backward_single(nets, critic_loss(nets.critic, obs, action, target))

    def views(self, obs_u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(online, target) views of a uint8 batch: independent crops (or shifts); the online one augmented."""
        fmt = torch.channels_last if obs_u8.device.type == "cpu" else torch.contiguous_format
        online = self.augment_observations(obs_u8).to(torch.float32, memory_format=fmt)
        online = self.augmentation(online, generator=self.generator)[0]
        clean = self.augment_observations(obs_u8).to(torch.float32, memory_format=fmt)
        return online, clean

    def loss(self, online_view: torch.Tensor, target_view: torch.Tensor) -> torch.Tensor:
        """The SODA loss of h(g(f(online_view))) against the target branch's g-bar(f-bar(target_view))."""
        u = self.online(online_view)
        with torch.no_grad():
            v = self.target.embed(target_view)
        return soda_loss(u, v)

    def update_target(self) -> None:
        with torch.no_grad():
            torch._foreach_lerp_(list(self.target.parameters()), list(self.online.parameters()), self.options.tau)

    def auxiliary_update(self, step) -> dict:
        obs_u8 = step.sample_observations(self.options.batch_size)
        loss = self.loss(*self.views(obs_u8))
        self.auxiliary_step(self.optimizer, self.params, loss, "soda auxiliary")
        self.update_target()
        return {"soda_loss": loss.detach(), "skipped_aux_steps": self.skipped_aux_steps.clone()}

    # ------------------------------------------------------------------ state
    def state_dict(self):
        return {**super().state_dict(), "projection": self.online.projection.state_dict(),
                "predictor": self.online.predictor.state_dict(), "target": self.target.state_dict(),
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        self.online.projection.load_state_dict(state["projection"])
        self.online.predictor.load_state_dict(state["predictor"])
        self.target.load_state_dict(state["target"])
        load_state(self.optimizer, state["optimizer"])


ALGORITHM = SODA
