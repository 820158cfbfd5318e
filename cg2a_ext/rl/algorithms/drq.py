"""drq: SAC on randomly shifted observations (DrQ, Kostrikov et al. 2021; one shift, no target averaging)."""
from __future__ import annotations

from cg2a_ext.rl.algorithms.sac import SAC


class DrQ(SAC):
    name = "drq"
    label = "DrQ"
    gpu_steps_per_s = (51.9, "measured")
    summary = "DrQ: SAC on randomly shifted observations"
    shift = True


ALGORITHM = DrQ
