"""The sweep's GPU cost estimate (cg2a_ext.rl.sweep.cost) reads each algorithm's H100 speed from its class."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from cg2a_ext.rl import algorithms
from cg2a_ext.rl.sweep.cost import describe, estimate, gpu_speed

sys.path.insert(0, str(Path(__file__).parent))   # the toy plugin algorithm lives beside the tests


def config(algorithm: str, steps: int = 500_000, preset: str = "paper"):
    return SimpleNamespace(algorithm=algorithm, train_steps=steps, preset=preset)


def test_every_shipped_algorithm_declares_its_own_h100_figure():
    for name in algorithms.NAMES:
        # in its own class body: a parent's figure would hold for a different update (drq subclasses sac)
        figure = vars(algorithms.get(name)).get("gpu_steps_per_s")
        assert figure is not None, f"{name} has no gpu_steps_per_s of its own"
        rate, what = figure
        assert rate > 0 and what, name
        assert gpu_speed(name) == figure


def test_the_estimate_is_train_steps_over_the_class_figure_and_names_borrowed_figures():
    e = estimate([config("drq"), config("sac", steps=250_000)])
    drq_rate, sac_rate = algorithms.get("drq").gpu_steps_per_s[0], algorithms.get("sac").gpu_steps_per_s[0]
    assert e.runs == 2
    assert e.gpu_hours == pytest.approx((500_000 / drq_rate + 250_000 / sac_rate) / 3600)
    # drq's figure is measured and says nothing; sac's is borrowed and the estimate says from where
    assert e.assumptions == [f"sac: {algorithms.get('sac').gpu_steps_per_s[1]}"]
    text = describe(e)
    assert text.startswith(f"estimated training time: {e.gpu_hours:.0f} GPU-hours on one H100 for 2 runs")
    assert "assumption: sac: drq's figure" in text


def test_the_cpu_preset_is_counted_at_the_paper_speed_and_said_so():
    e = estimate([config("cg2a", steps=10_000, preset="cpu")])
    assert e.gpu_hours == pytest.approx(10_000 / algorithms.get("cg2a").gpu_steps_per_s[0] / 3600)
    assert any("cpu preset" in a for a in e.assumptions)


def test_an_algorithm_without_a_figure_takes_the_slowest_measured_one(monkeypatch):
    monkeypatch.setattr(algorithms, "_MODULES", dict(algorithms._MODULES))
    monkeypatch.setattr(algorithms, "NAMES", algorithms.NAMES)
    algorithms.register("toy", "plugins.toy_algorithm")
    measured = [algorithms.get(n).gpu_steps_per_s[0] for n in algorithms.NAMES
                if n != "toy" and algorithms.get(n).gpu_steps_per_s[1] == "measured"]
    assert gpu_speed("toy") == (min(measured), "the slowest measured figure: unmeasured")
    assert estimate([config("toy")]).assumptions == ["toy: the slowest measured figure: unmeasured"]


def test_a_subclass_does_not_inherit_its_parents_figure(monkeypatch):
    # a subclass of drq registered without a figure of its own: drq's measurement is not its speed
    import plugins.toy_algorithm as toy_module

    class DrQVariant(algorithms.get("drq")):
        name = "toy"

    monkeypatch.setattr(algorithms, "_MODULES", dict(algorithms._MODULES))
    monkeypatch.setattr(algorithms, "NAMES", algorithms.NAMES)
    monkeypatch.setattr(toy_module, "ALGORITHM", DrQVariant)
    algorithms.register("toy", "plugins.toy_algorithm")
    assert DrQVariant.gpu_steps_per_s == algorithms.get("drq").gpu_steps_per_s   # inherited as an attribute ...
    assert gpu_speed("toy")[1] == "the slowest measured figure: unmeasured"       # ... but not used
