"""Numerical precision of the agent's network computations (``--precision``).

* ``fp32``: IEEE float32 matmuls and convolutions everywhere (on CUDA this also turns off the TF32
  convolutions PyTorch allows by default).
* ``tf32``: on CUDA (Ampere and later), float32 matmuls and cuDNN convolutions run on the TF32 tensor
  cores (10-bit mantissa products, float32 accumulation). A CPU has no TF32 mode: there it computes as
  ``fp32``.
* ``bf16``: the forwards of the actor, the critic and the target critic run under
  ``torch.autocast(dtype=torch.bfloat16)`` (``networks.AutocastForward``); their outputs, the losses,
  the parameters, every gradient (the per-loss gradients of the float32 parameters included), the
  aggregation and the optimizer state stay float32. Matmuls left in float32 use TF32 on CUDA.
* ``auto``: ``tf32`` on CUDA, ``fp32`` on the CPU.

The TF32 switches are process-wide in PyTorch; :func:`matmul_precision` sets them only for the
duration of a block (the agent's update) and restores them afterwards.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

PRECISIONS = ("auto", "fp32", "tf32", "bf16")


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``auto`` -> ``tf32`` on CUDA, ``fp32`` elsewhere; the other names are returned as they are.

    Raises:
        ValueError: an unknown name, or ``bf16`` on a CUDA device without bfloat16 support.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if precision == "auto":
        return "tf32" if device.type == "cuda" else "fp32"
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support")
    return precision


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The dtype the networks' forwards autocast to: bfloat16 for ``bf16``, None (no autocast) otherwise."""
    return torch.bfloat16 if precision == "bf16" else None


@contextmanager
def matmul_precision(precision: str, device: torch.device | str) -> Iterator[None]:
    """Within the block, float32 matmuls and convolutions on ``device`` use TF32 (``tf32``, ``bf16``) or
    IEEE float32 (``fp32``); the previous switches come back on exit. Nothing changes on a CPU."""
    if torch.device(device).type != "cuda":
        yield
        return
    mode = "ieee" if precision == "fp32" else "tf32"
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    saved = matmul.fp32_precision, conv.fp32_precision
    matmul.fp32_precision, conv.fp32_precision = mode, mode
    try:
        yield
    finally:
        matmul.fp32_precision, conv.fp32_precision = saved
