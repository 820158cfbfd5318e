"""The training loop: acting, replay, updates, logging, evaluation, checkpoints, resume and stopping.

Checkpoints. A checkpoint is taken after agent step N and holds everything the loop needs to go
on: networks, optimizers, temperature, update counters, every RNG, the replay buffer and the
logging accumulator's partial means (so the first update row after a resume averages the same
updates as without the stop). Periodic checkpoints fall due every ``checkpoint_freq`` steps and
every ``checkpoint_minutes`` of wall time, and are taken at the first episode end after that
(``checkpoint_at_episode_end``, the default; ``run.checkpoint.CheckpointSchedule`` keeps that timing). Every
training episode is reset with a seed from
the run's "episodes" stream indexed by the episode, so the episode after such a checkpoint starts
the same way whether or not the run stopped there: a resumed run is bit-identical to an
uninterrupted one (networks, optimizer states and every CSV row except timings).

Stopping. Ctrl-C (SIGINT) or SIGTERM asks the loop to stop: it finishes the current step (or the
current evaluation episode), writes a checkpoint and raises :class:`TrainingStopped`. That
checkpoint is usually taken mid-episode: the resumed run restarts the interrupted episode from its
seed (the transitions it had stored stay in the buffer), so it continues correctly but not
bit-identically to an uninterrupted run. The same holds for checkpoints taken with
``--no-checkpoint_at_episode_end``. A stop during an evaluation is resumed by running that
evaluation again. A second Ctrl-C quits at once, without a checkpoint.

A run that reaches ``train_steps`` runs its final evaluation, writes a last checkpoint (holding
that evaluation, so resuming it never evaluates twice) and ``finished.json``.

State has one owner: the agent saves its networks, optimizers and algorithm (with its
generators), the replay buffer its arrays and sampler RNG (``checkpoint.load_resumable`` restores
it); the trainer saves only its own action RNG, the process-global torch / Python RNGs, its
counters and the logging accumulator.
"""
from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch

from cg2a_ext.rl.run.checkpoint import CheckpointSchedule, save_checkpoint
from cg2a_ext.rl.core.env_stepper import EnvStepper, resolve_env_overlap
from cg2a_ext.rl.core.evaluation import evaluate_modes
from cg2a_ext.rl.core.evaluation_images import save_evaluation_images
from cg2a_ext.rl.run.folder import IMAGES, VIDEOS, write_finished
from cg2a_ext.rl.run.logs import Progress
from cg2a_ext.rl.run.seeding import SeedStreams



def window_means(values: dict[str, list]) -> dict[str, float]:
    """The mean of each metric over the updates of one log window (float64). Tensor metrics are averaged where
    they live and read back in one copy per device, not one per update and metric (each would wait for the GPU)."""
    means: dict[str, float] = {}
    on_device: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
    for key, vs in values.items():
        if vs and all(isinstance(v, torch.Tensor) for v in vs) and len({v.device for v in vs}) == 1:
            mean = torch.stack([v.detach().reshape(()).double() for v in vs]).mean()
            on_device.setdefault(vs[0].device, []).append((key, mean))
        else:
            means[key] = float(np.mean([float(v) for v in vs]))
    for pairs in on_device.values():
        means.update(zip([k for k, _ in pairs], torch.stack([m for _, m in pairs]).tolist()))
    return {key: means[key] for key in values}      # the metrics' own order


# 2: networks scale pixels x/255 (DMC-GB) and overlays draw fresh crops; format 1 (no "format" key) scaled
# x/255 - 0.5, so its networks would see shifted inputs if resumed by this code.
CHECKPOINT_FORMAT = 2
PREVIOUS_FORMAT_VERSION = "3bcb0b2"     # the last commit that writes and resumes format 1


class TrainingStopped(Exception):
    """The run was stopped by a signal after writing a checkpoint (``path``) at ``step``."""

    def __init__(self, signum: int, step: int, path: Path) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; checkpoint {path}")
        self.signum, self.step, self.path = signum, step, path


class _EvaluationStopped(Exception):
    pass


class _StopSignals:
    """While active (main thread only), SIGINT / SIGTERM set ``signum`` instead of killing the process;
    a second one acts as usual (KeyboardInterrupt / termination)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            self._restore()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signum)
            return
        self.signum = signum
        try:   # os.write: safe inside a signal handler, unlike print
            os.write(2, f"\n{signal.Signals(signum).name}: stopping after the current step and writing a "
                        "checkpoint (Ctrl-C again quits without one)\n".encode())
        except OSError:
            pass

    def _restore(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}

    def __enter__(self) -> "_StopSignals":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()


class Trainer:
    """Train ``agent`` in ``env`` into ``run_dir`` (see the module doc).

    ``resume_state``: a checkpoint's state (``checkpoint.load_resumable``, which also restored the
    replay buffer); ``logger`` must then have been opened with the checkpoint's step."""

    def __init__(self, cfg, env, agent, replay, logger, run_dir, eval_envs: dict | None = None, progress=None,
                 resume_state: dict | None = None):
        self.cfg = cfg
        # every call to the training env goes through the stepper (its own thread with --env_overlap)
        self.stepper = env if isinstance(env, EnvStepper) else EnvStepper(
            env, overlap=resolve_env_overlap(cfg.env_overlap, agent.device))
        self.env = self.stepper.env
        self.agent = agent
        self.replay = replay
        self.logger = logger
        self.run_dir = Path(run_dir)
        self.eval_envs = eval_envs or {}
        # progress display (phases, rates, ETA); a silent one when none is given
        self.progress = progress if progress is not None else Progress(cfg, enabled=False)
        self.seeds = SeedStreams(cfg.seed)
        self.rng = self.seeds.numpy("seed_actions")   # uniform actions of the seed steps
        self.step = 0
        self.episode = 0
        self.last_eval: dict = {}
        self.last_return = float("nan")
        self.final_evaluation: dict | None = None
        self._log_acc: dict[str, list] = {}
        self._elapsed_before = 0.0
        self._clock_start = time.monotonic()
        self._evaluate_first = False
        self._in_episode = False
        self._last_ckpt_step = -1
        self._last_ckpt_path: Path | None = None
        self.checkpoints = CheckpointSchedule(cfg.checkpoint_freq, cfg.checkpoint_minutes, cfg.checkpoint_at_episode_end)
        self._signals = _StopSignals()
        if resume_state is not None:
            self._load_state(resume_state)

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

    def elapsed(self) -> float:
        """Wall time of the run so far, over all its processes."""
        return self._elapsed_before + time.monotonic() - self._clock_start

    def state_dict(self) -> dict:
        return {"agent": self.agent.state_dict(), "rng": self.rng_state(), "episode": self.episode,
                "config": self.cfg.to_dict(), "last_return": self.last_return, "format": CHECKPOINT_FORMAT,
                "log_accumulator": {k: [float(v) for v in vs] for k, vs in self._log_acc.items()},
                "elapsed_s": self.elapsed(), "episode_in_progress": self._in_episode,
                "evaluate_first": self._evaluate_first, "final_evaluation": self.final_evaluation,
                "env": self.env.rng_state()}

    def _load_state(self, state: dict) -> None:
        self.agent.load_state_dict(state["agent"])
        self.set_rng_state(state["rng"])
        if "env" in state:
            self.env.set_rng_state(state["env"])
        self.step = int(state["step"])
        self.episode = int(state["episode"])
        self.last_return = float(state.get("last_return", float("nan")))
        self._log_acc = {k: list(v) for k, v in state.get("log_accumulator", {}).items()}
        self._elapsed_before = float(state.get("elapsed_s", 0.0))
        self._evaluate_first = bool(state.get("evaluate_first", False))
        final = state.get("final_evaluation")
        # a finished run extended with a larger train_steps evaluates again at its new end
        self.final_evaluation = dict(final) if final is not None and self.step >= self.cfg.train_steps else None
        self._last_ckpt_step = self.step

    def checkpoint(self) -> Path:
        replay = self.replay if self.cfg.save_buffer else None
        path = save_checkpoint(self.run_dir, self.step, self.state_dict(), replay)
        self._last_ckpt_step, self._last_ckpt_path = self.step, path
        self.checkpoints.taken()
        if self.logger is not None:
            self.logger.flush()
        return path

    # ------------------------------------------------------------------ evaluation

    def _on_evaluation_episode(self, mode: str, episode: int, episodes: int) -> None:
        if self._signals.signum is not None:
            raise _EvaluationStopped
        self.progress.phase(f"evaluating {mode} episode {episode + 1}/{episodes}")

    def evaluate(self, final: bool = False) -> dict:
        """Evaluate on ``eval_modes`` (``final``: on ``final_eval_modes``, the zero-shot test at the end)."""
        modes = self.cfg.final_eval_modes if final else self.cfg.eval_modes
        envs = {m: self.eval_envs[m] for m in (modes or self.eval_envs) if m in self.eval_envs}
        if not envs:
            return {}
        t0 = time.monotonic()
        video_dir = self.run_dir / VIDEOS if self.cfg.save_video else None
        res = evaluate_modes(self.agent, envs, self.cfg.eval_episodes, video_dir=video_dir,
                             tag=f"step{self.step:09d}_", seeds=self.seeds, stream="evaluation", index=self.step,
                             progress=self._on_evaluation_episode)
        for mode, r in res.items():
            self.logger.log("eval", {"step": self.step, "mode": mode, "mean_return": r["mean"],
                                     "std_return": r["std"], "episodes": r["episodes"],
                                     "data_source": r["data_source"],
                                     "returns": ";".join(f"{x:.2f}" for x in r["returns"]),
                                     **({"success_rate": r["success_rate"]} if "success_rate" in r else {})})
        save_evaluation_images(self.agent, envs, self.cfg, self.seeds, self.step,
                               self.run_dir / IMAGES)
        self.last_eval = {m: r["mean"] for m, r in res.items()}
        self.progress.set(**{f"eval_{m}": v for m, v in self.last_eval.items()})
        self.progress.evaluation_done(time.monotonic() - t0, sum(r["episodes"] for r in res.values()))
        return res

    def _evaluate_or_stop(self, final: bool = False) -> dict:
        try:
            res = self.evaluate(final)
        except _EvaluationStopped:
            self._evaluate_first = True      # the resumed run repeats this evaluation
            self._stop()
        self._evaluate_first = False
        return res

    def _stop(self) -> None:
        if self._last_ckpt_step == self.step and self._last_ckpt_path is not None and not self._evaluate_first:
            path = self._last_ckpt_path          # written at this very step already
        else:
            path = self.checkpoint()
        raise TrainingStopped(self._signals.signum, self.step, path)

    # ------------------------------------------------------------------ loop
    def _reset(self):
        obs, _ = self.stepper.reset(seed=self.seeds.integer("episodes", self.episode, bits=31))
        self.replay.add_first(obs)
        return obs

    def _log_update_row(self, steps_per_s: float) -> None:
        row = {"step": self.step, "steps_per_s": steps_per_s, "buffer_size": len(self.replay),
               "episode": self.episode}
        row.update(window_means(self._log_acc))
        self.logger.log("update", row)
        self._log_acc.clear()

    def _loop(self) -> None:
        cfg = self.cfg
        agent = self.agent
        obs = None
        ep_return, ep_len = 0.0, 0
        t_log, step_log = time.monotonic(), self.step
        while self.step < cfg.train_steps:
            t0 = time.monotonic()
            training = self.step >= cfg.seed_steps
            self.progress.phase("training" if training else "seed steps")
            if obs is None:
                obs = self._reset()
                ep_return, ep_len = 0.0, 0
            if training:
                action = agent.act(obs, sample=True)
            else:
                action = self.rng.uniform(-1.0, 1.0, size=agent.action_dim).astype(np.float32)
            # env.step(action) runs while the update does (--env_overlap); the update samples before
            # transition t is stored, as in the serial order, so both give the same run
            self.stepper.step_async(action)
            if training and len(self.replay) > 0:
                diag = agent.logs_gradient_diagnostics and (self.step + 1) % cfg.log_freq == 0
                m = agent.update(self.replay, diagnostics=diag)
                if m.diagnostics:
                    self.logger.log("diagnostics", {"step": self.step + 1, **m.diagnostics})
                for k, v in m.items():
                    self._log_acc.setdefault(k, []).append(v)
            next_obs, reward, terminated, truncated, info = self.stepper.wait()
            self.replay.add(action, reward, next_obs, terminated)
            ep_return += float(reward)
            ep_len += 1
            obs = next_obs
            self.step += 1
            self._in_episode = True
            if terminated or truncated:
                self.last_return = ep_return
                row = {"step": self.step, "episode": self.episode, "episode_return": ep_return,
                       "episode_length": ep_len, "elapsed_s": self.elapsed()}
                # only families whose episodes report success (robot) get the column: dmc logs stay as they were
                if "success" in info:
                    row["success"] = int(bool(info["success"]))      # latched by the env: the episode's outcome
                self.logger.log("train", row)
                self.progress.set(ret=ep_return)
                self.episode += 1
                obs = None                      # the next episode starts at the top of the loop
                self._in_episode = False
            if self.step % cfg.log_freq == 0:
                now = time.monotonic()
                self._log_update_row((self.step - step_log) / max(now - t_log, 1e-9))
                t_log, step_log = now, self.step
            self.checkpoints.step_done(self.step)
            step_seconds = time.monotonic() - t0
            if cfg.eval_freq > 0 and self.step % cfg.eval_freq == 0 and self.step < cfg.train_steps:
                self._evaluate_or_stop()
            if self.checkpoints.take_now(self.step, cfg.train_steps, self._in_episode):
                self.checkpoint()
            self.progress.advance(step_seconds, training)
            if self._signals.signum is not None:
                self._stop()

    def train(self) -> dict:
        """Train to ``train_steps``, evaluate, write the last checkpoint and finished.json; return the final
        evaluation ({mode: mean return}). Raises TrainingStopped after a checkpoint when stopped by a signal."""
        cfg = self.cfg
        self._clock_start = time.monotonic()
        self.checkpoints.restart_clock()
        with _StopSignals() as self._signals:
            if self.final_evaluation is None:
                if self.step < cfg.train_steps:
                    if self._evaluate_first or (self.step == 0 and cfg.eval_freq > 0):
                        self._evaluate_or_stop()
                    self._loop()
                final = self._evaluate_or_stop(final=True) if cfg.eval_freq > 0 else {}
                self.final_evaluation = {m: r["mean"] for m, r in final.items()}
                self.checkpoint()
            write_finished(self.run_dir, self.step, self.final_evaluation, self.elapsed())
        if self.logger is not None:
            self.logger.flush()
        return dict(self.final_evaluation)
