"""sgqn: SGQN (Bertoin et al., NeurIPS 2022), saliency-guided Q-networks.

The critic's own saliency decides which pixels matter. For a shifted batch (o, a), the attribution
A is the guided-backprop gradient of sum_b Q1(o_b, a_b) with respect to o (online critic, first Q
head, the buffer's actions; no parameter gradient). Per sample and per stacked frame, the saliency
S(p) = max over RGB of |A(p)| is thresholded at its rho-quantile over the frame's pixels (linear
interpolation, ``torch.quantile``); the binary mask M keeps the pixels with S >= threshold, so ties
(e.g. zero attributions early in training) can keep more than a 1 - rho fraction.

* Critic: the TD loss on o plus ``sgqn_consistency_weight`` (0.5) times
  mean_b sum_i (Q_i(o, a) - Q_i(o~, a))^2, where o~ keeps the salient pixels of o and fills the others
  with one grey level u ~ U(min o, max o) drawn once per update for the whole batch. Neither side is
  detached: the consistency gradient flows through both Q(o) and Q(o~).
* Saliency prediction (every ``aux_update_freq`` updates, after the SAC updates): a decoder D on the
  critic encoder's features of an overlaid copy of o, concatenated with a, predicts the mask M+ of
  the *updated* critic (recomputed after the critic step) with a binary cross-entropy over every
  pixel and channel; one Adam optimizer of its own (separate moments) steps the trunk, the critic's
  projection and D. M+ is a constant target; D has no target network.
* The actor is plain SAC on o; no mask, decoder or saliency is used when acting.

M+ is computed in the auxiliary hook, after the actor and target updates; neither changes the online
critic (the actor trains its own projection and head on a detached trunk), so it is the mask of the
critic right after its step, and odd updates, whose M+ the method never uses, skip the guided pass.

Overlay images come from ``--image_bank`` (Places365 for fidelity); the default procedural bank is an
approximation and results made with it must say so (``image_bank`` is one of the method options).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cg2a_ext.rl.core.agent.optim import adam, load_state

from cg2a_ext.rl.algorithms.base import Algorithm, CriticGradOutput, newest_frames
from cg2a_ext.rl.algorithms.parts.decoders import AttributionDecoder
from cg2a_ext.rl.algorithms.parts.guided_backprop import q1_guided_backprop

# Tasks whose quantile is 0.98 (the others: 0.95).
HIGH_QUANTILE_TASKS = ("cartpole_swingup", "ball_in_cup_catch")


def saliency_mask(attribution: torch.Tensor, quantile: float) -> torch.Tensor:
    """Boolean mask [B, C, H, W] of ``attribution`` [B, C, H, W] (C = 3 * frames): per sample and frame,
    the pixels whose max over RGB of |attribution| is at or above its ``quantile`` over the frame's pixels,
    repeated over the frame's 3 channels."""
    b, c, h, w = attribution.shape
    if c % 3:
        raise ValueError(f"saliency_mask: channels must be 3 * frames, got {c}")
    s = attribution.abs().reshape(b, c // 3, 3, h, w).amax(2)                    # [B, F, H, W]
    threshold = torch.quantile(s.reshape(b, c // 3, h * w), quantile, dim=2)    # [B, F]
    return (s >= threshold[..., None, None]).repeat_interleave(3, dim=1)


def fill_unsalient(obs: torch.Tensor, mask: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``obs`` where ``mask``, else the scalar ``value``."""
    return torch.where(mask, obs, value.to(obs.dtype))


@dataclass
class SGQNOptions:
    quantile: float | None = None
    """Saliency quantile rho (pixels at or above it are kept); None = 0.98 for cartpole_swingup and
    ball_in_cup_catch, 0.95 for the other tasks (0.90 is an option)."""
    consistency_weight: float = 0.5
    """Weight of the Q consistency between the observation and its saliency-masked copy."""
    aux_lr: float = 3e-4
    """Adam learning rate of the saliency-prediction optimizer (trunk, critic projection, decoder)."""
    aux_beta1: float = 0.9
    """Adam beta1 of the saliency-prediction optimizer."""


class SGQN(Algorithm):
    name = "sgqn"
    label = "SGQN"
    gpu_steps_per_s = (15.5, "measured")
    Options = SGQNOptions
    cli_prefix = "sgqn_"
    draws_overlay_images = True
    summary = "SGQN: Q consistency on the critic's saliency-masked view + a saliency predictor on the encoder"
    capturable = False
    not_capturable_because = ("guided backprop switches the critic's ReLUs through forward hooks while its saliency "
                              "mask is taken, and its auxiliary update runs on its own schedule, outside the two "
                              "captured update graphs")
    shift = True
    has_auxiliary_update = True
    logged_metrics = ("sgqn_td_loss", "sgqn_consistency_loss", "sgqn_mask_fraction", "sgqn_prediction_loss",
                      "skipped_aux_steps")
    method_options = ("quantile", "consistency_weight", "image_bank")

    @classmethod
    def resolve_options(cls, options, cfg) -> None:
        if options.quantile is None:
            options.quantile = 0.98 if cfg.task in HIGH_QUANTILE_TASKS else 0.95

    @classmethod
    def check_config(cls, options, cfg) -> None:
        from cg2a_ext.rl.config import ConfigError

        if not (isinstance(options.quantile, (int, float)) and 0.0 <= options.quantile <= 1.0):
            raise ConfigError(f"--sgqn_quantile must be in [0, 1], got {options.quantile}")
        if not options.consistency_weight >= 0:
            raise ConfigError(f"--sgqn_consistency_weight must be >= 0, got {options.consistency_weight}")
        if not options.aux_lr > 0 or not 0.0 <= options.aux_beta1 < 1.0:
            raise ConfigError(f"--sgqn_aux_lr must be positive and --sgqn_aux_beta1 in [0, 1), got "
                              f"{options.aux_lr} and {options.aux_beta1}")

    def __init__(self, cfg, device, seeds) -> None:
        super().__init__(cfg, device, seeds)
        from cg2a_ext.rl.core.augmentations import make_combination, overlay_options

        self.quantile = self.options.quantile
        self.weight = self.options.consistency_weight
        self.overlay = make_combination(["overlay"], **overlay_options(cfg, seeds))

    def attach(self, nets) -> None:
        c, h, w = nets.obs_shape
        encoder = nets.critic.encoder
        self.decoder = self.place(nets, AttributionDecoder(encoder.out_dim, nets.action_dim,
                                                            encoder.shared_cnn.out_shape, (h, w), c))
        self.params = list(encoder.parameters()) + list(self.decoder.parameters())   # f, P_c, D
        self.optimizer = adam(self.params, self.options.aux_lr, self.options.aux_beta1)

    # ------------------------------------------------------------------ saliency
    def mask(self, critic, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The saliency mask of ``critic`` on (obs, action): boolean [B, C, H, W]."""
        return saliency_mask(q1_guided_backprop(critic, obs, action), self.quantile)

    def fill_value(self, obs: torch.Tensor) -> torch.Tensor:
        """One grey level u ~ U(min obs, max obs) for the whole batch (a 0-d tensor)."""
        lo, hi = obs.min(), obs.max()
        r = torch.rand((), device=obs.device, generator=self.generator)
        return lo + (hi - lo) * r

    # ------------------------------------------------------------------ losses
    def critic_gradient(self, step) -> CriticGradOutput:
        nets, obs, action, target, diagnostics = step
        critic = nets.critic
        mask = self.mask(critic, obs, action)
        masked = fill_unsalient(obs, mask, self.fill_value(obs))
        b = obs.shape[0]
        q1, q2 = critic(torch.cat([obs, masked]), torch.cat([action, action]))   # one pass over o and o~
        q1_o, q1_m, q2_o, q2_m = q1[:b], q1[b:], q2[:b], q2[b:]
        td = F.mse_loss(q1_o, target) + F.mse_loss(q2_o, target)
        consistency = F.mse_loss(q1_o, q1_m) + F.mse_loss(q2_o, q2_m)
        out = self.backward_single(nets, td + self.weight * consistency)
        out.metrics = {"sgqn_td_loss": td.detach(), "sgqn_consistency_loss": consistency.detach(),
                       "sgqn_mask_fraction": mask.float().mean()}
        return out

    def prediction_target(self, nets, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """M+: the saliency mask of the current (updated) critic, float 0/1, no gradient."""
        return self.mask(nets.critic, obs, action).float()

    def prediction_logits(self, nets, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """D(P_c f(obs), action): the saliency predictor's logits [B, C, H, W] (with gradient)."""
        return self.decoder(nets.critic.encoder(obs), action)

    def auxiliary_update(self, step) -> dict:
        nets, batch = step.nets, step.batch
        obs, action = batch.obs, batch.action
        target = self.prediction_target(nets, obs, action)
        overlaid = self.overlay(obs, generator=self.generator)[0]
        loss = F.binary_cross_entropy_with_logits(self.prediction_logits(nets, overlaid, action), target)
        self.auxiliary_step(self.optimizer, self.params, loss, "sgqn auxiliary")
        return {"sgqn_prediction_loss": loss.detach(), "skipped_aux_steps": self.skipped_aux_steps.clone()}

    # ------------------------------------------------------------------ diagnostics
    def evaluation_images(self, nets, obs: torch.Tensor) -> dict[str, np.ndarray]:
        """For the newest frame of each observation, with the policy's mean action: the frame, its guided-backprop
        saliency (normalised per image), the frame with the unsalient pixels greyed out (the critic's mask M), and
        the decoder's predicted mask."""
        x = self.acting_view(torch.as_tensor(obs, device=self.device).float())
        with torch.no_grad():
            action = nets.actor(x, compute_pi=False, compute_log_pi=False)[0]
        attribution = q1_guided_backprop(nets.critic, x, action)
        mask = saliency_mask(attribution, self.quantile)
        with torch.no_grad():
            predicted = torch.sigmoid(self.prediction_logits(nets, x, action))
        sal = attribution[:, -3:].abs().amax(1, keepdim=True)
        sal = sal / sal.amax((2, 3), keepdim=True).clamp_min(1e-12)
        return {
            "sgqn_observation": newest_frames(x),
            "sgqn_saliency": newest_frames((255.0 * sal).expand(-1, 3, -1, -1)),
            "sgqn_mask": newest_frames(fill_unsalient(x, mask, x.new_tensor(127.5))),
            "sgqn_predicted_mask": newest_frames(255.0 * predicted),
        }

    # ------------------------------------------------------------------ state
    def state_dict(self):
        return {**super().state_dict(), "decoder": self.decoder.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        self.decoder.load_state_dict(state["decoder"])
        load_state(self.optimizer, state["optimizer"])


ALGORITHM = SGQN
