"""The captured update on a GPU (``--cuda_graph``): the capture self-check per algorithm, the update's time as
graphs and eagerly, and end-to-end agent steps/s with the graph on and off.

    python -m cg2a_ext.rl.bench.graph [--preset paper] [--algorithms drq svea ac cg2a] [--speed drq cg2a]
                                      [--updates 50] [--steps 300]

Exit status 1 when a self-check fails or a capture raises (the table says which and why); 2 without CUDA.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

CHECKED = ("drq", "svea", "ac", "cg2a")
SPEED = ("drq", "cg2a")


def capture_check(preset: str, algorithm: str, updates: int) -> dict:
    """Build the agent with ``--cuda_graph on``, run updates until the graphs are captured and checked, then
    time ``updates`` updates replayed and ``updates`` eager ones (the same agent, the graph set aside)."""
    from cg2a_ext.bench.timing import sync
    from cg2a_ext.rl.bench.agent import _agent_and_replay, _cfg
    from cg2a_ext.rl.core.agent.graph import GraphCheckError

    cfg = _cfg(preset, algorithm=algorithm, cuda_graph="on", device="cuda", image_bank="")
    obs_shape = (3 * cfg.frame_stack, cfg.image_size, cfg.image_size)
    device = torch.device("cuda")
    agent, replay = _agent_and_replay(cfg, obs_shape, 1, device)
    lines: list[str] = []
    agent.report = lines.append
    row = {"algorithm": algorithm, "check": "", "graphs": 0, "eager_ms": float("nan"), "graph_ms": float("nan")}
    try:
        for _ in range(20):
            agent.update(replay)
            if agent.graph.status != "warming up":
                break
    except (GraphCheckError, RuntimeError) as e:
        row["check"] = f"FAILED: {e}"
        return row
    row["check"] = "passed" if agent.graph.status == "graph" else f"FAILED: {agent.graph.status}"
    row["graphs"] = len(agent.graph.runners)
    row["line"] = lines[-1] if lines else ""

    def timed(n: int) -> float:
        sync(device)
        t = time.perf_counter()
        for _ in range(n):
            agent.update(replay)
        sync(device)
        return (time.perf_counter() - t) / n * 1e3

    if agent.graph.status == "graph":
        row["graph_ms"] = timed(updates)
        graph, agent.graph = agent.graph, None        # the same state, updated eagerly
        row["eager_ms"] = timed(updates)
        agent.graph = graph
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="paper", choices=["cpu", "paper"])
    p.add_argument("--algorithms", nargs="*", default=list(CHECKED), help="capture self-check and update times")
    p.add_argument("--speed", nargs="*", default=list(SPEED), help="end-to-end steps/s, graph on and off")
    p.add_argument("--updates", type=int, default=50, help="updates timed per mode")
    p.add_argument("--steps", type=int, default=300, help="agent steps timed per end-to-end measurement")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("cg2a_ext.rl.bench.graph: needs a CUDA device (the update is captured only on CUDA)", file=sys.stderr)
        return 2
    failed = False
    print(f"{args.preset} preset, {torch.cuda.get_device_name()}")
    print("| algorithm | self-check | graphs | update ms, eager | update ms, graph | speed-up |")
    print("|---|---|---:|---:|---:|---:|")
    for algorithm in args.algorithms:
        try:
            row = capture_check(args.preset, algorithm, args.updates)
        except Exception as e:      # one algorithm's failure is a row, not the end of the table
            row = {"algorithm": algorithm, "check": f"FAILED: {type(e).__name__}: {e}", "graphs": 0,
                   "eager_ms": float("nan"), "graph_ms": float("nan")}
        failed |= row["check"] != "passed"
        speedup = row["eager_ms"] / row["graph_ms"]
        print(f"| {algorithm} | {row['check']} | {row['graphs']} | {row['eager_ms']:.2f} | {row['graph_ms']:.2f} | "
              f"{speedup:.2f}x |", flush=True)
    if args.speed:
        from cg2a_ext.rl.bench.agent import end_to_end_steps

        print(f"\nend-to-end agent steps/s ({args.steps} steps, environment inline)")
        print("| algorithm | graph off | graph on | ratio |")
        print("|---|---:|---:|---:|")
        for algorithm in args.speed:
            off = end_to_end_steps(args.preset, algorithm, args.steps, env_overlap=False, cuda_graph="off")
            on = end_to_end_steps(args.preset, algorithm, args.steps, env_overlap=False, cuda_graph="on")
            print(f"| {algorithm} | {off:.1f} | {on:.1f} | {on / off:.2f}x |", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
