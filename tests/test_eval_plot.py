"""cg2a-eval and cg2a-plot (eval_main, plot_main) on a tiny trained run."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

import train as train_script  # noqa: E402

from cg2a_ext.rl.cli import eval as eval_script  # noqa: E402
from cg2a_ext.rl.cli import plot as plot_script  # noqa: E402

TINY = ["--task", "cartpole_balance", "--preset", "cpu", "--image_size", "32", "--episode_length", "40",
        "--num_conv_layers", "2", "--num_filters", "8", "--projection_dim", "16", "--hidden_dim", "32",
        "--batch_size", "8", "--seed_steps", "20", "--log_freq", "10", "--eval_episodes", "1", "--eval_freq", "20",
        "--train_steps", "60", "--no-progress", "--device", "cpu", "--algorithm", "cg2a"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    out = []
    for seed in (0, 1):
        d = base / f"seed{seed}"
        train_script.build_and_train(TINY + ["--seed", str(seed), "--run_dir", str(d)])
        out.append(d)
    return out


def test_eval_one_and_several_runs(runs, tmp_path):
    modes = ["train", "color_easy", "video_easy"]
    eval_script.main(["--run", str(runs[0]), "--modes", *modes, "--episodes", "2", "--device", "cpu"])
    js = json.loads((runs[0] / "zero_shot.json").read_text())
    md = (runs[0] / "zero_shot.md").read_text()
    assert js["episodes"] == 2 and len(js["runs"]) == 1
    res = js["runs"][0]["results"]
    assert set(res) == {"train", "color_easy", "video_easy"} and all(len(r["returns"]) == 2 for r in res.values())
    assert "| cartpole_balance | cg2a | 1 |" in md and "video_easy" in md and "Data used by each mode" in md
    assert all(f"`{m}`" in md for m in modes)
    out = tmp_path / "both"
    eval_script.main(["--run", *map(str, runs), "--modes", "train", "--episodes", "2", "--out", str(out),
                      "--device", "cpu"])
    js2 = json.loads(out.with_suffix(".json").read_text())
    agg = js2["table"][0]["aggregate"]["train"]
    assert agg["runs"] == 2 and agg["episodes_per_run"] == [2, 2] and "run_std" in agg
    assert "| cartpole_balance | cg2a | 2 |" in out.with_suffix(".md").read_text()


def test_eval_bad_inputs(runs, tmp_path, capsys):
    with pytest.raises(SystemExit):
        eval_script.main(["--run", str(tmp_path / "nope"), "--episodes", "1"])
    assert "not a run folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        eval_script.main(["--run", str(runs[0]), "--checkpoint", "step_000000999.pt", "--episodes", "1"])
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        eval_script.main(["--run", str(runs[0]), "--modes", "train", "foggy", "--episodes", "1"])
    assert "unknown mode(s) foggy for cartpole_balance" in capsys.readouterr().err
    bad = tmp_path / "damaged"
    bad.mkdir()
    for content in (b'{"task": "cartpole_balance", "seed', bytes(range(256)), b'{"task": 3, "seed": "x"}'):
        (bad / "config.json").write_bytes(content)
        (bad / "checkpoints").mkdir(exist_ok=True)
        (bad / "checkpoints" / "step_000000010.pt").write_bytes(b"x")
        with pytest.raises(SystemExit) as err:
            eval_script.main(["--run", str(bad), "--episodes", "1"])
        assert err.value.code == 2 and str(bad / "config.json") in capsys.readouterr().err


def test_plot(runs, tmp_path):
    written = plot_script.main([*map(str, runs), "--out", str(tmp_path)])
    names = sorted(p.name for p in written)
    assert "learning_curves.png" in names
    assert sum(n.startswith("grad_diagnostics_") for n in names) == 2
    assert not any(n.startswith("evaluation_images_") for n in names)    # cg2a saves no evaluation images
    for p in written:
        assert p.stat().st_size > 1000 and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_label_separates_ablations_not_seeds(tmp_path):
    import json

    from cg2a_ext.rl.run.plots import run_label

    from agent_support import config_with

    def run(name, **kw):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps(config_with(task="cartpole_balance", **kw).to_dict()))
        return d

    procedural = " image_bank=procedural"      # overlay images are named for every algorithm that overlays
    assert run_label(run("a", seed=0)) == run_label(run("b", seed=1)) == "cartpole_balance cg2a" + procedural
    assert run_label(run("c", gas=False)) == "cartpole_balance cg2a gas=False" + procedural
    assert run_label(run("d", augmentations=("overlay", "overlay_s"))) == \
        "cartpole_balance cg2a augmentations=overlay,overlay_s" + procedural
    # drq has no combination options and overlays nothing
    assert run_label(run("e", algorithm="drq")) == "cartpole_balance drq"
    # the baselines' overlay images: results made with the procedural bank say so
    assert run_label(run("f", algorithm="soda")) == "cartpole_balance soda image_bank=procedural"


def test_aggregate_shares_from_logged_norms_and_cosines():
    """The diagnostics figure's share of each loss in w-weighted aggregate, rebuilt from the logged
    norms and cosines, equals the projection computed on the gradient vectors themselves."""
    import torch

    from cg2a_ext.rl.algorithms.parts.gradient_diagnostics import gram_diagnostics
    from cg2a_ext.rl.run.plots import aggregate_shares

    g = torch.randn(4, 300, dtype=torch.float64)
    g[1] *= 8.0                      # one large gradient, as random conv's
    w = torch.tensor([0.1, 0.6, 0.2, 0.1], dtype=torch.float64)
    row = {k: str(v) for k, v in gram_diagnostics(g @ g.T, weights=w).items()}
    d = (w[:, None] * g).sum(0)
    expected = (w * (g @ d) / (d @ d)).numpy()
    shares = aggregate_shares(row, 4)
    assert abs(shares.sum() - 1.0) < 1e-9
    assert max(abs(shares - expected)) < 1e-9
    assert shares[1] > 0.8           # the large gradient dominates the aggregate


def test_evaluation_images_figure_rows_spread_over_training(tmp_path):
    from PIL import Image

    from cg2a_ext.rl.run.plots import evaluation_image_steps, plot_evaluation_images, spread

    run = tmp_path / "run"
    for step in range(0, 6000, 1000):
        d = run / "images" / f"step_{step:09d}"
        d.mkdir(parents=True)
        for name in ("saliency", "mask") if step else ("saliency",):     # a name missing at one step
            Image.fromarray(np.full((8, 8, 3), step // 25, np.uint8)).save(d / f"{name}.png")
    (run / "images" / "step_000009000").mkdir()                         # an empty step folder: no row
    found = evaluation_image_steps(run)
    assert sorted(found) == [0, 1000, 2000, 3000, 4000, 5000] and sorted(found[1000]) == ["mask", "saliency"]
    assert spread(sorted(found), 4) == [0, 2000, 3000, 5000]
    assert spread([0, 1000], 4) == [0, 1000]
    out = plot_evaluation_images(run, tmp_path / "images.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_evaluation_images(tmp_path / "no_images", tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_plot_names_a_damaged_file(runs, tmp_path, capsys):
    import shutil

    bad = tmp_path / "damaged"
    shutil.copytree(runs[0], bad)
    for name, content in (("config.json", b'{"task": "cartpole_balance", "se'), ("config.json", b"[1, 2]")):
        (bad / name).write_bytes(content)
        with pytest.raises(SystemExit) as err:
            plot_script.main([str(bad), "--out", str(tmp_path / "out")])
        assert err.value.code == 2 and str(bad / name) in capsys.readouterr().err
    shutil.copy(runs[0] / "config.json", bad / "config.json")
    (bad / "eval.csv").write_bytes(b"step,mode\n\x00\xff\xfe\n")
    with pytest.raises(SystemExit) as err:
        plot_script.main([str(bad), "--out", str(tmp_path / "out")])
    assert err.value.code == 2 and str(bad / "eval.csv") in capsys.readouterr().err


# --------------------------------------------------------------------------- damaged run files: exit 2 naming the file
DAMAGED = {"truncated": b'{"task": "cartpole_balance", "seed', "random": bytes(range(256)) * 4,
           "wrong_types": b'{"task": 3, "seed": "x"}', "not_an_object": b'[1, 2]'}


def _copy(run, tmp_path, name="copy"):
    import shutil

    d = tmp_path / name
    shutil.copytree(run, d)
    return d


def _exits_2_naming(call, path, capsys):
    with pytest.raises(SystemExit) as err:
        call()
    msg = capsys.readouterr().err
    assert err.value.code == 2, msg
    assert str(path) in msg and "error:" in msg and "Traceback" not in msg, msg


@pytest.mark.parametrize("content", ["truncated", "random"])
def test_eval_names_a_damaged_checkpoint(runs, tmp_path, capsys, content):
    d = _copy(runs[0], tmp_path)
    ck = sorted((d / "checkpoints").glob("step_*.pt"))[-1]
    ck.write_bytes(ck.read_bytes()[:100] if content == "truncated" else DAMAGED["random"])
    _exits_2_naming(lambda: eval_script.main(["--run", str(d), "--episodes", "1", "--device", "cpu"]), ck, capsys)


CSV_DAMAGED = {"random": bytes(range(256)) * 4, "nul_bytes": b"step,mode\x00\n1,train\n"}
CSV_READABLE = {  # from the file's own header: a last line cut short is left out; values that are not numbers are gaps
    "cut_short": lambda text: text[:-5],
    "not_numbers": lambda text: text.splitlines()[0] + "\n" + ",".join(
        "train" if c == "mode" else "x" for c in text.splitlines()[0].split(",")) + "\n"}


@pytest.mark.parametrize("file,content", [("config.json", c) for c in ("truncated", "random", "not_an_object")] + [
    (f, c) for f in ("eval.csv", "train.csv", "diagnostics.csv") for c in (*CSV_DAMAGED, *CSV_READABLE)])
def test_plot_names_a_damaged_file(runs, tmp_path, capsys, file, content):
    csv_file = file.endswith(".csv")
    d = _copy(runs[0], tmp_path)
    if content in CSV_READABLE:
        data = CSV_READABLE[content]((d / file).read_text()).encode()
    else:
        data = CSV_DAMAGED[content] if csv_file else DAMAGED[content]
    (d / file).write_bytes(data)
    call = lambda: plot_script.main([str(d), "--out", str(tmp_path / "plots")])  # noqa: E731
    if content in CSV_READABLE:
        assert call()
        return
    _exits_2_naming(call, d / file, capsys)


@pytest.mark.parametrize("file", ["config.json", "plan.json", "finished.json"])
@pytest.mark.parametrize("content", sorted(DAMAGED))
def test_run_folder_readers_name_a_damaged_file(tmp_path, file, content):
    from cg2a_ext.rl.run.folder import DamagedFileError, RunFolder

    f = RunFolder(tmp_path)
    (tmp_path / file).write_bytes(DAMAGED[content])
    read = {"config.json": f.read_config, "plan.json": f.read_plan, "finished.json": f.read_finished}[file]
    if content == "wrong_types" and file == "plan.json":
        assert read() == {"task": 3, "seed": "x"}     # plan.json's contents are informative only
        return
    with pytest.raises(DamagedFileError, match=str(tmp_path / file)):
        read()


@pytest.mark.parametrize("file", ["config.json", "finished.json", "checkpoint"])
@pytest.mark.parametrize("content", sorted(DAMAGED))
def test_train_resume_names_a_damaged_file(runs, tmp_path, capsys, file, content):
    d = _copy(runs[0], tmp_path)
    if file == "checkpoint":
        (d / "finished.json").unlink()                  # a run stopped before its end, its checkpoints damaged
        for ck in (d / "checkpoints").glob("step_*.pt"):
            ck.write_bytes(DAMAGED[content])
        path = d / "checkpoints"
    else:
        path = d / file
        path.write_bytes(DAMAGED[content])
    _exits_2_naming(lambda: train_script.build_and_train(["--resume", "--run_dir", str(d), "--device", "cpu",
                                                          "--no-progress"]), path, capsys)


def test_train_main_resume_with_random_bytes_exits_2(runs, tmp_path, capsys):
    from cg2a_ext.rl.cli import train as train_cli

    d = _copy(runs[0], tmp_path)
    (d / "config.json").write_bytes(DAMAGED["random"])
    _exits_2_naming(lambda: train_cli.main(["--resume", "--run_dir", str(d)]), d / "config.json", capsys)


@pytest.mark.parametrize("content", ["random", "nul_bytes", "bad_step"])
def test_train_resume_names_a_damaged_log(runs, tmp_path, capsys, content):
    d = _copy(runs[0], tmp_path)
    (d / "finished.json").unlink()
    data = b"step,episode\nten,0\n" if content == "bad_step" else CSV_DAMAGED[content]
    (d / "train.csv").write_bytes(data)
    _exits_2_naming(lambda: train_script.build_and_train(["--resume", "--run_dir", str(d), "--device", "cpu",
                                                          "--no-progress"]), d / "train.csv", capsys)
