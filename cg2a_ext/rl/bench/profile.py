"""Where the time of one aggregate call and of one agent update goes (torch.profiler), as tables.

    python -m cg2a_ext.rl.bench.profile [--device cuda] [--presets paper] [--algorithms drq cg2a]

For each case: wall time per call, host time spent inside torch ops and CUDA runtime calls, the
device's kernel time, the number of kernel launches and of host-device synchronisations
(``cudaStreamSynchronize``, ``cudaDeviceSynchronize``, blocking ``cudaMemcpy``), then the ops that
take the most host time and the kernels that take the most device time. A case whose kernel time
is far below its wall time is host-bound: fewer launches (fusion, CUDA graphs) is what helps.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from cg2a_ext.bench.timing import sync

SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")


def summarise(prof, calls: int, wall: float, top: int = 12) -> str:
    events = prof.key_averages()
    kernel_us = sum(e.self_device_time_total for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC",
                                                         "cuLaunchKernelEx"))
    syncs = sum(e.count for e in events if e.key in SYNC_CALLS)
    lines = [f"  wall {wall / calls * 1e3:.3f} ms per call; kernels {kernel_us / calls / 1e3:.3f} ms per call "
             f"({100 * kernel_us / max(wall * 1e6, 1e-9):.0f} % of wall); {launches / calls:.0f} launches and "
             f"{syncs / calls:.1f} synchronising calls per call"]
    host = sorted((e for e in events if e.device_type != torch.autograd.DeviceType.CUDA),
                  key=lambda e: -e.self_cpu_time_total)[:top]
    lines.append("  host (self) | calls/call | op")
    lines += [f"  {e.self_cpu_time_total / calls / 1e3:9.3f} ms | {e.count / calls:6.1f} | {e.key[:90]}" for e in host]
    kernels = sorted((e for e in events if e.device_type == torch.autograd.DeviceType.CUDA),
                     key=lambda e: -e.self_device_time_total)[:top]
    if kernels:
        lines.append("  device      | calls/call | kernel")
        lines += [f"  {e.self_device_time_total / calls / 1e3:9.3f} ms | {e.count / calls:6.1f} | {e.key[:90]}"
                  for e in kernels]
    return "\n".join(lines)


def profiled(fn, device: torch.device, calls: int) -> str:
    fn()
    fn()
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        sync(device)
        wall = time.perf_counter() - start
    return summarise(prof, calls, wall)


def aggregate_cases(device: torch.device) -> None:
    from cg2a_ext import ops

    for p, tensors in ((10_000, 24), (100_000, 24), (10_000_000, 1), (10_000_000, 24)):
        gen = torch.Generator().manual_seed(0)
        sizes = [p // tensors + (1 if i < p % tensors else 0) for i in range(tensors)]
        grads = [torch.randn(4, n, generator=gen).to(device) for n in sizes]
        out = [torch.empty(n, device=device) for n in sizes]
        print(f"aggregate P={p:.0e} K=4 {tensors} tensors ({device.type}, out=, nonfinite='zero')", flush=True)
        print(profiled(lambda: ops.aggregate(grads, 0.25, out=out, nonfinite="zero"), device, 20), flush=True)


def update_cases(device: torch.device, presets: list[str], algorithms: list[str]) -> None:
    from cg2a_ext.rl.bench.agent import _agent_and_replay, _cfg

    for preset in presets:
        for algorithm in algorithms:
            cfg = _cfg(preset, algorithm=algorithm, device=device.type)
            agent, rb = _agent_and_replay(cfg, (3 * cfg.frame_stack, cfg.image_size, cfg.image_size), 1, device)
            print(f"update {algorithm} [{preset}, {device.type}] (two updates per call: the actor runs every 2nd)",
                  flush=True)
            print(profiled(lambda: (agent.update(rb), agent.update(rb)), device, 5), flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    p.add_argument("--presets", nargs="+", default=["paper"])
    p.add_argument("--algorithms", nargs="+", default=["drq", "cg2a"])
    p.add_argument("--skip_aggregate", action="store_true")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if not args.skip_aggregate:
        aggregate_cases(device)
    update_cases(device, args.presets, args.algorithms)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
