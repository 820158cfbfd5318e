"""`CG2A`: the high-level aggregator a training loop calls once per update."""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import Tensor

from cg2a_ext import reference
from cg2a_ext._extension import has_fused_ops
from cg2a_ext.reference import MASKS, NONFINITE_POLICIES, AggregateResult

BACKENDS = ("auto", "fused", "reference")


class CG2A:
    """Conflict-aware Gradient Agreement Augmentation (method doc, sections 2-4).

    Each call draws gamma ~ U(alpha, beta) (a constant gamma V: alpha = beta = V)
    and aggregates the K stacked per-loss gradients with GAS weights and SGS.

    Args:
        alpha, beta: range of the SGS damping gamma (paper: 0.22, 0.28).
        gas: Gradient Agreement Solver weights (off: w = 1/K).
        sgs: Soft Gradient Surgery (off: m = 1).
        mask: "agree" (all K strictly positive or all strictly negative) or
            "positive" (the paper's literal Eq. 9).
        generator: CPU torch.Generator for gamma (None: the global RNG).
        nonfinite: "raise" on a NaN/Inf input gradient (or a result that
            does not fit), or "zero" the output and set result.nonfinite
            (result.overflow); result.zeroed says either.
        backend: "fused" (the compiled ops), "reference" (plain PyTorch), or
            "auto" (fused when compiled and K <= 32, else reference).
    """

    def __init__(
        self,
        alpha: float = 0.22,
        beta: float = 0.28,
        gas: bool = True,
        sgs: bool = True,
        mask: str = "agree",
        generator: torch.Generator | None = None,
        nonfinite: str = "raise",
        backend: str = "auto",
    ) -> None:
        # gamma ~ U(alpha, beta) must lie in [0, 1] (the fused ops refuse it at the first call, the
        # reference would use it): refuse the range here, naming the parameter (NaN fails too).
        for name, value in (("alpha", alpha), ("beta", beta)):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"CG2A: {name} = {value}; expected a finite value in [0, 1] "
                                 "(gamma ~ U(alpha, beta), 0 <= alpha <= beta <= 1)")
        if not alpha <= beta:
            raise ValueError(f"CG2A: need 0 <= alpha <= beta <= 1, got alpha={alpha}, beta={beta}")
        if mask not in MASKS:
            raise ValueError(f"CG2A: unknown mask {mask!r}; expected one of {MASKS}")
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"CG2A: unknown nonfinite policy {nonfinite!r}; expected one of {NONFINITE_POLICIES}")
        if backend not in BACKENDS:
            raise ValueError(f"CG2A: unknown backend {backend!r}; expected one of {BACKENDS}")
        if backend == "fused" and not has_fused_ops():
            from cg2a_ext._extension import require_fused_ops

            require_fused_ops()
        if generator is not None and generator.device.type != "cpu":
            raise ValueError("CG2A: gamma is drawn on the CPU; pass a CPU torch.Generator")
        self.alpha, self.beta = float(alpha), float(beta)
        self.gas, self.sgs, self.mask = gas, sgs, mask
        self.generator = generator
        self.nonfinite = nonfinite
        self.backend = backend

    def __repr__(self) -> str:
        return (
            f"CG2A(alpha={self.alpha}, beta={self.beta}, gas={self.gas}, sgs={self.sgs}, "
            f"mask={self.mask!r}, nonfinite={self.nonfinite!r}, backend={self.backend!r})"
        )

    def draw_gamma(self) -> float:
        """gamma ~ U(alpha, beta), drawn on the CPU (no device synchronisation)."""
        if self.alpha == self.beta:
            return self.alpha
        u = torch.rand((), generator=self.generator, dtype=torch.float64).item()
        return self.alpha + (self.beta - self.alpha) * u

    def _use_fused(self, k: int) -> bool:
        if self.backend == "reference":
            return False
        if self.backend == "fused":
            return True
        if not has_fused_ops():
            return False
        from cg2a_ext.ops import MAX_K

        return k <= MAX_K

    def __call__(self, grads: Sequence[Tensor], out: Sequence[Tensor] | None = None) -> AggregateResult:
        """Aggregate `grads` (list of [K, *shape_t]); write into `out` if given."""
        if not grads:
            raise ValueError("CG2A: grads is an empty list")
        gamma = self.draw_gamma()
        if self._use_fused(grads[0].shape[0]):
            from cg2a_ext import ops

            aggregate = ops.aggregate
        else:
            aggregate = reference.aggregate
        result = aggregate(
            grads, gamma, gas=self.gas, sgs=self.sgs, mask=self.mask, out=out, nonfinite=self.nonfinite
        )
        return result._replace(gamma=gamma)

    def apply_(self, params: Iterable[torch.nn.Parameter], grads: Sequence[Tensor]) -> AggregateResult:
        """Aggregate into the parameters' .grad (allocated where None: the aggregate writes every element, so
        no zero fill is launched; if it raises, those .grad are None again, never left uninitialised)."""
        params = list(params)
        if len(params) != len(grads):
            raise ValueError(f"CG2A.apply_: {len(params)} parameters but {len(grads)} stacked gradients")
        allocated = [p for p in params if p.grad is None]
        for p in allocated:
            p.grad = torch.empty_like(p)
        try:
            return self(grads, out=[p.grad for p in params])
        except BaseException:
            for p in allocated:
                p.grad = None
            raise
