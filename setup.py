"""Builds cg2a_ext._C: the CPU kernels always, the CUDA kernels whenever a CUDA
toolkit (nvcc) is found, even on a machine without a GPU, so CI compiles them.

Environment:
  CG2A_CUDA=0|1          force the CUDA kernels off / on (default: on if nvcc found)
  CUDA_HOME              toolkit root (default: $CUDA_HOME, /usr/local/cuda, or nvcc's)
  TORCH_CUDA_ARCH_LIST   GPU architectures (default: "8.0;9.0+PTX")
  CG2A_DEBUG=1           build without optimisation, with debug symbols
"""
from __future__ import annotations

import glob
import os
import shutil
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent


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


def want_cuda(cuda_home: str | None) -> bool:
    flag = os.environ.get("CG2A_CUDA")
    if flag == "0":
        return False
    if flag == "1" and cuda_home is None:
        sys.exit("CG2A_CUDA=1 but no CUDA toolkit (nvcc and cuda_runtime.h) was found; set CUDA_HOME")
    return cuda_home is not None


def wheel_cuda_includes() -> list[str]:
    """Headers some torch CUDA headers need (cuBLAS, cuSPARSE, ...) ship only
    in the `nvidia` wheels torch depends on; add them after the toolkit's."""
    dirs: list[str] = []
    for entry in sys.path:
        dirs += sorted(glob.glob(os.path.join(entry, "nvidia", "*", "include")))
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def extensions():
    cuda_home = find_cuda_home()
    with_cuda = want_cuda(cuda_home)
    if with_cuda:
        # torch.utils.cpp_extension reads CUDA_HOME at import time.
        os.environ["CUDA_HOME"] = cuda_home
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
    from torch.utils import cpp_extension

    debug = os.environ.get("CG2A_DEBUG") == "1"
    opt = ["-O0", "-g"] if debug else ["-O3"]
    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.cpp"))
    # -fopenmp: at::parallel_for runs serially in code compiled without it.
    cxx = opt + ["-std=c++20", "-fopenmp", "-fdiagnostics-color=always"]
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
    print(f"cg2a_ext: building CPU kernels{' and CUDA kernels (' + cuda_home + ')' if with_cuda else ''}")
    return [ext], cpp_extension.BuildExtension


ext_modules, build_ext = extensions()
setup(
    ext_modules=ext_modules,
    cmdclass={"build_ext": build_ext},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
