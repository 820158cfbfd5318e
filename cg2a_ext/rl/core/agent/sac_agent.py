"""The one SAC core (DMC-GB architecture and hyper-parameters).

Algorithms (``cg2a_ext.rl.algorithms``) differ in how the critic gradient is formed and in the
auxiliary networks, losses and optimizers they add; the actor, temperature and target updates
are shared and live here.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from cg2a_ext.rl.algorithms.base import AgentNetworks, Algorithm, AuxiliaryStep, Batch, CriticStep
from cg2a_ext.rl.core.agent.precision import autocast_dtype, matmul_precision, resolve_precision

from cg2a_ext.rl.core.agent.networks import (build_networks, compile_blocks, set_autocast,
                                             stack_heads_in_optimizer_state)
from cg2a_ext.rl.core.agent.optim import adam, guarded_step, load_state


def soft_update(net, target, tau: float) -> None:
    with torch.no_grad():
        src = list(net.parameters())
        dst = list(target.parameters())
        torch._foreach_lerp_(dst, src, tau)


def resolve_compile(compile: str, device: torch.device | str) -> bool:
    """``--compile``: on, off, or auto (off on every device: compiling the blocks measured no gain on an H100)."""
    if compile not in ("auto", "on", "off"):
        raise ValueError(f"unknown compile setting {compile!r}; choose auto, on or off")
    return compile == "on"


class UpdateMetrics(dict):
    """An update's metrics (name -> 0-d tensor or number, logged every update) and ``diagnostics``: the gradient
    diagnostics of the updates that asked for them (logged apart, at log steps)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.diagnostics: dict = {}


class SACAgent:
    """SAC from pixels. ``update(replay)`` does one critic update (and the actor,
    temperature and target updates every ``actor_update_freq`` /
    ``critic_target_update_freq`` updates, the algorithm's auxiliary update every
    ``aux_update_freq``) and returns a metrics dict.

    Speed options of ``cfg`` (none changes the algorithm; see ``TrainConfig``): ``precision``
    (``cg2a_ext.rl.core.agent.precision``), ``channels_last`` (the convolution weights, and so the trunk's
    activations, in NHWC; the batches are converted in ``preprocess``), ``compile`` (the networks'
    building blocks through torch.compile, ``networks.compile_blocks``), ``cuda_graph`` (on CUDA the update
    replayed as captured graphs after a self-check, ``graph.py``; ``update_on`` is the update they capture).
    """

    def __init__(self, obs_shape, action_dim: int, cfg, algorithm: Algorithm,
                 device: torch.device | str = "cpu", networks: tuple | None = None, report=print):
        """``networks``: optional ``(actor, critic, critic_target)`` with the interfaces of
        ``networks.py`` (e.g. another trunk); by default the DMC-GB networks sized by ``cfg``. ``report``: where
        one-line notes go (whether the update runs as a CUDA graph, and why not)."""
        self.cfg = cfg
        self.device = torch.device(device)
        self.action_dim = action_dim
        self.algorithm = algorithm
        # the networks' input: the rendered frames, or the algorithm's crop of them (SODA)
        self.obs_shape = algorithm.network_obs_shape(tuple(obs_shape))
        if networks is None:
            networks = build_networks(
                self.obs_shape, action_dim, num_conv_layers=cfg.num_conv_layers, num_filters=cfg.num_filters,
                num_stride2=cfg.num_stride2, projection_dim=cfg.projection_dim, hidden_dim=cfg.hidden_dim,
                log_std_min=cfg.actor_log_std_min, log_std_max=cfg.actor_log_std_max)
        self.actor, self.critic, self.critic_target = networks
        self.precision = resolve_precision(cfg.precision, self.device)
        self.channels_last = bool(cfg.channels_last)
        self.compiled = resolve_compile(cfg.compile, self.device)
        for m in (self.actor, self.critic, self.critic_target):
            m.to(self.device)
            if self.channels_last:   # 4-d parameters only: the convolution weights
                m.to(memory_format=torch.channels_last)
        set_autocast((self.actor, self.critic, self.critic_target), autocast_dtype(self.precision))
        if self.compiled:
            compile_blocks((self.actor, self.critic, self.critic_target))
        self.log_alpha = torch.tensor(math.log(cfg.init_temperature), device=self.device, requires_grad=True)
        self.target_entropy = -float(action_dim)
        self.actor_params = self.actor.own_parameters()
        self.critic_params = [p for p in self.critic.parameters() if p.requires_grad]
        # fused Adam: a step with a non-finite gradient is skipped on the device (``optim``)
        self.actor_optimizer = adam(self.actor_params, cfg.actor_lr, cfg.actor_beta1)
        self.critic_optimizer = adam(self.critic_params, cfg.critic_lr, cfg.critic_beta1)
        self.log_alpha_optimizer = adam([self.log_alpha], cfg.alpha_lr, cfg.alpha_beta1)
        self.num_updates = 0
        # device counters (0-d float32): counting a skipped step reads nothing back
        self.skipped_critic_steps = torch.zeros((), device=self.device)
        self.skipped_actor_steps = torch.zeros((), device=self.device)
        # what the algorithm sees of the agent: the networks, never the agent itself
        self.nets = AgentNetworks(self.actor, self.critic, self.critic_target, self.critic_params, self.obs_shape,
                                  action_dim, self.device, self.channels_last)
        algorithm.attach(self.nets)
        # --cuda_graph: the update as captured CUDA graphs (graph.py); None: every update runs eagerly
        from cg2a_ext.rl.core.agent.graph import GraphedUpdate, resolve_cuda_graph

        self.report = report
        use_graph, line = resolve_cuda_graph(cfg, self.device)
        if line:
            report(line)
        self.graph = GraphedUpdate(self) if use_graph else None

    # ------------------------------------------------------------------ acting
    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def train(self, training: bool = True) -> None:
        self.actor.train(training)
        self.critic.train(training)

    @property
    def K(self) -> int:
        """The number of critic loss terms the algorithm forms."""
        return self.algorithm.K

    @property
    def logs_gradient_diagnostics(self) -> bool:
        """The algorithm forms K per-loss gradients and returns their diagnostics when an update asks."""
        return self.algorithm.gradient_diagnostics

    def policy_view(self, obs: torch.Tensor) -> torch.Tensor:
        """The view of a float observation batch the policy acts on (SODA: the centre crop)."""
        return self.algorithm.acting_view(obs)

    @property
    def has_evaluation_images(self) -> bool:
        """The algorithm has images worth saving at evaluations (masks, reconstructions)."""
        return type(self.algorithm).evaluation_images is not Algorithm.evaluation_images

    @torch.no_grad()
    def evaluation_images(self, obs: torch.Tensor) -> dict[str, np.ndarray]:
        """The algorithm's images of ``obs`` (as ``policy_view`` returns it), evaluated in eval mode."""
        self.train(False)
        try:
            return self.algorithm.evaluation_images(self.nets, obs)
        finally:
            self.train(True)

    @torch.no_grad()
    def act(self, obs: np.ndarray, sample: bool = False) -> np.ndarray:
        """Action for one observation: the mean (evaluation) or a sample (training)."""
        x = self.policy_view(torch.as_tensor(np.asarray(obs), device=self.device).float().unsqueeze(0))
        with matmul_precision(self.precision, self.device):
            mu, pi, _, _ = self.actor(x, compute_pi=sample, compute_log_pi=False)
        a = pi if sample else mu
        return a[0].cpu().numpy().astype(np.float32)

    # ------------------------------------------------------------------ updates
    def preprocess(self, obs_u8: torch.Tensor) -> torch.Tensor:
        # augment the uint8 frames (shift, crop): a quarter of the bytes to move
        obs_u8 = self.algorithm.augment_observations(obs_u8)
        # Channels-last trunks want channels-last input; converting here, in the pass that makes the
        # floats anyway, saves the first convolution a layout copy on every forward of this batch.
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return obs_u8.to(torch.float32, memory_format=fmt)

    @torch.no_grad()
    def td_target(self, reward, next_obs, not_done) -> torch.Tensor:
        _, next_action, log_pi, _ = self.actor(next_obs)
        tq1, tq2 = self.critic_target(next_obs, next_action)
        target_v = torch.min(tq1, tq2) - self.alpha.detach() * log_pi
        return reward + not_done * self.cfg.discount * target_v

    def critic_step(self, obs, action, target, diagnostics: bool = False) -> CriticStep:
        return CriticStep(self.nets, obs, action, target, diagnostics)

    def update_critic(self, obs, action, target, diagnostics: bool = False) -> "UpdateMetrics":
        out = self.algorithm.critic_gradient(self.critic_step(obs, action, target, diagnostics))
        metrics = UpdateMetrics({"critic_loss": out.loss, **out.metrics})
        zeroed = out.zeroed if isinstance(out.zeroed, torch.Tensor) else \
            (torch.ones((), device=self.device) if out.zeroed else None)
        guarded_step(self.critic_optimizer, self.critic_params, self.cfg.nonfinite, "critic",
                     self.skipped_critic_steps, zeroed)
        metrics.diagnostics.update(out.diagnostics)
        return metrics

    def update_actor_and_alpha(self, obs) -> dict:
        with torch.no_grad():   # actor and critic share the trunk and both detach it: run it once
            trunk = self.critic.encoder.shared_cnn(obs)
        _, pi, log_pi, log_std = self.actor(obs, detach=True, trunk=trunk)
        q1, q2 = self.critic(obs, pi, detach=True, trunk=trunk)
        actor_loss = (self.alpha.detach() * log_pi - torch.min(q1, q2)).mean()
        # the actor's gradient only: a plain backward would also form the critic's head and projection
        # gradients (which reach its loss through q), only to clear them
        for p, g in zip(self.actor_params, torch.autograd.grad(actor_loss, self.actor_params)):
            p.grad = g
        guarded_step(self.actor_optimizer, self.actor_params, self.cfg.nonfinite, "actor", self.skipped_actor_steps)
        alpha_loss = (self.alpha * (-log_pi - self.target_entropy).detach()).mean()
        self.log_alpha.grad = None
        alpha_loss.backward()
        guarded_step(self.log_alpha_optimizer, [self.log_alpha], self.cfg.nonfinite, "temperature")
        return {"actor_loss": actor_loss.detach(), "alpha_loss": alpha_loss.detach(),
                "entropy": -log_pi.detach().mean()}

    def update_targets(self) -> None:
        soft_update(self.critic.Q, self.critic_target.Q, self.cfg.critic_tau)
        soft_update(self.critic.encoder, self.critic_target.encoder, self.cfg.encoder_tau)

    def update(self, replay, diagnostics: bool = False) -> "UpdateMetrics":
        """One update from ``replay``: its metrics (name -> 0-d tensor or number) and, when ``diagnostics`` is asked
        and the algorithm forms per-loss gradients, their diagnostics (``.diagnostics``)."""
        with matmul_precision(self.precision, self.device):
            return self._update(replay, diagnostics)

    def _update(self, replay, diagnostics: bool) -> dict:
        self.num_updates += 1
        actor_step = self.num_updates % self.cfg.actor_update_freq == 0
        target_step = self.num_updates % self.cfg.critic_target_update_freq == 0
        if self.graph is not None and not diagnostics:   # diagnostics read values back: those updates run eagerly
            metrics = self.graph.update(replay, (actor_step, target_step))
            if metrics is not None:
                return metrics
        batch = replay.sample(self.cfg.batch_size, device=self.device)
        return self.update_on(batch, actor_step, target_step, diagnostics, replay)

    def update_on(self, batch, actor_step: bool, target_step: bool, diagnostics: bool = False,
                  replay=None) -> "UpdateMetrics":
        """The update on a sampled uint8 ``batch`` (obs, action, reward, next_obs, not_done on the device): the
        critic step, the actor and temperature steps when ``actor_step``, the target step when ``target_step``,
        and, with ``replay`` given, the algorithm's auxiliary update when one falls due. The captured update
        (``graph.py``) runs exactly this on its static buffers, without ``replay``."""
        obs, action, reward, next_obs, not_done = batch
        obs = self.preprocess(obs)
        next_obs = self.preprocess(next_obs)
        target = self.td_target(reward, next_obs, not_done)
        metrics = self.update_critic(obs, action, target, diagnostics=diagnostics)
        if actor_step:
            metrics.update(self.update_actor_and_alpha(obs))
        if target_step:
            self.update_targets()
        if replay is not None and self.algorithm.has_auxiliary_update and \
                self.num_updates % self.cfg.aux_update_freq == 0:
            step = AuxiliaryStep(self.nets, Batch(obs, action, reward, next_obs, not_done), self.num_updates,
                                 replay.num_transitions,
                                 lambda n: replay.sample(n, device=self.device)[0])
            metrics.update(self.algorithm.auxiliary_update(step))
            self.algorithm.num_aux_updates += 1
        metrics["alpha"] = self.alpha.detach()
        metrics["target_q"] = target.mean()
        metrics["skipped_critic_steps"] = self.skipped_critic_steps.clone()   # this update's count, not a live view
        metrics["skipped_actor_steps"] = self.skipped_actor_steps.clone()
        return metrics

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {
            "actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(), "log_alpha": self.log_alpha.detach().clone(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "log_alpha_optimizer": self.log_alpha_optimizer.state_dict(),
            "num_updates": self.num_updates, "skipped_critic_steps": int(self.skipped_critic_steps.item()),
            "skipped_actor_steps": int(self.skipped_actor_steps.item()),
            "algorithm": self.algorithm.state_dict(),
        }

    def load_state_dict(self, state: dict, networks_only: bool = False) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        if networks_only:
            return
        load_state(self.actor_optimizer, state["actor_optimizer"])
        # checkpoints written before the twin heads were stacked hold their moments per head
        load_state(self.critic_optimizer, stack_heads_in_optimizer_state(state["critic_optimizer"], state["critic"]))
        load_state(self.log_alpha_optimizer, state["log_alpha_optimizer"])
        if self.graph is not None:     # the optimizers' state tensors were replaced: capture again
            self.graph.reset()
        self.num_updates = int(state["num_updates"])
        self.skipped_critic_steps.fill_(int(state["skipped_critic_steps"]))
        self.skipped_actor_steps.fill_(int(state["skipped_actor_steps"]))
        self.algorithm.load_state_dict(state["algorithm"])
