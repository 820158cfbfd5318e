"""drq: SAC on randomly shifted observations (DrQ, Kostrikov et al. 2021; one shift, no target averaging)."""
from __future__ import annotations

from .sac import SAC


class DrQ(SAC):
    name = "drq"
    summary = "DrQ: SAC on randomly shifted observations"
    shift = True


ALGORITHM = DrQ
