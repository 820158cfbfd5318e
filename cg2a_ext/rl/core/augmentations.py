"""Image augmentations for visual RL on batched tensors (any device).

Every augmentation takes a float tensor ``x`` of shape ``[B, C, H, W]``,
``C = 3 * frames`` (stacked RGB frames), values in [0, 255], and returns a
tensor of the same shape, dtype and device, values in [0, 255]. Randomness
comes only from the optional ``generator`` (a ``torch.Generator`` on ``x``'s
device), so a seeded generator reproduces the output exactly. Each sample
gets its own draw, shared by all of its stacked frames.

``make_combination("conv,overlay,overlay_s")`` (CG2A's default) builds the
list of augmented copies used by the critic update.
"""
from __future__ import annotations

import functools
import os
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from cg2a_ext.rl.core.image_bank import DEFAULT_POOL_SIZE, ImageBank, bank_options, resolve_image_bank

__all__ = [
    "random_shift",
    "random_conv",
    "random_conv_kernels",
    "apply_conv_kernels",
    "random_overlay",
    "random_overlays",
    "overlay_s",
    "OVERLAY_S_MU",
    "identity",
    "AUGMENTATIONS",
    "ALIASES",
    "Combination",
    "make_combination",
    "overlay_options",
]

Augmentation = Callable[..., torch.Tensor]


def _check(x: torch.Tensor, generator: torch.Generator | None, name: str,
           allow_uint8: bool = False) -> tuple[int, int, int, int]:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"{name}: expected a tensor [B, C, H, W], got {getattr(x, 'shape', type(x))}")
    if not (x.is_floating_point() or (allow_uint8 and x.dtype == torch.uint8)):
        raise ValueError(f"{name}: expected a floating-point tensor with values in [0, 255], got {x.dtype}")
    if x.shape[1] % 3:
        raise ValueError(f"{name}: channels must be 3 * frames, got C = {x.shape[1]}")
    if generator is not None:
        gd, xd = generator.device, x.device
        if gd.type != xd.type or (gd.index is not None and xd.index is not None and gd.index != xd.index):
            raise ValueError(f"{name}: generator is on {gd} but x is on {xd}; they must match")
    return tuple(x.shape)  # type: ignore[return-value]


def identity(x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Return ``x`` unchanged (a copy, so callers may modify the result)."""
    _check(x, generator, "identity")
    return x.clone()


_ARANGES: dict[tuple[int, int, torch.device], torch.Tensor] = {}


def _shifted_arange(n: int, pad: int, device: torch.device) -> torch.Tensor:
    """``arange(n) - pad`` on ``device``, made once per (n, pad, device): two launches fewer per shift. Not
    cached while a CUDA graph is being captured (the tensor would be filled only when the graph replays)."""
    key = (n, pad, device)
    cached = _ARANGES.get(key)
    if cached is None:
        cached = torch.arange(-pad, n - pad, device=device)
        if not (device.type == "cuda" and torch.cuda.is_current_stream_capturing()):
            _ARANGES[key] = cached
    return cached


def random_shift(x: torch.Tensor, *, generator: torch.Generator | None = None, pad: int = 4) -> torch.Tensor:
    """DrQ's random shift: replicate-pad by ``pad`` and crop back at a random offset.

    Offsets are integers drawn uniformly in ``[0, 2 * pad]`` per sample and
    axis (shared by the stacked frames), so pixels are moved, never blended.
    Also accepts uint8 frames (shift before converting: 4x less memory traffic).
    """
    b, c, h, w = _check(x, generator, "random_shift", allow_uint8=True)
    if pad < 0:
        raise ValueError(f"random_shift: pad must be >= 0, got {pad}")
    if pad == 0:
        return x.clone()
    offsets = torch.randint(0, 2 * pad + 1, (b, 2), device=x.device, generator=generator)
    # Replicate padding then cropping == reading the source at clamped coordinates, so the
    # whole augmentation is ONE gather over flattened pixels (no padded copy, no per-sample loop).
    # Source row of output row i: offset - pad + i, formed as offset + (i - pad) (the same integers).
    rows = (offsets[:, :1] + _shifted_arange(h, pad, x.device)).clamp_(0, h - 1)    # [B, H]
    cols = (offsets[:, 1:] + _shifted_arange(w, pad, x.device)).clamp_(0, w - 1)    # [B, W]
    index = (rows[:, :, None] * w + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return x.reshape(b, c, h * w).gather(2, index).view(b, c, h, w)


def random_conv_kernels(
    batch: int,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One random 3 x 3 conv kernel per sample, ``[B, 3 (out), 3 (in), 3, 3]``, N(0, 1) entries
    (unscaled ``torch.randn``, as SVEA / DMC-GB's ``random_conv``)."""
    return torch.randn(batch, 3, 3, 3, 3, device=device, dtype=dtype, generator=generator)


def apply_conv_kernels(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """``sigmoid(conv(x / 255, kernel_b)) * 255`` with replicate padding, sample ``b`` with
    ``kernels[b]`` on each of its stacked frames, as ONE grouped convolution (groups = B)."""
    b, c, h, w = x.shape
    frames = c // 3
    if kernels.shape != (b, 3, 3, 3, 3):
        raise ValueError(f"kernels must have shape {(b, 3, 3, 3, 3)}, got {tuple(kernels.shape)}")
    # [B, F*3, H, W] -> [F, B*3, H, W]: frames become the conv batch, samples the groups.
    y = x.reshape(b, frames, 3, h, w).transpose(0, 1).reshape(frames, b * 3, h, w) / 255.0
    y = F.pad(y, (1, 1, 1, 1), mode="replicate")
    y = F.conv2d(y, kernels.reshape(b * 3, 3, 3, 3).to(y.dtype), groups=b)
    y = torch.sigmoid(y) * 255.0
    return y.reshape(frames, b, 3, h, w).transpose(0, 1).reshape(b, c, h, w)


def random_conv(x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random convolution (Lee et al. 2020, as in SVEA / DMC-GB): a fresh
    :func:`random_conv_kernels` kernel per sample, shared by its stacked frames,
    replicate padding, sigmoid; see :func:`apply_conv_kernels`."""
    b = _check(x, generator, "random_conv")[0]
    kernels = random_conv_kernels(b, device=x.device, dtype=x.dtype, generator=generator)
    return apply_conv_kernels(x, kernels)


def random_overlays(
    x: torch.Tensor,
    alphas: Sequence[float],
    *,
    generator: torch.Generator | None = None,
    image_bank: ImageBank | str | os.PathLike | None = None,
) -> torch.Tensor:
    """One :func:`random_overlay` copy of ``x`` per weight in ``alphas``, ``[len(alphas), B, C, H, W]``, made
    together: the ``len(alphas) * B`` overlay images in one draw (copy i takes images i*B .. (i+1)*B) and
    every blend in one ``lerp``. CG2A's overlay and overlay-S copies are made this way (half the ops of two
    draws)."""
    b, c, h, w = _check(x, generator, "random_overlay")
    alphas = [float(a) for a in alphas]
    if not alphas or not all(0.0 <= a <= 1.0 for a in alphas):
        raise ValueError(f"random_overlay: every alpha must be in [0, 1], got {alphas}")
    bank = resolve_image_bank(image_bank)
    n = len(alphas)
    imgs = bank.draw(n * b, h, w, device=x.device, generator=generator, dtype=x.dtype)
    # (1 - alpha) * x + alpha * img as x + alpha * (img - x), the image broadcast over the stacked frames
    weight = alphas[0] if len(set(alphas)) == 1 else _weights(tuple(alphas), x.device, x.dtype)
    out = torch.lerp(x.reshape(1, b, c // 3, 3, h, w), imgs.view(n, b, 1, 3, h, w), weight)
    return out.view(n, b, c, h, w)


@functools.lru_cache(maxsize=None)
def _weights(alphas: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The blend weights as a [N, 1, 1, 1, 1, 1] tensor, made once per device (a host copy per update would
    stall a captured update)."""
    return torch.tensor(alphas, device=device, dtype=dtype).view(-1, 1, 1, 1, 1, 1)


def random_overlay(
    x: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    alpha: float = 0.5,
    image_bank: ImageBank | str | os.PathLike | None = None,
) -> torch.Tensor:
    """Random overlay (SODA / DMC-GB): ``(1 - alpha) * x + alpha * 255 * img``.

    ``img`` is a fresh image per sample, the same for all its stacked frames: a random resized crop of a
    uniformly chosen pool image, flipped horizontally with probability 1/2 (:meth:`ImageBank.draw`; the
    crop, flip and choice come from ``generator``, batched on ``x``'s device). ``image_bank``: an
    :class:`ImageBank`, a folder (ImageFolder-style, e.g. Places365), or None (``CG2A_OVERLAY_DATA`` if set,
    else the procedural bank).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"random_overlay: alpha must be in [0, 1], got {alpha}")
    return random_overlays(x, (alpha,), generator=generator, image_bank=image_bank)[0]


OVERLAY_S_MU = 0.1
"""Overlay-S's default weight mu (CG2A: mu < 0.2; the project's default 0.1, ``--overlay_s_mu``)."""


def overlay_s(
    x: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    alpha: float = OVERLAY_S_MU,
    image_bank: ImageBank | str | os.PathLike | None = None,
) -> torch.Tensor:
    """Overlay-S of CG2A: :func:`random_overlay` with a small weight mu (``alpha``; CG2A: mu < 0.2, 0.1 by
    default)."""
    return random_overlay(x, generator=generator, alpha=alpha, image_bank=image_bank)


AUGMENTATIONS: dict[str, Augmentation] = {
    "identity": identity,
    "shift": random_shift,
    "conv": random_conv,
    "overlay": random_overlay,
    "overlay_s": overlay_s,
}
# Longer names accepted by make_combination.
ALIASES = {"none": "identity", "random_shift": "shift", "random_conv": "conv", "random_overlay": "overlay"}
_NEEDS_BANK = {"overlay", "overlay_s"}


class Combination:
    """A list of augmentations applied to the same batch; calling it returns one
    augmented copy per augmentation, in order (the clean batch is not included)."""

    def __init__(self, names: Sequence[str], image_bank: ImageBank | str | os.PathLike | None = None, *,
                 pool_size: int = DEFAULT_POOL_SIZE, pool_seed: int = 0, overlay_s_mu: float = OVERLAY_S_MU) -> None:
        if not 0.0 < overlay_s_mu < 0.2:
            raise ValueError(f"overlay_s_mu must be in (0, 0.2) (CG2A's overlay-S: mu < 0.2), got {overlay_s_mu}")
        self.names = list(names)
        self.overlay_s_mu = overlay_s_mu
        needs_bank = bool(_NEEDS_BANK & set(self.names))
        bank = resolve_image_bank(image_bank, pool_size=pool_size, seed=pool_seed) if needs_bank else None
        self.image_bank = bank
        self._fns: list[Augmentation] = [AUGMENTATIONS[n] for n in self.names]
        # the overlay copies, by position, with their weights: made together (one draw, one blend)
        self._overlay_alphas = {i: overlay_s_mu if n == "overlay_s" else 0.5
                                for i, n in enumerate(self.names) if n in _NEEDS_BANK}

    def __len__(self) -> int:
        return len(self.names)

    def __call__(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """The copies in order. The overlay copies are drawn together where the first of them stands (the
        generator's stream: the augmentations before it, every overlay's draw, the others after it)."""
        copies: list[torch.Tensor | None] = [None] * len(self._fns)
        for i, fn in enumerate(self._fns):
            if i not in self._overlay_alphas:
                copies[i] = fn(x, generator=generator)
            elif i == min(self._overlay_alphas):
                made = random_overlays(x, list(self._overlay_alphas.values()), generator=generator,
                                       image_bank=self.image_bank)
                for j, copy in zip(self._overlay_alphas, made.unbind(0)):
                    copies[j] = copy
        return copies  # type: ignore[return-value]

    def __repr__(self) -> str:
        bank = f", image_bank={self.image_bank.description!r}" if self.image_bank is not None else ""
        return f"Combination({','.join(self.names)!r}{bank})"


def make_combination(spec: str | Sequence[str], image_bank: ImageBank | str | os.PathLike | None = None, *,
                     pool_size: int = DEFAULT_POOL_SIZE, pool_seed: int = 0,
                     overlay_s_mu: float = OVERLAY_S_MU) -> Combination:
    """Build a :class:`Combination` from ``"conv,overlay,overlay_s"`` or a list of names.

    ``image_bank``, ``pool_size`` and ``pool_seed``: the overlay images (:func:`resolve_image_bank`; a run
    passes :func:`overlay_options`); ``overlay_s_mu``: overlay-S's weight, in (0, 0.2).

    Raises:
        ValueError: an unknown or empty name (the message lists the valid ones).
    """
    parts = [p.strip() for p in spec.split(",")] if isinstance(spec, str) else [str(p).strip() for p in spec]
    valid = sorted(AUGMENTATIONS) + sorted(ALIASES)
    if not parts or any(not p for p in parts):
        raise ValueError(f"empty augmentation name in {spec!r}; valid names: {', '.join(valid)}")
    names = []
    for p in parts:
        key = ALIASES.get(p.lower(), p.lower())
        if key not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {p!r}; valid names: {', '.join(valid)}")
        names.append(key)
    return Combination(names, image_bank=image_bank, pool_size=pool_size, pool_seed=pool_seed,
                       overlay_s_mu=overlay_s_mu)


def overlay_options(cfg, seeds) -> dict:
    """A run's overlay arguments of :func:`make_combination`: ``--image_bank`` (else CG2A_OVERLAY_DATA, else
    procedural), ``--overlay_pool_size``, the pool's seed from the run's seed streams, ``--overlay_s_mu``."""
    bank = bank_options(cfg, seeds)
    return {"image_bank": bank["bank"], "pool_size": bank["pool_size"], "pool_seed": bank["seed"],
            "overlay_s_mu": cfg.overlay_s_mu}
