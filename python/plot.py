#!/usr/bin/env python
"""Learning curves and gradient diagnostics of runs as PNG: see ``cg2a_ext/rl/cli/plot.py`` (also installed as ``cg2a-plot``)."""
from cg2a_ext.rl.cli.plot import main

if __name__ == "__main__":
    main()
