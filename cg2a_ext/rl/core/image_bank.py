"""Natural-image banks for the overlay augmentations.

An :class:`ImageBank` holds a pool of RGB images at one size as a uint8
tensor ``[N, 3, H, W]`` and serves random batches of them on any device.

* :class:`FolderImageBank`: an ImageFolder-style directory (``root/<class>/<img>``,
  e.g. Places365), named by an argument or ``CG2A_OVERLAY_DATA``. A random
  subset of ``pool_size`` files (drawn with ``seed``) is decoded once per
  requested size: centre square crop, bilinear resize.
* :class:`ProceduralImageBank`: ``pool_size`` seeded synthetic images with
  natural-image statistics: per image, 3 Gaussian-noise fields with a 1/f^beta
  amplitude spectrum (beta ~ U(1.5, 2.5)), mixed into RGB by a random 3 x 3
  matrix, each channel min-max scaled to [0, 1] with a random contrast
  (U(0.5, 1)) and offset.

DMC-GB's video frames are test data and are never used here.
"""
from __future__ import annotations

import abc
import os
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["OVERLAY_ENV_VAR", "ImageBank", "FolderImageBank", "ProceduralImageBank", "resolve_image_bank"]

OVERLAY_ENV_VAR = "CG2A_OVERLAY_DATA"
_IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}


class ImageBank(abc.ABC):
    """Base class: subclasses implement :meth:`_build` returning uint8 ``[N, 3, H, W]``."""

    description = "image bank"

    def __init__(self) -> None:
        self._pools: dict[tuple[int, int, str], torch.Tensor] = {}
        self._lock = threading.Lock()

    @abc.abstractmethod
    def _build(self, height: int, width: int) -> torch.Tensor:
        """All images of the bank, uint8 [N, 3, height, width]."""

    def pool(self, height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """All images at ``height`` x ``width`` on ``device``, uint8 ``[N, 3, H, W]`` (cached)."""
        device = torch.device(device)
        key = (height, width, str(device))
        with self._lock:
            if key not in self._pools:
                cpu_key = (height, width, "cpu")
                if cpu_key not in self._pools:
                    self._pools[cpu_key] = self._build(height, width).contiguous()
                self._pools[key] = self._pools[cpu_key].to(device)
            return self._pools[key]

    def sample(
        self,
        n: int,
        height: int,
        width: int,
        *,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``n`` images drawn uniformly with replacement, float ``[n, 3, H, W]`` in [0, 1]."""
        pool = self.pool(height, width, device)
        idx = torch.randint(len(pool), (n,), device=pool.device, generator=generator)
        return pool[idx].float().div_(255.0)

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of images in the bank."""


class ProceduralImageBank(ImageBank):
    """Seeded synthetic images with a 1/f^beta spectrum (see module doc)."""

    def __init__(self, pool_size: int = 512, seed: int = 0) -> None:
        super().__init__()
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size}")
        self.pool_size, self.seed = pool_size, seed
        self.description = f"procedural ({pool_size} images, seed {seed})"

    def __len__(self) -> int:
        return self.pool_size

    def _build(self, height: int, width: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed)
        n = self.pool_size
        fy = torch.fft.fftfreq(height).abs()[:, None]
        fx = torch.fft.rfftfreq(width)[None, :]
        freq = torch.sqrt(fy**2 + fx**2).clamp_min(1.0 / max(height, width))
        beta = torch.empty(n, 1, 1, 1).uniform_(1.5, 2.5, generator=g)
        amp = freq[None, None] ** (-beta)  # amplitude ~ 1/f^beta
        spec = torch.complex(
            torch.randn(n, 3, height, width // 2 + 1, generator=g),
            torch.randn(n, 3, height, width // 2 + 1, generator=g),
        )
        fields = torch.fft.irfft2(spec * amp, s=(height, width))  # [n, 3, H, W]
        mix = torch.randn(n, 3, 3, generator=g)
        img = torch.einsum("nij,njhw->nihw", mix, fields)
        lo = img.amin(dim=(2, 3), keepdim=True)
        hi = img.amax(dim=(2, 3), keepdim=True)
        img = (img - lo) / (hi - lo).clamp_min(1e-8)
        contrast = torch.empty(n, 3, 1, 1).uniform_(0.5, 1.0, generator=g)
        offset = torch.rand(n, 3, 1, 1, generator=g) * (1.0 - contrast)
        img = img * contrast + offset
        return (img * 255.0).round_().clamp_(0, 255).to(torch.uint8)


class FolderImageBank(ImageBank):
    """Images of an ImageFolder-style directory (see module doc)."""

    def __init__(self, root: str | os.PathLike, pool_size: int = 2048, seed: int = 0) -> None:
        super().__init__()
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"overlay image folder {str(self.root)!r} does not exist")
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in _IMAGE_EXTS and p.is_file())
        if not files:
            raise FileNotFoundError(
                f"no image ({', '.join(sorted(_IMAGE_EXTS))}) under {str(self.root)!r}; expected an "
                "ImageFolder-style directory such as Places365's root/<class>/<image>.jpg"
            )
        if len(files) > pool_size:
            pick = np.random.default_rng(seed).choice(len(files), pool_size, replace=False)
            files = [files[i] for i in sorted(pick)]
        self.files = files
        self.description = f"folder:{self.root} ({len(files)} images)"

    def __len__(self) -> int:
        return len(self.files)

    def _build(self, height: int, width: int) -> torch.Tensor:
        from PIL import Image

        out = torch.empty(len(self.files), 3, height, width, dtype=torch.uint8)
        for i, path in enumerate(self.files):
            try:
                with Image.open(path) as im:
                    im = im.convert("RGB")
                    w, h = im.size
                    side = min(w, h)
                    left, top = (w - side) // 2, (h - side) // 2
                    im = im.crop((left, top, left + side, top + side))
                    x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)[None].float()
            except (OSError, ValueError, SyntaxError) as exc:   # PIL's errors for unreadable or truncated files
                raise ValueError(f"overlay image {str(path)!r} cannot be decoded ({exc}); remove it from "
                                 f"{str(self.root)!r} or name another image folder") from None
            x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
            out[i] = x[0].round_().clamp_(0, 255).to(torch.uint8)
        return out


_default_banks: dict[str, ImageBank] = {}


def draws_overlay_images(cfg: "Mapping[str, object]") -> bool:
    """Whether a run configuration (``TrainConfig.to_dict()`` or a run's config.json) overlays images at
    all: drq and sac never do; ac and cg2a only with overlay or overlay_s among their augmentations;
    svea and soda unless their augmentation is set to conv; sgqn and smg always."""
    algorithm = cfg.get("algorithm")
    if algorithm in ("drq", "sac"):
        return False
    if algorithm in ("ac", "cg2a"):
        return any(a in ("overlay", "overlay_s") for a in cfg.get("augmentations", ()))
    if algorithm in ("svea", "soda"):
        return cfg.get(f"{algorithm}_augmentation", "overlay") == "overlay"
    return True


def image_bank_source(bank: "str | os.PathLike | None" = None) -> str:
    """Where the overlay images of ``resolve_image_bank(bank)`` come from, without loading them:
    ``"procedural"`` or the folder's absolute path (``CG2A_OVERLAY_DATA`` when ``bank`` is None)."""
    if bank is None:
        bank = os.environ.get(OVERLAY_ENV_VAR, "").strip() or None
    return "procedural" if bank is None else str(Path(bank).expanduser().resolve())


def resolve_image_bank(bank: "ImageBank | str | os.PathLike | None" = None) -> ImageBank:
    """An :class:`ImageBank` from an instance, a folder path, or None.

    None means ``CG2A_OVERLAY_DATA`` if set, else the procedural bank; the
    result is shared per process so pools are built once.
    """
    if isinstance(bank, ImageBank):
        return bank
    if bank is None:
        bank = os.environ.get(OVERLAY_ENV_VAR, "").strip() or None
    key = "procedural" if bank is None else str(Path(bank).expanduser().resolve())
    if key not in _default_banks:
        _default_banks[key] = ProceduralImageBank() if bank is None else FolderImageBank(bank)
    return _default_banks[key]
