"""Values an agent update copies back to the host, by call site, and the ops it dispatches, on any device
(a CPU is enough).

    python -m cg2a_ext.rl.bench.host_reads [--preset cpu] [--algorithms drq cg2a ...] [--device cpu]
                                        [--grad_method loop|vmap|split] [--batch_size N]

Every ``.item()``, ``bool(tensor)``, ``nonzero`` and the like reaches the dispatcher as one of a few ops
(``_local_scalar_dense``, ``nonzero``, ``is_nonzero``); on a GPU each one makes the host wait for every
kernel queued before it. The probe counts them over two updates (the actor, temperature, target and
auxiliary steps run on the second) after two warm-up updates, and names the line of this package that
asked. On a CPU the same count shows what a GPU run would wait for, except reads of CPU tensors a GPU
run keeps on the host as well (draws from CPU generators); the call sites tell them apart.

The ops column counts every op the update dispatches except views and allocations (which launch no
kernel): on a GPU each is about one kernel launch, so it tracks the launches of a CUDA profile
(multi-tensor ops such as fused Adam decompose into per-tensor ops on a CPU, so there it overcounts).
"""
from __future__ import annotations

import argparse
import collections
import traceback

import torch
from torch.utils._python_dispatch import TorchDispatchMode

READ_BACKS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default,
              torch.ops.aten.is_nonzero.default}


# Ops that launch no kernel: views, metadata and allocations.
NO_KERNEL = {"view", "reshape", "_reshape_alias", "unsqueeze", "squeeze", "permute", "transpose", "t", "expand",
             "select", "slice", "as_strided", "detach", "alias", "_unsafe_view", "split", "unbind", "chunk",
             "narrow", "view_as", "flatten", "unflatten", "lift_fresh", "empty", "empty_like", "empty_strided",
             "new_empty", "new_empty_strided", "split_with_sizes", "expand_as", "_local_scalar_dense"}


class HostReadBacks(TorchDispatchMode):
    """Counts the ops that copy a tensor's value to the host, by the innermost call site in ``cg2a_ext``
    (``sites``), and the ops that launch kernels (``kernel_ops``)."""

    def __init__(self) -> None:
        super().__init__()
        self.sites: collections.Counter[str] = collections.Counter()
        self.kernel_ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in READ_BACKS:
            ours = [f for f in traceback.extract_stack() if "cg2a_ext" in f.filename and f.filename != __file__]
            self.sites[f"{ours[-1].filename.split('cg2a_ext')[-1]}:{ours[-1].lineno}" if ours else "?"] += 1
        if func.overloadpacket.__name__ not in NO_KERNEL:
            self.kernel_ops += 1
        return func(*args, **(kwargs or {}))


def update_probe(preset: str, algorithm: str, device: str = "cpu", grad_method: str | None = None,
                 batch_size: int | None = None) -> HostReadBacks:
    """The probe over two updates of ``algorithm`` at ``preset`` (auxiliary step on each), after two warm-up
    updates; ``grad_method`` fixes per_group_grads' method (default: what "auto" picks)."""
    from cg2a_ext.rl.bench.agent import _agent_and_replay, _cfg

    extra = {"batch_size": batch_size} if batch_size else {}
    cfg = _cfg(preset, algorithm=algorithm, device=device, aux_update_freq=1, image_bank="", **extra)
    obs_shape = (3 * cfg.frame_stack, cfg.image_size, cfg.image_size)
    agent, replay = _agent_and_replay(cfg, obs_shape, 1, torch.device(device))
    if grad_method and hasattr(agent.algorithm, "grad_method"):
        agent.algorithm.grad_method = grad_method
    agent.update(replay)
    agent.update(replay)
    with HostReadBacks() as probe:
        agent.update(replay)
        agent.update(replay)
    return probe


def main() -> None:
    from cg2a_ext.rl import algorithms

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu", choices=["cpu", "paper"])
    # every registered algorithm but sac, whose update is drq's without the shift
    parser.add_argument("--algorithms", nargs="+", default=[n for n in algorithms.NAMES if n != "sac"],
                        choices=algorithms.NAMES)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--grad_method", choices=["loop", "vmap", "split"], default=None,
                        help="per_group_grads' method for ac and cg2a (default: what auto picks)")
    parser.add_argument("--batch_size", type=int, default=None, help="(op counts do not depend on it)")
    args = parser.parse_args()
    print(f"{args.preset} preset, {args.device}, two updates with an auxiliary step on each")
    print("| algorithm | read-backs | call sites | kernel-launching ops |")
    print("|---|---:|---|---:|")
    for algorithm in args.algorithms:
        probe = update_probe(args.preset, algorithm, args.device, args.grad_method, args.batch_size)
        where = ", ".join(f"`{site}` x{n}" for site, n in probe.sites.most_common()) or "-"
        print(f"| {algorithm} | {sum(probe.sites.values())} | {where} | {probe.kernel_ops} |", flush=True)


if __name__ == "__main__":
    main()
