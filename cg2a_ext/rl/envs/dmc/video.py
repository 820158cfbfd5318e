"""Green screen and video backgrounds of DMC-GB's ``video_easy``/``video_hard``.

A rendered pixel is replaced by the clip pixel when its HSV colour lies in
H 100-185 degrees, S 80-255, V 70-255 (S and V on 0-255), the test DMC-GB
makes pixel by pixel with :func:`colorsys.rgb_to_hsv`. :func:`green_mask`
computes the same float64 arithmetic on whole arrays, so the result is
identical to the per-pixel loop (:func:`green_screen_reference`) and orders
of magnitude faster.

Clips are decoded once (PyAV), resized bilinearly to the observation size
and kept in a process-wide LRU cache bounded in bytes
(``CG2A_VIDEO_CACHE_MB``, default 1024).
"""
from __future__ import annotations

import colorsys
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from cg2a_ext.rl.envs.dmc.procedural import procedural_clip

__all__ = [
    "HSV_RANGE",
    "green_mask",
    "green_screen",
    "green_screen_reference",
    "decode_clip",
    "ClipCache",
    "CLIP_CACHE",
    "VideoBackground",
]

# (min, max) of hue in degrees, saturation and value on 0-255.
HSV_RANGE = ((100.0, 185.0), (80.0, 255.0), (70.0, 255.0))


def _green_mask_float(frames: np.ndarray) -> np.ndarray:
    """The HSV test with colorsys.rgb_to_hsv's float64 operations, in the same order."""
    rgb = frames.astype(np.float64) / 255.0
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    maxc = np.maximum(np.maximum(r, g), b)
    minc = np.minimum(np.minimum(r, g), b)
    rangec = maxc - minc
    grey = rangec == 0.0
    safe_max = np.where(maxc == 0.0, 1.0, maxc)
    safe_range = np.where(grey, 1.0, rangec)
    s = np.where(grey, 0.0, rangec / safe_max)
    rc = (maxc - r) / safe_range
    gc = (maxc - g) / safe_range
    bc = (maxc - b) / safe_range
    h = np.where(r == maxc, bc - gc, np.where(g == maxc, 2.0 + rc - bc, 4.0 + gc - rc))
    h = np.where(grey, 0.0, (h / 6.0) % 1.0)
    (h0, h1), (s0, s1), (v0, v1) = HSV_RANGE
    h, s, v = h * 360.0, s * 255.0, maxc * 255.0
    return (h >= h0) & (h <= h1) & (s >= s0) & (s <= s1) & (v >= v0) & (v <= v1)


def green_mask(frames: np.ndarray) -> np.ndarray:
    """Boolean mask ``[..., H, W]`` of the green-screen pixels of uint8 ``[..., H, W, 3]`` frames.

    The HSV thresholds are rewritten as exact integer inequalities (below);
    the rare pixels that sit exactly on a threshold, where float rounding
    decides, are re-tested with colorsys's float64 arithmetic, so the mask is
    identical to DMC-GB's per-pixel test (checked on all 2^24 colours).
    """
    if frames.dtype != np.uint8 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames [..., H, W, 3], got {frames.dtype} {frames.shape}")
    if HSV_RANGE != ((100.0, 185.0), (80.0, 255.0), (70.0, 255.0)):  # pragma: no cover
        return _green_mask_float(frames)
    # Channel-planar int16 copy: contiguous operands; every term below stays within +-13005.
    r, g, b = np.ascontiguousarray(np.moveaxis(frames, -1, 0), dtype=np.int16)
    mx = np.maximum(np.maximum(r, g), b)
    rng = mx - np.minimum(np.minimum(r, g), b)
    # colorsys takes the r branch when r is a maximum (hue <= 60 or >= 300: never
    # green), then g, then b. With g max, hue = 60 * (2 + (b - r) / range) in
    # [60, 180]: >= 100 iff 3 (b - r) + range >= 0. With b max (hue in [180, 300]):
    # <= 185 iff 12 (r - g) + 11 range <= 0.
    g_max = (g == mx) & (r < mx)
    b_max = (b == mx) & (r < mx) & (g < mx)
    hue_g = 3 * (b - r) + rng
    hue_b = 12 * (r - g) + 11 * rng
    sat = 51 * rng - 16 * mx  # S * 255 >= 80, i.e. 255 range >= 80 max, divided by 5
    mask = ((g_max & (hue_g > 0)) | (b_max & (hue_b < 0))) & (sat > 0) & (mx > 70)
    tie = (g_max & (hue_g == 0)) | (b_max & (hue_b == 0)) | ((sat == 0) & (rng > 0)) | (mx == 70)
    if tie.any():
        mask[tie] = _green_mask_float(frames[tie])
    return mask


def green_screen(frames: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Replace the green pixels of uint8 ``[..., H, W, 3]`` frames by ``background`` (same shape)."""
    if background.shape != frames.shape or background.dtype != np.uint8:
        raise ValueError(
            f"background must be uint8 of the frames' shape {frames.shape}, got {background.dtype} {background.shape}"
        )
    out = frames.copy()
    np.copyto(out, background, where=green_mask(frames)[..., None])
    return out


def green_screen_reference(frame: np.ndarray, background: np.ndarray) -> np.ndarray:
    """DMC-GB's per-pixel Python loop on one ``[H, W, 3]`` frame (for tests and benchmarks only)."""
    out = frame.copy()
    (h0, h1), (s0, s1), (v0, v1) = HSV_RANGE
    height, width = frame.shape[:2]
    for y in range(height):
        for x in range(width):
            r, g, b = (int(c) for c in frame[y, x])
            h, s, v = colorsys.rgb_to_hsv(r / 255.0, g / 255.0, b / 255.0)
            h, s, v = h * 360, s * 255, v * 255
            if h0 <= h <= h1 and s0 <= s <= s1 and v0 <= v <= v1:
                out[y, x] = background[y, x]
    return out


def decode_clip(path: str | os.PathLike, size: int, chunk: int = 128) -> np.ndarray:
    """Decode every frame of a video file, resized bilinearly to ``size`` x ``size``.

    Returns uint8 ``[T, size, size, 3]``. The resize is torch's bilinear
    interpolation (``align_corners=False``) of the full-size frame, as DMC-GB.
    """
    import av  # PyAV; imported here so that the env module loads without it
    import torch
    import torch.nn.functional as F

    out: list[np.ndarray] = []
    pending: list[np.ndarray] = []

    def flush() -> None:
        if not pending:
            return
        x = torch.from_numpy(np.stack(pending)).permute(0, 3, 1, 2).float()
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        out.append(x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy())
        pending.clear()

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                pending.append(frame.to_ndarray(format="rgb24"))
                if len(pending) >= chunk:
                    flush()
    except av.FFmpegError as exc:
        raise RuntimeError(f"cannot decode video clip {str(path)!r}: {exc}") from exc
    flush()
    if not out:
        raise RuntimeError(f"video clip {str(path)!r} has no frame")
    return np.concatenate(out)


class ClipCache:
    """Thread-safe LRU cache of decoded clips, bounded by total bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.decodes = 0  # number of cache misses, for tests

    def get(self, key: tuple, load: Callable[[], np.ndarray]) -> np.ndarray:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        clip = load()
        clip.setflags(write=False)
        with self._lock:
            self.decodes += 1
            if key not in self._items:
                self._items[key] = clip
                self._bytes += clip.nbytes
            # Keep at least the newest clip even if it alone exceeds the budget.
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.nbytes
            return self._items[key]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


CLIP_CACHE = ClipCache(int(float(os.environ.get("CG2A_VIDEO_CACHE_MB", "1024")) * 2**20))


class VideoBackground:
    """The clip sequence of one environment: frame ``t`` of the current clip,
    ``t`` modulo its length, and the next clip at each :meth:`next_clip`.

    ``clips`` are file paths, or None for the procedural set of ``mode``
    (``n_procedural`` clips).
    """

    def __init__(self, mode: str, size: int, clips: Sequence[Path] | None, n_procedural: int = 0) -> None:
        self.mode = mode
        self.size = size
        self.paths = list(clips) if clips is not None else None
        self.n_clips = len(self.paths) if self.paths is not None else n_procedural
        if self.n_clips <= 0:
            raise ValueError(f"{mode}: no video clip to use")
        self.index = -1
        self._clip: np.ndarray | None = None

    def _load(self, index: int) -> np.ndarray:
        if self.paths is not None:
            path = self.paths[index]
            return CLIP_CACHE.get(("file", str(path), self.size), lambda: decode_clip(path, self.size))
        return CLIP_CACHE.get(
            ("procedural", self.mode, index, self.size), lambda: procedural_clip(self.mode, index, self.size)
        )

    def next_clip(self, start: int | None = None) -> int:
        """Move to clip ``start`` (if given) or to the next clip; return its index."""
        self.index = (self.index + 1 if start is None else start) % self.n_clips
        self._clip = self._load(self.index)
        return self.index

    def frame(self, t: int) -> np.ndarray:
        """Frame ``t`` (modulo the clip length) of the current clip, uint8 ``[H, W, 3]``."""
        if self._clip is None:
            self.next_clip()
        assert self._clip is not None
        return self._clip[t % len(self._clip)]

    @property
    def clip_name(self) -> str:
        if self.paths is not None:
            return self.paths[self.index].name
        return f"procedural:{self.mode}:{self.index}"
