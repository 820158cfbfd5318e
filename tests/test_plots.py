"""run/plots.py: figures of short runs show their points and say when a panel has too few."""
from __future__ import annotations

import json

import pytest

from agent_support import config_with


def _capture_figures(monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: (figures.append(fig), close(fig)))
    return figures


def _texts(fig) -> str:
    return " ".join(t.get_text() for ax in fig.axes for t in ax.texts)


def _run(tmp_path, name, diag_steps, eval_steps):
    from cg2a_ext.rl.run.folder import RunFolder

    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config_with(task="cartpole_balance").to_dict()))
    folder = RunFolder(d)
    with open(folder.log("diagnostics"), "w") as f:
        f.write("step,grad_norm_0,grad_norm_1,cos_0_1,weight_0,weight_1,conflict_fraction,gamma\n")
        for s in diag_steps:
            f.write(f"{s},1.0,2.0,0.5,0.5,0.5,0.3,0.25\n")
    with open(folder.log("eval"), "w") as f:
        f.write("step,mode,mean_return,std_return,episodes\n")
        for s in eval_steps:
            f.write(f"{s},train,{100 + s / 10},1.0,5\n")
    with open(folder.log("train"), "w") as f:
        f.write("step,episode,episode_return\n")
        for i, s in enumerate(eval_steps):
            f.write(f"{s},{i},{50 + s / 10}\n")
    return d


@pytest.mark.parametrize("points, note", [(1, True), (5, False)])
def test_gradient_diagnostics_of_a_short_run_show_markers_and_a_note(tmp_path, monkeypatch, points, note):
    from cg2a_ext.rl.run.plots import plot_gradient_diagnostics

    figures = _capture_figures(monkeypatch)
    d = _run(tmp_path, "short", diag_steps=[100 * (i + 1) for i in range(points)], eval_steps=[0])
    assert plot_gradient_diagnostics(d, tmp_path / "diag.png").is_file()
    fig = figures[-1]
    lines = [line for ax in fig.axes for line in ax.get_lines() if len(line.get_xdata()) == points]
    assert lines and all(line.get_marker() == "o" for line in lines)     # single points are visible
    assert ("too few for a curve" in _texts(fig)) == note


def test_learning_curves_of_a_short_run_say_a_panel_has_too_few(tmp_path, monkeypatch):
    from cg2a_ext.rl.run.plots import plot_learning_curves

    figures = _capture_figures(monkeypatch)
    short = _run(tmp_path, "short", diag_steps=[100], eval_steps=[0])
    assert plot_learning_curves([short], tmp_path / "curves.png").is_file()
    assert "too few for a curve" in _texts(figures[-1])
    longer = _run(tmp_path, "longer", diag_steps=[100], eval_steps=[0, 1000, 2000])
    plot_learning_curves([longer], tmp_path / "curves2.png")
    assert "too few for a curve" not in _texts(figures[-1])
