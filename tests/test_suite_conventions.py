"""The test suite's own promises (conftest.py): CUDA cases are collected and reported as
skipped with the reason where there is no device, and the DMC-GB data tests use the
folder that CG2A_DMCGB_DATA names. Each check runs pytest in a fresh process with the
environment it is about."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parent


def run_pytest(tmp_path: Path, args: list[str], **env: str | None) -> str:
    """pytest on `args` in a fresh interpreter, from a folder outside the checkout, importing the
    cg2a_ext this run imports (installed, or a source checkout's); None removes a variable."""
    import cg2a_ext

    environ = dict(os.environ)
    package_root = str(Path(cg2a_ext.__file__).resolve().parents[1])
    environ["PYTHONPATH"] = os.pathsep.join([package_root] + [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    for key, value in env.items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", *args],
        capture_output=True, text=True, cwd=tmp_path, env=environ, timeout=600,
    )
    return result.stdout + result.stderr


def test_device_fixture_runs_on_cpu_and_cuda(device):
    x = torch.arange(4.0, device=device)
    assert x.device.type == device and float(x.sum()) == 6.0


def test_cuda_cases_are_collected_and_skipped_without_a_device(tmp_path):
    out = run_pytest(tmp_path, [f"{TESTS / 'test_suite_conventions.py'}::test_device_fixture_runs_on_cpu_and_cuda",
                                f"{TESTS / 'test_build.py'}::test_cuda_kernels_run_on_the_device"],
                     CUDA_VISIBLE_DEVICES="")
    assert "1 passed, 2 skipped" in out, out[-3000:]
    assert out.count(": no CUDA device") == 2, out[-3000:]
    assert "CUDA device: none" in out  # the report header says so too


def test_dmcgb_data_tests_use_the_folder_the_variable_names(tmp_path):
    """A folder laid out like the DMC-GB data (here: the 100-entry colour file, from the
    procedural colours, which the colour test accepts) is what the data test reads."""
    from cg2a_ext.rl.envs.dmc.procedural import procedural_color_entries

    data = tmp_path / "my data"
    data.mkdir()
    (data / "color_easy.json").write_text(json.dumps(procedural_color_entries("color_easy", 100)))
    data_test = [f"{TESTS / 'test_envs.py'}", "-k", "test_colour_mode_follows_drawn_entry and dmcgb and color_easy"]

    out = run_pytest(tmp_path, data_test, CG2A_DMCGB_DATA=str(data), CG2A_EXPECT_DMCGB_DATA=None)
    assert f"DMC-GB data: {data}" in out and "1 passed" in out, out[-3000:]
    out = run_pytest(tmp_path, data_test, CG2A_DMCGB_DATA="", CG2A_EXPECT_DMCGB_DATA=None)
    assert "1 skipped" in out and "DMC-GB data not given: set CG2A_DMCGB_DATA" in out, out[-3000:]
    out = run_pytest(tmp_path, data_test, CG2A_DMCGB_DATA="", CG2A_EXPECT_DMCGB_DATA="1")
    assert "1 error" in out and "(CG2A_EXPECT_DMCGB_DATA=1)" in out, out[-3000:]
    out = run_pytest(tmp_path, data_test, CG2A_DMCGB_DATA=str(tmp_path / "missing"), CG2A_EXPECT_DMCGB_DATA=None)
    assert "1 error" in out and "is not a folder" in out, out[-3000:]


def test_every_cuda_case_carries_the_cuda_marker(tmp_path):
    """`pytest -m cuda` (what a GPU session runs) selects the CUDA cases of the op tests, and
    `-m "not cuda"` leaves none of them: a CUDA case skipped by its own skipif would be missed."""
    files = [str(TESTS / name) for name in ("test_ops.py", "test_ops_cuda.py", "test_ops_refusals.py")]
    selected = run_pytest(tmp_path, ["--collect-only", "-q", "-m", "cuda", *files])
    rest = run_pytest(tmp_path, ["--collect-only", "-q", "-m", "not cuda", *files])
    cuda_ids = [line for line in selected.splitlines() if "::" in line]
    assert any("test_ops_cuda.py::" in i for i in cuda_ids) and any("test_ops.py::" in i for i in cuda_ids)
    assert any("test_ops_refusals.py::" in i for i in cuda_ids), selected[-2000:]
    cuda_param = re.compile(r"\[(.*-)?cuda(-.*)?\]$")
    leaked = [line for line in rest.splitlines() if "::" in line and (cuda_param.search(line) or "test_ops_cuda.py" in line)]
    assert not leaked, leaked[:5]
