"""What every test file shares: the CUDA marker and device fixture, the DMC-GB data
folder, and a report header that says which build is under test.

CUDA cases are always collected. Mark a CUDA-only test ``@pytest.mark.cuda``, or take
the ``device`` fixture (runs the test on "cpu" and on "cuda"); where torch sees no CUDA
device, those cases are reported as skipped with the reason "no CUDA device":

    @pytest.mark.cuda
    def test_kernel_on_gpu(): ...

    def test_op_matches_reference(device): ...

The DMC-GB data tests take ``dmcgb_data``: the folder named by ``CG2A_DMCGB_DATA`` as
the session started (read once, here, so no test's monkeypatching of the variable can
hide it), else ``<repo>/../shared/dmcgb`` where that folder exists (the data beside the
clone; an empty variable means no data). Without either they skip, or fail under
``CG2A_EXPECT_DMCGB_DATA=1`` (CI).

The header lines (torch, kernels, CUDA device, DMC-GB data) are printed under ``-q`` too.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

NO_CUDA_DEVICE = "no CUDA device"
DMCGB_DATA_VAR = "CG2A_DMCGB_DATA"
EXPECT_DMCGB_DATA_VAR = "CG2A_EXPECT_DMCGB_DATA"
# Read at import, before any test runs (tests remove the variable to exercise the
# procedural sets; the data tests must still see the user's folder).
DMCGB_DATA_AT_START = os.environ.get(DMCGB_DATA_VAR, "").strip()
# The data beside the clone (docs/install.md), used when the variable is unset.
DMCGB_DATA_BESIDE = Path(__file__).resolve().parents[2] / "shared" / "dmcgb"
DMCGB_DATA_ORIGIN = DMCGB_DATA_VAR
# an empty CG2A_DMCGB_DATA means "no data" (the procedural sets), not "look beside the clone"
if DMCGB_DATA_VAR not in os.environ and DMCGB_DATA_BESIDE.is_dir():
    DMCGB_DATA_AT_START, DMCGB_DATA_ORIGIN = str(DMCGB_DATA_BESIDE), "beside the clone"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", f"cuda: needs a CUDA device; skipped with the reason '{NO_CUDA_DEVICE}' where torch sees none"
    )


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=NO_CUDA_DEVICE)
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request) -> str:
    """Each test that takes it runs on the CPU and on CUDA (skipped without a device)."""
    return request.param


@pytest.fixture
def dmcgb_data() -> Path:
    """The DMC-GB data folder from CG2A_DMCGB_DATA (else <repo>/../shared/dmcgb); a named folder that
    does not exist fails."""
    if not DMCGB_DATA_AT_START:
        text = f"DMC-GB data not given: set {DMCGB_DATA_VAR} to the data folder (or put it at {DMCGB_DATA_BESIDE})"
        if os.environ.get(EXPECT_DMCGB_DATA_VAR) == "1":
            pytest.fail(f"{text} ({EXPECT_DMCGB_DATA_VAR}=1)")
        pytest.skip(text)
    path = Path(DMCGB_DATA_AT_START).expanduser().resolve()
    if not path.is_dir():
        pytest.fail(f"{DMCGB_DATA_VAR}={DMCGB_DATA_AT_START!r} is not a folder")
    return path


def header_lines() -> list[str]:
    from cg2a_ext._extension import has_cuda_kernels, load_error

    torch_build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU build"
    if load_error() is not None:
        kernels = f"not loadable: {load_error()}"
    else:
        kernels = "CPU and CUDA kernels" if has_cuda_kernels() else "CPU kernels only"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"none ({NO_CUDA_DEVICE} tests skip)"
    data = f"{DMCGB_DATA_AT_START} ({DMCGB_DATA_ORIGIN})" if DMCGB_DATA_AT_START else (
        f"not given ({DMCGB_DATA_VAR}, or {DMCGB_DATA_BESIDE})")
    return [
        f"cg2a: torch {torch.__version__} ({torch_build}); cg2a_ext._C: {kernels}; CUDA device: {gpu}",
        f"cg2a: DMC-GB data: {data}",
    ]


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session):
    """The header lines, written whatever the verbosity (pytest_report_header's lines are hidden by -q)."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    for line in header_lines():
        reporter.write_line(line)
