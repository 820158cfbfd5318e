"""The training loop: acting, replay, updates, logging, evaluation, checkpoints, resume.

Resume semantics: a checkpoint is taken after agent step N (networks,
optimizers, temperature, update counters, every RNG, the replay buffer). A
resumed run restores all of it and continues at step N with a fresh episode
(the episode in progress when the checkpoint was written is not continued;
its transitions up to step N are in the buffer). Every training episode is
reset with a seed from the run's "episodes" stream indexed by the episode, so a
resumed run meets the same episode seeds as an uninterrupted one.

State has one owner: the agent saves its networks, optimizers and algorithm (with
its generators), the replay buffer its arrays and sampler RNG; the trainer saves
only its own action RNG and the process-global torch / Python RNGs.
"""
from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import torch

from .checkpoint import latest_checkpoint, load_checkpoint, load_replay, save_checkpoint
from .evaluation import evaluate_modes
from .seeding import SeedStreams


class Trainer:
    def __init__(self, cfg, env, agent, replay, logger, run_dir, eval_envs: dict | None = None, progress=None):
        self.cfg = cfg
        self.env = env
        self.agent = agent
        self.replay = replay
        self.logger = logger
        self.run_dir = Path(run_dir)
        self.eval_envs = eval_envs or {}
        self.progress = progress
        self.seeds = SeedStreams(cfg.seed)
        self.rng = self.seeds.numpy("seed_actions")   # uniform actions of the seed steps
        self.step = 0
        self.episode = 0
        self.last_eval: dict = {}
        self.last_return = float("nan")
        self._last_ckpt_step = -1

    # ------------------------------------------------------------------ state
    def rng_state(self) -> dict:
        st = {"torch": torch.get_rng_state(), "numpy": self.rng.bit_generator.state,
              "python": random.getstate()}
        if torch.cuda.is_available():
            st["cuda"] = torch.cuda.get_rng_state_all()
        return st

    def set_rng_state(self, st: dict) -> None:
        torch.set_rng_state(st["torch"].cpu())
        self.rng.bit_generator.state = st["numpy"]
        py = st["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        if "cuda" in st and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in st["cuda"]])

    def checkpoint(self) -> Path:
        state = {"agent": self.agent.state_dict(), "rng": self.rng_state(), "episode": self.episode,
                 "config": self.cfg.to_dict(), "last_return": self.last_return}
        path = save_checkpoint(self.run_dir, self.step, state, self.replay if self.cfg.save_buffer else None)
        self._last_ckpt_step = self.step
        return path

    def restore(self, path=None) -> int:
        path = Path(path) if path else latest_checkpoint(self.run_dir)
        state = load_checkpoint(path, map_location=self.agent.device)
        self.agent.load_state_dict(state["agent"])
        if not load_replay(state, path, self.replay):
            raise RuntimeError(f"checkpoint {path} has no replay buffer (run with --save_buffer to resume)")
        self.set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.episode = int(state["episode"])
        self.last_return = float(state.get("last_return", float("nan")))
        self._last_ckpt_step = self.step
        return self.step

    # ------------------------------------------------------------------ loop
    def evaluate(self) -> dict:
        if not self.eval_envs:
            return {}
        video_dir = self.run_dir / "videos" if self.cfg.save_video else None
        res = evaluate_modes(self.agent, self.eval_envs, self.cfg.eval_episodes, video_dir=video_dir,
                             tag=f"step{self.step:09d}_", seeds=self.seeds, stream="evaluation", index=self.step)
        for mode, r in res.items():
            self.logger.log("eval", {"step": self.step, "mode": mode, "mean_return": r["mean"],
                                     "std_return": r["std"], "episodes": r["episodes"],
                                     "data_source": r["data_source"],
                                     "returns": ";".join(f"{x:.2f}" for x in r["returns"])})
        self.last_eval = {m: r["mean"] for m, r in res.items()}
        if self.progress is not None:
            self.progress.set(**{f"eval_{m}": v for m, v in self.last_eval.items()})
        return res

    def _reset(self):
        obs, _ = self.env.reset(seed=self.seeds.integer("episodes", self.episode, bits=31))
        self.replay.add_first(obs)
        return obs

    def train(self) -> dict:
        cfg = self.cfg
        agent = self.agent
        obs = self._reset()
        ep_return, ep_len = 0.0, 0
        acc: dict[str, list] = {}
        t_start = time.monotonic()
        t_log, step_log = t_start, self.step
        if self.step == 0 and cfg.eval_freq > 0:
            self.evaluate()
        while self.step < cfg.train_steps:
            if self.step < cfg.seed_steps:
                action = self.rng.uniform(-1.0, 1.0, size=agent.action_dim).astype(np.float32)
            else:
                action = agent.act(obs, sample=True)
            if self.step >= cfg.seed_steps and len(self.replay) > 0:
                diag = agent.algorithm.gradient_diagnostics and (self.step + 1) % cfg.log_freq == 0
                m = agent.update(self.replay, diagnostics=diag)
                d = {k[5:]: v for k, v in m.items() if k.startswith("diag/")}
                if d:
                    self.logger.log("diagnostics", {"step": self.step + 1, **d})
                for k, v in m.items():
                    if not k.startswith("diag/"):
                        acc.setdefault(k, []).append(v)
            next_obs, reward, terminated, truncated, _ = self.env.step(action)
            self.replay.add(action, reward, next_obs, terminated)
            ep_return += float(reward)
            ep_len += 1
            obs = next_obs
            self.step += 1
            if terminated or truncated:
                self.last_return = ep_return
                self.logger.log("train", {"step": self.step, "episode": self.episode, "episode_return": ep_return,
                                          "episode_length": ep_len, "elapsed_s": time.monotonic() - t_start})
                if self.progress is not None:
                    self.progress.set(ret=ep_return)
                self.episode += 1
                ep_return, ep_len = 0.0, 0
                obs = self._reset()
            if self.step % cfg.log_freq == 0:
                now = time.monotonic()
                row = {"step": self.step, "steps_per_s": (self.step - step_log) / max(now - t_log, 1e-9),
                       "buffer_size": len(self.replay), "episode": self.episode}
                for k, vs in acc.items():
                    row[k] = float(np.mean([float(v) for v in vs]))
                self.logger.log("update", row)
                acc.clear()
                t_log, step_log = now, self.step
            if cfg.eval_freq > 0 and self.step % cfg.eval_freq == 0 and self.step < cfg.train_steps:
                self.evaluate()
            if cfg.checkpoint_freq > 0 and self.step % cfg.checkpoint_freq == 0 and self.step < cfg.train_steps:
                self.checkpoint()
                self.logger.flush()
            if self.progress is not None:
                self.progress.update(1)
        final = self.evaluate() if cfg.eval_freq > 0 or self.eval_envs else {}
        if self._last_ckpt_step != self.step:
            self.checkpoint()
        self.logger.flush()
        return {m: r["mean"] for m, r in final.items()}
