"""Table textures of the robot test scenes, made by deterministic numpy code.

The published test scenes put photographs (wood, black carpet, concrete,
light wood, sponge) on the table; these are procedural look-alikes, the same
on every machine (fixed seeds, no files). :func:`load_texture_dir` reads a
user's own images instead (``test1.png`` ... ``test5.png``).

Textures reach MuJoCo as PNG files in the ``assets`` dict (encoded here with
zlib; MuJoCo decodes them).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["TEXTURE_SIZE", "TABLE_TEXTURES", "table_texture", "load_texture_dir", "png_bytes"]

TEXTURE_SIZE = 256

# mode -> look-alike of the published table texture
TABLE_TEXTURES: dict[str, str] = {
    "test1": "wood",
    "test2": "black_carpet",
    "test3": "concrete",
    "test4": "light_wood",
    "test5": "sponge",
}


def _value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1]: a random ``cells`` x ``cells`` grid, bilinearly upsampled (tiling)."""
    grid = rng.random((cells, cells))
    t = np.arange(size) * cells / size
    i0 = np.floor(t).astype(int) % cells
    i1 = (i0 + 1) % cells
    f = t - np.floor(t)
    f = f * f * (3 - 2 * f)  # smoothstep
    rows = grid[i0] * (1 - f)[:, None] + grid[i1] * f[:, None]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i1] * f[None, :]


def _fractal(rng: np.random.Generator, size: int, octaves=(4, 8, 16, 32, 64)) -> np.ndarray:
    out = np.zeros((size, size))
    total = 0.0
    for k, cells in enumerate(octaves):
        amp = 0.5**k
        out += amp * _value_noise(rng, size, cells)
        total += amp
    return out / total


def _mix(dark, light, t: np.ndarray) -> np.ndarray:
    dark, light = np.asarray(dark, float), np.asarray(light, float)
    return dark + (light - dark) * np.clip(t, 0, 1)[..., None]


def _wood(rng, size, dark, light, ring_count) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] / size
    warp = _fractal(rng, size, (4, 8, 16))
    # Grain runs along x; rings are bands in y bent by the warp, plus fine fibres.
    rings = np.sin(2 * np.pi * (ring_count * y + 1.5 * warp + 0.1 * x))
    fibres = _value_noise(rng, size, 128)
    t = 0.5 + 0.35 * rings + 0.15 * (fibres - 0.5)
    return _mix(dark, light, t)


def _black_carpet(rng, size) -> np.ndarray:
    pile = rng.random((size, size))
    tufts = _value_noise(rng, size, 64)
    t = 0.55 * pile + 0.45 * tufts
    return _mix((0.02, 0.02, 0.025), (0.22, 0.22, 0.24), t)


def _concrete(rng, size) -> np.ndarray:
    base = _fractal(rng, size)
    speckle = rng.random((size, size))
    t = 0.35 + 0.5 * (base - 0.5) + 0.25 * (speckle - 0.5)
    t = np.where(speckle > 0.985, t - 0.35, t)  # small dark pits
    return _mix((0.28, 0.28, 0.27), (0.78, 0.77, 0.74), t)


def _sponge(rng, size) -> np.ndarray:
    body = _fractal(rng, size, (8, 16, 32))
    pores = _value_noise(rng, size, 48) * 0.6 + rng.random((size, size)) * 0.4
    holes = pores < 0.3
    t = 0.6 + 0.4 * (body - 0.5)
    t = np.where(holes, 0.15 + 0.2 * body, t)
    return _mix((0.45, 0.35, 0.02), (0.98, 0.86, 0.25), t)


def table_texture(mode: str, size: int = TEXTURE_SIZE) -> np.ndarray:
    """The procedural table texture of test ``mode``, uint8 ``[size, size, 3]`` (same every call)."""
    if mode not in TABLE_TEXTURES:
        raise ValueError(f"no table texture for mode {mode!r}; modes with one: {', '.join(TABLE_TEXTURES)}")
    rng = np.random.default_rng([0x7AB1E, int(mode[-1])])
    kind = TABLE_TEXTURES[mode]
    if kind == "wood":
        img = _wood(rng, size, (0.30, 0.16, 0.07), (0.62, 0.40, 0.20), 9)
    elif kind == "light_wood":
        img = _wood(rng, size, (0.70, 0.55, 0.38), (0.93, 0.83, 0.66), 6)
    elif kind == "black_carpet":
        img = _black_carpet(rng, size)
    elif kind == "concrete":
        img = _concrete(rng, size)
    else:
        img = _sponge(rng, size)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def load_texture_dir(folder: str | os.PathLike, mode: str, size: int = TEXTURE_SIZE) -> np.ndarray:
    """``folder/<mode>.png`` (or .jpg) as uint8 ``[size, size, 3]``; ValueError if missing or unreadable."""
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"texture_dir {str(folder)!r} is not a folder")
    for ext in (".png", ".jpg", ".jpeg"):
        path = folder / f"{mode}{ext}"
        if path.is_file():
            break
    else:
        raise ValueError(f"texture_dir {str(folder)!r} has no {mode}.png (or .jpg) for mode {mode!r}")
    try:
        with Image.open(path) as im:
            im = im.convert("RGB").resize((size, size), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8).copy()
    except OSError as exc:
        raise ValueError(f"cannot read texture {str(path)!r}: {exc}") from exc


def png_bytes(image: np.ndarray) -> bytes:
    """``image`` (uint8 ``[H, W, 3]``) encoded as an 8-bit RGB PNG."""
    import struct
    import zlib

    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"texture must be [H, W, 3] uint8, got shape {image.shape}")
    h, w = image.shape[:2]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = np.concatenate([np.zeros((h, 1), np.uint8), image.reshape(h, w * 3)], axis=1).tobytes()
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
