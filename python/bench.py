#!/usr/bin/env python
"""cg2a benchmarks: see ``cg2a_ext/rl/bench/__init__.py`` (also installed as ``cg2a-bench``)."""
from cg2a_ext.rl.bench import main

if __name__ == "__main__":
    main()
