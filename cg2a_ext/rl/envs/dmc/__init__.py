"""The ``dmc`` family: dm_control suite tasks from pixels in DMC-GB's train and four test modes."""
from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from cg2a_ext.rl.envs.family import EnvFamily, ObservationDefaults

# The one place that names DMC-GB's modes.
MODES: tuple[str, ...] = ("train", "color_easy", "color_hard", "video_easy", "video_hard")


class DMCFamily(EnvFamily):
    name = "dmc"
    modes = MODES
    description = "dm_control suite tasks; test modes recolour the scene (color_*) or play a video behind it (video_*)"
    # rewards in [0, 1] per simulator step, 1000 steps an episode (the scale the DMC aggregates of the
    # literature divide by)
    normalised_return_range = (0.0, 1000.0)

    @lru_cache(maxsize=1)
    def tasks(self) -> tuple[str, ...]:
        from cg2a_ext.rl.envs.dmc.env import task_table

        return tuple(sorted(task_table()))

    def has_task(self, task: str) -> bool:
        # dm_control task names are domain_task: skip importing the suite for names that cannot be one
        return "_" in task and task in self.tasks()

    def observation_defaults(self, task: str, preset: str) -> ObservationDefaults:
        # DMC-GB: 3 stacked 84 px frames, action repeat 4 on every task, 1000 simulator steps; the cpu preset
        # renders 48 px frames for its small encoder
        return ObservationDefaults(image_size=48 if preset == "cpu" else 84, frame_stack=3, action_repeat=4,
                                   episode_length=1000)

    def check_data(self, data_dir, modes) -> str:
        from cg2a_ext.rl.envs.dmc.data import check_data_dir, resolve_data_dir

        tests = [m for m in modes if m != "train"]
        path = check_data_dir(data_dir, tests) if tests else resolve_data_dir(data_dir)
        return f"DMC-GB data {path}" if path is not None else "procedural test sets (no DMC-GB data given)"

    def make_env(self, task: str, mode: str, seed: int, *, image_size: int, frame_stack: int, action_repeat: int,
                 episode_length: int, data_dir: str | os.PathLike | None = None, **options: Any):
        from cg2a_ext.rl.envs.dmc.env import DMCEnv

        if options:
            raise ValueError(f"the dmc family takes no options {sorted(options)}")
        return DMCEnv(task, mode, seed, image_size, frame_stack, action_repeat, episode_length, data_dir)


FAMILY = DMCFamily()
