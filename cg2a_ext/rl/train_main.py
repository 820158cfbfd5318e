"""The training command (``cg2a-train``, ``python python/train.py``): options to a finished run folder.

    cg2a-train --task finger_spin                        # the paper's configuration on CUDA, else the cpu preset
    cg2a-train --task cartpole_balance --algorithm drq --preset cpu
    cg2a-train --resume --run_dir runs/...               # continue a stopped run

Order of work: parse and check every option and every data input (DMC-GB data, overlay images)
before any run folder exists; open the run folder (lock; a new run refuses an earlier run's files
unless --overwrite; a resume loads the newest intact checkpoint and truncates the logs to it);
build the environments and the agent; measure this machine's speed and say what the run will do
and for how long (also written to plan.json); train. Ctrl-C or SIGTERM stops with a checkpoint and
prints the command that resumes.
"""
from __future__ import annotations

import errno
import math
import os
import shlex
import sys
import time
from pathlib import Path


class InputError(ValueError):
    """A data input (DMC-GB data folder, overlay image folder) is missing or unreadable."""


def check_run_options(cfg) -> None:
    """Checks of the run / schedule options that the config does not make itself."""
    from cg2a_ext.rl.config import ConfigError

    if not (cfg.checkpoint_minutes >= 0 and math.isfinite(cfg.checkpoint_minutes)):
        raise ConfigError(f"--checkpoint_minutes must be >= 0, got {cfg.checkpoint_minutes}")
    if cfg.resume and cfg.overwrite:
        raise ConfigError("--overwrite starts a new run: it cannot be combined with --resume")


def check_inputs(cfg) -> None:
    """Every data input of ``cfg``, checked before a run folder is created (InputError naming the problem).

    The DMC-GB data of the evaluation modes (``data_dir`` or CG2A_DMCGB_DATA: folder, colour JSONs,
    each clip's first frame) and the overlay image folder (``image_bank`` or CG2A_OVERLAY_DATA: every
    image it will use is decoded now, at the observation size; the run then reuses these images)."""
    from cg2a_ext.rl.envs.data import check_data_dir, resolve_data_dir
    from cg2a_ext.rl.image_bank import OVERLAY_ENV_VAR, resolve_image_bank

    try:
        modes = [m for m in cfg.eval_modes if m != "train"] if cfg.eval_freq > 0 else []
        if modes:
            check_data_dir(cfg.data_dir or None, modes)
        elif cfg.data_dir:
            resolve_data_dir(cfg.data_dir)
        if cfg.image_bank or os.environ.get(OVERLAY_ENV_VAR, "").strip():
            resolve_image_bank(cfg.image_bank or None).pool(cfg.image_size, cfg.image_size)
    except (OSError, ValueError, RuntimeError) as e:
        raise InputError(str(e)) from None


def measure_rates(cfg, env, obs_shape, action_dim, device):
    """Seconds per seed step, training step and evaluation episode on this machine.

    Steps ``env`` a few times (the run resets it with its own seed later) and times two updates and
    a few actions of a scratch agent on a scratch buffer of random frames, under a forked torch RNG:
    the run's own agent, buffer and random streams are left untouched."""
    import numpy as np
    import torch

    from cg2a_ext.rl.agent import make_agent
    from cg2a_ext.rl.replay import FrameReplayBuffer
    from cg2a_ext.rl.run_logging import Rates
    from cg2a_ext.rl.seeding import SeedStreams

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    zero = np.zeros(action_dim, np.float32)
    env.reset(seed=0)
    n_env = 4
    t = time.perf_counter()
    for _ in range(n_env):
        _, _, terminated, truncated, _ = env.step(zero)
        if terminated or truncated:
            env.reset(seed=0)
    env_s = (time.perf_counter() - t) / n_env

    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        agent = make_agent(obs_shape, action_dim, cfg, device=device, seeds=SeedStreams(cfg.seed))
        rng = np.random.default_rng(0)
        replay = FrameReplayBuffer(obs_shape, action_dim, 64, frame_stack=cfg.frame_stack, episode_steps=64, seed=0)
        frame = lambda: rng.integers(0, 256, obs_shape, dtype=np.uint8)  # noqa: E731
        replay.add_first(frame())
        for _ in range(32):
            replay.add(rng.uniform(-1, 1, action_dim).astype(np.float32), 0.0, frame(), False)
        # warm-up over one whole cycle of the update (the actor, the targets and an auxiliary step run
        # every few updates): lazy initialisations, image pools and torch.compile's first compilations
        # of each part happen here and not in the timed updates
        cycle = max(cfg.actor_update_freq, cfg.critic_target_update_freq, cfg.aux_update_freq, 2)
        for _ in range(cycle):
            agent.update(replay)
        sync()
        n_upd = cycle
        t = time.perf_counter()
        for _ in range(n_upd):
            agent.update(replay)
        sync()
        update_s = (time.perf_counter() - t) / n_upd
        obs = frame()
        agent.act(obs, sample=True)
        n_act = 4
        t = time.perf_counter()
        for _ in range(n_act):
            agent.act(obs, sample=False)
        act_s = (time.perf_counter() - t) / n_act
    episode_steps = math.ceil(cfg.episode_length / cfg.action_repeat)
    return Rates(seed_step=env_s, train_step=env_s + act_s + update_s, eval_episode=episode_steps * (env_s + act_s))


def plan(cfg, device, K: int, run_dir: Path, start_step: int, rates, evaluation_pending: bool) -> dict:
    """What the run will do and how long it should take (printed at start and saved as plan.json)."""
    import torch

    from cg2a_ext.rl.image_bank import image_bank_source
    from cg2a_ext.rl.run_logging import remaining_seconds

    eta = remaining_seconds(cfg, start_step, rates, evaluation_pending)
    return {
        "task": cfg.task, "algorithm": cfg.algorithm, "K": K, "preset": cfg.preset, "device": str(device),
        "cuda_available": torch.cuda.is_available(), "run_dir": str(run_dir), "start_step": start_step,
        "train_steps": cfg.train_steps, "seed_steps": cfg.seed_steps,
        "evaluation": {"every_steps": cfg.eval_freq, "episodes": cfg.eval_episodes, "modes": list(cfg.eval_modes)},
        "checkpoints": {"every_steps": cfg.checkpoint_freq, "every_minutes": cfg.checkpoint_minutes,
                        "at_episode_end": cfg.checkpoint_at_episode_end},
        "measured": {"seed_steps_per_s": 1.0 / rates.seed_step, "train_steps_per_s": 1.0 / rates.train_step,
                     "eval_episode_s": rates.eval_episode},
        # the images every overlay augmentation of this run draws from (procedural: not Places365)
        "overlay_images": image_bank_source(cfg.image_bank or None),
        "estimated_seconds": eta,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def describe(p: dict) -> str:
    from cg2a_ext.rl.run_logging import format_duration

    lines = [f"{p['task']} / {p['algorithm']} (K={p['K']}), preset {p['preset']}, device {p['device']}"]
    if p["preset"] == "cpu" and not p["cuda_available"]:
        lines.append("  no CUDA device: the cpu preset (small images and networks). The paper's configuration "
                     "(--preset paper) needs a GPU.")
    elif p["preset"] == "paper" and p["device"] == "cpu":
        lines.append("  the paper's configuration on a CPU: expect days or weeks (the cpu preset suits a CPU)")
    start, seed = p["start_step"], p["seed_steps"]
    if start == 0:
        lines.append(f"  {p['train_steps']} agent steps: {seed} seed steps (random actions), then one update per step")
    else:
        seeds_left = f"{seed - start} seed steps (random actions), then " if start < seed else ""
        lines.append(f"  agent steps {start} to {p['train_steps']} (resumed): {seeds_left}one update per step")
    ev = p["evaluation"]
    if ev["every_steps"] > 0:
        first = "at step 0, " if start == 0 else ""
        lines.append(f"  evaluation: {ev['episodes']} episodes of {', '.join(ev['modes'])} {first}every "
                     f"{ev['every_steps']} steps and at the end")
    else:
        lines.append("  evaluation: none (--eval_freq 0)")
    ck = p["checkpoints"]
    when = [f"every {ck['every_steps']} steps"] if ck["every_steps"] else []
    when += [f"every {ck['every_minutes']:g} minutes"] if ck["every_minutes"] else []
    lines.append(f"  checkpoints: {' and '.join(when) or 'only at the end'}"
                 f"{' (at the next episode end)' if ck['at_episode_end'] and when else ''}, and on Ctrl-C")
    m = p["measured"]
    lines.append(f"  measured here: {m['seed_steps_per_s']:.3g} seed steps/s, {m['train_steps_per_s']:.3g} "
                 f"training steps/s, {m['eval_episode_s']:.3g} s per evaluation episode")
    lines.append(f"  estimated time: about {format_duration(p['estimated_seconds'])}")
    lines.append(f"  run folder: {p['run_dir']}")
    return "\n".join(lines)


def save_config(cfg, run_dir: Path) -> None:
    """config.json: the run's options (resume and overwrite are instructions to one command, not options
    of the run)."""
    from cg2a_ext.rl import run_dir as rd

    rd.write_json_atomic(run_dir / rd.CONFIG, {**cfg.to_dict(), "resume": False, "overwrite": False})


def _error(prog: str, msg: str, code: int = 2):
    print(f"{prog}: error: {msg}", file=sys.stderr, flush=True)
    return SystemExit(code)


def _resume_hint(command: str, run_dir: Path) -> str:
    return f"{command} --resume --run_dir {shlex.quote(str(run_dir))}"


def _how_to_continue(command: str, run_dir: Path) -> str:
    from cg2a_ext.rl.checkpoint import list_checkpoints

    cks = list_checkpoints(run_dir)
    if not cks:
        return (f"{run_dir} has no checkpoint yet; once this is fixed, start it again with:\n  "
                f"{command} --overwrite --run_dir {shlex.quote(str(run_dir))} <the same options>")
    return (f"{run_dir} keeps its checkpoint {cks[-1][1].name}; once this is fixed, resume with:\n  "
            f"{_resume_hint(command, run_dir)}")


def build_and_train(argv=None, prog: str = "train.py", command: str = "python -m cg2a_ext.rl.train_main") -> Path:
    """Parse ``argv``, check, open the run folder, train; return the run folder.

    Raises SystemExit: 2 for bad options, inputs or folders (nothing created); 1 when a write fails
    (the previous checkpoint kept); 128 + signal number when stopped by Ctrl-C / SIGTERM after a
    checkpoint. ``command`` starts the resume hints (``<command> --resume --run_dir DIR``)."""
    from cg2a_ext.rl import run_dir as rd
    from cg2a_ext.rl.checkpoint import CheckpointError, CheckpointWriteError, list_checkpoints, load_resumable
    from cg2a_ext.rl.config import ConfigError, check_task, config_from_args

    try:
        cfg = config_from_args(argv, prog=prog)
        check_task(cfg)
        check_run_options(cfg)
        check_inputs(cfg)
    except (ConfigError, InputError) as e:
        raise _error(prog, str(e)) from None

    # ---- the run folder (nothing is created above this line)
    try:
        if cfg.resume:
            run_dir = Path(cfg.run_dir)
            lock = rd.open_existing_run(run_dir)
        else:
            run_dir = Path(cfg.run_dir) if cfg.run_dir else rd.default_run_dir(cfg.runs_root, cfg.task,
                                                                                cfg.algorithm, cfg.seed)
            lock = rd.open_new_run(run_dir, overwrite=cfg.overwrite)
    except (rd.RunDirError, OSError) as e:
        raise _error(prog, str(e)) from None

    with lock:
        if cfg.resume:
            finished = rd.read_finished(run_dir)
            if finished is not None:
                if cfg.train_steps <= finished["final_step"]:
                    ev = ", ".join(f"{m}={v:.1f}" for m, v in finished["final_evaluation"].items())
                    print(f"{run_dir} is a finished run (step {finished['final_step']}"
                          f"{', final evaluation: ' + ev if ev else ''}); nothing to do. To train it longer, "
                          "resume with a larger --train_steps.", flush=True)
                    return run_dir
                print(f"extending the finished run {run_dir} from step {finished['final_step']} to "
                      f"{cfg.train_steps}", flush=True)
            if not list_checkpoints(run_dir):      # before building anything
                raise _error(prog, f"--resume: no checkpoint in {run_dir / rd.CHECKPOINTS} (the run stopped before "
                                   "its first one); start it anew with --overwrite")
        else:
            cfg.run_dir = str(run_dir)
            save_config(cfg, run_dir)
        try:
            return _train(cfg, run_dir, prog, command, rd, load_resumable)
        except CheckpointError as e:
            raise _error(prog, f"--resume: {e}") from None
        except CheckpointWriteError as e:
            raise _error(prog, f"{e}. {_how_to_continue(command, run_dir)}", 1) from None
        except KeyboardInterrupt:
            raise _error(prog, f"interrupted without a new checkpoint. {_how_to_continue(command, run_dir)}",
                         130) from None
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                where = e.filename or run_dir
                what = "no space left on" if e.errno != errno.EROFS else "read-only file system at"
                raise _error(prog, f"{what} {where}. {_how_to_continue(command, run_dir)}", 1) from None
            raise


def _train(cfg, run_dir: Path, prog: str, command: str, rd, load_resumable) -> Path:
    import torch

    from cg2a_ext.rl.agent import make_agent
    from cg2a_ext.rl.env_stepper import EnvStepper, resolve_env_overlap
    from cg2a_ext.rl.envs import make_env
    from cg2a_ext.rl.evaluation import make_eval_envs
    from cg2a_ext.rl.host_memory import keep_freed_host_memory
    from cg2a_ext.rl.replay import FrameReplayBuffer, frames_device_for
    from cg2a_ext.rl.run_logging import Progress, Rates, RunLogger
    from cg2a_ext.rl.seeding import SeedStreams
    from cg2a_ext.rl.trainer import Trainer, TrainingStopped

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    if cfg.keep_freed_host_memory:
        keep_freed_host_memory()
    device = torch.device("cuda" if (cfg.device == "auto" and torch.cuda.is_available()) else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    seeds = SeedStreams(cfg.seed)
    torch.manual_seed(seeds.integer("torch"))   # network initialisation and the policy's sampling noise

    env = make_env(cfg.task, mode="train", seed=seeds.integer("train_env", bits=31), image_size=cfg.image_size,
                   frame_stack=cfg.frame_stack, action_repeat=cfg.action_repeat, episode_length=cfg.episode_length,
                   data_dir=cfg.data_dir or None)
    # the env renders on the stepper's thread only (an OpenGL context stays on the thread that made it)
    env = EnvStepper(env, overlap=resolve_env_overlap(cfg.env_overlap, device))
    eval_envs: dict = {}
    logger = progress = None
    try:
        obs_shape = env.env.observation_space.shape
        action_dim = env.env.action_space.shape[0]
        agent = make_agent(obs_shape, action_dim, cfg, device=device, seeds=seeds)
        episode_steps = max(1, cfg.episode_length // cfg.action_repeat)
        # after make_agent, so the networks count against the free GPU memory
        frames_device = frames_device_for(cfg.replay_device, device, obs_shape, cfg.capacity, cfg.frame_stack,
                                          episode_steps)
        replay = FrameReplayBuffer(obs_shape, action_dim, cfg.capacity, frame_stack=cfg.frame_stack,
                                   episode_steps=episode_steps, seed=seeds.sequence("replay"),
                                   frames_device=frames_device)
        eval_envs = make_eval_envs(cfg, cfg.eval_modes) if cfg.eval_freq > 0 else {}

        state = None
        if cfg.resume:
            state, path = load_resumable(run_dir, replay, map_location=device,
                                         warn=lambda m: print(m, file=sys.stderr, flush=True))
            if int(state["step"]) > cfg.train_steps:
                raise _error(prog, f"--resume: the run's checkpoint is at step {state['step']}, past --train_steps "
                                   f"{cfg.train_steps}")
            rd.truncate_media(run_dir, int(state["step"]))
            (run_dir / rd.FINISHED).unlink(missing_ok=True)    # here only when a finished run is extended
            save_config(cfg, run_dir)                           # with the options changed on resume
        start = int(state["step"]) if state else 0
        logger = RunLogger(run_dir, tensorboard=cfg.tensorboard, resume_step=start if state else None)

        print(f"measuring this machine's speed ({cfg.preset} preset on {device}) ...", flush=True)
        rates = measure_rates(cfg, env, obs_shape, action_dim, device)
        pending = (start == 0 and cfg.eval_freq > 0) or bool(state and state.get("evaluate_first"))
        p = plan(cfg, device, agent.algorithm.K, run_dir, start, rates, pending)
        rd.write_json_atomic(run_dir / rd.PLAN, p)
        print(describe(p) + ("\n  resumed from " + str(path) if state else ""), flush=True)

        progress = Progress(cfg, initial=start, enabled=cfg.progress, rates=Rates(**vars(rates)),
                            desc=f"{cfg.task}/{cfg.algorithm}")
        trainer = Trainer(cfg, env, agent, replay, logger, run_dir, eval_envs, progress=progress, resume_state=state)
        try:
            final = trainer.train()
        except TrainingStopped as stop:
            progress.close()
            print(f"stopped at step {stop.step}; checkpoint {stop.path}\nresume with:\n  "
                  f"{_resume_hint(command, run_dir)}", flush=True)
            raise SystemExit(128 + stop.signum) from None
        progress.close()
        if final:
            print("final evaluation: " + ", ".join(f"{m}={v:.1f}" for m, v in final.items()), flush=True)
        print(f"finished: {run_dir}", flush=True)
    finally:
        if progress is not None:
            progress.close()
        if logger is not None:
            logger.close()
        env.close()
        for e in eval_envs.values():
            e.close()
    return run_dir


def _invocation() -> tuple[str, str]:
    """(prog, command) for messages: ``train.py`` / ``python python/train.py`` or ``cg2a-train``."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "cg2a-train"
    name = os.path.basename(argv0)
    if name.endswith(".py") and name != "train_main.py":
        return name, f"python {shlex.quote(argv0)}"
    if name in ("train_main.py", "-m", "-c", "__main__.py"):
        return "train", "python -m cg2a_ext.rl.train_main"
    return name, name


def main(argv=None) -> None:
    """Console entry point: train, exiting cleanly (no traceback) on errors and interruptions."""
    prog, command = _invocation()
    try:
        build_and_train(argv, prog=prog, command=command)
    except KeyboardInterrupt:       # before a run folder was opened
        print(f"\n{prog}: interrupted", file=sys.stderr, flush=True)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
