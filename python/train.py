#!/usr/bin/env python
"""Train a SAC agent (any registered algorithm: sac, drq, svea, ac, cg2a, soda, sgqn, smg) on a DMC-GB task; the
same as ``cg2a-train``.

    python python/train.py --task finger_spin                 # paper configuration on CUDA, cpu preset otherwise
    python python/train.py --task cartpole_balance --preset cpu --algorithm drq
    python python/train.py --resume --run_dir runs/...        # continue a stopped run

Every field of cg2a_ext.rl.config.TrainConfig is an option; see --help. The logic lives in
cg2a_ext.rl.cli.train.
"""
from __future__ import annotations

from pathlib import Path

from cg2a_ext.rl.cli.train import build_and_train as _build_and_train
from cg2a_ext.rl.cli.train import main


def build_and_train(argv=None) -> Path:
    """Train as the command line does, for scripts and tests (see ``train_main.build_and_train``)."""
    return _build_and_train(argv, prog="train.py", command="python python/train.py")


if __name__ == "__main__":
    main()
