"""Natural-image banks for the overlay augmentations.

An :class:`ImageBank` holds a pool of decoded RGB images (uint8, on any device) and draws overlay images
from it: every draw is a fresh random resized crop of a pool image plus a horizontal flip with probability
1/2, as DMC-GB's Places365 loader (``RandomResizedCrop(image_size)`` and ``RandomHorizontalFlip()``,
torchvision's defaults: area scale U(0.08, 1), log-uniform aspect ratio in [3/4, 4/3], ten tries then the
whole image; the baselines spec, section 0, names the crop but not its parameters). The crops, the flips
and the choice of pool image come from the caller's generator (the algorithm's augmentation stream) and
run batched on the device (:func:`random_resized_crops`: one ``grid_sample``, no per-image loop).

The pool: ``pool_size`` images (``--overlay_pool_size``), chosen and made from the run's seed
(:func:`bank_options`), stored square at twice the observation side (168 px for 84 px frames, so a
bilinear resize never shrinks more than 2x and needs no anti-aliasing). Memory: ``pool_size * 3 * (2 *
side)^2`` bytes per device holding it (2048 images: 173 MB at 84 px, 57 MB at 48 px; once on the host, once
more on a CUDA device).

* :class:`FolderImageBank`: an ImageFolder-style directory (``root/<class>/<img>``,
  e.g. Places365), named by an argument or ``CG2A_OVERLAY_DATA``. A random
  subset of ``pool_size`` files (drawn with ``seed``) is decoded once per
  requested size: centre square crop (Places365-standard images are square already), bilinear resize.
* :class:`ProceduralImageBank`: ``pool_size`` seeded synthetic images with
  natural-image statistics: per image, 3 Gaussian-noise fields with a 1/f^beta
  amplitude spectrum (beta ~ U(1.5, 2.5)), mixed into RGB by a random 3 x 3
  matrix, each channel min-max scaled to [0, 1] with a random contrast
  (U(0.5, 1)) and offset. The fallback when no folder is named; an approximation of Places365 that results
  must flag.

DMC-GB's video frames are test data and are never used here.
"""
from __future__ import annotations

import abc
import functools
import math
import os
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["OVERLAY_ENV_VAR", "DEFAULT_POOL_SIZE", "CROP_SCALE", "CROP_RATIO", "ImageBank", "FolderImageBank",
           "ProceduralImageBank", "resolve_image_bank", "bank_options", "random_resized_crop_boxes",
           "random_resized_crops", "source_side"]

OVERLAY_ENV_VAR = "CG2A_OVERLAY_DATA"
DEFAULT_POOL_SIZE = 2048
CROP_SCALE = (0.08, 1.0)      # torchvision RandomResizedCrop's defaults, as DMC-GB's Places loader uses them
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
_CROP_TRIES = 10
_IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}


def source_side(height: int, width: int) -> int:
    """Side of the stored pool images for overlays of ``height`` x ``width``: twice the larger side."""
    return 2 * max(height, width)


def random_resized_crop_boxes(
    n: int,
    side: int,
    *,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
    scale: tuple[float, float] = CROP_SCALE,
    ratio: tuple[float, float] = CROP_RATIO,
) -> torch.Tensor:
    """``n`` crop boxes of a ``side`` x ``side`` image as torchvision's ``RandomResizedCrop.get_params``,
    batched: float ``[n, 4]`` = (top, left, height, width) in whole pixels.

    Per box, ten tries of area ``side^2 * U(scale)`` and aspect ratio ``exp(U(log ratio))`` (width / height,
    rounded to pixels); the first try that fits is kept, the whole image when none does; the position is
    uniform over the places where the box fits."""
    device = torch.device(device)
    area = float(side * side)
    target = torch.empty(n, _CROP_TRIES, device=device).uniform_(scale[0], scale[1], generator=generator) * area
    log_r = torch.empty(n, _CROP_TRIES, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1]),
                                                                 generator=generator)
    aspect = log_r.exp()
    # (h, w) side by side in one tensor, so that each later step is one op for both (the same values as
    # computing them apart: every op is elementwise)
    hw = torch.stack([target / aspect, target * aspect], dim=2).sqrt_().round_()          # [n, tries, 2]
    # the whole image as an eleventh try that always fits: argmax finds the first try that fits, else this one
    hw = F.pad(hw, (0, 0, 0, 1), value=float(side))
    ok = hw <= side
    # the lower check only where a rounded side can be 0: the smallest area at the extreme ratio gives sides
    # of at least 1 (at 5 px and up with the defaults; 0.6, not 0.5, leaves room for float rounding)
    if math.sqrt(scale[0] * area * min(ratio[0], 1.0 / ratio[1])) < 0.6:
        ok &= hw >= 1
    first = ok.all(dim=2).to(torch.uint8).argmax(dim=1)
    hw = hw.gather(1, first.view(n, 1, 1).expand(n, 1, 2))[:, 0]                       # [n, 2]
    u = torch.rand(n, 2, device=device, generator=generator)
    top_left = torch.minimum((u * (side + 1 - hw)).floor_(), side - hw)
    return torch.cat([top_left, hw], dim=1)


@functools.lru_cache(maxsize=None)
def _signs(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """-1 and 1 as 0-d tensors on ``device``, made once (two fills fewer per draw)."""
    return torch.tensor(-1.0, device=device), torch.tensor(1.0, device=device)


def random_resized_crops(
    source: torch.Tensor,
    n: int,
    height: int,
    width: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    scale: tuple[float, float] = CROP_SCALE,
    ratio: tuple[float, float] = CROP_RATIO,
    flip: bool = True,
) -> torch.Tensor:
    """``n`` fresh overlay images from the uint8 pool ``source`` ``[N, 3, S, S]`` (on its device): a uniform
    choice of pool image, a :func:`random_resized_crop_boxes` box, a bilinear resize of the box to
    ``height`` x ``width`` and a horizontal flip with probability 1/2, all batched (one ``grid_sample``).
    Returns ``dtype`` ``[n, 3, height, width]`` with whole values in [0, 255] (as the official loader's uint8
    crops). The bilinear taps at the box's edge reach half a pixel outside it (PIL's crop-then-resize
    repeats the edge instead)."""
    num, _, side, side_w = source.shape
    if side != side_w:
        raise ValueError(f"the pool images must be square, got {side} x {side_w}")
    device = source.device
    idx = torch.randint(num, (n,), device=device, generator=generator)
    boxes = random_resized_crop_boxes(n, side, device=device, generator=generator, scale=scale, ratio=ratio)
    top_left, hw = boxes[:, :2], boxes[:, 2:]
    # the affine map of the output's normalised coordinates into the box, in the source's (align_corners=False):
    # x' = w / S * mirror * x + (2 left + w) / S - 1, y' = h / S * y + (2 top + h) / S - 1; built by one stack
    scale_yx = hw / side
    offset_yx = (2.0 * top_left + hw) / side - 1.0
    scale_x = scale_yx[:, 1]
    if flip:
        minus_one, one = _signs(device)
        scale_x = scale_x * torch.where(torch.rand(n, device=device, generator=generator) < 0.5, minus_one, one)
    zero = torch.zeros(n, device=device)
    theta = torch.stack([scale_x, zero, offset_yx[:, 1], zero, scale_yx[:, 0], offset_yx[:, 0]], dim=1).view(n, 2, 3)
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    grid = F.affine_grid(theta.to(compute), [n, 3, height, width], align_corners=False)
    out = F.grid_sample(source[idx].to(compute), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.round_().to(dtype)    # whole levels, as the loader's uint8 crops


class ImageBank(abc.ABC):
    """Base class: subclasses implement :meth:`_build` returning uint8 ``[N, 3, side, side]``."""

    description = "image bank"

    def __init__(self) -> None:
        self._pools: dict[tuple[str, int, int, str], torch.Tensor] = {}
        self._lock = threading.RLock()   # pool() builds source() under it

    @abc.abstractmethod
    def _build(self, side: int) -> torch.Tensor:
        """All images of the bank, uint8 [N, 3, side, side]."""

    def _cached(self, key: tuple, make) -> torch.Tensor:
        with self._lock:
            if key not in self._pools:
                self._pools[key] = make()
            return self._pools[key]

    def source(self, side: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """All images at ``side`` x ``side`` on ``device``, uint8 ``[N, 3, side, side]`` (cached; built once
        on the host)."""
        device = torch.device(device)
        host = self._cached(("source", side, side, "cpu"), lambda: self._build(side).contiguous())
        if device.type == "cpu":
            return host
        return self._cached(("source", side, side, str(device)), lambda: host.to(device))

    def pool(self, height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """All images, whole, at ``height`` x ``width`` on ``device``, uint8 ``[N, 3, H, W]`` (cached): the
        fixed images (no crop, no flip) of callers that want them; overlays draw with :meth:`draw`."""
        device = torch.device(device)

        def make() -> torch.Tensor:
            src = self.source(source_side(height, width)).float()
            out = F.interpolate(src, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
            return out.round_().clamp_(0, 255).to(torch.uint8).to(device)

        return self._cached(("pool", height, width, str(device)), make)

    def draw(
        self,
        n: int,
        height: int,
        width: int,
        *,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """``n`` fresh overlay images (random resized crop and flip of pool images, see the module doc),
        ``dtype`` ``[n, 3, H, W]`` with values in [0, 255]."""
        source = self.source(source_side(height, width), device)
        return random_resized_crops(source, n, height, width, generator=generator, dtype=dtype)

    def sample(
        self,
        n: int,
        height: int,
        width: int,
        *,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """:meth:`draw` scaled to [0, 1]: float ``[n, 3, H, W]``."""
        return self.draw(n, height, width, device=device, generator=generator).div_(255.0)

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of images in the bank."""


class ProceduralImageBank(ImageBank):
    """Seeded synthetic images with a 1/f^beta spectrum (see module doc)."""

    def __init__(self, pool_size: int = DEFAULT_POOL_SIZE, seed: int = 0) -> None:
        super().__init__()
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size}")
        self.pool_size, self.seed = pool_size, seed
        self.description = f"procedural ({pool_size} images, seed {seed})"

    def __len__(self) -> int:
        return self.pool_size

    def _build(self, side: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed)
        out = torch.empty(self.pool_size, 3, side, side, dtype=torch.uint8)
        fy = torch.fft.fftfreq(side).abs()[:, None]
        fx = torch.fft.rfftfreq(side)[None, :]
        freq = torch.sqrt(fy**2 + fx**2).clamp_min(1.0 / side)
        for start in range(0, self.pool_size, 256):      # in chunks: bounded memory at large sides
            n = min(256, self.pool_size - start)
            beta = torch.empty(n, 1, 1, 1).uniform_(1.5, 2.5, generator=g)
            amp = freq[None, None] ** (-beta)  # amplitude ~ 1/f^beta
            spec = torch.complex(
                torch.randn(n, 3, side, side // 2 + 1, generator=g),
                torch.randn(n, 3, side, side // 2 + 1, generator=g),
            )
            fields = torch.fft.irfft2(spec * amp, s=(side, side))  # [n, 3, S, S]
            mix = torch.randn(n, 3, 3, generator=g)
            img = torch.einsum("nij,njhw->nihw", mix, fields)
            lo = img.amin(dim=(2, 3), keepdim=True)
            hi = img.amax(dim=(2, 3), keepdim=True)
            img = (img - lo) / (hi - lo).clamp_min(1e-8)
            contrast = torch.empty(n, 3, 1, 1).uniform_(0.5, 1.0, generator=g)
            offset = torch.rand(n, 3, 1, 1, generator=g) * (1.0 - contrast)
            img = img * contrast + offset
            out[start:start + n] = (img * 255.0).round_().clamp_(0, 255).to(torch.uint8)
        return out


class FolderImageBank(ImageBank):
    """Images of an ImageFolder-style directory (see module doc)."""

    def __init__(self, root: str | os.PathLike, pool_size: int = DEFAULT_POOL_SIZE, seed: int = 0) -> None:
        super().__init__()
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size}")
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
        self.seed = seed
        self.description = f"folder:{self.root} ({len(files)} images, seed {seed})"

    def __len__(self) -> int:
        return len(self.files)

    def _decode(self, path: Path, side: int) -> torch.Tensor:
        from PIL import Image

        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                w, h = im.size
                s = min(w, h)
                left, top = (w - s) // 2, (h - s) // 2
                im = im.crop((left, top, left + s, top + s))
                x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)[None].float()
        except (OSError, ValueError, SyntaxError) as exc:   # PIL's errors for unreadable or truncated files
            raise ValueError(f"overlay image {str(path)!r} cannot be decoded ({exc}); remove it from "
                             f"{str(self.root)!r} or name another image folder") from None
        x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
        return x[0].round_().clamp_(0, 255).to(torch.uint8)

    def _build(self, side: int) -> torch.Tensor:
        out = torch.empty(len(self.files), 3, side, side, dtype=torch.uint8)
        # PIL decodes without the GIL: a few threads decode the pool faster
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as ex:
            for i, img in enumerate(ex.map(lambda p: self._decode(p, side), self.files)):
                out[i] = img
        return out


_default_banks: dict[tuple, ImageBank] = {}
_banks_lock = threading.Lock()


def image_bank_source(bank: "str | os.PathLike | None" = None) -> str:
    """Where the overlay images of ``resolve_image_bank(bank)`` come from, without loading them:
    ``"procedural"`` or the folder's absolute path (``CG2A_OVERLAY_DATA`` when ``bank`` is None)."""
    if bank is None:
        bank = os.environ.get(OVERLAY_ENV_VAR, "").strip() or None
    return "procedural" if bank is None else str(Path(bank).expanduser().resolve())


def resolve_image_bank(
    bank: "ImageBank | str | os.PathLike | None" = None,
    *,
    pool_size: int = DEFAULT_POOL_SIZE,
    seed: int = 0,
) -> ImageBank:
    """An :class:`ImageBank` from an instance (returned as it is), a folder path, or None.

    None means ``CG2A_OVERLAY_DATA`` if set, else the procedural bank. ``pool_size`` and ``seed`` choose
    (folder) or make (procedural) the pool; runs pass theirs through :func:`bank_options`. The result is
    shared per process and (source, pool_size, seed), so pools are built once.
    """
    if isinstance(bank, ImageBank):
        return bank
    source = image_bank_source(bank)
    key = (source, int(pool_size), int(seed))
    with _banks_lock:
        if key not in _default_banks:
            _default_banks[key] = (ProceduralImageBank(pool_size, seed) if source == "procedural"
                                   else FolderImageBank(source, pool_size, seed))
        return _default_banks[key]


def bank_options(cfg, seeds) -> dict:
    """A run's arguments of :func:`resolve_image_bank`: its folder (``--image_bank``, else
    ``CG2A_OVERLAY_DATA``, else procedural), ``--overlay_pool_size``, and the pool's seed from the run's
    ``overlay_pool`` seed stream (``seeds``: the run's :class:`~cg2a_ext.rl.run.seeding.SeedStreams`)."""
    return {"bank": cfg.image_bank or None, "pool_size": cfg.overlay_pool_size, "seed": seeds.integer("overlay_pool")}
