"""smg: SMG (Zhang et al., NeurIPS 2024), saliency through mask-guided reconstruction.

Two encoder-decoder branches learn to rebuild the observation as foreground and background. The
foreground branch shares the critic's encoder: z = P_c f(o) goes through a head H+ (Linear d -> F*d,
one d-vector per stacked frame, ReLU) and a decoder G+ (shared by the frames) that outputs, per frame,
an image (255 * sigmoid) and a soft mask (sigmoid, broadcast to RGB). The background branch is an
independent copy of (f, P_c, H+) with an image decoder G-. Per frame the reconstruction is
R = F * M + Bg * (1 - M); frames are reassembled in stack order.

Per update, on the shifted batch (o, a, r, o'):

1. Views. The soft mask M = sg(mask(o)) of the model before this update keeps the foreground of o and
   fills the rest with a background image eps (one fresh image per sample, shared by its frames: a random
   resized crop and flip of a pool image, drawn as the overlays draw theirs):
   tau_attr(o) = o * M + 255 eps * (1 - M). With probability ``smg_attribution_prob`` (1/4), drawn
   once per update for the whole batch, the consistency view tau(o) is tau_attr(o); otherwise an
   overlay of o with fresh images.
2. Critic: TD loss on o plus ``smg_consistency_weight`` (0.5) times
   mean_b sum_i (Q_i(tau(o), a) - sg(Q_i(o, a)))^2: the clean Q is the fixed target (SGQN's opposite).
3. Actor and targets as in SAC, on o.
4. Every ``aux_update_freq`` updates, with the critic already stepped, the branches are re-run on o
   (with gradient) and one Adam step (its own moments; lr 1e-3) with global grad-norm clipping at 100
   minimises, in pixel units (0-255) and element means,
   recon |R(o) - o| + [gate] mask (mean_p M_{b,k} - rho)^2 + 2 |Bg(tau_attr(o)) - 255 eps|
   + inverse dynamics (I(P_c f(o), P_c f(o')) - a)^2 + 0.1 |F M (tau(o)) - sg(F M (o))|
   over the trunk, the critic's projection and every SMG module (no target networks). The mask-area
   term starts once the update count exceeds ``smg_mask_start`` (or, with ``smg_mask_gate=env_steps``,
   once the nets step does: the official condition read literally).

The inverse-dynamics MLP (2d -> 1024 -> 1024 -> |A|) has orthogonal init, the decoders and H+
PyTorch's default. ``smg_protocol=official`` sets batch 64 and d = 256 unless given; ``dmcgb`` keeps the
run's batch and projection (protocol-matched, not the official setting). Background and overlay
images come from ``--image_bank`` (Places365 for fidelity); the default procedural bank is an
approximation and results made with it must say so (``image_bank`` is one of the method options).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from cg2a_ext.rl.core.agent.optim import adam, load_state

from cg2a_ext.rl.algorithms.base import Algorithm, CriticGradOutput, newest_frames
from cg2a_ext.rl.algorithms.parts.decoders import ImageDecoder, ImageMaskDecoder

INVERSE_DYNAMICS_HIDDEN = 1024


class FrameHead(nn.Module):
    """``z [B, d] -> ReLU(Linear(z)) [B * frames, d]``: one d-vector per stacked frame, frames of a sample adjacent."""

    def __init__(self, dim: int, frames: int) -> None:
        super().__init__()
        self.dim = dim
        self.linear = nn.Linear(dim, dim * frames)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.relu(self.linear(z).reshape(-1, self.dim))


class BackgroundEncoder(nn.Module):
    """The background branch's own encoder: a trunk, a projection and a frame head (copies of the foreground's)."""

    def __init__(self, encoder: nn.Module, head: FrameHead) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def stack_frames(x: torch.Tensor, batch: int) -> torch.Tensor:
    """[B * frames, k, H, W] per-frame maps -> [B, frames * k, H, W] in stack order (k = 3: RGB)."""
    return x.reshape(batch, -1, *x.shape[-2:])


@dataclass
class SMGViews:
    """What the critic step drew, for the auxiliary step of the same update."""

    obs: torch.Tensor            # o (the batch both steps see)
    attribution: torch.Tensor    # tau_attr(o)
    background: torch.Tensor     # 255 eps, repeated over the frames
    consistency: torch.Tensor    # tau(o)


@dataclass
class SMGOptions:
    protocol: Literal["official", "dmcgb"] = "official"
    """official (batch 64 and projection 256 unless given; 250k steps on walker_stand at the paper preset) or
    dmcgb (the run's batch, projection and steps: a protocol-matched, non-official setting)."""
    mask_ratio: float = 0.06
    """Target foreground-mask area rho (0.06 is the official walker_walk value; other tasks' are unpublished)."""
    mask_gate: Literal["updates", "env_steps"] = "updates"
    """The mask-area loss starts once the update count (updates) or the nets step (env_steps, the official
    condition read literally) exceeds mask_start."""
    mask_start: int = 1000
    """Threshold of mask_gate."""
    attribution_prob: float = 0.25
    """Probability that an update's consistency view is the attribution augmentation (else overlay)."""
    consistency_weight: float = 0.5
    """Weight of the Q consistency (augmented view against the stop-gradient clean Q)."""
    recon_weight: float = 1.0
    """Weight of the reconstruction loss."""
    mask_weight: float = 1.0
    """Weight of the mask-area loss."""
    back_weight: float = 2.0
    """Weight of the background reconstruction loss."""
    action_weight: float = 1.0
    """Weight of the inverse-dynamics loss."""
    fore_weight: float = 0.1
    """Weight of the foreground consistency loss."""
    aux_lr: float = 1e-3
    """Adam learning rate of the predictor optimizer (trunk, critic projection and every SMG module)."""
    aux_beta1: float = 0.9
    """Adam beta1 of the predictor optimizer."""
    grad_clip: float = 100.0
    """Global gradient-norm clip of the predictor step."""


# SMG trains walker_stand for 250k nets steps (its paper, section 4.2), the other tasks for 500k.
SHORT_TASKS = {"walker_stand": 250_000}


class SMG(Algorithm):
    name = "smg"
    label = "SMG"
    gpu_steps_per_s = (15.0, "measured")
    Options = SMGOptions
    cli_prefix = "smg_"
    draws_overlay_images = True
    summary = "SMG: foreground/background reconstruction with a soft mask + Q and foreground consistency"
    capturable = False
    not_capturable_because = ("it draws its choice of view from a CPU generator each update (read on the host), and "
                              "its auxiliary update runs on its own schedule, outside the two captured update "
                              "graphs")
    shift = True
    has_auxiliary_update = True
    logged_metrics = ("smg_td_loss", "smg_consistency_loss", "smg_attribution_view", "smg_recon_loss",
                      "smg_mask_loss", "smg_mask_area", "smg_mask_active", "smg_back_loss", "smg_action_loss",
                      "smg_fore_loss", "smg_aux_loss", "skipped_aux_steps")
    method_options = ("protocol", "mask_ratio", "mask_gate", "attribution_prob", "consistency_weight",
                      "image_bank")

    @classmethod
    def core_defaults(cls, options, cfg, given) -> dict:
        if options.protocol != "official":
            return {}
        out = {"batch_size": 64, "projection_dim": 256}
        if cfg.preset == "paper" and cfg.task in SHORT_TASKS:
            out["train_steps"] = SHORT_TASKS[cfg.task]
        return out

    @classmethod
    def check_config(cls, options, cfg) -> None:
        from cg2a_ext.rl.config import ConfigError

        for name in ("mask_ratio", "attribution_prob"):
            if not 0.0 <= getattr(options, name) <= 1.0:
                raise ConfigError(f"--smg_{name} must be in [0, 1], got {getattr(options, name)}")
        for name in ("consistency_weight", "recon_weight", "mask_weight", "back_weight", "action_weight",
                     "fore_weight", "mask_start"):
            if not getattr(options, name) >= 0:
                raise ConfigError(f"--smg_{name} must be >= 0, got {getattr(options, name)}")
        if options.protocol not in ("official", "dmcgb") or options.mask_gate not in ("updates", "env_steps"):
            raise ConfigError(f"--smg_protocol must be official or dmcgb and --smg_mask_gate updates or env_steps, "
                              f"got {options.protocol!r} and {options.mask_gate!r}")
        if not options.aux_lr > 0 or not options.grad_clip > 0 or not 0.0 <= options.aux_beta1 < 1.0:
            raise ConfigError(f"--smg_aux_lr and --smg_grad_clip must be positive and --smg_aux_beta1 in [0, 1), "
                              f"got {options.aux_lr}, {options.grad_clip} and {options.aux_beta1}")

    def __init__(self, cfg, device, seeds) -> None:
        super().__init__(cfg, device, seeds)
        from cg2a_ext.rl.core.image_bank import bank_options, resolve_image_bank

        self.image_bank = resolve_image_bank(**bank_options(cfg, seeds))
        # the per-update choice of view is a host decision: its own CPU generator, no device sync
        self.choice_generator = seeds.torch_generator("smg_view_choice")
        self.views: SMGViews | None = None

    def attach(self, nets) -> None:
        c, h, w = nets.obs_shape
        self.frames = c // 3
        encoder = nets.critic.encoder
        d = encoder.out_dim
        trunk_shape = encoder.shared_cnn.out_shape
        self.fore_head = FrameHead(d, self.frames).to(self.device)
        # the background branch starts as a copy of the foreground encoder; it shares nothing with the RL networks
        self.back_encoder = BackgroundEncoder(copy.deepcopy(encoder), copy.deepcopy(self.fore_head))
        self.fore_decoder = self.place(nets, ImageMaskDecoder(d, trunk_shape, (h, w)))
        self.back_decoder = self.place(nets, ImageDecoder(d, trunk_shape, (h, w)))
        from cg2a_ext.rl.core.agent.networks import mlp, weight_init

        self.inverse_dynamics = mlp(2 * d, INVERSE_DYNAMICS_HIDDEN, nets.action_dim).to(self.device)
        self.inverse_dynamics.apply(weight_init)
        self.aux_modules = {"fore_head": self.fore_head, "back_encoder": self.back_encoder,
                        "fore_decoder": self.fore_decoder, "back_decoder": self.back_decoder,
                        "inverse_dynamics": self.inverse_dynamics}
        self.params = list(encoder.parameters()) + [p for m in self.aux_modules.values() for p in m.parameters()]
        self.optimizer = adam(self.params, self.options.aux_lr, self.options.aux_beta1)

    # ------------------------------------------------------------------ the branches
    def fore_from_latent(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Foreground image and soft mask [B, C, H, W] (mask repeated over RGB) from critic features z [B, d]."""
        image, mask = self.fore_decoder(self.fore_head(z))
        return stack_frames(image, z.shape[0]), stack_frames(mask.expand(-1, 3, -1, -1), z.shape[0])

    def fore(self, nets, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fore_from_latent(nets.critic.encoder(obs))

    def back(self, obs: torch.Tensor) -> torch.Tensor:
        """Background image [B, C, H, W]."""
        return stack_frames(self.back_decoder(self.back_encoder(obs)), obs.shape[0])

    def mask_area_loss(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean over samples and frames of (mask area - rho)^2, mean area); ``mask`` [B, C, H, W]."""
        b, c, h, w = mask.shape
        area = mask.reshape(b, c // 3, 3, h * w)[:, :, 0].mean(-1)              # [B, frames]
        return (area - self.options.mask_ratio).square().mean(), area.mean()

    def mask_active(self, step) -> bool:
        count = step.num_updates if self.options.mask_gate == "updates" else step.num_transitions
        return count > self.options.mask_start

    # ------------------------------------------------------------------ views and critic
    def background_images(self, batch: int, height: int, width: int) -> torch.Tensor:
        """255 * eps: one fresh image per sample, drawn as the overlays draw theirs (a random resized crop and
        flip of a pool image, from the augmentation generator), float [B, 3, H, W] in [0, 255]."""
        return self.image_bank.draw(batch, height, width, device=self.device, generator=self.generator)

    def make_views(self, nets, obs: torch.Tensor) -> SMGViews:
        b, c, h, w = obs.shape
        with torch.no_grad():
            _, mask = self.fore(nets, obs)
        background = self.background_images(b, h, w).repeat(1, c // 3, 1, 1)
        attribution = obs * mask + background * (1.0 - mask)
        if torch.rand((), generator=self.choice_generator).item() < self.options.attribution_prob:
            consistency = attribution
        else:
            from cg2a_ext.rl.core.augmentations import random_overlay

            consistency = random_overlay(obs, generator=self.generator, alpha=0.5, image_bank=self.image_bank)
        return SMGViews(obs, attribution, background, consistency)

    def critic_gradient(self, step) -> CriticGradOutput:
        nets, obs, action, target, diagnostics = step
        self.views = views = self.make_views(nets, obs)
        b = obs.shape[0]
        q1, q2 = nets.critic(torch.cat([obs, views.consistency]), torch.cat([action, action]))
        q1_o, q1_t, q2_o, q2_t = q1[:b], q1[b:], q2[:b], q2[b:]
        td = F.mse_loss(q1_o, target) + F.mse_loss(q2_o, target)
        consistency = F.mse_loss(q1_t, q1_o.detach()) + F.mse_loss(q2_t, q2_o.detach())
        out = self.backward_single(nets, td + self.options.consistency_weight * consistency)
        out.metrics = {"smg_td_loss": td.detach(), "smg_consistency_loss": consistency.detach(),
                       "smg_attribution_view": float(views.consistency is views.attribution)}
        return out

    # ------------------------------------------------------------------ auxiliary step
    def auxiliary_losses(self, step) -> dict[str, torch.Tensor]:
        nets, batch = step.nets, step.batch
        views = self.views
        if views is None or views.obs is not batch.obs:
            raise RuntimeError("smg: the auxiliary step needs the views of this update's critic step "
                               "(call critic_gradient on the same batch first)")
        obs, next_obs, action = batch.obs, batch.next_obs, batch.action
        b = obs.shape[0]
        z_obs, z_next, z_tau = nets.critic.encoder(torch.cat([obs, next_obs, views.consistency])).split(b)
        fore, mask = self.fore_from_latent(torch.cat([z_obs, z_tau]))
        fore_obs, fore_tau, mask_obs, mask_tau = fore[:b], fore[b:], mask[:b], mask[b:]
        back = self.back(torch.cat([obs, views.attribution]))
        back_obs, back_attr = back[:b], back[b:]
        recon = fore_obs * mask_obs + back_obs * (1.0 - mask_obs)
        losses = {"smg_recon_loss": F.l1_loss(recon, obs)}
        losses["smg_mask_loss"], losses["smg_mask_area"] = self.mask_area_loss(mask_obs)
        losses["smg_back_loss"] = F.l1_loss(back_attr, views.background)
        losses["smg_action_loss"] = F.mse_loss(self.inverse_dynamics(torch.cat([z_obs, z_next], 1)), action)
        losses["smg_fore_loss"] = F.l1_loss(fore_tau * mask_tau, (fore_obs * mask_obs).detach())
        active = self.mask_active(step)
        losses["smg_mask_active"] = torch.tensor(float(active))
        losses["smg_aux_loss"] = (self.options.recon_weight * losses["smg_recon_loss"]
                                  + (self.options.mask_weight * losses["smg_mask_loss"] if active else 0.0)
                                  + self.options.back_weight * losses["smg_back_loss"]
                                  + self.options.action_weight * losses["smg_action_loss"]
                                  + self.options.fore_weight * losses["smg_fore_loss"])
        return losses

    def auxiliary_update(self, step) -> dict:
        losses = self.auxiliary_losses(step)
        self.auxiliary_step(self.optimizer, self.params, losses["smg_aux_loss"], "smg auxiliary",
                            max_grad_norm=self.options.grad_clip)
        self.views = None
        return {**{k: v.detach() for k, v in losses.items()}, "skipped_aux_steps": self.skipped_aux_steps.clone()}

    # ------------------------------------------------------------------ diagnostics
    def evaluation_images(self, nets, obs: torch.Tensor) -> dict[str, np.ndarray]:
        """For the newest frame of each observation: the frame, the foreground F * M, the soft mask M, the
        background Bg and the reconstruction F * M + Bg * (1 - M)."""
        x = self.acting_view(torch.as_tensor(obs, device=self.device).float())
        with torch.no_grad():
            fore, mask = self.fore(nets, x)
            back = self.back(x)
        return {
            "smg_observation": newest_frames(x),
            "smg_foreground": newest_frames(fore * mask),
            "smg_mask": newest_frames(255.0 * mask),
            "smg_background": newest_frames(back),
            "smg_reconstruction": newest_frames(fore * mask + back * (1.0 - mask)),
        }

    # ------------------------------------------------------------------ state
    def state_dict(self):
        return {**super().state_dict(), **{k: m.state_dict() for k, m in self.aux_modules.items()},
                "optimizer": self.optimizer.state_dict(), "choice_generator": self.choice_generator.get_state()}

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        for k, m in self.aux_modules.items():
            m.load_state_dict(state[k])
        load_state(self.optimizer, state["optimizer"])
        self.choice_generator.set_state(state["choice_generator"].cpu())


ALGORITHM = SMG
