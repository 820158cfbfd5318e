"""CMakeLists.txt builds the same ops as setup.py (CPU build; the CUDA kernels
are compiled by the package build itself, which CI checks through
CG2A_EXPECT_CUDA)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cmake_build_registers_working_ops(tmp_path):
    # The cmake and ninja of the test extra (pip), next to this interpreter.
    cmake = shutil.which("cmake", path=str(Path(sys.executable).parent)) or shutil.which("cmake")
    ninja = shutil.which("ninja", path=str(Path(sys.executable).parent)) or shutil.which("ninja")
    configure = [cmake, "-S", str(ROOT), "-B", str(tmp_path), "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}",
                 f"-DPython_EXECUTABLE={sys.executable}", "-DCG2A_WITH_CUDA=OFF"]
    for command in (configure, [cmake, "--build", str(tmp_path)]):
        step = subprocess.run(command, capture_output=True, text=True)
        assert step.returncode == 0, f"{command}: {step.stdout[-3000:]}{step.stderr[-3000:]}"
    library = next(tmp_path.glob("_C*.so"))
    # A fresh interpreter: the installed cg2a_ext._C registers the same ops.
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
