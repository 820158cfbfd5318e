#!/usr/bin/env python
"""Run a grid of training runs on Ray (see ``cg2a_ext.rl.cli.sweep`` or --help).

    python python/sweep.py --root runs/sweep --tasks cartpole_balance --algorithms drq cg2a --seeds 0 1 2 \
        --set preset=cpu --set action_repeat=8
"""
import sys

from cg2a_ext.rl.cli.sweep import main

if __name__ == "__main__":
    sys.exit(main())
