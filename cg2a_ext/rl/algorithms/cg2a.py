"""cg2a: the K per-loss critic gradients from one batched backward, aggregated by CG2A (GAS + SGS)."""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Literal

import torch

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
        self.gamma_on_device = False

    def use_device_draws(self) -> None:
        """Draw gamma on the device from now on (a captured update cannot see a host draw): from the same seed
        stream, on the augmentation device (on a CPU the very same numbers as the host draw; a CUDA generator
        draws others), applied without a read-back (``aggregate_with_device_gamma``)."""
        if self.gamma_on_device:
            return
        self.gamma_on_device = True
        if self.device.type != "cpu":
            self.gamma_generator = self.seeds.torch_generator("gamma", self.device)

    def aggregate_with_device_gamma(self, params, grads):
        """``aggregator.apply_(params, grads)`` with gamma ~ U(A, B) drawn on the device as a 0-d tensor.

        The fused op takes gamma as a host number. Its output is m * s (s the weighted sum, m = 1 where the K
        signs agree, gamma where they conflict), linear in gamma: out(gamma) = out(0) + gamma * (out(1) - out(0)).
        That is exact in floating point too: out(1) - out(0) is 0 where the signs agree and s where they
        conflict, and gamma * s is formed in the gradients' dtype as the op forms it (float32 for float32)."""
        agg = self.aggregator
        draws = agg.alpha != agg.beta       # as CG2A.draw_gamma: a constant gamma draws nothing
        u = torch.rand((), generator=self.gamma_generator, dtype=torch.float64,
                       device=self.gamma_generator.device) if draws else None
        for p in params:
            if p.grad is None:              # every element is written below: no zero fill
                p.grad = torch.empty_like(p)
        out = [p.grad for p in params]
        if agg._use_fused(grads[0].shape[0]):
            from cg2a_ext.ops import aggregate
        else:
            from cg2a_ext.reference import aggregate
        options = dict(gas=agg.gas, sgs=agg.sgs, mask=agg.mask, nonfinite=agg.nonfinite)
        if u is None or not agg.sgs:        # the constant gamma (or none, SGS off) may be a constant of a graph
            return aggregate(grads, agg.alpha, out=out, **options)._replace(gamma=agg.alpha)
        gamma = agg.alpha + (agg.beta - agg.alpha) * u.to(self.device)   # float64, as draw_gamma forms it
        res = aggregate(grads, 0.0, out=out, **options)
        undamped = aggregate(grads, 1.0, **options).grads
        torch._foreach_sub_(undamped, out)
        torch._foreach_mul_(undamped, gamma.to(out[0].dtype))
        torch._foreach_add_(out, undamped)
        return res._replace(gamma=gamma)

    def critic_gradient(self, step) -> CriticGradOutput:
        nets, obs, action, target, diagnostics = step
        params = nets.critic_params
        grads, losses = self.per_loss_grads(nets, obs, action, target)
        for p in params:
            p.grad = None
        res = self.aggregate_with_device_gamma(params, grads) if self.gamma_on_device else \
            self.aggregator.apply_(params, grads)

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
        saved = state["gamma_generator"].cpu()
        if saved.numel() == self.gamma_generator.get_state().numel():
            self.gamma_generator.set_state(saved)
            return
        # The checkpoint drew gamma on the other side (a CPU generator's state and a CUDA one's differ in size:
        # --cuda_graph on CUDA draws it on the GPU, off on the host). Neither stream can continue on the other
        # generator; this one is seeded from the saved state, so the resumed run is still determined by it.
        if saved.numel() > 64:          # a CPU generator's state: its next draw is the seed
            source = torch.Generator()
            source.set_state(saved)
            seed = int(torch.randint(0, 2**62, (), generator=source))
        else:                           # a CUDA generator's (seed, offset)
            seed = int.from_bytes(saved.numpy().tobytes(), "little") % 2**62
        self.gamma_generator.manual_seed(seed)
        print(f"cg2a: the checkpoint drew gamma {'on the host' if saved.numel() > 64 else 'on the GPU'}, this run "
              f"draws it on {self.gamma_generator.device} (--cuda_graph): its generator is seeded from the saved "
              "state", file=sys.stderr, flush=True)


ALGORITHM = CG2AAlgorithm
