"""cg2a_ext.rl: SAC with CG2A and its baselines on visual control tasks (DMC-GB), as a Python API and commands.

    from cg2a_ext.rl import TrainConfig, train
    result = train(TrainConfig(task="cartpole_balance", algorithm="cg2a", preset="cpu"))

Layout, one concern per folder:

    config        TrainConfig: the core options, presets, how unset options are filled, the checks
    training      train(cfg) -> RunResult: checks, the run folder, building the parts, the loop
    algorithms/   the registry; one module per algorithm with its Options; parts/ their shared helpers
    envs/         environment families (dmc, ...): the registry, one package per family
    core/         agent/ (the SAC core, networks, optimizers, precision), replay, augmentations, overlay
                  images, evaluation, the environment stepper and the training loop (trainer)
    run/          a run on disk: the run folder, checkpoints, logs and progress, seeding, host memory, plots
    sweep/        grids of runs on Ray, and the report over them
    bench/        the RL benchmarks and the cg2a-bench entry point
    cli/          the commands (cg2a-train, cg2a-eval, cg2a-plot, cg2a-sweep, cg2a-report); argv lives there
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cg2a_ext.rl.config import TrainConfig
    from cg2a_ext.rl.training import RunResult, train

__all__ = ["TrainConfig", "RunResult", "train"]


def __getattr__(name: str) -> Any:
    # lazy: importing cg2a_ext.rl imports neither torch's networks nor the simulators
    if name == "TrainConfig":
        from cg2a_ext.rl.config import TrainConfig

        return TrainConfig
    if name in ("RunResult", "train"):
        from cg2a_ext.rl import training

        return getattr(training, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
