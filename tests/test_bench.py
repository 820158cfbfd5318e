"""Benchmark helpers that the documented commands rely on (timings are never asserted)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_baselines_update_only_prints_one_line_per_algorithm(capsys):
    from cg2a_ext.rl.bench.baselines import update_only

    update_only(["drq", "svea"], "cpu", reps=1)
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split(" ")[0] for ln in lines] == ["drq", "svea"]
    assert all(ln.endswith("ms per update") and "(cpu, " in ln for ln in lines)


def test_compare_builds_refuses_a_folder_without_the_package(tmp_path):
    done = subprocess.run([sys.executable, "-m", "cg2a_ext.bench.compare_builds", str(tmp_path), str(ROOT)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and f"{tmp_path} holds no cg2a_ext package" in done.stderr


def test_baselines_update_only_names_an_unknown_algorithm(capsys):
    from cg2a_ext.rl.bench.baselines import update_only

    with pytest.raises(SystemExit):
        update_only(["nope"], "cpu", reps=1)
    assert "nope" in capsys.readouterr().err
