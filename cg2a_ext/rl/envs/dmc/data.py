"""Locating and reading the DMC-GB test data (colour JSONs and video clips).

The data folder (DMC-GB's colour files and video clips) is laid out as::

    color_easy.json  color_hard.json  video_easy/video{i}.mp4  video_hard/video{i}.mp4

It is named by ``make_env(data_dir=...)`` or, failing that, by the environment
variable ``CG2A_DMCGB_DATA``. Without either, the colour and video modes use
the procedural sets of :mod:`cg2a_ext.rl.envs.dmc.procedural`.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

__all__ = [
    "DATA_ENV_VAR",
    "COLOR_KEYS",
    "EXPECTED_CLIPS",
    "resolve_data_dir",
    "load_color_entries",
    "find_clips",
    "check_clip",
    "check_data_dir",
]

DATA_ENV_VAR = "CG2A_DMCGB_DATA"
# Keys of one colour entry (RGB triples in [0, 1]).
COLOR_KEYS = ("skybox_rgb", "grid_rgb1", "grid_rgb2", "self_rgb")
# Number of clips of the full DMC-GB sets; a folder may hold fewer.
EXPECTED_CLIPS = {"video_easy": 10, "video_hard": 100}

_CLIP_RE = re.compile(r"^video(\d+)\.mp4$")


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """Return the data folder to use, or None for the procedural sets.

    ``data_dir`` wins over ``CG2A_DMCGB_DATA``; an empty variable counts as unset.

    Raises:
        FileNotFoundError: the named folder does not exist.
    """
    origin = "data_dir"
    if data_dir is None:
        env = os.environ.get(DATA_ENV_VAR, "").strip()
        if not env:
            return None
        data_dir, origin = env, DATA_ENV_VAR
    path = Path(data_dir).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(
            f"DMC-GB data folder {str(path)!r} (from {origin}) does not exist or is not a "
            "folder; expected color_easy.json, color_hard.json, video_easy/, video_hard/ in it"
        )
    return path


def _check_rgb(value: object, where: str) -> list[float]:
    if (
        not isinstance(value, (list, tuple))
        or len(value) < 3
        or not all(isinstance(v, (int, float)) for v in value[:3])
        or not all(0.0 <= float(v) <= 1.0 for v in value[:3])
    ):
        raise ValueError(f"{where}: expected an RGB triple with values in [0, 1], got {value!r}")
    return [float(v) for v in value[:3]]


def validate_entry(entry: object, where: str = "colour entry") -> dict[str, list[float]]:
    """Check one colour entry and return it with plain float triples.

    All of :data:`COLOR_KEYS` are required; the optional green-screen keys
    (``skybox_rgb2``, ``skybox_markrgb``, ``grid_markrgb``) are kept if present.
    """
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected an object, got {type(entry).__name__}")
    missing = [k for k in COLOR_KEYS if k not in entry]
    if missing:
        raise ValueError(f"{where}: missing keys {missing}; an entry needs {list(COLOR_KEYS)}")
    out = {}
    for key, value in entry.items():
        out[key] = _check_rgb(value, f"{where}[{key!r}]")
    return out


def load_color_entries(data_dir: Path, mode: str) -> list[dict[str, list[float]]]:
    """Read ``<data_dir>/<mode>.json`` (a list of colour entries)."""
    path = data_dir / f"{mode}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{mode}: {str(path)!r} is missing from the DMC-GB data folder {str(data_dir)!r}; "
            f"unset {DATA_ENV_VAR} / data_dir to use the procedural colour set"
        )
    with open(path) as f:
        raw = json.load(f)
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{path}: expected a non-empty JSON list of colour entries")
    return [validate_entry(e, f"{path}[{i}]") for i, e in enumerate(raw)]


def find_clips(data_dir: Path, mode: str) -> list[Path]:
    """Return the ``video<i>.mp4`` clips of ``<data_dir>/<mode>/`` sorted by i.

    Raises:
        FileNotFoundError: the folder is missing or holds no clip.
    """
    folder = data_dir / mode
    clips = []
    if folder.is_dir():
        for p in folder.iterdir():
            m = _CLIP_RE.match(p.name)
            if m and p.is_file():
                clips.append((int(m.group(1)), p))
    if not clips:
        raise FileNotFoundError(
            f"{mode}: no video<i>.mp4 clip in {str(folder)!r}; unset {DATA_ENV_VAR} / "
            "data_dir to use the procedural clips"
        )
    return [p for _, p in sorted(clips)]


def check_clip(path: Path) -> None:
    """Raise ValueError naming ``path`` if it does not open as a video with a decodable first frame."""
    import av  # PyAV; imported here so that the module loads without it

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            next(container.decode(container.streams.video[0]))
    except (av.FFmpegError, StopIteration, ValueError, OSError) as exc:
        raise ValueError(f"video clip {str(path)!r} cannot be decoded ({exc or 'no frame'})") from None


def check_data_dir(data_dir: str | os.PathLike | None, modes) -> Path | None:
    """Check the DMC-GB data of ``modes`` before a run starts: the folder (``data_dir`` or
    ``CG2A_DMCGB_DATA``), each colour mode's JSON and each video mode's clips (their first frame).

    Returns the folder (None: the procedural sets). Raises FileNotFoundError / ValueError naming the
    missing or damaged file."""
    path = resolve_data_dir(data_dir)
    if path is None:
        return None
    for mode in modes:
        if mode.startswith("color"):
            load_color_entries(path, mode)
        elif mode.startswith("video"):
            for clip in find_clips(path, mode):
                check_clip(clip)
    return path
