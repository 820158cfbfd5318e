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


def test_the_entry_point_runs_the_aggregator_suite_and_the_per_loss_gradients():
    import importlib

    from cg2a_ext.rl.bench import SUITES

    # the per-loss gradients left the library's ops suite (they build the RL critic) and have a suite of their own
    assert SUITES["ops"] == "cg2a_ext.bench.ops" and SUITES["per_loss_grads"] == "cg2a_ext.rl.bench.per_loss_grads"
    for name in ("ops", "per_loss_grads"):
        suite = importlib.import_module(SUITES[name])
        assert callable(suite.run) and callable(suite.format_table), name
    assert not hasattr(importlib.import_module(SUITES["ops"]), "bench_per_loss_grads")


def test_per_loss_grads_builds_the_critic_and_prints_its_row(monkeypatch):
    from cg2a_ext.rl.bench import per_loss_grads

    calls = []

    def one_call(fn, device, repeats, warmup):     # every method runs once (a real timing takes ~20 s here)
        fn()
        calls.append(fn.__name__)
        return 0.01

    monkeypatch.setattr(per_loss_grads, "median_time", one_call)
    rows = per_loss_grads.run(quick=True, devices=["cpu"])
    assert calls == ["concatenated", "batched", "looped", "split", "separate"]
    assert [r["suite"] for r in rows] == ["per_loss_grads"] and rows[0]["config"].startswith("K=4, B=32, 4 conv")
    text = per_loss_grads.format_table(rows)
    assert text.startswith("Per-loss gradients (cpu, K=4") and "method='split') 10 ms (1.00x)" in text
