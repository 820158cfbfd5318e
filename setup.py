"""Builds cg2a_ext._C against the torch installed in the Python that runs this
build: the CPU kernels always, the CUDA kernels when they can be built for
that torch (a CUDA build of torch, and an nvcc of the same CUDA major version and at
least torch's minor version: $CUDA_HOME, nvcc on PATH, /usr/local/cuda, or pip's
nvidia-cuda-nvcc with nvidia-nvvm and nvidia-cuda-crt of the same version: pip_nvcc_packages),
even on a machine without a GPU, so CI compiles them.

Install torch first, then `pip install --no-build-isolation .` (docs/install.md).

Environment:
  CG2A_CUDA=0|1          force the CUDA kernels off / on (default: on when they can be
                         built; with 1, a reason they cannot is an error)
  CUDA_HOME              toolkit root (tried first; then nvcc's on PATH, /usr/local/cuda,
                         pip's nvidia-cuda-nvcc: the first whose CUDA version fits torch's;
                         pip's only with nvidia-nvvm and nvidia-cuda-crt of its major.minor)
  TORCH_CUDA_ARCH_LIST   GPU architectures (default: "8.0;9.0+PTX")
  CG2A_DEBUG=1           build without optimisation, with debug symbols
  MAX_JOBS               parallel compile jobs (torch's ninja build; default: all cores)

Objects are kept in build/temp-<python>-<torch>-<hash of torch's folder>/, also for
editable installs, so a rebuild recompiles only the sources that changed.
"""
from __future__ import annotations

import glob
import hashlib
import importlib.metadata
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


def cuda_version(text: str | None) -> tuple[int, int] | None:
    """(13, 2) for '13.2' (or '13.2.51'), else None."""
    found = re.match(r"(\d+)\.(\d+)", text or "")
    return (int(found.group(1)), int(found.group(2))) if found else None


def nvcc_fits(torch_cuda: str, toolkit: str) -> bool:
    """An nvcc can compile against torch's CUDA headers when it has the same major version and a
    minor version at least torch's (torch's CUDA 13.2 headers refuse nvcc 13.0: "CUDA compiler and
    CUDA toolkit headers are incompatible")."""
    wanted, have = cuda_version(torch_cuda), cuda_version(toolkit)
    return wanted is not None and have is not None and have[0] == wanted[0] and have[1] >= wanted[1]


def pip_nvcc_roots(paths: list[str] | None = None) -> list[str]:
    """Toolkit roots of the pip package nvidia-cuda-nvcc: `nvidia/<folder>/bin/nvcc` under
    site-packages (`nvidia/cu13/` for CUDA 13, `nvidia/cuda_nvcc/` for CUDA 12)."""
    roots: list[str] = []
    for entry in sys.path if paths is None else paths:
        roots += sorted(str(Path(nvcc).parent.parent) for nvcc in glob.glob(os.path.join(entry, "nvidia", "*", "bin", "nvcc")))
    return list(dict.fromkeys(roots))


def is_toolkit(root: str) -> bool:
    """An nvcc and cuda_runtime.h: in the root (a toolkit), or, for pip's nvcc, in one of the
    nvidia wheels beside it (nvidia-cuda-runtime, which a CUDA build of torch depends on)."""
    path = Path(root)
    if not (path / "bin" / "nvcc").exists():
        return False
    return (path / "include" / "cuda_runtime.h").exists() or bool(glob.glob(str(path.parent / "*" / "include" / "cuda_runtime.h")))


def toolkit_candidates() -> list[str]:
    """Toolkit roots to try, in order: $CUDA_HOME, $CUDA_PATH, the toolkit of `nvcc` on PATH
    (resolved through wrapper scripts), /usr/local/cuda, then pip's nvidia-cuda-nvcc."""
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        roots.append(str(Path(os.path.realpath(nvcc)).parent.parent))
    roots.append("/usr/local/cuda")
    roots += pip_nvcc_roots()
    return [r for r in dict.fromkeys(roots) if r]


def select_toolkit(torch_cuda: str | None, candidates: list[str], is_toolkit=is_toolkit, version_of=None,
                   mismatch_of=None) -> str | None:
    """The first toolkit among `candidates` whose nvcc fits torch's CUDA (nvcc_fits) and whose parts
    agree (pip_toolkit_mismatch). With none that fits: the first whose nvcc fits but whose parts
    disagree, else the first toolkit found (why_no_cuda then says why); else None (or a CPU torch:
    the first found)."""
    version_of = version_of or nvcc_version
    mismatch_of = mismatch_of or pip_toolkit_mismatch
    found = [str(Path(root).resolve()) for root in candidates if is_toolkit(root)]
    found = list(dict.fromkeys(found))
    if torch_cuda is not None:
        fitting = [root for root in found if (toolkit := version_of(root)) is not None and nvcc_fits(torch_cuda, toolkit)]
        for root in fitting:
            if mismatch_of(root) is None:
                return root
        if fitting:
            return fitting[0]
    return found[0] if found else None


# pip's CUDA 13 nvcc (nvidia-cuda-nvcc) depends on these without pinning them, so pip installs
# their newest release beside an older nvcc: nvvm 13.5 with nvcc 13.2 emits PTX 9.5, which ptxas
# 13.2 refuses ("Unsupported .version 9.5; current version is '9.2'").
PIP_TOOLKIT_PARTS = ("nvidia-nvvm", "nvidia-cuda-crt")


def pip_toolkit_versions(root: str) -> dict[str, str]:
    """{'nvidia-cuda-nvcc': '13.2.86', 'nvidia-nvvm': ..., 'nvidia-cuda-crt': ...}: the pip packages
    installed in the site-packages of a pip toolkit `root` (site-packages/nvidia/<folder>), names
    without a -cu12/-cu13 suffix; {} for a toolkit that is not pip's."""
    path = Path(root)
    if path.parent.name != "nvidia":
        return {}
    wanted = ("nvidia-cuda-nvcc",) + PIP_TOOLKIT_PARTS
    versions: dict[str, str] = {}
    for dist in importlib.metadata.distributions(path=[str(path.parent.parent)]):
        name = re.sub(r"[-_.]+", "-", (dist.metadata["Name"] or "").lower())
        name = re.sub(r"-cu\d+$", "", name)
        if name in wanted:
            versions.setdefault(name, dist.version)
    return versions


def pip_toolkit_mismatch(root: str) -> str | None:
    """Why pip's toolkit at `root` cannot compile: nvidia-nvvm or nvidia-cuda-crt of another CUDA
    major.minor than its nvidia-cuda-nvcc; None when they agree (or it is not pip's)."""
    versions = pip_toolkit_versions(root)
    nvcc = versions.get("nvidia-cuda-nvcc")
    if nvcc is None:
        return None
    other = [f"{name} {versions[name]}" for name in PIP_TOOLKIT_PARTS
             if name in versions and cuda_version(versions[name]) != cuda_version(nvcc)]
    if not other:
        return None
    return (f"pip's nvidia-cuda-nvcc {nvcc} ({root}) has {' and '.join(other)}, which must be of the same "
            "CUDA version (a newer nvvm emits PTX that this nvcc's ptxas refuses)")


def find_cuda_home(torch_cuda: str | None = None) -> str | None:
    """The toolkit to build with for torch's CUDA version `torch_cuda` (select_toolkit)."""
    return select_toolkit(torch_cuda, toolkit_candidates())


def nvcc_version(cuda_home: str) -> str | None:
    """'13.0' for `nvcc --version` saying 'release 13.0', else None."""
    try:
        text = subprocess.run([str(Path(cuda_home) / "bin" / "nvcc"), "--version"],
                              capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"release (\d+\.\d+)", text)
    return found.group(1) if found else None


def pip_nvcc_packages(torch_cuda: str) -> list[str]:
    """The pip requirements of a compiler for torch's CUDA X.Y: CUDA 13's nvcc package with its nvvm
    and crt pinned beside it (PIP_TOOLKIT_PARTS); CUDA 12's is one package, named -cu12. CI installs
    these (`.ci/run`)."""
    wanted = cuda_version(torch_cuda)
    spec = f"{wanted[0]}.{wanted[1]}.*" if wanted else f"{torch_cuda}.*"
    if wanted is not None and wanted[0] < 13:
        return [f"nvidia-cuda-nvcc-cu{wanted[0]}=={spec}"]
    return [f"{name}=={spec}" for name in ("nvidia-cuda-nvcc",) + PIP_TOOLKIT_PARTS]


def pip_nvcc_hint(torch_cuda: str) -> str:
    packages = " ".join(f'"{package}"' for package in pip_nvcc_packages(torch_cuda))
    return (f"for the CUDA kernels, `pip install {packages}` (and rebuild), "
            "or point CUDA_HOME at such a toolkit")


def why_no_cuda(torch, cuda_home: str | None) -> str | None:
    """Why the CUDA kernels cannot be built for this torch, or None if they can."""
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU build"
    if cuda_home is None:
        return f"no CUDA toolkit (nvcc and cuda_runtime.h) was found; {pip_nvcc_hint(torch.version.cuda)}"
    toolkit = nvcc_version(cuda_home)
    if toolkit is None:
        return f"`{cuda_home}/bin/nvcc --version` does not say its release"
    if not nvcc_fits(torch.version.cuda, toolkit):
        return (f"torch {torch.__version__} was built with CUDA {torch.version.cuda} but the nvcc found "
                f"({cuda_home}) is CUDA {toolkit}, and nvcc must be the same major version and at least "
                f"torch's minor version; {pip_nvcc_hint(torch.version.cuda)}")
    mismatch = pip_toolkit_mismatch(cuda_home)
    if mismatch is not None:
        return f"{mismatch}; {pip_nvcc_hint(torch.version.cuda)}"
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


def cudart_link_name(cuda_home: str) -> str | None:
    """None when the toolkit's lib64/ or lib/ has libcudart.so (torch's `-lcudart` finds it); else,
    for pip's toolkit, which ships only libcudart.so.<major>, ':libcudart.so.13' (ld's -l:<file>)."""
    for lib in ("lib64", "lib"):
        folder = Path(cuda_home) / lib
        if (folder / "libcudart.so").exists():
            return None
        versioned = sorted(folder.glob("libcudart.so.[0-9]*"), key=lambda p: (len(p.name), p.name))
        if versioned:
            return ":" + versioned[0].name
    return None


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
    cuda_home = find_cuda_home(torch.version.cuda)
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
        cudart = cudart_link_name(cuda_home)
        if cudart is not None:  # pip's toolkit: no unversioned libcudart.so to resolve -lcudart
            ext.libraries = [cudart if lib == "cudart" else lib for lib in ext.libraries]
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
