#!/usr/bin/env python
"""Zero-shot evaluation of saved agents on DMC-GB modes: see ``cg2a_ext/rl/eval_main.py`` (also installed as ``cg2a-eval``)."""
from cg2a_ext.rl.eval_main import main

if __name__ == "__main__":
    main()
