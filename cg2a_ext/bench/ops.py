"""Benchmarks of the fused aggregation (issues 2 and 11).

* calls per second at small P (P = 1e4, K = 4, 24 tensors; and P = 1e5 on
  CUDA): the per-call cost of the one-op `aggregate` (written into `out`),
  next to the plain-PyTorch reference; on CUDA also the kernel launches per
  call, counted with the profiler.
* `aggregate`: fused vs the plain-PyTorch reference (eager and under
  torch.compile) for P in {1e5, 1e6, 1e7} float32 elements, K in {2, 4, 8},
  spread over 1, 24 or 200 tensors; achieved bandwidth under the byte model of
  the method doc (section 5: 2*K*P*4 + P*4 bytes, 36 P bytes for K = 4) next
  to the copy bandwidth measured in the same run.

The per-loss gradients on the DMC-GB critic (`per_group_grads` against K
backward passes) build the RL critic, so they are an RL benchmark:
`cg2a_ext.rl.bench.per_loss_grads`. This module imports nothing of cg2a_ext.rl.

Runnable alone: `python -m cg2a_ext.bench.ops [--quick] [--device cpu|cuda]`.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from cg2a_ext import ops, reference
from cg2a_ext.bench.timing import median_time, sync


def copy_bandwidth(device: str, elements: int = 50_000_000, repeats: int = 10) -> float:
    """Device copy bandwidth in GB/s: bytes read + written by dst.copy_(src)."""
    src = torch.randn(elements, device=device)
    dst = torch.empty_like(src)
    seconds = median_time(lambda: dst.copy_(src), device, repeats, warmup=2)
    return 2 * src.numel() * src.element_size() / seconds / 1e9


def split_sizes(total: int, count: int, gen: torch.Generator) -> list[int]:
    """`count` mixed tensor sizes adding up to `total` (like a network's layers)."""
    if count == 1:
        return [total]
    weights = torch.rand(count, generator=gen) ** 3 + 1e-3
    sizes = (weights / weights.sum() * total).long().clamp(min=1)
    sizes[0] += total - int(sizes.sum())
    return [int(s) for s in sizes]


def calls_time(fn: Callable[[], object], device: str, calls: int, batches: int = 7) -> float:
    """Median seconds per call over `batches` back-to-back runs of `calls` calls."""
    for _ in range(max(calls // 10, 3)):
        fn()
    sync(device)
    times = []
    for _ in range(batches):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        sync(device)
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def launches_per_call(fn: Callable[[], object]) -> int:
    """CUDA kernels launched by one call (memcpy and memset not counted)."""
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
               and "memcpy" not in e.name.lower() and "memset" not in e.name.lower())


def bench_small(device: str, quick: bool) -> list[dict]:
    """The per-call cost where the data is small (K = 4, 24 tensors)."""
    rows = []
    gen = torch.Generator().manual_seed(0)
    sizes_p = [10_000] + ([100_000] if device == "cuda" else [])
    calls = 50 if quick else 500
    for p in sizes_p:
        grads = [torch.randn(4, n, generator=gen).to(device) for n in split_sizes(p, 24, gen)]
        out = [torch.empty(g.shape[1:], device=device) for g in grads]
        row = {"suite": "ops", "name": "aggregate per call", "device": device, "P": p, "K": 4, "tensors": 24}
        for policy in ("zero", "raise"):
            seconds = calls_time(lambda: ops.aggregate(grads, 0.25, out=out, nonfinite=policy), device, calls)
            row[f"fused_us_{policy}"] = seconds * 1e6
        row["calls_per_s"] = 1e6 / row["fused_us_zero"]
        row["reference_us"] = calls_time(lambda: reference.aggregate(grads, 0.25, out=out), device,
                                         max(calls // 10, 5)) * 1e6
        if device == "cuda":
            row["launches_per_call"] = launches_per_call(lambda: ops.aggregate(grads, 0.25, out=out, nonfinite="zero"))
        rows.append(row)
    return rows


def bench_aggregate(device: str, quick: bool, compile_reference: bool) -> list[dict]:
    rows = []
    gen = torch.Generator().manual_seed(0)
    sizes_p = [100_000, 1_000_000] if quick else [100_000, 1_000_000, 10_000_000]
    ks = [4] if quick else [2, 4, 8]
    counts = [1, 24] if quick else [1, 24, 200]
    repeats = 5 if quick else 10
    copy_gbs = copy_bandwidth(device)
    rows.append({"suite": "ops", "name": f"copy bandwidth ({device})", "value": copy_gbs, "unit": "GB/s"})
    for p in sizes_p:
        for k in ks:
            for count in counts:
                grads = [torch.randn(k, n, generator=gen).to(device) for n in split_sizes(p, count, gen)]
                out = [torch.empty(g.shape[1:], device=device) for g in grads]
                # The copy bandwidth of the same working set, measured next to
                # the row it is compared with (this machine's load drifts).
                row_copy_gbs = copy_bandwidth(device, k * p + p, repeats)
                fused_s = median_time(lambda: ops.aggregate(grads, 0.25, out=out), device, repeats, warmup=2)
                ref_s = median_time(lambda: reference.aggregate(grads, 0.25, out=out), device, repeats, warmup=2)
                comp_s = float("nan")
                if compile_reference and k == 4 and count <= 24:
                    # A fresh compile per configuration (shapes are static), so
                    # no configuration falls back to eager at the recompile limit.
                    # Only K = 4 and up to 24 tensors: each compile takes a minute
                    # or more on 2 cores (200 tensors: several).
                    torch._dynamo.reset()
                    compiled = torch.compile(reference.aggregate, dynamic=False)
                    comp_s = median_time(lambda: compiled(grads, 0.25, out=out, nonfinite="zero"), device, repeats, warmup=2)
                model_bytes = (2 * k * p + p) * 4
                fused_gbs = model_bytes / fused_s / 1e9
                rows.append({
                    "suite": "ops", "name": "aggregate", "device": device, "P": p, "K": k, "tensors": count,
                    "fused_ms": fused_s * 1e3, "reference_ms": ref_s * 1e3, "compiled_reference_ms": comp_s * 1e3,
                    "speedup_vs_reference": ref_s / fused_s, "speedup_vs_compiled": comp_s / fused_s,
                    "fused_GBps": fused_gbs, "copy_GBps": row_copy_gbs, "fraction_of_copy": fused_gbs / row_copy_gbs,
                })

    return rows


def run(quick: bool = False, devices: list[str] | None = None, compile_reference: bool = True) -> list[dict]:
    devices = devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    rows: list[dict] = []
    for device in devices:
        rows += bench_small(device, quick)
        # The compiled reference takes minutes to compile on 2 cores: not in a smoke run.
        rows += bench_aggregate(device, quick, compile_reference and not quick)
    return rows


def format_table(rows: list[dict]) -> str:
    lines = []
    small = [row for row in rows if row["name"] == "aggregate per call"]
    if small:
        lines.append("| device | P | K | tensors | fused us/call (nonfinite='zero') | fused us/call ('raise') | calls/s | "
                     "reference us/call | launches/call |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for row in small:
            lines.append(
                f"| {row['device']} | {row['P']:.0e} | {row['K']} | {row['tensors']} | {row['fused_us_zero']:.1f} | "
                f"{row['fused_us_raise']:.1f} | {row['calls_per_s']:.0f} | {row['reference_us']:.1f} | "
                f"{row.get('launches_per_call', 'n/a (CPU)')} |")
    for row in rows:
        if row["name"].startswith("copy bandwidth"):
            lines.append(f"\n{row['name']}: {row['value']:.2f} GB/s\n")
            lines.append("| device | P | K | tensors | fused ms | reference ms | compiled ref ms | x ref | x compiled | fused GB/s | copy GB/s | of copy |")
            lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        elif row["name"] == "aggregate":
            lines.append(
                f"| {row['device']} | {row['P']:.0e} | {row['K']} | {row['tensors']} | {row['fused_ms']:.2f} | "
                f"{row['reference_ms']:.2f} | {row['compiled_reference_ms']:.2f} | {row['speedup_vs_reference']:.1f}x | "
                f"{row['speedup_vs_compiled']:.1f}x | {row['fused_GBps']:.2f} | {row['copy_GBps']:.2f} | {row['fraction_of_copy']:.0%} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, fewer repeats")
    parser.add_argument("--device", action="append", choices=["cpu", "cuda"], help="default: cpu, and cuda if present")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile'd reference")
    args = parser.parse_args()
    print(format_table(run(args.quick, args.device, not args.no_compile)))


if __name__ == "__main__":
    main()
