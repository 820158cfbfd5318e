"""Plot learning curves (per evaluation mode) and gradient diagnostics of runs, as PNG.

    cg2a-plot DIR [DIR ...] [--out FOLDER]

Writes ``learning_curves.png`` for all runs together (returns per evaluation mode and of the training
episodes; success-rate panels too where the runs log success, as robot runs do),
``grad_diagnostics_<i>_<label>.png`` for each run that logged diagnostics (ac, cg2a), and
``evaluation_images_<i>_<label>.png`` for each run that saved images at its evaluations (sgqn's
saliency and masks, smg's reconstructions and masks): a row per evaluation step, up to four.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path


def main(argv=None) -> list[Path]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("--out", default=None, help="output folder (default: the first run folder)")
    args = p.parse_args(argv)
    from cg2a_ext.rl.run.folder import LOGS

    for d in args.runs:
        if not any((Path(d) / name).is_file() for name in LOGS):
            p.error(f"{d} is not a run folder with logs (no {' / '.join(LOGS)})")
    from cg2a_ext.rl.run.plots import (plot_evaluation_images, plot_gradient_diagnostics, plot_learning_curves,
                                      run_label)

    from cg2a_ext.rl.run.folder import DamagedFileError

    out = Path(args.out) if args.out else Path(args.runs[0])
    out.mkdir(parents=True, exist_ok=True)
    try:
        written = [plot_learning_curves(args.runs, out / "learning_curves.png")]
        for i, d in enumerate(args.runs):
            label = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_label(d))
            for w in (plot_gradient_diagnostics(d, out / f"grad_diagnostics_{i}_{label}.png"),
                      plot_evaluation_images(d, out / f"evaluation_images_{i}_{label}.png")):
                if w is not None:
                    written.append(w)
    except DamagedFileError as e:
        p.error(str(e))
    for w in written:
        print(f"wrote {w}")
    return written


if __name__ == "__main__":
    main()
