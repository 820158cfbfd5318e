"""python/gpu_checks.py: the commands it runs on a GPU machine are valid here, and its budget is checked."""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_checks():
    spec = importlib.util.spec_from_file_location("gpu_checks", ROOT / "python" / "gpu_checks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_learning_runs_are_valid_train_commands(gpu_checks, tmp_path, monkeypatch):
    import torch

    from cg2a_ext.rl.cli.options import config_from_args

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)     # they run on a GPU (--cuda_graph on)

    commands = gpu_checks.stage_commands("learning", tmp_path, {"PYTHONPATH": ""})
    assert [c[c.index("--algorithm") + 1] for c in commands] == ["drq", "cg2a"]
    for command in commands:
        assert command[1] == "python/train.py" and (ROOT / command[1]).is_file()
        cfg = config_from_args(command[2:])
        assert (cfg.preset, cfg.action_repeat, cfg.train_steps, cfg.eval_modes) == ("paper", 8, 12000, ("train",))
        assert Path(cfg.run_dir).parent == tmp_path / "runs"


@pytest.mark.parametrize("stage", ["bench-ops", "bench-agent", "baselines", "profile"])
def test_benchmark_stages_name_modules_that_exist(gpu_checks, tmp_path, stage):
    for command in gpu_checks.stage_commands(stage, tmp_path, {}):
        module = command[command.index("-m") + 1]
        assert importlib.util.find_spec(module) is not None, module


def test_bad_budget_and_stage_are_refused(gpu_checks, tmp_path, capsys):
    with pytest.raises(SystemExit):
        gpu_checks.main(["run", "--out", str(tmp_path), "--budget", "0"])
    assert "--budget must be positive" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpu_checks.main(["run", "--out", str(tmp_path), "--stages", "nonsense"])
    assert "invalid choice" in capsys.readouterr().err


def test_sanitizer_stage_runs_the_ops_cuda_cases_under_two_tools(gpu_checks, tmp_path):
    commands = gpu_checks.stage_commands("sanitizer", tmp_path, {})
    assert [c[2] for c in commands] == ["memcheck", "racecheck"]
    assert all(c[0] == "compute-sanitizer" and "tests/test_ops.py" in c for c in commands)
    assert "sanitizer" not in gpu_checks.DEFAULT_STAGES


def test_compilers_are_read_from_the_library_comment(gpu_checks, tmp_path):
    lib = tmp_path / "lib.so"
    lib.write_bytes(b"\x7fELF junk\x00GCC: (GNU) 13.3.1 20240611 (Red Hat 13.3.1-2)\x00more\x00"
                    b"GCC: (Debian 12.2.0-14+deb12u1) 12.2.0\x00")
    assert gpu_checks.compilers(lib) == ["GCC: (Debian 12.2.0-14+deb12u1) 12.2.0",
                                         "GCC: (GNU) 13.3.1 20240611 (Red Hat 13.3.1-2)"]


def test_preflight_reports_and_refuses_where_op_errors_do_not_reach_python(gpu_checks, tmp_path, monkeypatch):
    """Here (no CUDA device) the CUDA half of the probe cannot run, which must read as not passed."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without a CUDA device")
    env = gpu_checks.environment()
    assert gpu_checks.preflight(tmp_path, env) is False
    log = (tmp_path / "preflight.log").read_text()
    # the tool reads the checkout's in-place build (what `source .device/setup.sh` makes); a checkout whose
    # package was installed elsewhere (CI's `pip install .`) has none, and the log must say so
    in_place = sorted((gpu_checks.ROOT / "cg2a_ext").glob("_C*.so"))
    assert ("cg2a_ext: GCC" in log) == bool(in_place) and ("cg2a_ext: not found" in log) == (not in_place), log
    assert "torch (libc10): GCC" in log
    assert "op errors reach Python on cpu and cuda: False" in log and "CC=/usr/bin/gcc" in log


def test_baselines_learning_runs_are_valid_train_commands(gpu_checks, tmp_path):
    from cg2a_ext.rl.cli.options import config_from_args

    commands = gpu_checks.stage_commands("learning-baselines", tmp_path, {"PYTHONPATH": ""})
    assert [c[c.index("--algorithm") + 1] for c in commands] == ["soda", "sgqn", "smg"]
    for command in commands:
        cfg = config_from_args(command[2:])
        assert (cfg.preset, cfg.action_repeat, cfg.train_steps, cfg.eval_freq) == ("cpu", 8, 10000, 1000)
        assert Path(cfg.run_dir).parent == tmp_path / "runs"


def test_archive_packs_logs_without_weights_and_one_checkpoint_per_run(gpu_checks, tmp_path):
    import tarfile

    out = tmp_path / "gpu"
    (out / "runs" / "drq-seed0" / "checkpoints").mkdir(parents=True)
    (out / "tests-0.log").write_text("passed")
    run = out / "runs" / "drq-seed0"
    (run / "eval.csv").write_text("step,mode\n")
    (run / "checkpoints" / "step_000001000.pt").write_bytes(b"old")
    (run / "checkpoints" / "step_000002000.pt").write_bytes(b"new")
    (run / "checkpoints" / "replay_000002000.npz").write_bytes(b"big")
    written = gpu_checks.archive(out, tmp_path / "back")
    assert [p.name for p in written] == ["gpu-logs.tgz", "run-drq-seed0.tgz"]
    with tarfile.open(written[0]) as tar:
        names = tar.getnames()
    assert "gpu/tests-0.log" in names and "gpu/runs/drq-seed0/eval.csv" in names
    assert not any(n.endswith((".pt", ".npz")) for n in names)
    with tarfile.open(written[1]) as tar:
        assert tar.getnames() == ["drq-seed0/checkpoints/step_000002000.pt"]


def test_only_keeps_the_named_learning_runs(gpu_checks, tmp_path):
    learning = gpu_checks.stage_commands("learning", tmp_path, {"PYTHONPATH": ""})
    kept = gpu_checks.only_algorithms(learning, ["cg2a"])
    assert [c[c.index("--algorithm") + 1] for c in kept] == ["cg2a"]
    tests = gpu_checks.stage_commands("tests", tmp_path, {})
    assert gpu_checks.only_algorithms(tests, ["cg2a"]) == tests
    assert gpu_checks.only_algorithms(learning, None) == learning


def test_default_stages_fit_the_short_gpu_session_and_learning_is_apart(gpu_checks, tmp_path):
    assert gpu_checks.DEFAULT_STAGES == ("build", "tests", "graph", "ops") and gpu_checks.DEFAULT_BUDGET <= 600
    assert "learning" not in gpu_checks.DEFAULT_STAGES and "learning" in gpu_checks.STAGES
    assert gpu_checks.stage_commands("build", tmp_path, {})[0][1:] == ["setup.py", "build_ext", "--inplace"]
    (graph,) = gpu_checks.stage_commands("graph", tmp_path, {})
    assert graph[graph.index("--algorithms") + 1:graph.index("--speed")] == ["drq", "svea", "ac", "cg2a"]
    assert graph[graph.index("--speed") + 1:] == ["drq", "cg2a"]
    (ops,) = gpu_checks.stage_commands("ops", tmp_path, {})
    assert "--grad_method" in ops and ops[ops.index("--preset") + 1] == "paper"
    for command in gpu_checks.stage_commands("learning", tmp_path, {"PYTHONPATH": ""}):
        assert command[command.index("--cuda_graph") + 1] == "on"


@pytest.mark.parametrize("stage", ["graph", "ops"])
def test_graph_and_ops_stages_parse_their_arguments(gpu_checks, tmp_path, stage):
    (command,) = gpu_checks.stage_commands(stage, tmp_path, {})
    module = importlib.import_module(command[command.index("-m") + 1])
    if stage == "graph":
        # argument parsing only: without CUDA the module says so and stops
        import torch

        if torch.cuda.is_available():
            pytest.skip("would run the benchmark")
        assert module.main(command[command.index("-m") + 2:]) == 2
    else:
        assert module.__name__ == "cg2a_ext.rl.bench.host_reads"


def test_without_cuda_the_checks_refuse_cleanly(gpu_checks, tmp_path, capsys, monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without a CUDA device")
    assert gpu_checks.main(["run", "--out", str(tmp_path / "out")]) == 4
    err = capsys.readouterr().err
    assert "these checks need a CUDA GPU" in err and "build tests graph ops" in err
    assert not (tmp_path / "out").exists()
    monkeypatch.chdir(tmp_path)
    assert gpu_checks.main([]) == 4             # bare: the default stages, refused alike
    assert gpu_checks.main(["run", "--out", str(tmp_path), "--stage", "learning"]) == 4
    assert "stages: learning" in capsys.readouterr().err
