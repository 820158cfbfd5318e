"""Robot results: each training episode's success in train.csv and its panels in the learning curves; the
report's Table 3 layout (task x scene rows, the methods as columns beside the paper's), its success-rate table
and the table of the scenes the paper does not report, over fake run folders written through the run-folder API."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cg2a_ext.rl import TrainConfig, train
from cg2a_ext.rl.cli.report import main as report_main
from cg2a_ext.rl.run.folder import RunFolder
from cg2a_ext.rl.run.logs import RunLogger
from cg2a_ext.rl.sweep import manifest, paper_numbers
from cg2a_ext.rl.sweep.grid import build_spec
from cg2a_ext.rl.sweep.report import tables
from cg2a_ext.rl.sweep.report.collect import RunInfo
from cg2a_ext.rl.sweep.report.summary import build_cells

TINY_ROBOT = dict(task="reach", algorithm="drq", preset="cpu", train_steps=30, seed_steps=10, eval_freq=15,
                  eval_episodes=1, eval_modes=("train", "test1"), final_eval_modes=("train", "test1"), batch_size=8,
                  buffer_capacity=100, episode_length=10,
                  image_size=32, num_conv_layers=2, num_filters=4, projection_dim=8, hidden_dim=16, log_freq=10,
                  progress=False, tensorboard=False)


@pytest.fixture(scope="module")
def robot_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("robot") / "run"
    train(TrainConfig(**TINY_ROBOT, run_dir=str(run)))
    return run


def test_training_logs_each_episodes_success_and_the_curves_draw_success_panels(robot_run, tmp_path, monkeypatch):
    import matplotlib.figure

    from cg2a_ext.rl.run.plots import SUCCESS_WINDOW, learning_curve_panels, moving_mean, plot_learning_curves

    folder = RunFolder(robot_run)
    train_rows = folder.rows("train")
    assert len(train_rows) == 3                                   # 30 steps of 10-step episodes
    assert all(r["success"] in ("0", "1") for r in train_rows)
    assert all(r["success_rate"] != "" for r in folder.rows("eval"))
    # the figure's axes, caught as it is saved: a success panel per evaluation mode and one of the episodes
    drawn = {}

    def keep_axes(fig, *args, **kwargs):
        drawn.update({ax.get_title(): ax for ax in fig.axes if ax.get_title()})

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep_axes)
    plot_learning_curves([robot_run], tmp_path / "curves.png")
    assert list(drawn) == ["train", "test1", "training episodes", "train: success rate", "test1: success rate",
                           "training episodes: success"]
    successes = np.array([float(r["success"]) for r in train_rows])
    (line,) = drawn["training episodes: success"].get_lines()
    assert np.allclose(line.get_ydata(), moving_mean(successes, SUCCESS_WINDOW))
    rates = [float(r["success_rate"]) for r in folder.rows("eval") if r["mode"] == "test1"]
    assert np.allclose(drawn["test1: success rate"].get_lines()[0].get_ydata(), rates)

    # a run folder from before the column (or a family without success): no success panel, and still drawn
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(folder.config, RunFolder(old).config)
    for kind in ("train", "eval"):
        rows = [{k: v for k, v in r.items() if k not in ("success", "success_rate")} for r in folder.rows(kind)]
        with open(RunFolder(old).log(kind), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    assert "success" not in (old / "train.csv").read_text()
    assert [p.title for p in learning_curve_panels([old])] == ["train", "test1", "training episodes"]
    # mixed: the old run has no success curve, the new one has
    drawn.clear()
    plot_learning_curves([old, robot_run], tmp_path / "mixed.png")
    assert "training episodes: success" in drawn


def test_the_zero_shot_cache_keeps_each_episodes_success_and_a_cache_without_them_is_measured_again(robot_run):
    from cg2a_ext.rl.sweep.report.zero_shot import evaluate_run, load_cache, modes_to_evaluate

    result = evaluate_run(robot_run, ["test1"], episodes=2)["test1"]
    cached = load_cache(robot_run)["modes"]["test1"]
    assert len(cached["successes"]) == 2 and all(isinstance(x, bool) for x in cached["successes"])
    assert result["success_rate"] == np.mean(cached["successes"])
    step, cached_successes = cached["checkpoint_step"], list(cached["successes"])
    assert modes_to_evaluate(robot_run, ["test1"], 2, step, needs_success=True) == []
    # a cache written before successes were kept serves a family without success, not the robot family
    del cached["successes"]
    RunFolder(robot_run).zero_shot_cache.write_text(json.dumps({"modes": {"test1": cached}}))
    assert modes_to_evaluate(robot_run, ["test1"], 2, step, needs_success=True) == ["test1"]
    assert modes_to_evaluate(robot_run, ["test1"], 2, step) == []
    again = evaluate_run(robot_run, ["test1"], episodes=2)["test1"]          # measured again: the same seeds
    assert again["success_rate"] == result["success_rate"] and again["returns"] == result["returns"]
    assert load_cache(robot_run)["modes"]["test1"]["successes"] == cached_successes


def test_moving_mean_of_the_last_episodes():
    from cg2a_ext.rl.run.plots import moving_mean

    assert moving_mean(np.array([1.0, 0.0, 1.0, 1.0]), 2).tolist() == [1.0, 0.5, 0.5, 1.0]
    assert moving_mean(np.array([0.0, 1.0]), 20).tolist() == [0.0, 0.5]


# --------------------------------------------------------------------------- the report over fake robot runs
ALGORITHMS = ["sac", "soda", "svea", "sgqn", "cg2a"]
LABELS = ["SAC", "SODA", "SVEA", "SGQN", "CG2A"]
TASKS = ["reach", "peg_in_box"]
SEEDS = [0, 1, 2]
MODES = ["train", "test1", "test2", "test3", "test4", "test5"]
STEP = 100
EPISODES = 4
SEED_OFFSETS = {0: 0.0, 1: 3.0, 2: 9.0}      # sample std 4.58, population std 3.74: the tables must show the first


def _returns(task, algorithm, seed, mode) -> list[float]:
    """A run's zero-shot returns: mean 10 * algorithm + 100 * task + mode + the seed's offset, spread +- 1."""
    mean = 10 * ALGORITHMS.index(algorithm) + 100 * TASKS.index(task) + MODES.index(mode) + SEED_OFFSETS[seed]
    return [mean - 1, mean + 1, mean - 1, mean + 1]


def _successes(task, algorithm, seed, mode) -> list[bool]:
    wins = (ALGORITHMS.index(algorithm) + seed + MODES.index(mode)) % (EPISODES + 1)
    return [e < wins for e in range(EPISODES)]


@pytest.fixture(scope="module")
def robot_sweep(tmp_path_factory):
    """A sweep root of finished robot runs, 5 algorithms x 2 tasks x 3 seeds: config.json, an eval.csv with
    success rates, finished.json and the report's zero-shot cache, no checkpoint (as an archive holds them)."""
    root = tmp_path_factory.mktemp("robot_report") / "sweep"
    runs = build_spec(None, TASKS, ALGORITHMS, SEEDS, ["preset=cpu", f"train_steps={STEP}"]).runs()
    manifest.write_manifest(root, runs, spec={"fixed": {}}, resources={})
    for run in runs:
        folder = RunFolder(root / run.name)
        folder.path.mkdir(parents=True)
        run.config.save(folder.config)
        logger = RunLogger(folder.path, tensorboard=False)
        cache = {}
        for mode in MODES:
            returns = _returns(run.task, run.algorithm, run.seed, mode)
            successes = _successes(run.task, run.algorithm, run.seed, mode)
            for step in (0, STEP):
                logger.log("eval", {"step": step, "mode": mode, "mean_return": np.mean(returns), "std_return": 1.0,
                                    "episodes": EPISODES, "data_source": mode,
                                    "returns": ";".join(map(str, returns)), "success_rate": np.mean(successes)})
            cache[mode] = {"returns": returns, "successes": successes, "checkpoint_step": STEP, "data_source": mode}
        logger.close()
        folder.zero_shot_cache.write_text(json.dumps({"modes": cache}))
        folder.write_finished(STEP, {m: float(np.mean(cache[m]["returns"])) for m in MODES}, 1.0)
    assert report_main([str(root), "--no_eval", "--episodes", str(EPISODES), "--bootstrap_reps", "50"]) == 0
    return root, (root / "report" / "report.md").read_text()


def _section_table(page: str, title: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the first markdown table after the line ``title``."""
    lines = page[page.index(title + "\n"):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    rows = []
    for line in lines[start:]:
        if not line.startswith("| "):
            break
        rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return rows[0], rows[2:]


def _expected(task, scene, algorithm, success=False) -> str:
    if success:
        per_run = [np.mean(_successes(task, algorithm, s, scene)) for s in SEEDS]
        return f"{np.mean(per_run):.2f} ± {np.std(per_run, ddof=1):.2f} (n={len(SEEDS)})"
    per_run = [np.mean(_returns(task, algorithm, s, scene)) for s in SEEDS]
    return f"{np.mean(per_run):.1f} ± {np.std(per_run, ddof=1):.1f} (n={len(SEEDS)})"


def test_the_report_writes_table_3_with_the_papers_numbers_beside_ours(robot_sweep):
    _, page = robot_sweep
    header, rows = _section_table(page, "### Returns, beside the paper's Table 3")
    paper = [f"{label} (paper, Table 3)" for label in LABELS]
    assert header[2:] == [c for pair in zip(LABELS, paper) for c in pair]
    assert header[:2] == ["task", "scene (mean ± sample std over seeds (ddof = 1), n = runs)"]
    assert [r[:2] for r in rows] == [[t, s] for t in TASKS for s in ("train", "test1", "test2", "test3")]
    for row in rows:
        task, scene = row[:2]
        for i, algorithm in enumerate(ALGORITHMS):
            ours, theirs = row[2 + 2 * i], row[3 + 2 * i]
            assert ours == _expected(task, scene, algorithm), (task, scene, algorithm)
            published = paper_numbers.lookup("3", scene, task, algorithm)[0]
            assert theirs == f"{published.mean:.1f} ± {published.std:g}"
    assert "9.7 ± 2" in rows[0] and rows[6][2 * ALGORITHMS.index("svea") + 3] == "96.8 ± 42"   # peg_in_box test2
    assert rows[2][2 * ALGORITHMS.index("sgqn") + 3] == "31.0 ± 3"                            # as printed
    assert "4.6 (n=3)" in rows[0][2] and "3.7 (n=3)" not in rows[0][2]                       # ddof = 1
    assert "re-creation" in page and "today's MuJoCo" in page and "not directly comparable" in page
    assert "copy error" in page
    # the robot tasks have no per-mode tables of their own (those stay the dmc tasks')
    assert "## train: not reported in the paper" not in page and "## test1:" not in page


def test_the_report_writes_success_rates_for_the_same_cells(robot_sweep):
    root, page = robot_sweep
    header, rows = _section_table(page, "### Success rates")
    assert header[2:] == LABELS                                # the paper gives no success rates
    assert [r[:2] for r in rows] == [[t, s] for t in TASKS for s in ("train", "test1", "test2", "test3")]
    for row in rows:
        for i, algorithm in enumerate(ALGORITHMS):
            assert row[2 + i] == _expected(row[0], row[1], algorithm, success=True)
    cells = json.loads((root / "report" / "report.json").read_text())["cells"]
    cell = next(c for c in cells if (c["task"], c["method"], c["mode"]) == ("reach", "cg2a", "test2"))
    per_run = [np.mean(_successes("reach", "cg2a", s, "test2")) for s in SEEDS]
    assert cell["run_success_rates"] == pytest.approx(per_run)
    assert cell["success_rate_std"] == pytest.approx(np.std(per_run, ddof=1))


def test_the_scenes_the_paper_does_not_report_have_their_own_table(robot_sweep):
    _, page = robot_sweep
    title = "### Scenes the paper does not report (test4, test5): ours only"
    header, rows = _section_table(page, title)
    assert header[2:] == LABELS and not any("paper" in h for h in header)
    assert [r[:2] for r in rows] == [[t, s] for t in TASKS for s in ("test4", "test5")]
    for row in rows:
        for i, algorithm in enumerate(ALGORITHMS):
            assert row[2 + i] == _expected(row[0], row[1], algorithm)
    header, rows = _section_table(page[page.index(title):], "Success rates:")
    assert [r[:2] for r in rows] == [[t, s] for t in TASKS for s in ("test4", "test5")]
    assert rows[0][2] == _expected("reach", "test4", "sac", success=True)
    # the report's learning curves carry the success panels (the eval.csv rows have success rates)
    assert "(curves_reach.png)" in page


def _info(task, method, algorithm, seed, zero_shot):
    return RunInfo(f"{task}-{method}-{seed}", Path("."), task, algorithm, seed, method, "finished",
                   {"train_steps": STEP}, STEP,
                   zero_shot={m: {"mean": v, "episodes": 1, "data_source": m, "checkpoint_step": STEP}
                              for m, v in zero_shot.items()})


def test_a_mixed_sweep_keeps_dmc_tasks_in_the_per_mode_tables_and_robot_tasks_in_table_3():
    runs = [_info("walker_walk", "cg2a", "cg2a", s, {"train": 900.0 + s, "color_hard": 880.0 + s}) for s in (0, 1)]
    runs += [_info("reach", "cg2a", "cg2a", s, {"train": 30.0 + s, "test1": 20.0}) for s in (0, 1)]
    runs += [_info("reach", "drq", "drq", 0, {"train": 5.0})]
    summary = build_cells(runs, ["train", "color_hard", "test1"])
    assert tables.scene_tasks(summary) == ["reach"]
    assert tables.mode_tasks(summary, "train") == ["walker_walk"] and tables.mode_tasks(summary, "test1") == []
    assert "reach" not in tables.mode_table(summary, "train", tables.mode_tasks(summary, "train"))
    header, _, *body = tables.scene_table(summary, ["train", "test1"]).strip().splitlines()
    # every algorithm of the paper's Table 3 has its column; drq (not in the paper) comes before the proposed one
    names = [c.strip() for c in header.strip("|").split(" | ")][2:]
    assert names == ["SAC (paper, Table 3)", "SODA (paper, Table 3)", "SVEA (paper, Table 3)",
                     "SGQN (paper, Table 3)", "DrQ", "CG2A", "CG2A (paper, Table 3)"]
    assert body[0].startswith("| reach | train |") and "30.5 ± 0.7 (n=2)" in body[0] and "5.0 (n=1)" in body[0]
    assert "walker_walk" not in "\n".join(body)
    assert not tables.has_success_rates(summary)     # no zero-shot success: the report writes no success table


# --------------------------------------------------------------------------- aggregates: the families with a scale
DMC_TASKS = ["walker_walk", "cartpole_balance"]
MIXED_ALGORITHMS = ["drq", "cg2a"]


def _mixed_returns(task, algorithm, seed, mode) -> list[float]:
    """dmc returns in the hundreds, 30 less a mode further along; robot returns negative (an arm far from its
    target), 3 less a mode further along."""
    from cg2a_ext.rl.envs import family_of

    step = family_of(task).modes.index(mode)
    if task in DMC_TASKS:
        base = 500.0 + 100 * DMC_TASKS.index(task) - 30 * step
    else:
        base = -40.0 - 10 * TASKS.index(task) - 3 * step
    mean = base + 10 * MIXED_ALGORITHMS.index(algorithm) - 5 * seed
    return [mean - 1, mean + 1]


@pytest.fixture(scope="module")
def mixed_sweep(tmp_path_factory):
    """A sweep root of finished dmc and robot runs (2 algorithms x 4 tasks x 2 seeds), written as robot_sweep's."""
    from cg2a_ext.rl.envs import family_of

    root = tmp_path_factory.mktemp("mixed_report") / "sweep"
    runs = build_spec(None, DMC_TASKS + TASKS, MIXED_ALGORITHMS, [0, 1], ["preset=cpu", f"train_steps={STEP}"]).runs()
    manifest.write_manifest(root, runs, spec={"fixed": {}}, resources={})
    for run in runs:
        folder = RunFolder(root / run.name)
        folder.path.mkdir(parents=True)
        run.config.save(folder.config)
        family = family_of(run.task)
        logger = RunLogger(folder.path, tensorboard=False)
        cache = {}
        for mode in family.modes:
            returns = _mixed_returns(run.task, run.algorithm, run.seed, mode)
            entry = {"returns": returns, "checkpoint_step": STEP, "data_source": mode}
            if family.reports_success:
                entry["successes"] = [run.seed == 0, False]
            logger.log("eval", {"step": STEP, "mode": mode, "mean_return": np.mean(returns), "std_return": 1.0,
                                "episodes": 2, "data_source": mode, "returns": ";".join(map(str, returns))})
            cache[mode] = entry
        logger.close()
        folder.zero_shot_cache.write_text(json.dumps({"modes": cache}))
        folder.write_finished(STEP, {m: float(np.mean(c["returns"])) for m, c in cache.items()}, 1.0)
    assert report_main([str(root), "--no_eval", "--episodes", "2", "--bootstrap_reps", "50"]) == 0
    return (root, json.loads((root / "report" / "report.json").read_text()),
            (root / "report" / "report.md").read_text())


def test_a_mixed_sweeps_aggregates_cover_the_dmc_tasks_and_name_the_robot_tasks_left_out(mixed_sweep):
    from cg2a_ext.rl.envs import get_family

    _, data, page = mixed_sweep
    dmc_modes = list(get_family("dmc").modes)
    # one family with a range: the groups are the dmc modes, as in a dmc sweep
    assert list(data["aggregates"]) == dmc_modes and list(data["probability_of_improvement"]) == dmc_modes
    for mode, per in data["aggregates"].items():
        assert set(per) == set(MIXED_ALGORITHMS)
        for method, d in per.items():
            assert d["tasks"] == sorted(DMC_TASKS)
            cells = [np.mean([np.mean(_mixed_returns(t, method, s, mode)) for s in (0, 1)]) for t in DMC_TASKS]
            assert d["mean"]["value"] == pytest.approx(np.mean(cells) / 1000)
    for pairs in data["probability_of_improvement"].values():
        assert all(p["tasks"] == len(DMC_TASKS) for p in pairs)
    left = data["left_out_of_aggregates"]
    assert [(x["task"], x["family"]) for x in left] == [(t, "robot") for t in TASKS]
    line = next(line for line in page.splitlines() if line.startswith("Left out of the aggregates"))
    assert "reach, peg_in_box (the robot family gives no normalised return range" in line
    assert not any(t in line for t in DMC_TASKS)
    assert "## Aggregates across tasks (returns / 1000)" in page


def test_retention_holds_no_robot_task(mixed_sweep):
    _, data, page = mixed_sweep
    assert data["retention"] and {r["task"] for r in data["retention"]} == set(DMC_TASKS)
    assert {r["mode"] for r in data["retention"]} == {"color_easy", "color_hard", "video_easy", "video_hard"}
    ratio = next(r["ratios"] for r in data["retention"] if (r["task"], r["method"], r["mode"]) ==
                 ("walker_walk", "cg2a", "video_hard"))
    train = [np.mean(_mixed_returns("walker_walk", "cg2a", s, "train")) for s in (0, 1)]
    test = [np.mean(_mixed_returns("walker_walk", "cg2a", s, "video_hard")) for s in (0, 1)]
    assert ratio == pytest.approx([b / a for a, b in zip(train, test)])
    assert set(data["retention_improvement"]) == {"color_easy", "color_hard", "video_easy", "video_hard"}
    header, rows = _section_table(page, "## Return kept under each shift")
    assert {r[0] for r in rows} == set(DMC_TASKS)
    assert not any(m in " ".join(header) for m in ("test1", "test5"))


def test_the_runs_table_shows_success_rates_where_the_runs_have_them(mixed_sweep):
    _, _, page = mixed_sweep
    header, rows = _section_table(page, "## Runs")
    assert header[-1] == "zero-shot success rate"
    by_task = {}
    for row in rows:
        by_task.setdefault(row[1], []).append(row[-1])
    assert all(cell == "" for t in DMC_TASKS for cell in by_task[t])
    reach = [row for row in rows if row[1] == "reach" and row[3] == "0"][0][-1]
    assert reach.startswith("train 0.50, test1 0.50")             # one of its 2 episodes succeeded


def test_a_robot_only_report_says_why_it_has_no_aggregates(robot_sweep):
    root, page = robot_sweep
    data = json.loads((root / "report" / "report.json").read_text())
    assert data["aggregates"] == {} and data["retention"] == [] and data["retention_improvement"] == {}
    assert "no task of the sweep has a normalised return range" in page
    assert "Left out of the aggregates" in page and "## Return kept under each shift" not in page
    assert "(aggregates.png)" not in page


def test_several_families_with_a_range_are_aggregated_each_on_its_own(monkeypatch):
    import sys
    import types

    from cg2a_ext.rl import envs
    from cg2a_ext.rl.envs.family import EnvFamily
    from cg2a_ext.rl.sweep.report.summary import add_statistics

    class Scaled(EnvFamily):
        name, modes, normalised_return_range = "scaled", ("train", "shifted"), (-100.0, 100.0)

        def tasks(self):
            return ("scaled_task",)

        def observation_defaults(self, task, preset):
            raise NotImplementedError

        def make_env(self, *args, **kwargs):
            raise NotImplementedError

    module = types.ModuleType("scaled_family")
    module.FAMILY = Scaled()
    monkeypatch.setitem(sys.modules, "scaled_family", module)
    monkeypatch.setitem(envs.FAMILIES, "scaled", "scaled_family")
    runs = [_info("walker_walk", m, m, s, {"train": 800.0 - s, "color_hard": 400.0}) for m in MIXED_ALGORITHMS
            for s in (0, 1)]
    runs += [_info("scaled_task", m, m, s, {"train": 50.0 + s, "shifted": -50.0}) for m in MIXED_ALGORITHMS
             for s in (0, 1)]
    runs += [_info("reach", "cg2a", "cg2a", 0, {"train": -30.0})]
    summary = add_statistics(build_cells(runs, ["train", "color_hard", "shifted"]), runs, reps=20)
    assert list(summary.aggregates) == ["train (dmc)", "train (scaled)", "color_hard (dmc)", "shifted (scaled)"]
    assert summary.aggregates["train (scaled)"]["cg2a"]["tasks"] == ["scaled_task"]
    assert summary.aggregates["train (scaled)"]["cg2a"]["mean"].value == pytest.approx((50.5 + 100) / 200)
    assert summary.aggregates["train (dmc)"]["cg2a"]["mean"].value == pytest.approx(0.7995)
    # a ratio of normalised returns: (-50 + 100) / (50 + 100)
    assert summary.retention[("scaled_task", "cg2a", "shifted")][0] == pytest.approx(50 / 150)
    assert set(summary.retention_improvement) == {"color_hard (dmc)", "shifted (scaled)"}
    assert summary.left_out == {"reach": "robot"} and not any(k[0] == "reach" for k in summary.retention)
    assert tables.normalisation(summary).endswith("dmc [0, 1000], scaled [-100, 100]")
    assert summary.to_dict()["aggregate_groups"]["shifted (scaled)"] == {"mode": "shifted", "family": "scaled",
                                                                         "return_range": [-100.0, 100.0]}


# --------------------------------------------------------------------------- cg2a-eval's success column
def test_eval_shows_a_success_column_for_a_robot_run_and_none_for_dmc(robot_run, tmp_path):
    from cg2a_ext.rl.cli import eval as eval_script
    from cg2a_ext.rl.core.evaluation import aggregate_runs, markdown_table

    doc = eval_script.main(["--run", str(robot_run), "--modes", "train", "test1", "--episodes", "2", "--device", "cpu",
                            "--out", str(tmp_path / "robot")])
    header, _, row = (tmp_path / "robot.md").read_text().splitlines()[2:5]
    assert header == "| task | algorithm | runs | train | test1 | train success rate | test1 success rate |"
    rates = [doc["runs"][0]["results"][m]["success_rate"] for m in ("train", "test1")]
    assert row.endswith(" | " + " | ".join(f"{r:.2f}" for r in rates) + " |")
    assert doc["table"][0]["aggregate"]["test1"]["success_rate"] == rates[1]
    # several runs: mean ± std over the runs' rates
    two = aggregate_runs([{"train": {"returns": [1.0], "mean": 1.0, "episodes": 1, "data_source": "train",
                                     "success_rate": r}} for r in (0.0, 1.0)], ["train"])
    assert "0.50 ± 0.50 |" in markdown_table([{"task": "reach", "algorithm": "drq", "aggregate": two}], ["train"])
    # a dmc task's family reports no success: no column
    dmc = aggregate_runs([{"train": {"returns": [900.0, 910.0], "mean": 905.0, "episodes": 2, "data_source": "train"}}],
                         ["train"])
    assert "success_rate" not in dmc["train"]
    table = markdown_table([{"task": "walker_walk", "algorithm": "drq", "aggregate": dmc}], ["train"])
    assert table.splitlines()[0] == "| task | algorithm | runs | train |" and "success" not in table


def test_reference_policies_run_on_the_reports_episodes():
    """random / still / expert on reach: the expert succeeds and scores above the others, on the zero-shot
    episodes of the report (the same goal draws for a seed, other ones for another seed); bad names refused."""
    from cg2a_ext.rl.core.evaluation import run_episodes
    from cg2a_ext.rl.envs.robot import MODES, make_env
    from cg2a_ext.rl.run.seeding import SeedStreams
    from cg2a_ext.rl.sweep.report import reference_policies as ref
    from cg2a_ext.rl.sweep.report.zero_shot import zero_shot_seeds

    res = ref.evaluate("reach", ["random", "still", "expert"], ["train", "test2"], seeds=[0, 1], episodes=2,
                       image_size=16)
    for mode in ("train", "test2"):
        expert, still, rand = (res[p][mode] for p in ("expert", "still", "random"))
        assert expert["success_rate"] == 1.0 and len(expert["returns"]) == 4
        assert expert["mean"] > max(still["mean"], rand["mean"]) + 50
        assert still["success_rate"] < 1.0
    env_seed, episode_seeds = zero_shot_seeds(SeedStreams(1), MODES.index("test2"), 2)
    env = make_env("reach", mode="test2", seed=env_seed, image_size=16)
    try:
        still_seed1 = run_episodes(ref._Policy("still", env, None), env, 2, episode_seeds=episode_seeds)
    finally:
        env.close()
    assert res["still"]["test2"]["returns"][2:] == still_seed1 != res["still"]["test2"]["returns"][:2]
    with pytest.raises(ValueError, match="unknown policy 'greedy'"):
        ref.evaluate("reach", ["greedy"], ["train"], seeds=[0], episodes=1, image_size=16)
    with pytest.raises(ValueError, match="unknown mode 'video_hard'"):
        ref.evaluate("reach", ["still"], ["video_hard"], seeds=[0], episodes=1, image_size=16)
