"""Builds cg2a_ext._C against the torch installed in the Python that runs this
build: the CPU kernels always, the CUDA kernels when they can be built for
that torch (a CUDA build of torch, and an nvcc of the same CUDA major version),
even on a machine without a GPU, so CI compiles them.

Install torch first, then `pip install --no-build-isolation .` (docs/install.md).

Environment:
  CG2A_CUDA=0|1          force the CUDA kernels off / on (default: on when they can be
                         built; with 1, a reason they cannot is an error)
  CUDA_HOME              toolkit root (default: $CUDA_HOME, /usr/local/cuda, or nvcc's)
  TORCH_CUDA_ARCH_LIST   GPU architectures (default: "8.0;9.0+PTX")
  CG2A_DEBUG=1           build without optimisation, with debug symbols
  MAX_JOBS               parallel compile jobs (torch's ninja build; default: all cores)

Objects are kept in build/temp-<python>-<torch>-<hash of torch's folder>/, also for
editable installs, so a rebuild recompiles only the sources that changed.
"""
from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
# The oldest torch that CI builds and tests against (pyproject.toml's dependency).
MIN_TORCH = (2, 13)
INSTALL_HELP = (
    "install torch first (any release >= {min}; a CPU build on a machine without a GPU), "
    "then build against it with `pip install --no-build-isolation .` (docs/install.md)"
)


def import_torch():
    """The installed torch, or an exit that says what to do (an isolated build has none)."""
    min_text = ".".join(map(str, MIN_TORCH))
    try:
        import torch
    except ImportError:
        sys.exit("cg2a_ext: this build sees no torch (an isolated build, as plain `pip install .` runs, "
                 "sees none of the installed packages). cg2a_ext is compiled against the torch you run: "
                 f"{INSTALL_HELP.format(min=min_text)}.")
    found = re.match(r"(\d+)\.(\d+)", torch.__version__)
    if found is None or tuple(map(int, found.groups())) < MIN_TORCH:
        if os.environ.get("CG2A_ALLOW_UNTESTED_TORCH") == "1":
            # a machine image whose torch cannot be replaced (a lent GPU): build, and say so
            print(f"cg2a_ext: WARNING: building against torch {torch.__version__}, older than the oldest "
                  f"tested, {min_text} (CG2A_ALLOW_UNTESTED_TORCH=1)", file=sys.stderr)
            return torch
        sys.exit(f"cg2a_ext: torch {torch.__version__} is older than the oldest supported, {min_text}; "
                 f"{INSTALL_HELP.format(min=min_text)}.")
    return torch


def find_cuda_home() -> str | None:
    """The toolkit root, resolved through wrapper scripts (torch's own guess
    follows `which nvcc`, which can be a wrapper outside the toolkit)."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(os.path.realpath(nvcc)).parent.parent))
    for root in candidates:
        if root and (Path(root) / "bin" / "nvcc").exists() and (Path(root) / "include" / "cuda_runtime.h").exists():
            return str(Path(root).resolve())
    return None


def nvcc_version(cuda_home: str) -> str | None:
    """'13.0' for `nvcc --version` saying 'release 13.0', else None."""
    try:
        text = subprocess.run([str(Path(cuda_home) / "bin" / "nvcc"), "--version"],
                              capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"release (\d+\.\d+)", text)
    return found.group(1) if found else None


def why_no_cuda(torch, cuda_home: str | None) -> str | None:
    """Why the CUDA kernels cannot be built for this torch, or None if they can."""
    if cuda_home is None:
        return "no CUDA toolkit (nvcc and cuda_runtime.h) was found; set CUDA_HOME"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU build"
    toolkit = nvcc_version(cuda_home)
    if toolkit is None:
        return f"`{cuda_home}/bin/nvcc --version` does not say its release"
    if toolkit.split(".")[0] != torch.version.cuda.split(".")[0]:
        return (f"torch {torch.__version__} was built with CUDA {torch.version.cuda} but nvcc "
                f"({cuda_home}) is CUDA {toolkit}; their major versions must match")
    return None


def want_cuda(torch, cuda_home: str | None) -> bool:
    """Whether to compile the CUDA kernels; prints one line saying what is built."""
    flag = os.environ.get("CG2A_CUDA")
    if flag not in (None, "", "0", "1"):
        sys.exit(f"cg2a_ext: CG2A_CUDA={flag!r}; expected 0 (CPU kernels only) or 1 (CUDA kernels too)")
    if flag == "0":
        print(f"cg2a_ext: building the CPU kernels only (CG2A_CUDA=0), against torch {torch.__version__}")
        return False
    reason = why_no_cuda(torch, cuda_home)
    if reason is None:
        print(f"cg2a_ext: building the CPU and CUDA kernels against torch {torch.__version__} "
              f"(CUDA {torch.version.cuda}, toolkit {cuda_home})")
        return True
    if flag == "1":
        sys.exit(f"cg2a_ext: CG2A_CUDA=1 but the CUDA kernels cannot be built: {reason}")
    print(f"cg2a_ext: building the CPU kernels only: {reason} (CG2A_CUDA=1 would make this an error)")
    return False


def wheel_cuda_includes() -> list[str]:
    """Headers some torch CUDA headers need (cuBLAS, cuSPARSE, ...) ship only
    in the `nvidia` wheels torch depends on; add them after the toolkit's."""
    dirs: list[str] = []
    for entry in sys.path:
        dirs += sorted(glob.glob(os.path.join(entry, "nvidia", "*", "include")))
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def build_folder(torch, with_cuda: bool) -> str:
    """One persistent object folder per Python, torch install and kernel set: switching
    between venvs or CG2A_CUDA settings never makes ninja recompile the other's objects."""
    torch_dir = str(Path(torch.__file__).resolve().parent)
    digest = hashlib.sha1(f"{torch_dir}:{with_cuda}".encode()).hexdigest()[:8]
    tag = f"temp-py{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__}-{digest}"
    return str(ROOT / "build" / tag)


def extensions():
    torch = import_torch()
    cuda_home = find_cuda_home()
    with_cuda = want_cuda(torch, cuda_home)
    if with_cuda:
        # torch.utils.cpp_extension reads CUDA_HOME at import time.
        os.environ["CUDA_HOME"] = cuda_home
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
    from torch.utils import cpp_extension

    debug = os.environ.get("CG2A_DEBUG") == "1"
    opt = ["-O0", "-g"] if debug else ["-O3"]
    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.cpp"))
    # -fopenmp: at::parallel_for runs serially in code compiled without it.
    # -fno-trapping-math: lets GCC vectorise the CPU combine loop's sign tests (IEEE results are
    # unchanged; only floating-point exception flags, which nothing reads, may differ).
    cxx = opt + ["-std=c++20", "-fopenmp", "-fno-trapping-math", "-fdiagnostics-color=always"]
    define_macros = [("Py_LIMITED_API", "0x03090000")]
    include_dirs = [str(ROOT / "csrc")]
    if with_cuda:
        sources += sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "cuda").glob("*.cu"))
        define_macros.append(("CG2A_WITH_CUDA", None))
        include_dirs += wheel_cuda_includes()
        nvcc = opt + ["-std=c++20", "--expt-relaxed-constexpr", "-lineinfo", "-DCG2A_WITH_CUDA"]
        ext = cpp_extension.CUDAExtension(
            "cg2a_ext._C", sources, include_dirs=include_dirs, define_macros=define_macros,
            extra_compile_args={"cxx": cxx + ["-DCG2A_WITH_CUDA"], "nvcc": nvcc},
            extra_link_args=["-fopenmp"], py_limited_api=True,
        )
    else:
        ext = cpp_extension.CppExtension(
            "cg2a_ext._C", sources, include_dirs=include_dirs, define_macros=define_macros,
            extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"], py_limited_api=True,
        )

    objects = build_folder(torch, with_cuda)

    class PersistentBuildExtension(cpp_extension.BuildExtension):
        """torch's ninja build with its objects in one persistent folder: setuptools gives
        every editable build a fresh temporary folder, which would recompile everything."""

        def finalize_options(self):
            super().finalize_options()
            self.build_temp = objects
            # Always link anew (ninja, which torch uses when installed, recompiles only what
            # changed): build/lib's _C may come from a build against another torch, and
            # setuptools would keep it, as it is newer than the sources.
            self.force = True

        def copy_file(self, infile, outfile, *args, **kwargs):
            # An in-place build replaces cg2a_ext/_C*.so with a new file (rename) instead of rewriting
            # it: a training run or sweep that has the old library mapped would die of SIGBUS.
            if self.dry_run or os.path.isdir(outfile):
                return super().copy_file(infile, outfile, *args, **kwargs)
            partial = f"{outfile}.partial-{os.getpid()}"
            shutil.copy2(infile, partial)
            os.replace(partial, outfile)
            return outfile, 1

    return [ext], PersistentBuildExtension


if __name__ == "__main__":  # pip, build and `python setup.py` run it so; tests/test_build.py imports it
    ext_modules, build_ext = extensions()
    setup(
        ext_modules=ext_modules,
        cmdclass={"build_ext": build_ext},
        options={"bdist_wheel": {"py_limited_api": "cp39"}},
    )
