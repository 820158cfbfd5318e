"""Adam steps that never write a non-finite gradient into a model, decided on the device.

With ``nonfinite="skip"`` the decision whether to step stays on the device: a 0-d flag (1.0 when
some gradient holds a NaN or Inf, or when the algorithm says its gradient was zeroed) is handed to
fused Adam as its ``found_inf``, the mechanism ``torch.amp.GradScaler`` uses. The kernel then leaves
parameters, moments and the step count as they were, and a device counter adds the flag. Nothing is
read back to the host, so a GPU update does not wait for its own kernels (the host can queue the
next update's work meanwhile), and the update can be captured in a CUDA graph. With
``nonfinite="raise"`` the flag is read back and a non-finite gradient raises ``FloatingPointError``:
that policy has to synchronise.

Fused Adam is the same algorithm as the default (for-each) implementation; it runs as one kernel
per parameter group and step and can differ from it in the last bits.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Iterable

import torch


def adam(params: Iterable[torch.Tensor], lr: float, beta1: float) -> torch.optim.Adam:
    """Adam(lr, betas=(beta1, 0.999)) as fused kernels: it can take ``found_inf``."""
    return torch.optim.Adam(params, lr=lr, betas=(beta1, 0.999), fused=True)


def load_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """``optimizer.load_state_dict(state)`` keeping ``optimizer``'s implementation: a state saved by another one
    (checkpoints written before the steps were fused) would otherwise bring its ``fused``/``foreach`` flags along,
    and the step counts would stay where that implementation kept them."""
    keep = {key: optimizer.defaults.get(key) for key in ("fused", "foreach", "capturable")}
    optimizer.load_state_dict({**state, "param_groups": [{**group, **keep} for group in state["param_groups"]]})


@lru_cache(maxsize=None)
def _one(device: torch.device) -> torch.Tensor:
    """The unscale factor 1.0 on ``device``, made once: the check runs in every step."""
    return torch.ones((), device=device)


def _fused(optimizer: torch.optim.Optimizer) -> bool:
    return all(group.get("fused") for group in optimizer.param_groups)


def nonfinite_flag(params: Iterable[torch.Tensor], also: torch.Tensor | None = None) -> torch.Tensor:
    """0-d float32 on the parameters' device: 1.0 when any ``.grad`` of ``params`` holds a NaN or Inf (or when
    ``also``, a 0-d bool or 0/1 flag, is set), else 0.0; computed without reading anything back."""
    params = list(params)
    grads = [p.grad for p in params if p.grad is not None]
    device = params[0].device if params else torch.device("cpu")
    flag = torch.zeros((), dtype=torch.float32, device=device)
    if grads:
        # multiplies every gradient by 1.0 (no change) and sets flag where one is not finite
        torch._amp_foreach_non_finite_check_and_unscale_(grads, flag, _one(device))
    if also is not None:
        flag = torch.maximum(flag, also.to(device=device, dtype=torch.float32))
    return flag


def guarded_step(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], policy: str, what: str,
                 skipped: torch.Tensor | None = None, zeroed: torch.Tensor | None = None) -> torch.Tensor:
    """One step of the fused ``optimizer`` (Adam, AdamW or SGD built with ``fused=True``: they take
    ``found_inf``) over ``params``' gradients unless one is non-finite, or ``zeroed`` (a 0-d flag from the
    algorithm) is set. ``policy`` "skip": skipped on the device and added to the 0-d counter ``skipped``;
    "raise": FloatingPointError naming ``what``. Returns the 0-d flag (1.0 = skipped)."""
    if not _fused(optimizer):
        raise ValueError(f"guarded_step needs a fused optimizer (e.g. cg2a_ext.rl.core.agent.optim.adam) for the {what}: "
                         f"only those can skip a step on the device")
    flag = nonfinite_flag(params, zeroed)
    if policy == "raise":
        if flag.item():     # the one read-back this policy needs
            raise FloatingPointError(f"non-finite {what} gradient")
        optimizer.step()
        return flag
    if policy != "skip":
        raise ValueError(f"unknown nonfinite policy {policy!r}; expected 'skip' or 'raise'")
    optimizer.found_inf = flag
    try:
        optimizer.step()
    finally:
        del optimizer.found_inf
    if skipped is not None:
        skipped.add_(flag)
    return flag
