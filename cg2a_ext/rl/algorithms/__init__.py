"""The algorithm registry: one module per algorithm, one line here each.

Each module defines ``ALGORITHM``, a subclass of :class:`~cg2a_ext.rl.algorithms.base.Algorithm`
that declares its name and label, its ``Options`` dataclass (fields, docstrings, defaults, per-task
defaults and checks), K, the networks and optimizers it adds to the SAC core (``attach``), its critic
gradient, its auxiliary update and what it logs. Config, agent, trainer, evaluation, plots and report ask
the registry; none of them names an algorithm. Modules load on first use, so listing the names imports no
algorithm code. Helpers that several algorithms share live in ``parts/``.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cg2a_ext.rl.algorithms.base import Algorithm

_MODULES: dict[str, str] = {
    "sac": "cg2a_ext.rl.algorithms.sac",
    "drq": "cg2a_ext.rl.algorithms.drq",
    "svea": "cg2a_ext.rl.algorithms.svea",
    "ac": "cg2a_ext.rl.algorithms.ac",
    "cg2a": "cg2a_ext.rl.algorithms.cg2a",
    "soda": "cg2a_ext.rl.algorithms.soda",
    "sgqn": "cg2a_ext.rl.algorithms.sgqn",
    "smg": "cg2a_ext.rl.algorithms.smg",
}

NAMES: tuple[str, ...] = tuple(_MODULES)
# The method the report compares every other with (its columns come last, its improvements are computed).
PROPOSED = "cg2a"


def register(name: str, module: str) -> None:
    """Add an algorithm (``module`` defines ``ALGORITHM``) to the registry, e.g. from a test or a plugin package."""
    global NAMES
    if name in _MODULES and _MODULES[name] != module:
        raise ValueError(f"algorithm {name!r} is already registered as {_MODULES[name]}")
    _MODULES[name] = module
    NAMES = tuple(_MODULES)


def get(name: str) -> type["Algorithm"]:
    """The algorithm class registered as ``name``."""
    if name not in _MODULES:
        raise KeyError(f"unknown algorithm {name!r}; registered: {', '.join(NAMES)}")
    cls = importlib.import_module(_MODULES[name]).ALGORITHM
    if cls.name != name:
        raise RuntimeError(f"{_MODULES[name]}.ALGORITHM is named {cls.name!r}, registered as {name!r}")
    return cls


def take_legacy_options(values: dict) -> dict[str, dict]:
    """Remove from a flat config dict (config.json before the algorithms owned their options) every algorithm's
    ``<cli_prefix><option>`` keys and aliases; return ``{algorithm: {option: value}}``."""
    out: dict[str, dict] = {}
    legacy_aliases = {"gamma": "sgs_damping"}
    for name in NAMES:
        algo = get(name)
        for field, flag in algo.cli_names().items():
            for key in (flag, *(k for k, v in legacy_aliases.items() if v == field)):
                if key in values and (algo.cli_prefix or key in legacy_aliases or field == key):
                    out.setdefault(name, {})[field] = values[key]
    for name in NAMES:
        for field, flag in get(name).cli_names().items():
            values.pop(flag, None)
    for key in legacy_aliases:
        values.pop(key, None)
    return out
