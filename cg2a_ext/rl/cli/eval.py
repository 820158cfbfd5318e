"""Zero-shot evaluation of saved agents on their task family's modes (dmc: train and DMC-GB's four test modes).

    cg2a-eval --run DIR [DIR ...] --modes train color_hard video_easy video_hard --episodes 100

Writes ``<out>.json`` and ``<out>.md`` (paper layout: mean ± std over episodes
for one run, over the runs' means when several runs of one task/algorithm are
given; success rates per mode for a family whose episodes report success) and
says which data each mode used.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", nargs="+", required=True, help="run folder(s) (each with config.json and checkpoints/)")
    p.add_argument("--modes", nargs="+", default=None,
                   help="evaluation modes of the runs' task family (default: all of them)")
    p.add_argument("--episodes", type=int, default=100, help="episodes per mode and run")
    p.add_argument("--checkpoint", default="latest", help="'latest' or a checkpoint's file name (step_<N>.pt) inside the run's checkpoints/")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--data_dir", default=None, help="override the runs' DMC-GB data folder")
    p.add_argument("--seed", type=int, default=None, help="evaluation seed (default: the run's seed)")
    p.add_argument("--out", default=None, help="output path prefix (default: <first run>/zero_shot)")
    p.add_argument("--video", action="store_true", help="record the first episode of each mode")
    args = p.parse_args(argv)

    from cg2a_ext.rl.envs import family_of
    from cg2a_ext.rl.run.checkpoint import CheckpointError, latest_checkpoint
    from cg2a_ext.rl.run.folder import CONFIG, DamagedFileError, RunFolder

    if args.episodes <= 0:
        p.error("--episodes must be positive")
    # check every run before any work
    plan = []
    for d in args.run:
        d = Path(d)
        folder = RunFolder(d)
        if not folder.config.is_file():
            p.error(f"{d} is not a run folder (no {CONFIG})")
        try:
            ck = latest_checkpoint(d) if args.checkpoint == "latest" else folder.checkpoints_dir / args.checkpoint
            if not ck.is_file():
                raise CheckpointError(f"checkpoint {ck} does not exist")
        except CheckpointError as e:
            p.error(str(e))
        try:
            cfg = folder.read_config()
            modes = list(dict.fromkeys(args.modes or family_of(cfg.task).modes))
            known = family_of(cfg.task).modes
        except (DamagedFileError, ValueError) as e:
            p.error(str(e))
        unknown = [m for m in modes if m not in known]
        if unknown:
            p.error(f"unknown mode(s) {', '.join(unknown)} for {cfg.task}; choose from {', '.join(known)}")
        plan.append((d, ck, cfg))

    import torch

    from cg2a_ext.rl.core.agent import make_agent
    from cg2a_ext.rl.run.checkpoint import load_checkpoint
    from cg2a_ext.rl.run.seeding import SeedStreams
    from cg2a_ext.rl.core.evaluation import (aggregate_runs, evaluate_modes, make_eval_envs, markdown_table, save_json)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    per_run = []
    for d, ck, cfg in plan:
        if args.data_dir is not None:
            cfg.data_dir = args.data_dir
        envs = make_eval_envs(cfg, modes, stream="zero_shot")
        try:
            env0 = next(iter(envs.values()))
            agent = make_agent(env0.observation_space.shape, env0.action_space.shape[0], cfg, device=device)
            try:
                state = load_checkpoint(ck, map_location=device)
            except CheckpointError as e:
                p.error(str(e))
            agent.load_state_dict(state["agent"], networks_only=True)
            seeds = SeedStreams(cfg.seed if args.seed is None else args.seed)
            res = evaluate_modes(agent, envs, args.episodes, video_dir=RunFolder(d).videos if args.video else None,
                                 tag="zero_shot_", seeds=seeds, stream="zero_shot")
        finally:
            for e in envs.values():
                e.close()
        per_run.append({"run": str(d), "checkpoint": str(ck), "step": int(state["step"]), "task": cfg.task,
                        "algorithm": cfg.algorithm, "seed": cfg.seed, "results": res})
        print(f"{d} (step {state['step']}): " + ", ".join(
            f"{m}={r['mean']:.1f}±{r['std']:.1f}" + (f" success {r['success_rate']:.2f}" if "success_rate" in r else "")
            for m, r in res.items()), flush=True)

    groups: dict = {}
    for r in per_run:
        groups.setdefault((r["task"], r["algorithm"]), []).append(r["results"])
    rows = [{"task": t, "algorithm": a, "aggregate": aggregate_runs(rs, modes)} for (t, a), rs in groups.items()]
    out = Path(args.out) if args.out else RunFolder(args.run[0]).zero_shot
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"modes": modes, "episodes": args.episodes, "runs": per_run, "table": rows}
    save_json(doc, out.with_suffix(".json"))
    md = f"# Zero-shot evaluation ({args.episodes} episodes per mode and run)\n\n" + markdown_table(rows, modes)
    out.with_suffix(".md").write_text(md)
    print(md)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return doc


if __name__ == "__main__":
    main()
