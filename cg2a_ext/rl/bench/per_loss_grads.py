"""Per-loss gradients on the DMC-GB critic: ``per_group_grads`` (each method) against K separate backward passes
and one backward over the concatenated K*B batch (issue 11). K = 4 groups of B observations.

It lives on the RL side because it builds the RL critic; the aggregator's own suite (``cg2a_ext.bench.ops``)
imports nothing of cg2a_ext.rl.

Runnable alone: ``python -m cg2a_ext.rl.bench.per_loss_grads [--quick] [--device cpu|cuda]``, or
``python python/bench.py --suite per_loss_grads``.
"""
from __future__ import annotations

import argparse

import torch

from cg2a_ext import per_group_grads
from cg2a_ext.bench.timing import median_time
from cg2a_ext.rl.core.agent.networks import build_networks


def bench_per_loss_grads(device: str, quick: bool) -> list[dict]:
    """K = 4 groups of B observations through the DMC-GB critic."""
    k, batch = 4, (32 if quick else 128)
    size, filters, layers = (84, 32, 11) if not quick else (64, 16, 4)
    if device == "cpu" and not quick:
        # The full batch of 128 takes seconds per backward on a 2-core CPU;
        # the ratios are what matters, so keep the CPU run short.
        batch = 32
    torch.manual_seed(0)
    _, critic, _ = build_networks((9, size, size), 6, num_conv_layers=layers, num_filters=filters)
    critic = critic.to(device)
    params = [p for p in critic.parameters() if p.requires_grad]
    obs = torch.rand(k, batch, 9, size, size, device=device) * 255
    action = torch.rand(batch, 6, device=device) * 2 - 1
    target = torch.randn(batch, 1, device=device)

    def loss_fn(model, o, a, y):
        q1, q2 = model(o, a)
        return ((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean()

    def batched():
        per_group_grads(critic, loss_fn, (obs,), (action, target), method="vmap")

    def looped():
        per_group_grads(critic, loss_fn, (obs,), (action, target), method="loop")

    def split():
        per_group_grads(critic, loss_fn, (obs,), (action, target), method="split")

    def separate():
        for i in range(k):
            torch.autograd.grad(loss_fn(critic, obs[i], action, target), params)

    def concatenated():
        q1, q2 = critic(obs.flatten(0, 1), action.repeat(k, 1))
        y = target.repeat(k, 1)
        torch.autograd.grad(((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean(), params)

    repeats = 3 if quick else 5
    t_concat = median_time(concatenated, device, repeats, warmup=1)
    t_batched = median_time(batched, device, repeats, warmup=1)
    t_looped = median_time(looped, device, repeats, warmup=1)
    t_split = median_time(split, device, repeats, warmup=1)
    t_separate = median_time(separate, device, repeats, warmup=1)
    config = f"K={k}, B={batch}, {layers} conv x {filters}, {size}x{size}"
    return [{
        "suite": "per_loss_grads", "name": "per-loss gradients", "device": device, "config": config,
        "batched_ms": t_batched * 1e3, "looped_ms": t_looped * 1e3, "separate_ms": t_separate * 1e3,
        "split_ms": t_split * 1e3, "concatenated_ms": t_concat * 1e3,
        "batched_over_concatenated": t_batched / t_concat, "split_over_concatenated": t_split / t_concat,
        "looped_over_concatenated": t_looped / t_concat, "separate_over_concatenated": t_separate / t_concat,
    }]


def run(quick: bool = False, devices: list[str] | None = None) -> list[dict]:
    devices = devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    return [row for device in devices for row in bench_per_loss_grads(device, quick)]


def format_table(rows: list[dict]) -> str:
    return "\n".join(
        f"Per-loss gradients ({row['device']}, {row['config']}): one backward over the concatenated batch "
        f"{row['concatenated_ms']:.0f} ms; per_group_grads(method='vmap') {row['batched_ms']:.0f} ms "
        f"({row['batched_over_concatenated']:.2f}x); per_group_grads(method='loop') {row['looped_ms']:.0f} ms "
        f"({row['looped_over_concatenated']:.2f}x); per_group_grads(method='split') {row['split_ms']:.0f} ms "
        f"({row['split_over_concatenated']:.2f}x); K separate autograd.grad calls {row['separate_ms']:.0f} ms "
        f"({row['separate_over_concatenated']:.2f}x)\n"
        for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small critic (4 conv x 16, 64 px), fewer repeats")
    parser.add_argument("--device", action="append", choices=["cpu", "cuda"], help="default: cpu, and cuda if present")
    args = parser.parse_args()
    from cg2a_ext.rl.run.host_memory import keep_freed_host_memory

    keep_freed_host_memory()    # as train.py does: large K*B batches would otherwise pay page faults
    print(format_table(run(args.quick, args.device)))


if __name__ == "__main__":
    main()
