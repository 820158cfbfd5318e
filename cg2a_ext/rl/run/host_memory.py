"""Keep freed host memory inside the process (Linux / glibc), for fast CPU updates.

glibc serves every allocation above its mmap threshold (dynamic, 32 MiB at most)
with a fresh ``mmap`` and hands it back to the kernel on ``free``. PyTorch's CPU
allocator does not cache, so the large tensors a CPU update makes and drops on
every step (the K x B augmented views, the convolution activations) are mapped
anew each time and page-fault on every 4 KiB page they touch: at batch 128 this
is a tenth to a third of a ``--preset cpu`` update on the development VM (see
``cg2a_ext/rl/bench/agent.py`` and BENCHMARKS.md). Raising the mmap and
trim thresholds lets glibc reuse that memory instead; the cost is that the
process keeps its peak heap (it is not returned to the system while it runs).
Allocations above the threshold (the replay buffer) are still mapped directly.
"""
from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1   # mallopt parameters, <malloc.h>
_M_MMAP_THRESHOLD = -3
DEFAULT_THRESHOLD = 1 << 30


def keep_freed_host_memory(threshold_bytes: int = DEFAULT_THRESHOLD) -> bool:
    """Serve host allocations below ``threshold_bytes`` from the reusable heap and
    keep up to that much free memory in the process. Returns True when applied
    (glibc); False where there is no ``mallopt`` or it refuses (other platforms
    and C libraries), which changes nothing.

    Raises:
        ValueError: ``threshold_bytes`` not in [1, 2**31 - 1].
    """
    if not 0 < threshold_bytes < 2 ** 31:
        raise ValueError(f"threshold_bytes must be in [1, 2**31 - 1], got {threshold_bytes}")
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold_bytes)) and bool(mallopt(_M_TRIM_THRESHOLD, threshold_bytes))
