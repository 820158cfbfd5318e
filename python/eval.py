#!/usr/bin/env python
"""Zero-shot evaluation of saved agents on DMC-GB modes: see ``cg2a_ext/rl/cli/eval.py`` (also installed as ``cg2a-eval``)."""
from cg2a_ext.rl.cli.eval import main

if __name__ == "__main__":
    main()
