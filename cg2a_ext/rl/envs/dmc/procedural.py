"""Built-in procedural colour and video sets, used when no DMC-GB data is given.

Everything is a pure function of its seed, so runs are reproducible without
any download.

Colour sets (100 entries per mode, seed ``_COLOR_SEED[mode]``): every channel
of dm_control's default colours (skybox ``.4 .6 .8``, floor ``.1 .2 .3``, body
``.7 .5 .3``) plus Gaussian noise, sigma 0.1 for ``color_easy`` and 0.2 for
``color_hard``, clipped to [0, 1]; ``grid_rgb2 = min(grid_rgb1 + 0.1, 1)``.
These are the spreads measured on DMC-GB's own ``color_easy.json`` /
``color_hard.json`` (std about 0.1 and 0.19 per channel around the defaults,
``grid_rgb2 - grid_rgb1 = 0.1``).

Video sets (10 clips for ``video_easy``, 100 for ``video_hard``, like DMC-GB;
``PROCEDURAL_CLIP_FRAMES`` frames each, generated at the observation size):
each frame is a sum of travelling sine gratings mapped to colour by a random
3 x 3 mixing matrix, then squashed to [0, 1]. ``video_easy``: 3 gratings of
0.5-2 cycles per image, drifting 1-3 cycles per clip. ``video_hard``: 6
gratings of 2-8 cycles per image, drifting 2-6 cycles per clip, plus 4
solid-coloured discs (radius 5-20 % of the image) moving on straight lines.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "DEFAULT_COLORS",
    "PROCEDURAL_COLOR_ENTRIES",
    "PROCEDURAL_CLIPS",
    "PROCEDURAL_CLIP_FRAMES",
    "procedural_color_entries",
    "procedural_clip",
]

# dm_control's suite/common defaults.
DEFAULT_COLORS = {
    "skybox_rgb": (0.4, 0.6, 0.8),
    "grid_rgb1": (0.1, 0.2, 0.3),
    "self_rgb": (0.7, 0.5, 0.3),
}
PROCEDURAL_COLOR_ENTRIES = 100
PROCEDURAL_CLIPS = {"video_easy": 10, "video_hard": 100}
PROCEDURAL_CLIP_FRAMES = 100

_COLOR_SEED = {"color_easy": 20231, "color_hard": 20232}
_COLOR_SIGMA = {"color_easy": 0.1, "color_hard": 0.2}
_VIDEO_SEED = {"video_easy": 20233, "video_hard": 20234}


def procedural_color_entries(mode: str, n: int = PROCEDURAL_COLOR_ENTRIES) -> list[dict[str, list[float]]]:
    """Return the ``n`` procedural colour entries of ``mode`` (see module doc)."""
    if mode not in _COLOR_SEED:
        raise ValueError(f"no procedural colour set for mode {mode!r}; valid: {sorted(_COLOR_SEED)}")
    rng = np.random.default_rng(_COLOR_SEED[mode])
    sigma = _COLOR_SIGMA[mode]
    entries = []
    for _ in range(n):
        e = {
            k: np.clip(np.asarray(v) + rng.normal(0.0, sigma, 3), 0.0, 1.0)
            for k, v in DEFAULT_COLORS.items()
        }
        e["grid_rgb2"] = np.minimum(e["grid_rgb1"] + 0.1, 1.0)
        entries.append({k: [float(c) for c in v] for k, v in e.items()})
    return entries


def procedural_clip(mode: str, index: int, size: int, n_frames: int = PROCEDURAL_CLIP_FRAMES) -> np.ndarray:
    """Return clip ``index`` of the procedural ``mode`` set, uint8 ``[T, size, size, 3]``."""
    if mode not in _VIDEO_SEED:
        raise ValueError(f"no procedural video set for mode {mode!r}; valid: {sorted(_VIDEO_SEED)}")
    hard = mode == "video_hard"
    rng = np.random.default_rng([_VIDEO_SEED[mode], index])
    n_waves = 6 if hard else 3
    freq = rng.uniform(2.0, 8.0, n_waves) if hard else rng.uniform(0.5, 2.0, n_waves)
    speed = rng.uniform(2.0, 6.0, n_waves) if hard else rng.uniform(1.0, 3.0, n_waves)
    speed *= rng.choice([-1.0, 1.0], n_waves)
    angle = rng.uniform(0.0, 2 * np.pi, n_waves)
    phase = rng.uniform(0.0, 2 * np.pi, n_waves)
    mix = rng.normal(0.0, 1.0, (n_waves, 3)) / np.sqrt(n_waves)
    base = rng.uniform(-0.5, 0.5, 3)

    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    t = (np.arange(n_frames, dtype=np.float32) / n_frames)[:, None, None, None]
    # [T, H, W, n_waves] phases of every grating at every pixel and frame.
    proj = xx[..., None] * np.cos(angle) + yy[..., None] * np.sin(angle)
    waves = np.sin(2 * np.pi * (freq * proj - speed * t) + phase).astype(np.float32)
    field = waves @ mix.astype(np.float32) + base.astype(np.float32)  # [T, H, W, 3]
    frames = 1.0 / (1.0 + np.exp(-2.5 * field))

    if hard:
        for _ in range(4):
            color = rng.uniform(0.0, 1.0, 3).astype(np.float32)
            radius = rng.uniform(0.05, 0.2)
            start = rng.uniform(0.0, 1.0, 2)
            velocity = rng.uniform(-1.0, 1.0, 2)
            centre = (start + velocity * t[:, 0, 0, :]) % 1.0  # [T, 2] wraps around
            dist2 = (yy[None] - centre[:, 0, None, None]) ** 2 + (xx[None] - centre[:, 1, None, None]) ** 2
            frames = np.where((dist2 < radius**2)[..., None], color, frames)
    return np.ascontiguousarray(np.round(frames * 255.0).astype(np.uint8))
