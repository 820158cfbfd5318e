"""What an overlay draw costs: the fresh random-resized-crop-and-flip draw against the old fixed-pool draw.

    PYTHONPATH=. python -m cg2a_ext.rl.bench.overlay [--repeats 30] [--pool_size 2048] [--device cpu]

For the cpu preset (48 px) and the paper preset (84 px), batch 128, 3 stacked frames, one process: the median
milliseconds of ``random_overlay`` (alpha 0.5) as it is now (:meth:`ImageBank.draw`: a choice of pool image,
a crop box and a flip per sample, one ``grid_sample``) and as it was (a uniform choice among pool images
stored at the frame size, no crop, no flip), timed interleaved on the same procedural pool. CG2A's default
combination draws twice per update (overlay and overlay_s); soda, svea, sgqn and smg once. Prints a markdown
table.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def old_fixed_pool_overlay(x: torch.Tensor, pool: torch.Tensor, generator: torch.Generator,
                           alpha: float = 0.5) -> torch.Tensor:
    """The draw before the fix: one whole pool image per sample at the frame size (no crop, no flip)."""
    b, c, h, w = x.shape
    idx = torch.randint(len(pool), (b,), device=x.device, generator=generator)
    imgs = pool[idx].to(x.dtype).mul_(alpha)
    return x.reshape(b, c // 3, 3, h, w).mul(1.0 - alpha).add_(imgs[:, None]).reshape(b, c, h, w)


def _time(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t


def measure(size: int, batch: int, pool_size: int, repeats: int, device: torch.device) -> tuple[float, float]:
    """(old ms, new ms): medians over ``repeats`` interleaved draws."""
    from cg2a_ext.rl.core.augmentations import random_overlay
    from cg2a_ext.rl.core.image_bank import ProceduralImageBank

    bank = ProceduralImageBank(pool_size=pool_size, seed=0)
    old_pool = bank.pool(size, size, device)                 # the old pool: whole images at the frame size
    bank.source(2 * size, device)                            # the new pool, built before timing
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(batch, 9, size, size, generator=g, device=device) * 255
    old = lambda: old_fixed_pool_overlay(x, old_pool, g)               # noqa: E731
    new = lambda: random_overlay(x, generator=g, alpha=0.5, image_bank=bank)   # noqa: E731
    for _ in range(3):
        old(), new()
    olds, news = [], []
    for _ in range(repeats):
        olds.append(_time(old, device))
        news.append(_time(new, device))
    return 1e3 * statistics.median(olds), 1e3 * statistics.median(news)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--pool_size", type=int, default=2048)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads; 0 = torch's default")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    print(f"overlay draw, batch {a.batch}, 3 frames, pool {a.pool_size} procedural images, device {device}, "
          f"{torch.get_num_threads()} threads, median of {a.repeats}\n")
    print("| preset | frame px | old fixed-pool draw (ms) | new crop+flip draw (ms) | ratio new/old | "
          "added per cg2a update (2 draws, ms) |")
    print("|---|---|---|---|---|---|")
    for preset, size in (("cpu", 48), ("paper", 84)):
        old, new = measure(size, a.batch, a.pool_size, a.repeats, device)
        print(f"| {preset} | {size} | {old:.2f} | {new:.2f} | {new / old:.1f}x | {2 * (new - old):.1f} |")


if __name__ == "__main__":
    main()
