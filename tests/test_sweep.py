"""Sweeps: the grid and its run names, a local Ray sweep, retry and resume of a killed worker,
skip on relaunch, stop and resume, a bad option failing once, the progress table.

The Ray tests share one Ray session (module fixture): starting Ray takes many seconds on 2 cores.
"""
import copy
import csv
import io
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from cg2a_ext.rl.sweep import manifest
from cg2a_ext.rl.sweep.grid import GridError, RunSpec, build_spec
from cg2a_ext.rl.sweep.progress import RUNNING, Row, render, sweep_eta
from cg2a_ext.rl.sweep.run_state import FINISHED, PARTIAL, checkpoint_steps, run_status, snapshot

# The tiny configuration of tests/test_trainer.py, as sweep options (20 agent steps per episode).
TINY = ["preset=cpu", "final_eval_modes=train", "image_size=32", "episode_length=80", "num_conv_layers=2",
        "num_filters=8",
        "projection_dim=16", "hidden_dim=32", "batch_size=8", "seed_steps=20", "log_freq=10", "eval_episodes=1",
        "device=cpu", "eval_modes=train"]


def tiny_runs(algorithms=("drq",), seeds=(0,), tasks=("cartpole_balance",), extra=()):
    return build_spec(None, tasks, algorithms, seeds, TINY + list(extra)).runs()


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def events(root, event=None):
    return [e for e in manifest.read_events(root) if event is None or e["event"] == event]


# --------------------------------------------------------------------------- grid (no Ray)
def test_grid_names_runs_by_their_named_options_and_gives_method_options_to_their_owners():
    spec = build_spec(None, ["cartpole_balance"], ["drq", "cg2a"], [0, 1], ["preset=cpu", "action_repeat=8"],
                      ["augmentations=overlay overlay_s|conv overlay overlay_s"])
    runs = spec.runs()
    names = [r.name for r in runs]
    # augmentations is a method option of cg2a (and ac), not of drq: drq runs once per seed
    assert names == ["cartpole_balance--drq--seed0", "cartpole_balance--drq--seed1",
                     "cartpole_balance--cg2a--augmentations=overlay+overlay_s--seed0",
                     "cartpole_balance--cg2a--augmentations=overlay+overlay_s--seed1",
                     "cartpole_balance--cg2a--augmentations=conv+overlay+overlay_s--seed0",
                     "cartpole_balance--cg2a--augmentations=conv+overlay+overlay_s--seed1"]
    cg2a = runs[2]
    assert cg2a.method == "cg2a augmentations=overlay,overlay_s"
    # the run is a TrainConfig, typed: the algorithm's option in its options
    cfg = cg2a.config
    assert (cfg.algorithm, cfg.seed, cfg.action_repeat, cfg.options.augmentations) == \
        ("cg2a", 0, 8, ("overlay", "overlay_s"))
    assert runs[0].config.options == type(runs[0].config.options)()
    # the command printed for a human parses into the same configuration
    assert cg2a.command_line() == ["--task", "cartpole_balance", "--algorithm", "cg2a", "--seed", "0", "--preset",
                                   "cpu", "--action_repeat", "8", "--augmentations", "overlay", "overlay_s"]
    assert "--augmentations" not in runs[0].command_line()
    from cg2a_ext.rl.cli.options import config_from_args
    assert config_from_args(cg2a.command_line()).to_dict() == copy.deepcopy(cg2a.config).validate().to_dict()
    assert RunSpec.from_dict(json.loads(json.dumps(cg2a.to_dict()))) == cg2a


def test_grid_converts_values_by_the_field_types_and_gives_algorithm_options_to_their_owners():
    spec = build_spec(None, ["cartpole_balance"], ["soda", "cg2a", "drq"], [0],
                      ["preset=cpu", "soda_crop=shift", "gamma=0.3 0.3", "batch_size=64", "image_bank=/data/places"],
                      ["augmentations=overlay overlay_s|conv overlay"])
    by_algo = {}
    for run in spec.runs():
        by_algo.setdefault(run.algorithm, []).append(run)
    soda, = by_algo["soda"]
    assert soda.config.options.crop == "shift" and soda.config.batch_size == 64
    assert soda.config.image_bank == "/data/places"
    cg2a = by_algo["cg2a"]
    assert [r.config.options.augmentations for r in cg2a] == [("overlay", "overlay_s"), ("conv", "overlay")]
    assert all(r.config.options.sgs_damping == (0.3, 0.3) for r in cg2a)
    drq, = by_algo["drq"]
    assert drq.config.image_bank == "" and drq.config.batch_size == 64 and "gamma" not in drq.fixed
    with pytest.raises(GridError, match="takes 2 values"):
        build_spec(None, ["cartpole_balance"], ["cg2a"], [0], ["gamma=0.3"]).runs()
    with pytest.raises(GridError, match="takes an integer"):
        build_spec(None, ["cartpole_balance"], ["drq"], [0], ["batch_size=6.5"]).runs()
    with pytest.raises(GridError, match="gamma and sgs_damping both set cg2a's sgs_damping"):
        build_spec(None, ["cartpole_balance"], ["cg2a"], [0], ["gamma=0.3 0.3", "sgs_damping=0.2 0.2"]).runs()


def test_grid_toml_gives_the_same_runs_as_the_command_line(tmp_path):
    toml = tmp_path / "sweep.toml"
    toml.write_text('tasks = ["cartpole_balance"]\nalgorithms = ["drq", "cg2a"]\nseeds = [0, 1]\n'
                    '[set]\npreset = "cpu"\naction_repeat = 8\n'
                    '[vary]\naugmentations = [["overlay", "overlay_s"], "conv overlay overlay_s"]\n')
    cli = build_spec(None, ["cartpole_balance"], ["drq", "cg2a"], [0, 1], ["preset=cpu", "action_repeat=8"],
                     ["augmentations=overlay overlay_s|conv overlay overlay_s"]).runs()
    assert [r.to_dict() for r in build_spec(str(toml)).runs()] == [r.to_dict() for r in cli]
    # [[grid]] blocks: the block's `set` names its runs; booleans become --flag / --no-flag
    toml.write_text('tasks = ["cartpole_balance"]\nseeds = [3]\n[[grid]]\nalgorithms = ["drq"]\n'
                    '[[grid]]\nalgorithms = ["cg2a"]\nset = { gas = false }\n')
    runs = build_spec(str(toml)).runs()
    assert [r.name for r in runs] == ["cartpole_balance--drq--seed3", "cartpole_balance--cg2a--gas=false--seed3"]
    assert runs[1].command_line()[-1] == "--no-gas" and runs[1].config.options.gas is False


@pytest.mark.parametrize("set_items,vary_items,message", [
    (["batch_sise=3"], [], "did you mean batch_size"),
    (["seed=3"], [], "set by --seeds"),
    (["gas=maybe"], [], "is a boolean"),
    (["preset=cpu"], ["preset=cpu|paper"], "both fixed"),
    ([], ["action_repeat=4|4"], "repeats a value"),
    (["action_repeat"], [], "expects KEY=VALUE"),
])
def test_grid_refuses_bad_options_before_any_run(set_items, vary_items, message):
    with pytest.raises(GridError, match=message):
        build_spec(None, ["cartpole_balance"], ["drq"], [0], set_items, vary_items).runs()


def test_sweep_without_ray_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    from cg2a_ext.rl.cli.sweep import main

    monkeypatch.setitem(sys.modules, "ray", None)       # import ray -> ImportError
    code = main(["--root", str(tmp_path), "--tasks", "cartpole_balance", "--algorithms", "drq", "--seeds", "0"])
    assert code == 2
    assert 'pip install ".[sweep]"' in capsys.readouterr().err
    assert not (tmp_path / "sweep.json").exists()


def test_progress_reads_the_run_csvs_and_estimates_the_sweep(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"train_steps": 1000}))
    (d / "update.csv").write_text("step,steps_per_s,critic_loss\n100,5.0,1\n200,4.0,1\n30")   # last row half-written
    (d / "eval.csv").write_text("step,mode,mean_return,data_source\n0,train,10,train\n200,train,250,train\n"
                                "200,video_hard,120,procedural\n")
    snap = snapshot(d)
    assert (snap.status, snap.step, snap.steps_per_s, snap.eval_step) == ("new", 200, 4.0, 200)
    assert snap.evaluation == {"train": 250.0, "video_hard": 120.0}
    rows_ = [Row("a", RUNNING, 1, snap, 1000), Row("b", "queued", 1, snapshot(tmp_path / "none"), 1000)]
    # 800 + 1000 steps left at the 4 steps/s of the one running run
    assert sweep_eta(rows_) == pytest.approx(1800 / 4.0)
    text = render(rows_)
    assert "200/1000" in text and "train=250 v_hard=120 @200" in text and "sweep ETA 7:30" in text


def test_launch_order_gives_every_configuration_its_first_seed_first():
    from cg2a_ext.rl.sweep.grid import order_runs

    runs = build_spec(None, ["cartpole_balance", "walker_walk"], ["drq", "cg2a"], [3, 1],
                      ["train_steps=100"], ["augmentations=overlay|conv overlay"]).runs()
    assert len(runs) == 12
    seeds = order_runs(runs, "seeds")
    # 6 configurations (2 tasks x (drq + cg2a with 2 combinations)), each with its first seed (3), then its second (1)
    assert [r.seed for r in seeds] == [3] * 6 + [1] * 6
    assert [r.name for r in seeds[:6]] == [r.name for r in runs if r.seed == 3]     # the grid's order within a round
    assert sorted(r.name for r in seeds) == sorted(r.name for r in runs)
    assert order_runs(runs, "grid") == runs
    with pytest.raises(GridError, match="unknown order 'random'"):
        order_runs(runs, "random")


def test_sweep_eta_plays_queued_runs_through_the_slots_at_their_configurations_speed(tmp_path):
    def run(name, state, step, train_rows, total=1000):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"train_steps": total}))
        (d / "train.csv").write_text("step,episode,episode_return,episode_length,elapsed_s\n" + "".join(
            f"{s},{i},0,125,{e}\n" for i, (s, e) in enumerate(train_rows)))
        snap = snapshot(d)
        return Row(name, state, 1, snap, total)

    # the wall speed counts evaluations: 500 steps in 100 s although update.csv would say more
    fast = run("t--drq--seed0", RUNNING, 500, [(250, 40.0), (500, 90.0)])
    assert fast.snap.wall_steps_per_s == pytest.approx(250 / 50.0)
    slow = run("t--cg2a--seed0", RUNNING, 500, [(0, 0.0), (500, 250.0)])        # 2 steps/s
    done = run("t--drq--seed1", "skipped", 1000, [(0, 0.0), (1000, 200.0)])      # 5 steps/s
    queued_drq = run("t--drq--seed2", "queued", 0, [])
    queued_cg2a = run("t--cg2a--seed1", "queued", 0, [])
    queued_new = run("t--svea--seed0", "queued", 0, [])                           # no svea speed yet
    rows_ = [fast, slow, done, queued_drq, queued_cg2a, queued_new]
    # two slots: drq0 ends at 100 s, cg2a0 at 250 s; drq2 (5/s: 200 s) 100 -> 300;
    # cg2a1 (2/s: 500 s) 250 -> 750; svea0 at the median speed of all (5, 2, 5: 5/s, 200 s) 300 -> 500
    assert sweep_eta(rows_) == pytest.approx(750.0)
    text = render(rows_)
    assert "sweep ETA 12:30" in text and "1:40" in text        # drq0's own ETA: 500 steps at 5/s
    assert sweep_eta([done]) == 0.0
    assert sweep_eta([queued_new]) is None                          # nothing measured anywhere


# --------------------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def ray_session():
    import ray

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def make_runner(runs, root, **kw):
    from cg2a_ext.rl.sweep.runner import RunnerOptions, SweepRunner

    opts = RunnerOptions(root=Path(root), cpus_per_run=1, retries=kw.pop("retries", 2), refresh=3600,
                         stop_timeout=kw.pop("stop_timeout", 60))
    return SweepRunner(runs, opts, stream=io.StringIO(), tty=False, **kw)


def in_thread(runner):
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("code", runner.run()), daemon=True)
    t.start()
    return t, out


def wait_for(predicate, timeout=300, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_local_ray_sweep_then_relaunch_skips_finished_runs(ray_session, tmp_path):
    runs = tiny_runs(("drq", "cg2a"), (0, 1), extra=["train_steps=40", "eval_freq=20", "checkpoint_freq=20"])
    root = tmp_path / "sweep"
    assert make_runner(runs, root).run() == 0
    doc = json.loads((root / "sweep.json").read_text())
    assert [r["name"] for r in doc["runs"]] == [r.name for r in runs]
    for run in runs:
        d = root / run.name
        cfg = json.loads((d / "config.json").read_text())
        assert (cfg["algorithm"], cfg["seed"], cfg["train_steps"], cfg["num_threads"]) == \
            (run.algorithm, run.seed, 40, 1)
        assert run_status(d) == FINISHED and (d / "finished.json").is_file()
        assert [int(r["step"]) for r in rows(d / "eval.csv")] == [0, 20, 40]
    assert sorted(e["run"] for e in events(root, "finished")) == sorted(r.name for r in runs)
    assert all(e["attempt"] == 1 for e in events(root))
    stamps = {r.name: (root / r.name / "checkpoints").stat().st_mtime_ns for r in runs}
    n_events = len(events(root))

    runner = make_runner(runs, root)
    assert runner.run() == 0
    new = manifest.read_events(root)[n_events:]
    assert sorted(e["run"] for e in new if e["event"] == "skipped") == sorted(r.name for r in runs)
    assert not [e for e in new if e["event"] != "skipped"]
    assert stamps == {r.name: (root / r.name / "checkpoints").stat().st_mtime_ns for r in runs}


def _final_state(d):
    return torch.load(sorted((d / "checkpoints").glob("step_*.pt"))[-1], weights_only=True)


def test_zero_shot_options_are_checked(capsys, tmp_path):
    from cg2a_ext.rl.cli.sweep import main

    base = ["--root", str(tmp_path), "--tasks", "cartpole_balance", "--algorithms", "drq", "--seeds", "0", "--dry_run"]
    with pytest.raises(SystemExit):
        main(base + ["--zero_shot_modes", "train", "video_medium"])
    assert "unknown --zero_shot_modes video_medium" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(base + ["--zero_shot_episodes", "-1"])
    assert "--zero_shot_episodes must be >= 0" in capsys.readouterr().err
    assert main(base + ["--zero_shot_episodes", "10"]) == 0


def test_a_runs_log_stream_kept_after_the_run_does_not_fail(tmp_path, capfd):
    """A handler that kept a run's redirected stderr (absl's) writes to the process's stderr after the run."""
    import logging

    from cg2a_ext.rl.sweep.worker import _Tee

    with open(tmp_path / "run.log", "w") as f:
        tee = _Tee(f)
        handler = logging.StreamHandler(tee)
        logger = logging.getLogger("kept-by-a-library")
        logger.addHandler(handler)
        logger.warning("during the run")
    try:
        logger.warning("after the run")         # the log file is closed now
    finally:
        logger.removeHandler(handler)
    assert (tmp_path / "run.log").read_text() == "during the run\n"
    err = capfd.readouterr().err
    assert "after the run" in err and "Logging error" not in err


def test_worker_evaluates_a_finished_run_zero_shot_for_the_report(tmp_path):
    """--zero_shot_episodes: the worker evaluates the trained run in its slot and caches it; the report's
    evaluation then finds nothing to do and gives the same numbers."""
    from cg2a_ext.rl.sweep.report.zero_shot import evaluate_run, load_cache, modes_to_evaluate
    from cg2a_ext.rl.sweep.worker import execute_run

    (run,) = tiny_runs(("drq",), (0,), extra=["train_steps=60", "eval_freq=0", "checkpoint_freq=30"])
    result = execute_run(str(tmp_path), run.to_dict(), attempt=1,
                         zero_shot={"modes": ["train", "color_easy"], "episodes": 2})
    assert result["status"] == "finished" and result["zero_shot"].startswith("zero-shot: train=")
    d = tmp_path / run.name
    cache = load_cache(d)["modes"]
    assert set(cache) == {"train", "color_easy"} and all(len(m["returns"]) == 2 for m in cache.values())
    assert modes_to_evaluate(d, ["train", "color_easy"], 2, 60) == []
    assert evaluate_run(d, ["train"], 2)["train"]["returns"] == cache["train"]["returns"]
    assert "==== zero-shot evaluation: train color_easy, 2 episodes each" in \
        manifest.log_path(tmp_path, run.name).read_text()


def test_killed_worker_is_retried_and_ends_like_an_uninterrupted_run(ray_session, tmp_path):
    from cg2a_ext.rl.sweep.worker import execute_run

    (run,) = tiny_runs(("drq",), (0,), extra=["train_steps=100", "eval_freq=50", "checkpoint_freq=20"])
    root = tmp_path / "killed"
    runner = make_runner([run], root)
    thread, out = in_thread(runner)
    d = root / run.name
    wait_for(lambda: checkpoint_steps(d), what="the run's first checkpoint")
    record = manifest.read_worker_record(root, run.name)
    assert record["attempt"] == 1 and record["pid"] != os.getpid()
    assert not (d / "finished.json").exists()
    os.kill(record["pid"], signal.SIGKILL)
    thread.join(timeout=600)
    assert out["code"] == 0
    retry, = events(root, "retry")
    assert retry["reason"] == "lost" and retry["attempt"] == 1
    done, = events(root, "finished")
    assert done["attempt"] == 2 and done["action"] == "resumed" and done["resumed_from"] >= 20

    # the same run, never interrupted (in this process, through the same worker function)
    ref_root = tmp_path / "reference"
    assert execute_run(str(ref_root), run.to_dict(), attempt=1)["status"] == "finished"
    ref = ref_root / run.name
    a, b = _final_state(ref), _final_state(d)
    assert a["step"] == b["step"] == 100
    for net in ("actor", "critic", "critic_target"):
        for k in a["agent"][net]:
            assert torch.equal(a["agent"][net][k], b["agent"][net][k]), (net, k)
    for name, column in (("eval.csv", "mean_return"), ("update.csv", "critic_loss"), ("train.csv", "episode_return")):
        assert [(r["step"], r[column]) for r in rows(ref / name)] == [(r["step"], r[column]) for r in rows(d / name)]


def test_stopped_sweep_keeps_checkpoints_and_resumes_on_relaunch(ray_session, tmp_path):
    (run,) = tiny_runs(("drq",), (1,), extra=["train_steps=100", "eval_freq=0", "checkpoint_freq=20"])
    root = tmp_path / "stopped"
    runner = make_runner([run], root)
    thread, out = in_thread(runner)
    d = root / run.name
    wait_for(lambda: checkpoint_steps(d), what="the run's first checkpoint")
    runner.stop()                                   # what Ctrl-C does
    thread.join(timeout=300)
    assert out["code"] == 130
    stopped, = events(root, "stopped")
    assert run_status(d) == PARTIAL and stopped["step"] == checkpoint_steps(d)[-1] >= 20
    assert make_runner([run], root).run() == 0
    launched = events(root, "launched")[-1]
    assert launched["resume_from"] == stopped["step"]
    done, = events(root, "finished")
    assert done["action"] == "resumed" and done["resumed_from"] == stopped["step"] and done["step"] == 100


def test_bad_options_fail_once_and_are_not_retried(ray_session, tmp_path):
    unknown_task = tiny_runs(("drq",), (0,), tasks=("no_such_task",), extra=["train_steps=40"])
    bad_gamma = tiny_runs(("cg2a",), (0,), extra=["train_steps=40", "gamma=0.3 0.2"])
    root = tmp_path / "bad"
    runner = make_runner(unknown_task + bad_gamma, root, retries=3)
    assert runner.run() == 1
    # the unknown task is found by the worker (train.py exits 2): launched once, failed once
    name = unknown_task[0].name
    assert [e["event"] for e in events(root) if e["run"] == name] == ["launched", "failed"]
    failed = events(root, "failed")
    by_run = {e["run"]: e for e in failed}
    assert by_run[name]["permanent"] and "unknown task 'no_such_task'" in by_run[name]["error"]
    # the refused gamma is found before launching: never started
    other = bad_gamma[0].name
    assert [e["event"] for e in events(root) if e["run"] == other] == ["failed"]
    assert "0 <= A <= B <= 1" in by_run[other]["error"]
    assert not (root / other).exists()
    assert "unknown task 'no_such_task'" in manifest.log_path(root, name).read_text()
