"""cg2a: the K per-loss critic gradients from one batched backward, aggregated by CG2A (GAS + SGS)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from cg2a_ext import CG2A

from cg2a_ext.rl.algorithms.base import CriticGradOutput
from cg2a_ext.rl.algorithms.parts.combination import AugmentationCombination, CombinationOptions
from cg2a_ext.rl.algorithms.parts.gradient_diagnostics import gram_diagnostics


@dataclass
class CG2AOptions(CombinationOptions):
    gas: bool = True
    """Gradient Agreement Solver weights (off: w_i = 1/K)."""
    sgs: bool = True
    """Soft Gradient Surgery mask (off: m = 1)."""
    sgs_damping: tuple[float, float] = (0.22, 0.28)
    """SGS damping range: gamma ~ U(A, B) drawn per update; A = B for a constant (e.g. 0.3 0.3). Also --gamma."""
    mask: Literal["agree", "positive"] = "agree"
    """SGS agreement test: agree (all K of one strict sign) or positive (all > 0, the paper's Eq. 9 literally)."""


class CG2AAlgorithm(AugmentationCombination):
    name = "cg2a"
    label = "CG2A"
    gpu_steps_per_s = (26.5, "measured")
    Options = CG2AOptions
    cli_aliases = {"sgs_damping": ("--gamma",)}
    summary = "CG2A: per-loss gradients weighted by GAS and softly masked by SGS"
    method_options = ("augmentations", "gas", "sgs", "sgs_damping", "mask", "image_bank", "overlay_s_mu")

    @classmethod
    def check_config(cls, options, cfg) -> None:
        super().check_config(options, cfg)
        from cg2a_ext.rl.config import ConfigError

        damping = options.sgs_damping
        if not (isinstance(damping, tuple) and len(damping) == 2):
            raise ConfigError(f"--sgs_damping (--gamma) takes two numbers A B (gamma ~ U(A, B)), got {damping!r}")
        lo, hi = damping
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in damping) or not 0.0 <= lo <= hi <= 1.0:
            raise ConfigError(f"--sgs_damping (--gamma) {lo} {hi}: need finite 0 <= A <= B <= 1")
        if options.mask not in ("agree", "positive"):
            raise ConfigError(f"--mask must be agree or positive, got {options.mask!r}")

    @classmethod
    def ablation(cls, options) -> str | None:
        return {(True, True): "cg2a", (True, False): "ac+gas", (False, True): "ac+sgs",
                (False, False): "ac"}[bool(options.gas), bool(options.sgs)]

    def __init__(self, cfg, device, seeds) -> None:
        super().__init__(cfg, device, seeds)
        self.gamma_generator = seeds.torch_generator("gamma")   # gamma is drawn on the CPU
        self.aggregator = CG2A(alpha=self.options.sgs_damping[0], beta=self.options.sgs_damping[1], gas=self.options.gas,
                               sgs=self.options.sgs, mask=self.options.mask,
                               generator=self.gamma_generator,
                               nonfinite="zero" if self.nonfinite == "skip" else "raise")

    def critic_gradient(self, step) -> CriticGradOutput:
        nets, obs, action, target, diagnostics = step
        params = nets.critic_params
        grads, losses = self.per_loss_grads(nets, obs, action, target)
        for p in params:
            p.grad = None
        res = self.aggregator.apply_(params, grads)

        diag = {}
        if diagnostics:
            diag = gram_diagnostics(res.gram, weights=res.weights, conflict_fraction=res.conflict_fraction,
                                    gamma=res.gamma)
            for i, l in enumerate(losses.tolist()):
                diag[f"loss_{i}"] = l
        # a non-finite input or an overflow zeroed the output: the core skips the step (a device flag)
        return CriticGradOutput(losses.mean(), res.zeroed, diag)

    def state_dict(self):
        return {**super().state_dict(), "gamma_generator": self.gamma_generator.get_state()}

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        self.gamma_generator.set_state(state["gamma_generator"].cpu())


ALGORITHM = CG2AAlgorithm
