"""The training command (``cg2a-train``, ``python python/train.py``): argv to ``train(cfg)``, errors to exit codes.

    cg2a-train --task finger_spin                        # the paper's configuration on CUDA, else the cpu preset
    cg2a-train --task cartpole_balance --algorithm drq --preset cpu
    cg2a-train --resume --run_dir runs/...               # continue a stopped run

Exit codes: 0 done; 2 bad options, inputs or folders (nothing created); 1 a write failed (the previous
checkpoint kept); 128 + the signal's number when stopped by Ctrl-C / SIGTERM after a checkpoint; 130 when
interrupted without one.
"""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path


def _error(prog: str, msg: str, code: int = 2) -> SystemExit:
    print(f"{prog}: error: {msg}", file=sys.stderr, flush=True)
    return SystemExit(code)


def build_and_train(argv=None, prog: str = "train.py", command: str = "python -m cg2a_ext.rl.cli.train") -> Path:
    """Parse ``argv`` and train; return the run folder. Raises SystemExit with the exit codes above."""
    from cg2a_ext.rl.cli.options import config_from_args
    from cg2a_ext.rl.config import ConfigError
    from cg2a_ext.rl.core.trainer import TrainingStopped
    from cg2a_ext.rl.training import RunError, train

    try:
        cfg = config_from_args(argv, prog=prog)
    except ConfigError as e:
        raise _error(prog, str(e)) from None
    try:
        return train(cfg, command=command).run_dir
    except RunError as e:
        raise _error(prog, str(e), e.exit_code) from None
    except TrainingStopped as stop:
        raise SystemExit(128 + stop.signum) from None


def _invocation() -> tuple[str, str]:
    """(prog, command) for messages: ``train.py`` / ``python python/train.py`` or ``cg2a-train``."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "cg2a-train"
    name = os.path.basename(argv0)
    if name.endswith(".py") and name != "train.py" or (name == "train.py" and "cli" not in argv0):
        return name, f"python {shlex.quote(argv0)}"
    if name in ("train.py", "-m", "-c", "__main__.py"):
        return "train", "python -m cg2a_ext.rl.cli.train"
    return name, name


def main(argv=None) -> None:
    """Console entry point: train, exiting cleanly (no traceback) on errors and interruptions."""
    prog, command = _invocation()
    try:
        build_and_train(argv, prog=prog, command=command)
    except KeyboardInterrupt:       # before a run folder was opened
        print(f"\n{prog}: interrupted", file=sys.stderr, flush=True)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
