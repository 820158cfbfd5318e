#!/usr/bin/env python
"""Train a SAC agent (sac / drq / svea / ac / cg2a) on a DMC-GB task.

    python python/train.py --task finger_spin                 # the paper's configuration (cg2a)
    python python/train.py --task cartpole_balance --preset cpu --algorithm drq
    python python/train.py --resume --run_dir runs/...        # continue a killed run

Every field of cg2a_ext.rl.config.TrainConfig is an option; see --help.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path




def build_and_train(argv=None) -> Path:
    from cg2a_ext.rl.config import ConfigError, check_task, config_from_args

    try:
        cfg = config_from_args(argv, prog="train.py")
        check_task(cfg)
    except ConfigError as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        raise SystemExit(2)

    import torch

    from cg2a_ext.rl.agent import make_agent
    from cg2a_ext.rl.checkpoint import CheckpointError, latest_checkpoint
    from cg2a_ext.rl.envs import make_env
    from cg2a_ext.rl.evaluation import make_eval_envs
    from cg2a_ext.rl.host_memory import keep_freed_host_memory
    from cg2a_ext.rl.replay import FrameReplayBuffer
    from cg2a_ext.rl.run_logging import Progress, RunLogger
    from cg2a_ext.rl.seeding import SeedStreams
    from cg2a_ext.rl.trainer import Trainer

    # run folder (and the checkpoint to resume from, checked before any work)
    ckpt = None
    if cfg.resume:
        run_dir = Path(cfg.run_dir)
        try:
            ckpt = latest_checkpoint(run_dir)
        except CheckpointError as e:
            print(f"train.py: error: --resume: {e}", file=sys.stderr)
            raise SystemExit(2)
    else:
        run_dir = Path(cfg.run_dir) if cfg.run_dir else Path(cfg.runs_root) / cfg.task / cfg.algorithm / \
            f"seed{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        if (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir()):
            print(f"train.py: error: {run_dir} already holds checkpoints; use --resume or another --run_dir",
                  file=sys.stderr)
            raise SystemExit(2)
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.run_dir = str(run_dir)
        cfg.save(run_dir / "config.json")

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    if cfg.keep_freed_host_memory:
        keep_freed_host_memory()
    device = torch.device("cuda" if (cfg.device == "auto" and torch.cuda.is_available()) else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    seeds = SeedStreams(cfg.seed)
    torch.manual_seed(seeds.integer("torch"))   # network initialisation and the policy's sampling noise

    env = make_env(cfg.task, mode="train", seed=seeds.integer("train_env", bits=31), image_size=cfg.image_size, frame_stack=cfg.frame_stack,
                   action_repeat=cfg.action_repeat, episode_length=cfg.episode_length,
                   data_dir=cfg.data_dir or None)
    obs_shape = env.observation_space.shape
    action_dim = env.action_space.shape[0]
    agent = make_agent(obs_shape, action_dim, cfg, device=device, seeds=seeds)
    replay = FrameReplayBuffer(obs_shape, action_dim, cfg.capacity, frame_stack=cfg.frame_stack,
                               episode_steps=max(1, cfg.episode_length // cfg.action_repeat),
                               seed=seeds.sequence("replay"))
    eval_envs = make_eval_envs(cfg, cfg.eval_modes) if cfg.eval_freq > 0 else {}
    logger = None
    progress = None
    try:
        trainer = Trainer(cfg, env, agent, replay, None, run_dir, eval_envs)
        if ckpt is not None:
            trainer.restore(ckpt)
        logger = RunLogger(run_dir, tensorboard=cfg.tensorboard, resume_step=trainer.step if ckpt else None)
        trainer.logger = logger
        progress = Progress(cfg.train_steps, initial=trainer.step, enabled=cfg.progress,
                            desc=f"{cfg.task}/{cfg.algorithm}")
        trainer.progress = progress
        progress.write(f"run folder: {run_dir}  device: {device}  K={agent.algorithm.K}  "
                       f"{'resumed at step ' + str(trainer.step) if ckpt else 'new run'}")
        final = trainer.train()
        progress.write("final evaluation: " + ", ".join(f"{m}={v:.1f}" for m, v in final.items()))
    finally:
        if progress is not None:
            progress.close()
        if logger is not None:
            logger.close()
        env.close()
        for e in eval_envs.values():
            e.close()
    return run_dir


if __name__ == "__main__":
    build_and_train()
