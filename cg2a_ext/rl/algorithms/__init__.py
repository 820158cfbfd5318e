"""The algorithm registry: one module per algorithm, one line here each.

Each module defines ``ALGORITHM``, a subclass of :class:`~cg2a_ext.rl.algorithms.base.Algorithm`
that declares its name, K, its own config defaults and checks, the networks and optimizers it adds
to the SAC core (``attach``), its critic gradient, its auxiliary update and what it logs. Config,
agent, trainer, evaluation and plotting ask the registry; none of them names an algorithm.
Modules load on first use, so listing the names imports no algorithm code.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import Algorithm

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


def get(name: str) -> type["Algorithm"]:
    """The algorithm class registered as ``name``."""
    if name not in _MODULES:
        raise KeyError(f"unknown algorithm {name!r}; registered: {', '.join(NAMES)}")
    cls = importlib.import_module(_MODULES[name]).ALGORITHM
    if cls.name != name:
        raise RuntimeError(f"{_MODULES[name]}.ALGORITHM is named {cls.name!r}, registered as {name!r}")
    return cls
