"""Values an agent update copies back to the host, by call site, on any device (a CPU is enough).

    python -m cg2a_ext.bench.host_reads [--preset cpu] [--algorithms drq cg2a ...] [--device cpu]

Every ``.item()``, ``bool(tensor)``, ``nonzero`` and the like reaches the dispatcher as one of a few ops
(``_local_scalar_dense``, ``nonzero``, ``is_nonzero``); on a GPU each one makes the host wait for every
kernel queued before it. The probe counts them over two updates (the actor, temperature, target and
auxiliary steps run on the second) after two warm-up updates, and names the line of this package that
asked. On a CPU the same count shows what a GPU run would wait for, except reads of CPU tensors a GPU
run keeps on the host as well (draws from CPU generators); the call sites tell them apart.
"""
from __future__ import annotations

import argparse
import collections
import traceback

import torch
from torch.utils._python_dispatch import TorchDispatchMode

READ_BACKS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default,
              torch.ops.aten.is_nonzero.default}


class HostReadBacks(TorchDispatchMode):
    """Counts the ops that copy a tensor's value to the host, by the innermost call site in ``cg2a_ext``."""

    def __init__(self) -> None:
        super().__init__()
        self.sites: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in READ_BACKS:
            ours = [f for f in traceback.extract_stack() if "cg2a_ext" in f.filename and f.filename != __file__]
            self.sites[f"{ours[-1].filename.split('cg2a_ext')[-1]}:{ours[-1].lineno}" if ours else "?"] += 1
        return func(*args, **(kwargs or {}))


def update_read_backs(preset: str, algorithm: str, device: str = "cpu") -> collections.Counter[str]:
    """Read-backs by call site over two updates of ``algorithm`` at ``preset`` (auxiliary step on each)."""
    from cg2a_ext.bench.agent import _agent_and_replay, _cfg

    cfg = _cfg(preset, algorithm=algorithm, device=device, aux_update_freq=1, image_bank="")
    obs_shape = (3 * cfg.frame_stack, cfg.image_size, cfg.image_size)
    agent, replay = _agent_and_replay(cfg, obs_shape, 1, torch.device(device))
    agent.update(replay)
    agent.update(replay)
    with HostReadBacks() as probe:
        agent.update(replay)
        agent.update(replay)
    return probe.sites


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu", choices=["cpu", "paper"])
    parser.add_argument("--algorithms", nargs="+", default=["drq", "svea", "ac", "cg2a", "soda", "sgqn", "smg"])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"| algorithm | read-backs per two updates ({args.preset} preset, {args.device}) | call sites |")
    print("|---|---:|---|")
    for algorithm in args.algorithms:
        sites = update_read_backs(args.preset, algorithm, args.device)
        where = ", ".join(f"`{site}` x{n}" for site, n in sites.most_common()) or "-"
        print(f"| {algorithm} | {sum(sites.values())} | {where} |", flush=True)


if __name__ == "__main__":
    main()
