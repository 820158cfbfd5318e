"""The build: what setup.py decides for a given torch and toolkit, what the installed
extension registers, the torch it runs on against the declared minimum, and the CMake
build of the same ops.

CI sets CG2A_EXPECT_CUDA (1: the CUDA kernels must be compiled in; 0: they must not)
and CG2A_EXPECT_TORCH (the exact torch version each of its venvs must run).
"""
from __future__ import annotations

import importlib.metadata
import os
import runpy
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from packaging.requirements import Requirement
from packaging.version import Version

from cg2a_ext import has_cuda_kernels
from cg2a_ext._extension import require_fused_ops

ROOT = Path(__file__).resolve().parents[1]
# setup.py's functions, without running the build (it builds only as __main__).
SETUP = runpy.run_path(str(ROOT / "setup.py"), run_name="cg2a_setup")
SCHEMAS = {
    "gram": "cg2a::gram(Tensor[] grads) -> Tensor",
    "combine": "cg2a::combine(Tensor[] grads, Tensor weights, float gamma, int mask) -> (Tensor[], Tensor)",
    "combine_out": "cg2a::combine_out(Tensor[] grads, Tensor weights, float gamma, int mask, "
                   "Tensor(a!)[] out) -> Tensor",
}


def fake_torch(version: str, cuda: str | None):
    return SimpleNamespace(__version__=version, version=SimpleNamespace(cuda=cuda))


def fake_toolkit(root: Path, release: str) -> str:
    """A CUDA_HOME whose nvcc reports `release`."""
    (root / "bin").mkdir(parents=True)
    nvcc = root / "bin" / "nvcc"
    nvcc.write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {release}, V{release}.1'\n")
    nvcc.chmod(0o755)
    return str(root)


# ----------------------------------------------------------------- torch version
def torch_requirement() -> Requirement:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    found = [Requirement(d) for d in dependencies if Requirement(d).name == "torch"]
    assert len(found) == 1, f"pyproject.toml names torch {len(found)} times: {dependencies}"
    return found[0]


def test_torch_is_a_minimum_not_a_pin_and_the_running_one_meets_it():
    requirement = torch_requirement()
    (spec,) = requirement.specifier
    assert spec.operator == ">=", f"torch must be a minimum version, not {requirement}"
    minimum = Version(spec.version)
    assert (minimum.major, minimum.minor) == SETUP["MIN_TORCH"], "pyproject.toml and setup.py disagree"
    running = Version(torch.__version__)
    assert requirement.specifier.contains(running, prereleases=True), f"torch {running} is older than {minimum}"
    expected = os.environ.get("CG2A_EXPECT_TORCH")
    if expected:
        # "2.14.1" names the release whatever its local build tag ("+cu130"); "2.13.0+cpu" names the build too
        running = torch.__version__ if "+" in expected else torch.__version__.split("+")[0]
        assert running == expected, f"CG2A_EXPECT_TORCH={expected} but torch {torch.__version__} runs"


def test_installed_metadata_keeps_the_minimum():
    try:
        requires = importlib.metadata.requires("cg2a-ext") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("cg2a-ext is not installed (an in-place build): no metadata to check")
    torch_requires = [Requirement(r) for r in requires if Requirement(r).name == "torch"]
    assert [str(r.specifier) for r in torch_requires] == [str(torch_requirement().specifier)]


# ----------------------------------------------------------- setup.py's decisions
def test_setup_needs_the_installed_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # as in an isolated build: no torch
    with pytest.raises(SystemExit, match="--no-build-isolation"):
        SETUP["import_torch"]()
    monkeypatch.setitem(sys.modules, "torch", fake_torch("2.12.1+cu128", "12.8"))
    with pytest.raises(SystemExit, match=r"torch 2\.12\.1\+cu128 is older than the oldest supported, 2\.13"):
        SETUP["import_torch"]()
    monkeypatch.setitem(sys.modules, "torch", fake_torch("2.13.0+cpu", None))
    assert SETUP["import_torch"]().__version__ == "2.13.0+cpu"


def test_untested_torch_builds_only_when_asked_and_says_so(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", fake_torch("2.11.0+cu130", "13.0"))
    monkeypatch.setenv("CG2A_ALLOW_UNTESTED_TORCH", "1")
    assert SETUP["import_torch"]().__version__ == "2.11.0+cu130"
    assert "WARNING: building against torch 2.11.0+cu130, older than the oldest tested, 2.13" in capsys.readouterr().err
    monkeypatch.setenv("CG2A_ALLOW_UNTESTED_TORCH", "0")
    with pytest.raises(SystemExit, match="older than the oldest supported"):
        SETUP["import_torch"]()


def test_setup_builds_cpu_kernels_only_for_a_cpu_torch(tmp_path, monkeypatch, capsys):
    toolkit = fake_toolkit(tmp_path / "cuda", "13.0")
    cpu_torch = fake_torch("2.13.0+cpu", None)
    monkeypatch.delenv("CG2A_CUDA", raising=False)
    assert SETUP["want_cuda"](cpu_torch, toolkit) is False
    assert capsys.readouterr().out.strip() == (
        "cg2a_ext: building the CPU kernels only: torch 2.13.0+cpu is a CPU build "
        "(CG2A_CUDA=1 would make this an error)"
    )
    monkeypatch.setenv("CG2A_CUDA", "1")
    with pytest.raises(SystemExit, match="CG2A_CUDA=1 but the CUDA kernels cannot be built: torch 2.13.0.cpu is a CPU build"):
        SETUP["want_cuda"](cpu_torch, toolkit)
    with pytest.raises(SystemExit, match="no CUDA toolkit"):
        SETUP["want_cuda"](fake_torch("2.14.1+cu130", "13.0"), None)


def test_setup_needs_matching_cuda_major_versions(tmp_path, monkeypatch, capsys):
    toolkit = fake_toolkit(tmp_path / "cuda", "13.0")
    monkeypatch.delenv("CG2A_CUDA", raising=False)
    older = fake_torch("2.13.0+cu128", "12.8")
    reason = SETUP["why_no_cuda"](older, toolkit)
    assert "CUDA 12.8" in reason and "CUDA 13.0" in reason
    assert SETUP["want_cuda"](older, toolkit) is False
    assert "CPU kernels only" in capsys.readouterr().out
    # Same major, older minor: torch's CUDA 13.2 headers refuse nvcc 13.0; the line says how to get one.
    assert SETUP["want_cuda"](fake_torch("2.15.0+cu132", "13.2"), toolkit) is False
    line = capsys.readouterr().out.strip()
    assert line.startswith("cg2a_ext: building the CPU kernels only: torch 2.15.0+cu132 was built with CUDA 13.2")
    assert ('`pip install "nvidia-cuda-nvcc==13.2.*" "nvidia-nvvm==13.2.*" "nvidia-cuda-crt==13.2.*"`' in line
            and "\n" not in line)
    # Same major, same or newer minor: built.
    assert SETUP["why_no_cuda"](fake_torch("2.14.1+cu130", "13.0"), toolkit) is None
    assert SETUP["why_no_cuda"](fake_torch("2.14.1+cu128", "12.8"), fake_toolkit(tmp_path / "c129", "12.9")) is None
    assert SETUP["want_cuda"](fake_torch("2.14.1+cu130", "13.0"), toolkit) is True
    assert "CPU and CUDA kernels" in capsys.readouterr().out
    monkeypatch.setenv("CG2A_CUDA", "0")
    assert SETUP["want_cuda"](fake_torch("2.14.1+cu132", "13.2"), toolkit) is False
    assert "CG2A_CUDA=0" in capsys.readouterr().out
    monkeypatch.setenv("CG2A_CUDA", "yes")
    with pytest.raises(SystemExit, match="expected 0 .* or 1"):
        SETUP["want_cuda"](fake_torch("2.14.1+cu132", "13.2"), toolkit)


def test_nvcc_fits_needs_same_major_and_at_least_torchs_minor():
    fits = SETUP["nvcc_fits"]
    assert fits("13.2", "13.2") and fits("13.0", "13.2") and fits("12.8", "12.9")
    assert not fits("13.2", "13.0") and not fits("12.8", "13.2") and not fits("13.0", "12.9")
    assert not fits("13.0", None) and not fits("garbage", "13.0")


def test_select_toolkit_takes_the_first_that_fits_torch(tmp_path):
    versions = {str(tmp_path / "cuda_home"): "13.0", str(tmp_path / "path"): "12.8",
                str(tmp_path / "local"): "13.0", str(tmp_path / "pip"): "13.2"}
    for root in versions:
        Path(root).mkdir()
    candidates = list(versions) + [str(tmp_path / "missing")]
    select = SETUP["select_toolkit"]

    def pick(torch_cuda, roots=candidates):
        return select(torch_cuda, roots, is_toolkit=lambda r: r in versions, version_of=versions.get)

    assert pick("13.0") == str(tmp_path / "cuda_home")  # CUDA_HOME first when it fits
    assert pick("12.8") == str(tmp_path / "path")
    assert pick("13.2") == str(tmp_path / "pip")  # pip's nvcc when only it fits
    assert pick("13.1") == str(tmp_path / "pip")
    assert pick("13.4") == str(tmp_path / "cuda_home")  # none fits: the first (why_no_cuda says why)
    assert pick(None) == str(tmp_path / "cuda_home")  # a CPU torch
    assert pick("13.0", [str(tmp_path / "missing")]) is None


def test_pip_nvcc_is_found_in_site_packages(tmp_path):
    site = tmp_path / "site-packages"
    for folder in ("cu13", "cuda_nvcc"):
        (site / "nvidia" / folder / "bin").mkdir(parents=True)
        (site / "nvidia" / folder / "bin" / "nvcc").write_text("")
    (site / "nvidia" / "cu13" / "include").mkdir()
    (site / "nvidia" / "cu13" / "include" / "cuda_runtime.h").write_text("")
    roots = SETUP["pip_nvcc_roots"]([str(site)])
    assert roots == [str(site / "nvidia" / "cu13"), str(site / "nvidia" / "cuda_nvcc")]
    # cuda_runtime.h may lie in the nvidia-cuda-runtime wheel beside nvcc (CUDA 12's layout)
    assert all(SETUP["is_toolkit"](root) for root in roots)
    assert not SETUP["is_toolkit"](str(tmp_path))


def test_candidates_follow_cuda_home_path_local_then_pip(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    monkeypatch.setattr(sys, "path", [str(tmp_path / "site")])
    (tmp_path / "site" / "nvidia" / "cu13" / "bin").mkdir(parents=True)
    (tmp_path / "site" / "nvidia" / "cu13" / "bin" / "nvcc").write_text("")
    assert SETUP["toolkit_candidates"]() == [
        str(tmp_path / "home"), "/usr/local/cuda", str(tmp_path / "site" / "nvidia" / "cu13")]


def fake_pip_toolkit(site: Path, versions: dict[str, str]) -> str:
    """site-packages/nvidia/cu13 with an nvcc reporting nvidia-cuda-nvcc's version, and the
    packages' dist-info folders beside it (as pip installs them)."""
    nvcc = next(version for name, version in versions.items() if name.startswith("nvidia-cuda-nvcc"))
    root = fake_toolkit(site / "nvidia" / "cu13", nvcc.rsplit(".", 1)[0])
    for name, version in versions.items():
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return root


def test_pip_toolkit_parts_must_match_its_nvcc(tmp_path):
    """pip's nvidia-cuda-nvcc 13.2 pulls the newest nvidia-nvvm and nvidia-cuda-crt (13.5), whose PTX
    its ptxas refuses: such a toolkit does not count as one that fits."""
    good = fake_pip_toolkit(tmp_path / "good", {"nvidia-cuda-nvcc": "13.2.86", "nvidia-nvvm": "13.2.86",
                                                "nvidia-cuda-crt": "13.2.86", "nvidia-cuda-runtime": "13.2.86"})
    bad = fake_pip_toolkit(tmp_path / "bad", {"nvidia-cuda-nvcc": "13.2.86", "nvidia-nvvm": "13.5.37",
                                              "nvidia-cuda-crt": "13.5.37"})
    assert SETUP["pip_toolkit_versions"](good) == {
        "nvidia-cuda-nvcc": "13.2.86", "nvidia-nvvm": "13.2.86", "nvidia-cuda-crt": "13.2.86"}
    assert SETUP["pip_toolkit_mismatch"](good) is None
    reason = SETUP["pip_toolkit_mismatch"](bad)
    assert "nvidia-cuda-nvcc 13.2.86" in reason and "nvidia-nvvm 13.5.37 and nvidia-cuda-crt 13.5.37" in reason
    # a system toolkit, or CUDA 12's single nvcc package (nvvm inside it, a -cu12 name): nothing to compare
    assert SETUP["pip_toolkit_versions"](fake_toolkit(tmp_path / "system", "13.0")) == {}
    cu12 = fake_pip_toolkit(tmp_path / "cu12", {"nvidia-cuda-nvcc-cu12": "12.8.93"})
    assert SETUP["pip_toolkit_versions"](cu12) == {"nvidia-cuda-nvcc": "12.8.93"}
    assert SETUP["pip_toolkit_mismatch"](cu12) is None


def test_a_pip_toolkit_with_mismatched_parts_says_how_to_pin_them(tmp_path, monkeypatch, capsys):
    bad = fake_pip_toolkit(tmp_path / "site", {"nvidia-cuda-nvcc": "13.2.86", "nvidia-nvvm": "13.5.37",
                                               "nvidia-cuda-crt": "13.2.86"})
    system = fake_toolkit(tmp_path / "cuda", "13.0")
    # The pip toolkit is the one to report on (its version fits torch), not the older system nvcc.
    assert SETUP["select_toolkit"]("13.2", [system, bad], is_toolkit=lambda r: True) == str(Path(bad).resolve())
    monkeypatch.delenv("CG2A_CUDA", raising=False)
    assert SETUP["want_cuda"](fake_torch("2.15.0+cu132", "13.2"), bad) is False
    line = capsys.readouterr().out.strip()
    assert line.startswith("cg2a_ext: building the CPU kernels only: pip's nvidia-cuda-nvcc 13.2.86")
    assert "nvidia-nvvm 13.5.37" in line and "nvidia-cuda-crt" not in line.split(";")[0] and "\n" not in line
    assert '`pip install "nvidia-cuda-nvcc==13.2.*" "nvidia-nvvm==13.2.*" "nvidia-cuda-crt==13.2.*"`' in line


def test_select_toolkit_skips_a_fitting_toolkit_with_mismatched_parts(tmp_path):
    versions = {"local": "13.0", "pip_bad": "13.2", "pip_good": "13.2"}
    select = SETUP["select_toolkit"]
    roots = [str(tmp_path / name) for name in versions]

    def pick(torch_cuda, candidates=roots):
        return select(torch_cuda, candidates, is_toolkit=lambda r: True,
                      version_of=lambda r: versions[Path(r).name],
                      mismatch_of=lambda r: "nvvm 13.5" if Path(r).name == "pip_bad" else None)

    assert pick("13.2") == str(tmp_path / "pip_good")
    assert pick("13.2", roots[:2]) == str(tmp_path / "pip_bad")  # only a mismatched one fits: why_no_cuda says so
    assert pick("13.0") == str(tmp_path / "local")
    assert pick("13.4") == str(tmp_path / "local")  # none fits: the first


def test_pip_nvcc_hint_names_the_packages_of_torchs_cuda():
    hint = SETUP["pip_nvcc_hint"]
    assert '`pip install "nvidia-cuda-nvcc==13.4.*" "nvidia-nvvm==13.4.*" "nvidia-cuda-crt==13.4.*"`' in hint("13.4")
    assert '`pip install "nvidia-cuda-nvcc-cu12==12.8.*"`' in hint("12.8")


def test_pip_toolkit_links_its_versioned_cudart(tmp_path):
    """pip's toolkit has lib/libcudart.so.13 but no libcudart.so, which torch's -lcudart needs."""
    pip_root, system = tmp_path / "cu13", tmp_path / "cuda"
    (pip_root / "lib").mkdir(parents=True)
    for name in ("libcudart.so.13", "libcudart_static.a"):
        (pip_root / "lib" / name).write_text("")
    (system / "lib64").mkdir(parents=True)
    for name in ("libcudart.so", "libcudart.so.13", "libcudart.so.13.0.96"):
        (system / "lib64" / name).write_text("")
    assert SETUP["cudart_link_name"](str(pip_root)) == ":libcudart.so.13"
    assert SETUP["cudart_link_name"](str(system)) is None
    assert SETUP["cudart_link_name"](str(tmp_path / "missing")) is None


# ------------------------------------------------------- the installed extension
def test_ops_are_registered_with_their_schemas():
    require_fused_ops()  # loads cg2a_ext._C, which registers the ops; fails if it was not built
    for name, schema in SCHEMAS.items():
        op = getattr(torch.ops.cg2a, name).default
        assert str(op._schema) == schema
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "CPU"), f"{name}: no CPU kernel"


def test_cuda_kernels_are_compiled_as_expected():
    require_fused_ops()
    built = has_cuda_kernels()
    expected = os.environ.get("CG2A_EXPECT_CUDA")
    if expected in ("0", "1"):
        assert built == (expected == "1"), f"CG2A_EXPECT_CUDA={expected} but cg2a_ext._C has CUDA kernels: {built}"
    if torch.version.cuda is None:
        assert not built, f"CUDA kernels reported by a build against a CPU torch ({torch.__version__})"
    # The flag is what the dispatcher holds: a CUDA kernel for every op iff it says so.
    for name in SCHEMAS:
        registered = torch._C._dispatch_has_kernel_for_dispatch_key(f"cg2a::{name}", "CUDA")
        assert registered == built, f"cg2a::{name}: CUDA kernel registered {registered}, flag {built}"


@pytest.mark.cuda
def test_cuda_kernels_run_on_the_device():
    if not has_cuda_kernels():
        pytest.skip("cg2a_ext._C was built without its CUDA kernels (CG2A_CUDA=0 or a CPU torch)")
    g = [torch.randn(3, 50, dtype=torch.float64), torch.randn(3, 4, 5, dtype=torch.float64)]
    flat = torch.cat([x.reshape(3, -1) for x in g], 1)
    on_gpu = [x.cuda() for x in g]
    torch.testing.assert_close(torch.ops.cg2a.gram(on_gpu).cpu(), flat @ flat.T)
    out, _ = torch.ops.cg2a.combine(on_gpu, torch.ones(3, dtype=torch.float64, device="cuda"), 1.0, 0)
    torch.testing.assert_close(torch.cat([o.reshape(-1) for o in out]).cpu(), flat.sum(0))


EXCEPTION_PROBE = "from cg2a_ext._extension import op_error_message; print('caught:', op_error_message({device!r}))"


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_an_error_inside_the_extension_reaches_python(device):
    """A refusal thrown in the library arrives as a Python ValueError. Run in a child process: a
    compiler whose C++ runtime does not match torch's can crash the process on the first throw
    (seen on a GPU image: every op error was a segmentation fault), and that must read as a
    failure that names the cause, not kill the test run."""
    if device == "cuda" and not has_cuda_kernels():
        pytest.skip("cg2a_ext._C was built without its CUDA kernels")
    import cg2a_ext

    # The child must import the very package under test: `python -c` puts its working directory
    # first on sys.path, so run it from the folder that holds this cg2a_ext (a repository checkout
    # without an in-place build would otherwise shadow an installed one).
    package_root = str(Path(cg2a_ext.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", EXCEPTION_PROBE.format(device=device)],
                            capture_output=True, text=True, timeout=300, env=env, cwd=package_root)
    assert result.returncode == 0 and "caught:" in result.stdout, (
        f"an op error did not reach Python (exit {result.returncode}): a crash here usually means the "
        f"extension was built with a compiler whose C++ runtime differs from torch's; rebuild with the "
        f"compiler torch was built with (CC/CXX).\n{result.stdout[-1500:]}{result.stderr[-1500:]}")
    assert "grads[1] has K = 2" in result.stdout


# ------------------------------------------------------------------ CMake build
def test_cmake_build_registers_working_ops(tmp_path):
    """CMakeLists.txt builds the same ops as setup.py (CPU build)."""
    # The cmake and ninja of the test extra (pip), next to this interpreter.
    cmake = shutil.which("cmake", path=str(Path(sys.executable).parent)) or shutil.which("cmake")
    ninja = shutil.which("ninja", path=str(Path(sys.executable).parent)) or shutil.which("ninja")
    configure = [cmake, "-S", str(ROOT), "-B", str(tmp_path), "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}",
                 f"-DPython_EXECUTABLE={sys.executable}", "-DCG2A_WITH_CUDA=OFF"]
    for command in (configure, [cmake, "--build", str(tmp_path)]):
        step = subprocess.run(command, capture_output=True, text=True)
        assert step.returncode == 0, f"{command}: {step.stdout[-3000:]}{step.stderr[-3000:]}"
    library = next(tmp_path.glob("_C*.so"))
    # A fresh interpreter: the library loads on its own and registers working ops.
    script = textwrap.dedent(f"""
        import torch
        torch.ops.load_library({str(library)!r})
        g = [torch.randn(3, 50, dtype=torch.float64), torch.randn(3, 4, 5, dtype=torch.float64)]
        flat = torch.cat([x.reshape(3, -1) for x in g], 1)
        assert torch.allclose(torch.ops.cg2a.gram(g), flat @ flat.T)
        out, conflicts = torch.ops.cg2a.combine(g, torch.ones(3, dtype=torch.float64), 1.0, 0)
        assert torch.allclose(torch.cat([o.reshape(-1) for o in out]), flat.sum(0))
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_in_place_build_replaces_the_library_file_instead_of_rewriting_it(tmp_path):
    """A process that has the old _C mapped keeps a valid file: the new one gets a new inode."""
    from setuptools import Distribution

    ext_modules, build_ext = SETUP["extensions"]()
    cmd = build_ext(Distribution({"ext_modules": ext_modules}))
    old, new = tmp_path / "_C.so", tmp_path / "built.so"
    old.write_bytes(b"old library")
    new.write_bytes(b"new library")
    with open(old, "rb") as held:                     # as a running process holds it
        inode = os.fstat(held.fileno()).st_ino
        assert cmd.copy_file(str(new), str(old)) == (str(old), 1)
        assert held.read() == b"old library"          # the open file is untouched
    assert old.read_bytes() == b"new library" and old.stat().st_ino != inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_C.so", "built.so"]   # no partial file left


def test_a_source_tree_without_its_build_says_how_to_get_one(tmp_path):
    """`python -c "from cg2a_ext import ops"` from a checkout's root imports the source tree: the advice
    names that case (run elsewhere, or an editable install), not a plain `pip install .`."""
    package = tmp_path / "cg2a_ext"
    package.mkdir()
    shutil.copy(ROOT / "cg2a_ext" / "_extension.py", package / "_extension.py")
    installed = runpy.run_path(str(package / "_extension.py"))["build_advice"]()
    assert "pip install --no-build-isolation ." in installed and "source tree" not in installed
    (tmp_path / "setup.py").write_text("")
    (tmp_path / "csrc").mkdir()
    advice = runpy.run_path(str(package / "_extension.py"))["build_advice"]()
    assert f"imported the source tree {package}, which has no compiled _C" in advice
    assert "run from another folder" in advice and "pip install --no-build-isolation -e ." in advice
