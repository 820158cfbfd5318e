"""cg2a_ext.rl.run.host_memory: glibc keeps freed tensors' memory for reuse instead of unmapping it."""
import platform
import subprocess
import sys
import textwrap

import pytest

from cg2a_ext.rl.run.host_memory import keep_freed_host_memory

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# RSS (MiB) before, while holding and after freeing a 256 MiB tensor that was written to.
_PROBE = textwrap.dedent("""
    import sys, torch
    from cg2a_ext.rl.run.host_memory import keep_freed_host_memory
    def rss():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024
    applied = keep_freed_host_memory() if sys.argv[1] == "keep" else None
    base = rss()
    x = torch.ones(64 << 20)
    held = rss()
    del x
    print(applied, base, held, rss())
""")


def _probe(mode):
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], check=True, capture_output=True, text=True).stdout
    applied, base, held, freed = out.split()
    return applied, float(base), float(held), float(freed)


@pytest.mark.skipif(not GLIBC, reason="mallopt thresholds are a glibc feature; elsewhere the call is a no-op")
def test_freed_memory_stays_in_the_process_only_when_kept():
    _, base, held, freed = _probe("default")
    assert held - base > 200 and freed - base < 50      # glibc unmaps a big block on free
    applied, base, held, freed = _probe("keep")
    assert applied == "True"
    assert held - base > 200 and freed - base > 200     # kept for the next allocation


def test_bad_threshold_is_refused():
    with pytest.raises(ValueError, match="threshold_bytes"):
        keep_freed_host_memory(0)
    with pytest.raises(ValueError, match="threshold_bytes"):
        keep_freed_host_memory(1 << 31)
