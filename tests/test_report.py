"""The sweep report: zero-shot evaluation with its cache, tables that add up to the run folders'
evaluations, every run listed, the paper's numbers beside ours, aggregate statistics against plain
float64 references."""
import json
import re
from pathlib import Path

import numpy as np
import pytest

from cg2a_ext.rl.sweep import manifest
from cg2a_ext.rl.sweep.grid import build_spec
from cg2a_ext.rl.sweep.report import stats, tables
from cg2a_ext.rl.sweep.report.collect import RunInfo
from cg2a_ext.rl.cli.report import main as report_main
from cg2a_ext.rl.sweep.report.summary import build_cells
from cg2a_ext.rl.sweep.report.zero_shot import CACHE_FILE

TINY = ["preset=cpu", "image_size=32", "episode_length=80", "num_conv_layers=2", "num_filters=8",
        "projection_dim=16", "hidden_dim=32", "batch_size=8", "seed_steps=20", "log_freq=10", "eval_episodes=1",
        "device=cpu", "eval_modes=train", "train_steps=40", "eval_freq=20", "checkpoint_freq=20"]
MODES = ["train", "color_hard"]


@pytest.fixture(scope="module")
def sweep_root(tmp_path_factory):
    """A sweep root with 2 methods x 2 seeds finished (run in this process through the sweep's worker
    function) and one run listed in sweep.json that never started."""
    from cg2a_ext.rl.sweep.worker import execute_run

    root = tmp_path_factory.mktemp("report") / "sweep"
    runs = build_spec(None, ["cartpole_balance"], ["drq", "cg2a"], [0, 1], TINY).runs()
    never = build_spec(None, ["cartpole_balance"], ["drq"], [7], TINY).runs()
    manifest.write_manifest(root, runs + never, spec={"fixed": {}}, resources={})
    for run in runs:
        assert execute_run(str(root), run.to_dict(), attempt=1)["status"] == "finished"
    return root, runs, never[0]


def test_report_lists_every_run_and_its_tables_add_up_to_the_run_folders(sweep_root, capsys):
    root, runs, never = sweep_root
    assert report_main([str(root), "--episodes", "2", "--modes", *MODES, "--bootstrap_reps", "200"]) == 0
    out = root / "report"
    data = json.loads((out / "report.json").read_text())
    page = (out / "report.md").read_text()
    assert [r["name"] for r in data["runs"]] == [r.name for r in runs] + [never.name]
    assert {r["name"]: r["status"] for r in data["runs"]}[never.name] == "new"
    for name in [r.name for r in runs] + [never.name]:
        assert f"| {name} |" in page
    # every cell is the mean / std over seeds of the runs' own cached zero-shot means
    cells = {(c["method"], c["mode"]): c for c in data["cells"]}
    assert set(cells) == {(m, mode) for m in ("drq", "cg2a") for mode in MODES}
    for run in runs:
        cache = json.loads((root / run.name / CACHE_FILE).read_text())
        for mode in MODES:
            z = cache["modes"][mode]
            assert len(z["returns"]) == 2 and z["checkpoint_step"] == 40
            assert z["mean"] == pytest.approx(np.mean(z["returns"]))
            c = cells[(run.method, mode)]
            assert c["run_means"][c["runs"].index(run.name)] == pytest.approx(z["mean"])
    for (method, mode), c in cells.items():
        means = [json.loads((root / n / CACHE_FILE).read_text())["modes"][mode]["mean"] for n in c["runs"]]
        assert sorted(c["runs"]) == sorted(r.name for r in runs if r.method == method)
        assert c["mean"] == pytest.approx(np.mean(means)) and c["std"] == pytest.approx(np.std(means, ddof=1))
        assert c["steps"] == [40, 40] and c["episodes"] == [2, 2] and c["seeds"] == [0, 1]
        assert f"{c['mean']:.0f} ± {c['std']:.0f} (n=2)" in page
    # aggregates: the normalised cell means (one task: the mean over runs)
    agg = data["aggregates"]["train"]["drq"]["mean"]
    assert agg["value"] == pytest.approx(cells[("drq", "train")]["mean"] / 1000)
    assert agg["low"] <= agg["value"] <= agg["high"]
    assert any(p["x"] == "cg2a" and p["y"] == "drq" for p in data["probability_of_improvement"]["train"])
    # the share of train return kept, compared: P(a cg2a run keeps more than a drq run), from the ratios
    ratios = {(r["method"], r["mode"]): r["ratios"] for r in data["retention"]}
    test_mode = next(m for m in data["retention_improvement"] if data["retention_improvement"][m])
    kept = next(p for p in data["retention_improvement"][test_mode] if p["x"] == "cg2a" and p["y"] == "drq")
    x, y = ratios[("cg2a", test_mode)], ratios[("drq", test_mode)]
    pairs = [(a > b) + 0.5 * (a == b) for a in x for b in y]
    assert kept["value"] == pytest.approx(sum(pairs) / len(pairs))
    assert "P(X keeps more than Y)" in page
    # the data each mode used, and the figures
    assert "- `train`: zero-shot: train" in page and re.search(r"- `color_hard`: zero-shot: \S", page)
    for png in ("curves_cartpole_balance.png", "aggregates.png", "diagnostics_cartpole_balance_cg2a.png"):
        assert (out / png).stat().st_size > 0 and f"({png})" in page


def test_report_rerun_evaluates_nothing_new_and_fewer_episodes_reuse_the_cache(sweep_root, monkeypatch):
    root, runs, _ = sweep_root
    if not (root / runs[0].name / CACHE_FILE).exists():
        assert report_main([str(root), "--episodes", "2", "--modes", *MODES, "--bootstrap_reps", "200"]) == 0
    stamps = {r.name: (root / r.name / CACHE_FILE).stat().st_mtime_ns for r in runs}
    import cg2a_ext.rl.core.evaluation as evaluation

    def no_episodes(*a, **k):
        raise AssertionError("the report evaluated again what its cache holds")

    monkeypatch.setattr(evaluation, "run_episodes", no_episodes)
    assert report_main([str(root), "--episodes", "1", "--modes", *MODES, "--bootstrap_reps", "200"]) == 0
    assert stamps == {r.name: (root / r.name / CACHE_FILE).stat().st_mtime_ns for r in runs}
    data = json.loads((root / "report" / "report.json").read_text())
    for c in data["cells"]:
        firsts = [json.loads((root / n / CACHE_FILE).read_text())["modes"][c["mode"]]["returns"][0] for n in c["runs"]]
        assert c["run_means"] == pytest.approx(firsts) and c["episodes"] == [1, 1]


def _run(task, method, algorithm, seed, zero_shot, **config):
    return RunInfo(f"{task}-{method}-{seed}", Path("."), task, algorithm, seed, method, "finished",
                   {"train_steps": 100, **config}, 100,
                   zero_shot={m: {"mean": v, "episodes": 1, "data_source": "x", "checkpoint_step": 100}
                              for m, v in zero_shot.items()})


def test_tables_put_the_papers_numbers_beside_ours_where_task_and_mode_match():
    runs = [_run("walker_walk", "cg2a", "cg2a", s, {"color_hard": 880 + s, "video_hard": 600.0}) for s in (0, 1)]
    runs += [_run("walker_walk", "cg2a gas=false", "cg2a", 0, {"video_hard": 500.0}, gas=False)]
    runs += [_run("cartpole_balance", "cg2a", "cg2a", 0, {"color_hard": 700.0})]
    summary = build_cells(runs, ["color_hard", "video_hard"])
    t1 = tables.mode_table(summary, "color_hard")
    header, _, *body = t1.strip().splitlines()
    assert "cg2a (paper, Table 1)" in header
    walker = next(r for r in body if r.startswith("| walker_walk"))
    assert "880 ± 1 (n=2)" in walker and "902 ± 46" in walker        # sample std of 880, 881: 0.71
    cartpole = next(r for r in body if r.startswith("| cartpole_balance"))
    assert "700 (n=1)" in cartpole and "±" not in cartpole.split("|")[-2]   # no paper number for it
    t2 = tables.mode_table(summary, "video_hard")
    assert "687 ± 18" in t2
    t4 = tables.ablation_table(summary, runs)
    assert "| cg2a gas=false | ac+sgs | 500 (n=1) | 619 |" in t4
    assert "| cg2a | cg2a | 600 ± 0 (n=2) | 687 |" in t4


def _iqm_reference(matrix):
    x = np.sort(matrix.ravel().astype(np.float64))
    k = len(x) // 4                       # len divisible by 4 here: the middle half
    return x[k:len(x) - k].mean()


def _bootstrap_reference(matrix, statistic, reps, rng):
    """Stratified bootstrap in plain numpy: resample the runs of each task independently."""
    n, t = matrix.shape
    values = []
    for _ in range(reps):
        idx = rng.integers(0, n, size=(n, t))
        values.append(statistic(np.take_along_axis(matrix, idx, axis=0)))
    return np.percentile(values, [2.5, 97.5])


def test_aggregates_match_plain_float64_references():
    rng = np.random.default_rng(1)
    matrix = rng.uniform(0, 1, size=(4, 3))
    iqm = stats.aggregate(matrix, "iqm", reps=3000, seed=2)
    assert iqm.value == pytest.approx(_iqm_reference(matrix), rel=1e-12)
    low, high = _bootstrap_reference(matrix, _iqm_reference, 3000, np.random.default_rng(3))
    assert iqm.low == pytest.approx(low, abs=0.03) and iqm.high == pytest.approx(high, abs=0.03)
    mean = stats.aggregate(matrix, "mean", reps=3000, seed=2)
    assert mean.value == pytest.approx(matrix.mean(), rel=1e-12)
    y = rng.uniform(0, 1, size=(3, 3)) * 0.8
    poi = stats.probability_of_improvement(matrix, y, reps=500, seed=0)
    pairs = [float(a > b) + 0.5 * float(a == b) for j in range(3) for a in matrix[:, j] for b in y[:, j]]
    assert poi.value == pytest.approx(np.mean(pairs), rel=1e-12)
    assert 0 <= poi.low <= poi.value <= poi.high <= 1
    one = stats.aggregate(matrix[:1], "iqm")
    assert one.low is None and "no interval" in one.text()
    per_task, tasks = stats.score_matrix({"b": [100.0, 300.0, 500.0], "a": [200.0, 400.0]})
    assert tasks == ["a", "b"] and per_task.tolist() == [[0.2, 0.1], [0.4, 0.3]]


def test_report_names_the_overlay_images_each_run_trained_with(tmp_path, monkeypatch):
    from cg2a_ext.rl.core.image_bank import OVERLAY_ENV_VAR, image_bank_source
    from cg2a_ext.rl.sweep.report.collect import overlay_images

    monkeypatch.delenv(OVERLAY_ENV_VAR, raising=False)
    assert image_bank_source(None) == "procedural"
    monkeypatch.setenv(OVERLAY_ENV_VAR, str(tmp_path))
    assert image_bank_source(None) == str(tmp_path.resolve())

    recorded, old, folder = tmp_path / "recorded", tmp_path / "old", tmp_path / "folder"
    for d in (recorded, old, folder):
        d.mkdir()
    (recorded / "plan.json").write_text(json.dumps({"overlay_images": "procedural"}))
    assert overlay_images(recorded, {"image_bank": ""}) == "procedural"
    assert overlay_images(old, {"image_bank": ""}).startswith("procedural, unless CG2A_OVERLAY_DATA was set")
    assert overlay_images(folder, {"image_bank": "/data/places"}) == "/data/places"
    assert overlay_images(old, {}) == ""                                  # never started: nothing to say
    # runs that overlay nothing name no source, though their plan records one
    assert overlay_images(recorded, {"algorithm": "drq"}) == ""
    assert overlay_images(recorded, {"algorithm": "cg2a", "augmentations": ["conv"]}) == ""
    assert overlay_images(recorded, {"algorithm": "cg2a", "augmentations": ["conv", "overlay_s"]}) == "procedural"
    assert overlay_images(recorded, {"algorithm": "svea", "svea_augmentation": "conv"}) == ""
    from cg2a_ext.rl.config import TrainConfig
    from cg2a_ext.rl.run.plots import draws_overlay_images

    assert not draws_overlay_images(TrainConfig(algorithm="drq").to_dict())      # a TrainConfig works too
    assert draws_overlay_images(TrainConfig(algorithm="svea").to_dict())

    runs = [_run("walker_walk", "svea", "svea", s, {"train": 1.0}) for s in (0, 1)]
    runs[0].overlay_images, runs[1].overlay_images = "procedural", "/data/places"
    text = tables.overlay_sources(runs)
    assert "- procedural: 1 runs (svea)" in text and "- /data/places: 1 runs (svea)" in text
    assert "approximation" in text
    runs[0].overlay_images = "/data/places"
    assert "approximation" not in tables.overlay_sources(runs)


def test_an_archive_keeps_no_checkpoint_and_rebuilds_the_same_report(sweep_root, tmp_path, monkeypatch):
    from cg2a_ext.rl.run.folder import temporary_path

    root, runs, never = sweep_root
    archive = tmp_path / "archive"
    args = ["--episodes", "2", "--modes", *MODES, "--bootstrap_reps", "200"]
    half_written = temporary_path(root / runs[0].name / "eval.csv")   # as a running run leaves it
    half_written.write_text("step,mode")
    try:
        assert report_main([str(root), *args, "--archive", str(archive)]) == 0
    finally:
        half_written.unlink()
    copied = [p.relative_to(archive) for p in archive.rglob("*") if p.is_file()]
    assert not [p for p in copied if "checkpoints" in p.parts or p.suffix in (".pt", ".npz")]
    assert not [p for p in copied if ".tmp" in p.name]
    for run in runs:
        for name in ("config.json", "eval.csv", "finished.json", CACHE_FILE):
            assert (archive / run.name / name).read_bytes() == (root / run.name / name).read_bytes()
    assert (archive / "report" / "report.md").is_file()
    size = sum((archive / p).stat().st_size for p in copied)
    assert size < sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 5

    import cg2a_ext.rl.core.evaluation as evaluation

    def no_episodes(*a, **k):
        raise AssertionError("an archive must be reported from its caches")

    original = json.loads((root / "report" / "report.json").read_text())
    monkeypatch.setattr(evaluation, "run_episodes", no_episodes)
    assert report_main([str(archive), *args, "--no_eval"]) == 0
    rebuilt = json.loads((archive / "report" / "report.json").read_text())
    assert rebuilt["cells"] == original["cells"]
    assert rebuilt["runs"] == original["runs"]      # statuses and steps survive without the checkpoints


def test_an_archive_refuses_a_folder_inside_the_sweep_or_not_empty(sweep_root, tmp_path):
    root, _, _ = sweep_root
    with pytest.raises(SystemExit):
        report_main([str(root), "--no_eval", "--archive", str(root / "inside")])
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    with pytest.raises(SystemExit):
        report_main([str(root), "--no_eval", "--archive", str(full)])
    assert (full / "x").read_text() == "x" and not (root / "inside").exists()


def test_a_runs_ablation_row_is_its_algorithms_from_the_options_config_json_records():
    from cg2a_ext.rl import algorithms

    new = _run("walker_walk", "cg2a gas=false", algorithms.PROPOSED, 0, {}, options={"gas": False, "sgs": True})
    old = _run("walker_walk", "cg2a sgs=false", algorithms.PROPOSED, 0, {}, gas=True, sgs=False)   # flat, as before
    plain = _run("walker_walk", "cg2a", algorithms.PROPOSED, 0, {}, options={})
    assert (new.ablation, old.ablation, plain.ablation) == ("ac+sgs", "ac+gas", "cg2a")
    assert _run("walker_walk", "svea", "svea", 0, {}).ablation is None
    from cg2a_ext.rl.sweep.progress import short_mode
    assert [short_mode(m) for m in ("train", "color_easy", "video_hard", "x_")] == ["train", "c_easy", "v_hard", "x_"]


def test_spreads_over_seeds_are_sample_stds_and_say_so():
    """2-5 seeds: the population std (ddof = 0) would understate the spread; the tables use ddof = 1 and show n."""
    runs = [_run("walker_walk", "drq", "drq", s, {"train": v, "video_hard": v / 2}) for s, v in enumerate((100, 300))]
    summary = build_cells(runs, ["train", "video_hard"])
    cell = summary.cells[("walker_walk", "drq", "video_hard")]
    assert cell.std == pytest.approx(np.std([50, 150], ddof=1)) and cell.n == 2       # 70.7, not 50
    assert cell.to_dict()["std_ddof"] == 1
    table = tables.mode_table(summary, "video_hard")
    assert "100 ± 71 (n=2)" in table and "ddof = 1" in table.splitlines()[0]
    from cg2a_ext.rl.sweep.report.summary import add_statistics
    retention = tables.retention_table(add_statistics(summary, runs, reps=50))
    assert "200 ± 141 (n=2)" in retention and "0.50 ± 0.00 (n=2)" in retention


def test_run_labels_name_the_overlay_images_the_plan_records_for_every_overlaying_algorithm(tmp_path):
    """plan.json's overlay_images (what the run resolved, CG2A_OVERLAY_DATA included) names the images of every
    algorithm whose draws_overlay_images is True; config.json's image_bank when there is no plan."""
    from cg2a_ext.rl import algorithms
    from cg2a_ext.rl.config import TrainConfig
    from cg2a_ext.rl.run.plots import run_label

    def run(name, plan_images=None, **kw):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps(TrainConfig(task="cartpole_balance", **kw).to_dict()))
        if plan_images is not None:
            (d / "plan.json").write_text(json.dumps({"overlay_images": plan_images}))
        return d

    places = "/data/places365"
    assert run_label(run("sgqn", places, algorithm="sgqn")) == f"cartpole_balance sgqn image_bank={places}"
    for name in ("cg2a", "ac", "svea"):
        assert algorithms.get(name).draws_overlay_images
        assert run_label(run(name, "procedural", algorithm=name)) == f"cartpole_balance {name} image_bank=procedural"
    assert run_label(run("drq", "procedural", algorithm="drq")) == "cartpole_balance drq"    # overlays nothing
    # no plan.json (an older run): the config's image_bank, else procedural
    assert run_label(run("old", algorithm="svea", image_bank=places)) == f"cartpole_balance svea image_bank={places}"
    assert run_label(run("old_default", algorithm="svea")) == "cartpole_balance svea image_bank=procedural"
    # an ablation still splits the curves, and reads the options config.json records
    options = algorithms.get("cg2a").Options(gas=False)
    assert run_label(run("ablation", "procedural", algorithm="cg2a", options=options)) == \
        "cartpole_balance cg2a gas=False image_bank=procedural"
