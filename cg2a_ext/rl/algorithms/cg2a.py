"""cg2a: the K per-loss critic gradients from one batched backward, aggregated by CG2A (GAS + SGS)."""
from __future__ import annotations

from cg2a_ext import CG2A

from .base import CriticGradOutput
from .combination import AugmentationCombination
from .gradient_diagnostics import gram_diagnostics


class CG2AAlgorithm(AugmentationCombination):
    name = "cg2a"
    summary = "CG2A: per-loss gradients weighted by GAS and softly masked by SGS"
    method_options = ("augmentations", "gas", "sgs", "gamma", "mask")

    def __init__(self, cfg, device, seeds) -> None:
        super().__init__(cfg, device, seeds)
        self.gamma_generator = seeds.torch_generator("gamma")   # gamma is drawn on the CPU
        self.aggregator = CG2A(alpha=cfg.gamma[0], beta=cfg.gamma[1], gas=cfg.gas, sgs=cfg.sgs, mask=cfg.mask,
                               generator=self.gamma_generator,
                               nonfinite="zero" if self.nonfinite == "skip" else "raise")

    def critic_gradient(self, agent, obs, action, target, *, diagnostics=False) -> CriticGradOutput:
        params = agent.critic_params
        grads, losses = self.per_loss_grads(agent, obs, action, target)
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
