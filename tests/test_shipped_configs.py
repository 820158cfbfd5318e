"""The shipped sweep files (configs/) parse and expand to the runs they document, without training."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from cg2a_ext.rl.sweep.cost import estimate
from cg2a_ext.rl.sweep.grid import build_spec

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DMC_TASKS = {"walker_walk", "walker_stand", "ball_in_cup_catch", "finger_spin", "cartpole_swingup", "cheetah_run"}


def runs(name: str):
    return build_spec(str(CONFIGS / name)).runs()


@pytest.mark.parametrize("table", ["table1.toml", "table2.toml"])
def test_tables_1_and_2_are_the_same_120_paper_runs(table):
    rs = runs(f"paper/{table}")
    assert len(rs) == 6 * 4 * 5
    assert {r.config.task for r in rs} == DMC_TASKS
    assert Counter(r.config.algorithm for r in rs) == {"soda": 30, "svea": 30, "sgqn": 30, "cg2a": 30}
    for r in rs:
        assert r.config.preset == "paper" and r.config.train_steps == 500_000
        assert {"color_hard", "video_easy", "video_hard"} <= set(r.config.eval_modes)
    assert [r.name for r in rs] == [r.name for r in runs("paper/table1.toml")]   # one --root serves both


def test_table3_is_the_robot_benchmark():
    rs = runs("paper/table3.toml")
    assert len(rs) == 2 * 5 * 5
    assert {r.config.task for r in rs} == {"reach", "peg_in_box"}
    assert {r.config.algorithm for r in rs} == {"sac", "soda", "svea", "sgqn", "cg2a"}
    for r in rs:
        assert r.config.train_steps == 250_000 and r.config.batch_size == 128
        assert r.config.eval_modes == ("train", "test1", "test2", "test3", "test4", "test5")


def test_table4_is_the_ablation():
    from cg2a_ext.rl import algorithms

    rs = runs("paper/table4.toml")
    rows = Counter(algorithms.get(r.config.algorithm).ablation(r.config.resolved_options()) for r in rs)
    assert rows == {"sac": 20, "ac": 20, "ac+gas": 20, "ac+sgs": 20, "cg2a": 20}
    assert {r.config.task for r in rs} == DMC_TASKS - {"cartpole_swingup", "cheetah_run"}
    assert all("video_hard" in r.config.eval_modes for r in rs)


def test_cpu_studies_and_the_cost_estimate():
    assert len(runs("cpu/generalisation.toml")) == 3 * (1 + 1 + 2 + 2)     # drq, svea, ac x2, cg2a x2
    assert {r.config.algorithm for r in runs("cpu/baselines.toml")} == {"soda", "sgqn", "smg"}
    reach = runs("cpu/robot_reach.toml")
    assert len(reach) == 4 and {r.config.task for r in reach} == {"reach"}
    e = estimate([r.config for r in runs("paper/table4.toml")])
    assert e.runs == 100 and 100 < e.gpu_hours < 2000 and any("ac" in a for a in e.assumptions)
