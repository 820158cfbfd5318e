"""What an algorithm is to the SAC core: the ``Algorithm`` interface and the critic loss.

The SAC core (``cg2a_ext.rl.core.agent.sac_agent``) owns the actor, the critic, their targets, the
temperature and their optimizers, and runs one update as

    batch    = replay.sample(); obs, next_obs = algorithm.augment_observations(...)
    y        = TD target on the clean next observation
    critic   : algorithm.critic_gradient(CriticStep(nets, obs, action, y, diagnostics)) writes the critic's .grad,
               then the core's critic optimizer steps
    actor    : every actor_update_freq updates (SAC, encoder detached)
    targets  : every critic_target_update_freq updates
    auxiliary: algorithm.auxiliary_update(AuxiliaryStep(nets, batch, ...)) every aux_update_freq updates,
               with the algorithm's own networks and optimizers (built in ``attach``)

An algorithm owns its random generators and auxiliary state and saves them in ``state_dict``.
Non-finite gradients are never written into the model silently: every optimizer step checks the
gradients (``cg2a_ext.rl.core.agent.optim``; auxiliary ones through ``auxiliary_step``). With
``nonfinite="skip"`` the step is skipped on the device and counted, nothing read back; with
``"raise"`` FloatingPointError is raised.
"""
from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from cg2a_ext.rl.run.seeding import SeedStreams

if TYPE_CHECKING:
    from cg2a_ext.rl.config import TrainConfig


class Batch(NamedTuple):
    """One sampled batch after preprocessing: float observations, [B, 1] reward and not_done."""

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    not_done: torch.Tensor


@dataclass(frozen=True)
class AgentNetworks:
    """What an algorithm may use of the SAC core (the agent itself is not handed out): the networks, the critic's
    trainable parameters (whose .grad a critic step writes), the shapes and where they live."""

    actor: nn.Module
    critic: nn.Module
    critic_target: nn.Module
    critic_params: list
    obs_shape: tuple[int, ...]
    action_dim: int
    device: torch.device
    channels_last: bool


class CriticStep(NamedTuple):
    """One critic update's inputs: the networks, the float batch (augmented as the algorithm asked), the TD target,
    and whether to return gradient diagnostics this update. Everything is on the device: the step reads nothing
    back and draws its randomness from the algorithm's generators."""

    nets: AgentNetworks
    obs: torch.Tensor
    action: torch.Tensor
    target: torch.Tensor
    diagnostics: bool = False


class AuxiliaryStep(NamedTuple):
    """One auxiliary update's inputs: the networks, the update's batch, the update count, the transitions stored
    so far, and ``sample_observations(n)``: n uint8 observations drawn from the replay on the device."""

    nets: AgentNetworks
    batch: "Batch"
    num_updates: int
    num_transitions: int
    sample_observations: Callable[[int], torch.Tensor]


@dataclass
class CriticGradOutput:
    loss: torch.Tensor                       # scalar, detached: the loss whose gradient was formed
    # the algorithm zeroed a non-finite gradient (bool, or a 0-d device flag): the step is skipped. A
    # non-finite .grad is caught by the core's step in any case.
    zeroed: bool | torch.Tensor = False
    diagnostics: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)   # extra scalars to log every update (e.g. auxiliary terms)


def critic_loss(model, obs, action, target):
    """(Q1 - y)^2 + (Q2 - y)^2 averaged over the batch (DMC-GB's critic loss)."""
    q1, q2 = model(obs, action)
    return F.mse_loss(q1, target) + F.mse_loss(q2, target)


def newest_frames(x: torch.Tensor) -> np.ndarray:
    """The newest RGB frame of each stacked observation [N, 3 * frames, H, W] (values 0-255) as uint8 [N, H, W, 3],
    the format of :meth:`Algorithm.evaluation_images`."""
    return x[:, -3:].detach().float().clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@dataclass
class NoOptions:
    """The algorithm has no options of its own."""


class Algorithm(abc.ABC):
    """One algorithm of the trainer. Subclasses set the class attributes and implement ``critic_gradient``.

    Class attributes:
        name: the registry name (``--algorithm``).
        label: how plots, tables and reports name the method (``"CG2A"``).
        summary: one line for ``--help`` and reports.
        Options: the dataclass of the algorithm's own options (one docstring per field); ``TrainConfig.options``
            holds an instance. Options left None are filled by ``resolve_options`` (per-task defaults).
        cli_prefix: the command line names option ``x`` ``--<cli_prefix>x`` (``--soda_crop``).
        cli_aliases: extra command-line names of an option (``{"sgs_damping": ("--gamma",)}``).
        shift: random-shift (DrQ) the training observations before every use.
        gradient_diagnostics: the algorithm forms K per-loss gradients and can log their Gram
            diagnostics (norms, cosines, weights, conflicts) at log steps.
        has_auxiliary_update: ``auxiliary_update`` does something (called every aux_update_freq updates).
        logged_metrics: names of the extra scalars it logs besides the SAC core's.
        method_options: options (of Options, or core options such as ``image_bank``) that make a different
            method (ablations, protocol options): plots and reports keep runs that differ in them apart.
        draws_overlay_images: some augmentation of the algorithm overlays images (``--image_bank``): results say
            which images.
        gpu_steps_per_s: agent steps/s end to end at the paper preset on one H100 (BENCHMARKS.md) and what the
            figure is: ``"measured"``, or whose figure it borrows and why. It holds only for the class that
            declares it (a subclass changes the update); None: no figure (the sweep's cost estimate says so).
        capturable: the update (critic step, actor, temperature and target steps) can be captured in a CUDA graph
            (``--cuda_graph``, ``cg2a_ext.rl.core.agent.graph``): every op runs on the device, nothing is read back,
            every random draw comes from a device generator once ``use_device_draws`` was called, and there is no
            auxiliary update. ``not_capturable_because`` says why not when False.
    """

    name: ClassVar[str]
    label: ClassVar[str] = ""
    summary: ClassVar[str]
    Options: ClassVar[type] = NoOptions
    cli_prefix: ClassVar[str] = ""
    cli_aliases: ClassVar[dict[str, tuple[str, ...]]] = {}
    shift: ClassVar[bool] = True
    gradient_diagnostics: ClassVar[bool] = False
    has_auxiliary_update: ClassVar[bool] = False
    logged_metrics: ClassVar[tuple[str, ...]] = ()
    method_options: ClassVar[tuple[str, ...]] = ()
    draws_overlay_images: ClassVar[bool] = False
    gpu_steps_per_s: ClassVar[tuple[float, str] | None] = None
    capturable: ClassVar[bool] = True
    not_capturable_because: ClassVar[str] = ""

    # ------------------------------------------------------------------ configuration
    @classmethod
    def num_losses(cls, options) -> int:
        """K: the number of critic loss terms (per-loss gradients) the algorithm forms."""
        return 1

    @classmethod
    def resolve_options(cls, options, cfg: "TrainConfig") -> None:
        """Fill, in place, the options left None from the task or the core options (default: nothing to fill)."""

    @classmethod
    def core_defaults(cls, options, cfg: "TrainConfig", given: set[str]) -> dict[str, Any]:
        """The method's own values of core options the user left unset (``given``: those that were set)."""
        return {}

    @classmethod
    def check_config(cls, options, cfg: "TrainConfig") -> None:
        """Raise ``ConfigError`` for option values this algorithm cannot run with."""

    @classmethod
    def overlays_with(cls, options) -> bool:
        """Whether a run with ``options`` overlays images (``draws_overlay_images`` says whether it can)."""
        return cls.draws_overlay_images

    @classmethod
    def ablation(cls, options) -> str | None:
        """The row of the CG2A paper's ablation (Table 4) a run of these options is, or None."""
        return None

    @classmethod
    def options_from_dict(cls, values: dict) -> Any:
        """The Options from their JSON form (lists become tuples; unknown keys refused)."""
        from cg2a_ext.rl.config import ConfigError

        if not isinstance(values, dict):
            raise ConfigError(f"{cls.name} options must be a JSON object, got {values!r}")
        names = {f.name for f in dataclasses.fields(cls.Options)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown {cls.name} options: {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        try:
            return cls.Options(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
        except TypeError as e:
            raise ConfigError(f"{cls.name} options: {e}") from None

    @classmethod
    def cli_names(cls) -> dict[str, str]:
        """Option field -> its command-line name without dashes (``crop`` -> ``soda_crop``)."""
        return {f.name: f"{cls.cli_prefix}{f.name}" for f in dataclasses.fields(cls.Options)}

    @classmethod
    def option_docs(cls) -> dict[str, str]:
        from cg2a_ext.rl.config import field_docs

        return field_docs(cls.Options)

    # ------------------------------------------------------------------ construction
    def __init__(self, cfg: "TrainConfig", device: torch.device, seeds: SeedStreams) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.options = cfg.options if cfg.options is not None else self.Options()
        self.nonfinite = cfg.nonfinite
        self.K = self.num_losses(self.options)
        # augmentation draws (shift, crops, augmented copies) on the device that holds the batch
        self.generator = seeds.torch_generator("augment", self.device)
        self.num_aux_updates = 0
        self.skipped_aux_steps = torch.zeros((), device=self.device)    # a device counter: no read-back
        self.seeds = seeds

    @classmethod
    def network_obs_shape_for(cls, options, obs_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The observation shape the networks are built for, given the rendered one (default: the same).
        An algorithm that trains on crops of larger frames (SODA) returns the crop's shape."""
        return tuple(obs_shape)

    def network_obs_shape(self, obs_shape: tuple[int, ...]) -> tuple[int, ...]:
        return self.network_obs_shape_for(self.options, obs_shape)

    def attach(self, nets: AgentNetworks) -> None:
        """Build auxiliary networks and optimizers once the agent's networks exist (default: none)."""

    def place(self, nets: AgentNetworks, module: nn.Module) -> nn.Module:
        """An auxiliary module on the agent's device, with channels-last convolution weights where the agent's
        networks have them (``--channels_last``): the decoders of sgqn and smg then run in the layout of the
        trunk feeding them (1.5x faster forward and backward on one CPU core, oneDNN)."""
        module = module.to(self.device)
        if nets.channels_last:
            module.to(memory_format=torch.channels_last)
        return module

    # ------------------------------------------------------------------ the update
    def augment_observations(self, obs_u8: torch.Tensor) -> torch.Tensor:
        """The training view of a uint8 batch (obs and next_obs): DrQ's random shift, or the batch itself."""
        if not self.shift:
            return obs_u8
        from cg2a_ext.rl.core.augmentations import random_shift

        return random_shift(obs_u8, generator=self.generator)

    def use_device_draws(self) -> None:
        """Draw every per-update random number on the device from now on (called before an update is captured
        in a CUDA graph, whose replays cannot see a host draw). Default: the augmentations already draw from
        ``self.generator`` on the device; an algorithm that draws on the host overrides this."""

    def acting_view(self, obs: torch.Tensor) -> torch.Tensor:
        """The view of a float observation the policy acts on (training and evaluation); default: itself."""
        return obs

    @abc.abstractmethod
    def critic_gradient(self, step: CriticStep) -> CriticGradOutput:
        """Write the critic gradient into ``step.nets.critic_params``' .grad; return the loss and diagnostics."""

    def auxiliary_update(self, step: AuxiliaryStep) -> dict[str, Any]:
        """The method's own losses and optimizer steps after the SAC updates; returns metrics to log."""
        return {}

    def evaluation_images(self, nets: AgentNetworks, obs: torch.Tensor) -> dict[str, np.ndarray]:
        """Images worth looking at for a few evaluation frames (masks, reconstructions): name -> [N, H, W, 3] uint8."""
        return {}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "num_aux_updates": self.num_aux_updates,
                "skipped_aux_steps": int(self.skipped_aux_steps.item())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"].cpu())
        self.num_aux_updates = int(state.get("num_aux_updates", 0))
        self.skipped_aux_steps.fill_(int(state.get("skipped_aux_steps", 0)))

    # ------------------------------------------------------------------ helpers for subclasses
    def backward_single(self, nets: AgentNetworks, loss: torch.Tensor) -> CriticGradOutput:
        """The critic gradient of one scalar loss."""
        params = nets.critic_params
        for p in params:
            p.grad = None
        loss.backward()
        return CriticGradOutput(loss.detach())     # the core's step checks the gradient

    def auxiliary_step(self, optimizer: torch.optim.Optimizer, params: list, loss: torch.Tensor, what: str,
                       max_grad_norm: float | None = None) -> torch.Tensor:
        """One step of an auxiliary optimizer (fused Adam, ``cg2a_ext.rl.core.agent.optim.adam``) on ``loss``:
        backward, optional global grad-norm clipping, then the step under the ``nonfinite`` policy (skipped on
        the device and counted in ``skipped_aux_steps``, or raise). The gradients are cleared afterwards, so none
        is left in parameters the auxiliary optimizer shares with the critic. Returns the 0-d skip flag."""
        from cg2a_ext.rl.core.agent.optim import guarded_step

        for p in params:
            p.grad = None
        loss.backward()
        if max_grad_norm is not None:
            # a non-finite norm leaves every gradient non-finite, so the step below is skipped all the same
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        skipped = guarded_step(optimizer, params, self.nonfinite, what, self.skipped_aux_steps)
        for p in params:
            p.grad = None
        return skipped
