"""Colour edits of dm_control's common assets (DMC-GB ``color_*`` modes and
the green screen of the ``video_*`` modes).

An entry is applied as DMC-GB does: the ``skybox`` texture of
``suite/common/skybox.xml`` and the ``grid`` texture and ``self`` material of
``suite/common/materials.xml`` are edited in the asset dict, and the domain's
model is recompiled from them (see :func:`reload_keep_state`).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Mapping, Sequence

import mujoco
import numpy as np

__all__ = ["GREEN", "green_screen_entry", "edit_assets", "reload_keep_state"]

# The green-screen colour of DMC-GB.
GREEN = (0.2, 0.8, 0.2)

# entry key -> (asset file suffix, element tag, element name, attribute)
_TARGETS: dict[str, tuple[str, str, str, str]] = {
    "skybox_rgb": ("skybox.xml", "texture", "skybox", "rgb1"),
    "skybox_rgb2": ("skybox.xml", "texture", "skybox", "rgb2"),
    "skybox_markrgb": ("skybox.xml", "texture", "skybox", "markrgb"),
    "grid_rgb1": ("materials.xml", "texture", "grid", "rgb1"),
    "grid_rgb2": ("materials.xml", "texture", "grid", "rgb2"),
    "grid_markrgb": ("materials.xml", "texture", "grid", "markrgb"),
    "self_rgb": ("materials.xml", "material", "self", "rgba"),
}


def green_screen_entry(floor: bool) -> dict[str, list[float]]:
    """The edit that paints the skybox (and, if ``floor``, the floor grid) green."""
    keys = ["skybox_rgb", "skybox_rgb2", "skybox_markrgb"]
    if floor:
        keys += ["grid_rgb1", "grid_rgb2", "grid_markrgb"]
    return {k: list(GREEN) for k in keys}


def _fmt(rgb: Sequence[float], alpha: bool) -> str:
    vals = [float(v) for v in rgb[:3]] + ([1.0] if alpha else [])
    return " ".join(f"{v:.6g}" for v in vals)


def edit_assets(assets: Mapping[str, bytes | str], entry: Mapping[str, Sequence[float]]) -> dict[str, bytes | str]:
    """Return a copy of a dm_control asset dict with the colours of ``entry``.

    Keys of ``entry`` not in the table above are ignored; an asset file or
    element that the entry needs but that is missing is an error.
    """
    out = dict(assets)
    by_file: dict[str, list[tuple[str, str, str, str]]] = {}
    for key, value in entry.items():
        if key not in _TARGETS:
            continue
        suffix, tag, name, attr = _TARGETS[key]
        by_file.setdefault(suffix, []).append((tag, name, attr, _fmt(value, attr == "rgba")))
    for suffix, edits in by_file.items():
        names = [k for k in out if k.replace("\\", "/").endswith("common/" + suffix) or k == suffix]
        if not names:
            raise KeyError(f"asset {suffix!r} not among the model's assets {sorted(out)}")
        for fname in names:
            raw = out[fname]
            root = ET.fromstring(raw)
            for tag, name, attr, text in edits:
                node = root.find(f".//{tag}[@name='{name}']")
                if node is None:
                    raise KeyError(f"<{tag} name={name!r}> not found in asset {fname!r}")
                node.set(attr, text)
            data = ET.tostring(root, encoding="unicode")
            out[fname] = data.encode() if isinstance(raw, bytes) else data
    return out


def reload_keep_state(physics, xml_string: str, assets: Mapping[str, bytes | str]) -> None:
    """Recompile ``physics`` from ``xml_string``/``assets`` and keep its state.

    The full integration state (time, qpos, qvel, act, warm start, ctrl,
    applied forces, mocap, userdata) is copied with ``mj_getState`` so that the
    simulation continues exactly as without the reload. Edits that a task made
    to the *model* (e.g. finger_spin's hinge damping in ``initialize_episode``)
    are not kept, which is why the environment reloads before the task
    initialises an episode.
    """
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    m, d = physics.model.ptr, physics.data.ptr
    state = np.empty(mujoco.mj_stateSize(m, spec), dtype=np.float64)
    mujoco.mj_getState(m, d, state, spec)
    physics.reload_from_xml_string(xml_string, assets=dict(assets))
    m, d = physics.model.ptr, physics.data.ptr
    if mujoco.mj_stateSize(m, spec) != state.size:  # pragma: no cover - colour edits keep sizes
        raise RuntimeError("model changed size on a colour reload; cannot keep the physics state")
    mujoco.mj_setState(m, d, state, spec)
    mujoco.mj_forward(m, d)
