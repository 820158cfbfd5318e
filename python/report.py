#!/usr/bin/env python
"""Report of a sweep: zero-shot evaluation of its finished runs, tables, aggregates, figures.

    python python/report.py runs/sweep --episodes 10

See ``cg2a_ext.rl.cli.report`` or --help.
"""
import sys

from cg2a_ext.rl.cli.report import main

if __name__ == "__main__":
    sys.exit(main())
