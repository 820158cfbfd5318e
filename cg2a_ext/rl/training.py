"""``train(cfg) -> RunResult``: a TrainConfig to a finished (or stopped) run folder. The command line
(``cg2a_ext.rl.cli.train``), the sweep worker and tests call it.

    from cg2a_ext.rl import TrainConfig, train
    result = train(TrainConfig(task="cartpole_balance", algorithm="drq", preset="cpu", train_steps=5000))
    result.final_evaluation, result.run_dir

Order of work: check every option (networks built on the meta device first, so that a frame too small
for the encoder is refused now) and every data input (the family's test data, overlay images)
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
from dataclasses import dataclass, field
from pathlib import Path


class InputError(ValueError):
    """A data input (the family's test data, the overlay image folder) is missing or unreadable."""


class RunError(RuntimeError):
    """The run could not start or go on; ``exit_code`` is what the command line exits with (2: bad options,
    inputs or folders, nothing created; 1: a write failed, the previous checkpoint kept; 130: interrupted)."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class RunResult:
    """What ``train`` returns: the run folder, the step reached, the final evaluation ({mode: mean return}; empty
    when none ran) and whether the run was already finished (nothing was trained)."""

    run_dir: Path
    step: int
    final_evaluation: dict[str, float] = field(default_factory=dict)
    already_finished: bool = False


def busy_cores(seconds: float = 0.5) -> float | None:
    """How many cores other work keeps busy now: /proc/stat's non-idle time over ``seconds``, in cores (None where
    /proc/stat is unreadable). The 1-minute load average lags: a job that ended a minute ago still counts there."""
    def sample():
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)   # idle + iowait
        return sum(fields), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (os.cpu_count() or 1) * (1.0 - (idle1 - idle0) / (total1 - total0))


def choose_threads(requested: int, seconds: float = 0.5) -> tuple[int, str]:
    """torch's intra-op threads and why: ``requested`` when given (--num_threads), else the cores free at start
    (cores minus the busy ones measured over half a second, at least 1; the 1-minute load average where that
    cannot be read): on a busy 2-core machine one thread ran a cg2a update faster than two that fight the other
    jobs for the cores, on an idle one two ran 7.1 cg2a steps/s against one's 5.2 (BENCHMARKS.md)."""
    import torch

    if requested:
        return requested, "--num_threads"
    cores = os.cpu_count() or 1
    busy = busy_cores(seconds)
    what = "busy now"
    if busy is None:
        try:
            busy = os.getloadavg()[0]
            what = "load"
        except OSError:
            return torch.get_num_threads(), "torch's default: the load is unknown"
    free = max(1, min(cores, int(cores - busy + 0.5)))
    return free, f"{cores} cores, {busy:.1f} {what}: the free ones; --num_threads N to choose"


def check_networks(cfg) -> None:
    """Build the agent's networks on the meta device (no memory, no time): a frame too small for the encoder or
    another shape error is refused before any folder exists."""
    import torch

    from cg2a_ext.rl import algorithms
    from cg2a_ext.rl.config import ConfigError
    from cg2a_ext.rl.core.agent.networks import build_networks

    algo = algorithms.get(cfg.algorithm)
    obs_shape = (3 * cfg.frame_stack, cfg.image_size, cfg.image_size)
    try:
        shape = algo.network_obs_shape_for(cfg.options, obs_shape)
        with torch.device("meta"):
            _, critic, _ = build_networks(
                shape, 1, num_conv_layers=cfg.num_conv_layers, num_filters=cfg.num_filters,
                num_stride2=cfg.num_stride2, projection_dim=cfg.projection_dim, hidden_dim=cfg.hidden_dim,
                log_std_min=cfg.actor_log_std_min, log_std_max=cfg.actor_log_std_max)
            critic(torch.zeros((2, *shape)), torch.zeros((2, 1)))
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"the networks cannot be built for {shape[1]}x{shape[2]} frames with "
                          f"--num_conv_layers {cfg.num_conv_layers} --num_stride2 {cfg.num_stride2}: "
                          f"{str(e).splitlines()[0]}") from None


def check_inputs(cfg) -> str:
    """Every data input of ``cfg``, checked before a run folder is created (InputError naming the problem); returns
    what the test modes draw from.

    The family's test-mode data (``data_dir``; dmc: DMC-GB's colour JSONs and each clip's first frame, or
    CG2A_DMCGB_DATA) and the overlay image folder (``image_bank`` or CG2A_OVERLAY_DATA: every image it will use is
    decoded now, at the observation size; the run then reuses these images)."""
    from cg2a_ext.rl.core.image_bank import OVERLAY_ENV_VAR, bank_options, resolve_image_bank, source_side
    from cg2a_ext.rl.envs import family_of
    from cg2a_ext.rl.run.seeding import SeedStreams

    try:
        modes = cfg.all_eval_modes if cfg.eval_freq > 0 else ("train",)
        source = family_of(cfg.task).check_data(cfg.data_dir or None, modes)
        if cfg.image_bank or os.environ.get(OVERLAY_ENV_VAR, "").strip():
            # the run's own pool (its subset and size): decoded now, so a bad image stops the run before its folder
            bank = resolve_image_bank(**bank_options(cfg, SeedStreams(cfg.seed)))
            bank.source(source_side(cfg.image_size, cfg.image_size))
    except (OSError, ValueError, RuntimeError) as e:
        raise InputError(str(e)) from None
    return source


def measure_rates(cfg, env, obs_shape, action_dim, device):
    """Seconds per seed step, training step and evaluation episode on this machine.

    Steps ``env`` a few times (the run resets it with its own seed later), then times whole training steps as
    the trainer runs them (act, start the env step, update a scratch agent on a scratch buffer of random frames,
    collect the step) under a forked torch RNG: the run's own agent, buffer and random streams are left
    untouched. Timing the step whole counts what ``--env_overlap`` hides behind the update and what the env's
    thread and torch's threads take from each other; the sum of the parts overestimated a cg2a step at the cpu
    preset by 20-75 % (BENCHMARKS.md)."""
    import numpy as np
    import torch

    from cg2a_ext.rl.core.agent import make_agent
    from cg2a_ext.rl.core.env_stepper import EnvStepper
    from cg2a_ext.rl.core.replay import FrameReplayBuffer
    from cg2a_ext.rl.run.logs import Rates
    from cg2a_ext.rl.run.seeding import SeedStreams

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def timed(fn, at_least: int, seconds: float, at_most: int) -> float:
        """Seconds per call of ``fn``: at least ``at_least`` calls and ``seconds`` of them (a few calls are noise on
        a busy machine), at most ``at_most``."""
        n, t = 0, time.perf_counter()
        while n < at_least or (time.perf_counter() - t < seconds and n < at_most):
            fn()
            n += 1
        sync()
        return (time.perf_counter() - t) / n

    zero = np.zeros(action_dim, np.float32)
    env.reset(seed=0)

    def env_step():
        _, _, terminated, truncated, _ = env.step(zero)
        if terminated or truncated:
            env.reset(seed=0)

    # a long run is worth a few seconds of measuring; a tiny one (tests, smoke runs) is not
    budget = min(1.0, cfg.train_steps / 20_000)
    env_s = timed(env_step, 4, budget, 200)

    # the trainer's own stepper when it has one (the overlap it uses), else a serial one around ``env``
    stepper = env if hasattr(env, "step_async") else EnvStepper(env, overlap=False)
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
        obs = frame()
        agent.act(obs, sample=True)
        act_s = timed(lambda: agent.act(obs, sample=False), 4, 0.5 * budget, 100)

        def train_step():
            stepper.step_async(agent.act(obs, sample=True))
            agent.update(replay)
            _, _, terminated, truncated, _ = stepper.wait()
            if terminated or truncated:
                stepper.reset(seed=0)

        # whole update cycles, for about 3 s (the actor and targets update every other step)
        train_s = timed(lambda: [train_step() for _ in range(cycle)], 1, 3.0 * budget, 50) / cycle
    episode_steps = math.ceil(cfg.episode_length / cfg.action_repeat)
    return Rates(seed_step=env_s, train_step=train_s, eval_episode=episode_steps * (env_s + act_s))


def plan(cfg, device, K: int, run_dir: Path, start_step: int, rates, evaluation_pending: bool) -> dict:
    """What the run will do and how long it should take (printed at start and saved as plan.json)."""
    import torch

    from cg2a_ext.rl import algorithms
    from cg2a_ext.rl.core.image_bank import image_bank_source
    from cg2a_ext.rl.run.logs import remaining_seconds

    eta = remaining_seconds(cfg, start_step, rates, evaluation_pending)
    return {
        "task": cfg.task, "algorithm": cfg.algorithm, "K": K, "preset": cfg.preset, "device": str(device),
        "cuda_available": torch.cuda.is_available(), "run_dir": str(run_dir), "start_step": start_step,
        "train_steps": cfg.train_steps, "seed_steps": cfg.seed_steps,
        "evaluation": {"every_steps": cfg.eval_freq, "episodes": cfg.eval_episodes, "modes": list(cfg.eval_modes),
                       "final_modes": list(cfg.final_eval_modes)},
        "checkpoints": {"every_steps": cfg.checkpoint_freq, "every_minutes": cfg.checkpoint_minutes,
                        "at_episode_end": cfg.checkpoint_at_episode_end},
        "measured": {"seed_steps_per_s": 1.0 / rates.seed_step, "train_steps_per_s": 1.0 / rates.train_step,
                     "eval_episode_s": rates.eval_episode},
        # the images every overlay augmentation of this run draws from (procedural: not Places365)
        "overlay_images": image_bank_source(cfg.image_bank or None),
        "draws_overlay_images": algorithms.get(cfg.algorithm).draws_overlay_images,
        "estimated_seconds": eta,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def describe(p: dict) -> str:
    from cg2a_ext.rl.run.logs import format_duration

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
        final = ev.get("final_modes") or ev["modes"]
        at_end = ("and at the end" if final == ev["modes"] else
                  f"; at the end {', '.join(final)} (zero-shot)")
        lines.append(f"  evaluation: {ev['episodes']} episodes of {', '.join(ev['modes'])} {first}every "
                     f"{ev['every_steps']} steps {at_end}")
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
    overlays = p.get("overlay_images")
    if overlays and p.get("draws_overlay_images", True):
        if overlays == "procedural":
            lines.append("  overlay images: PROCEDURAL (synthetic 1/f images, not Places365: an approximation, "
                         "flag the results; --image_bank or CG2A_OVERLAY_DATA names an image folder)")
        else:
            lines.append(f"  overlay images: the folder {overlays} (fresh random crops and flips of a seeded pool)")
    lines.append(f"  estimated time: about {format_duration(p['estimated_seconds'])}")
    lines.append(f"  run folder: {p['run_dir']}")
    return "\n".join(lines)


def save_config(cfg, run_dir: Path) -> None:
    """config.json: the run's options (resume and overwrite are instructions to one command, not options
    of the run)."""
    from cg2a_ext.rl.run import folder as rd

    rd.write_json_atomic(run_dir / rd.CONFIG, {**cfg.to_dict(), "resume": False, "overwrite": False})


def _resume_hint(command: str, run_dir: Path) -> str:
    return f"{command} --resume --run_dir {shlex.quote(str(run_dir))}"


def _how_to_continue(command: str, run_dir: Path) -> str:
    from cg2a_ext.rl.run.checkpoint import list_checkpoints

    cks = list_checkpoints(run_dir)
    if not cks:
        return (f"{run_dir} has no checkpoint yet; once this is fixed, start it again with:\n  "
                f"{command} --overwrite --run_dir {shlex.quote(str(run_dir))} <the same options>")
    return (f"{run_dir} keeps its checkpoint {cks[-1][1].name}; once this is fixed, resume with:\n  "
            f"{_resume_hint(command, run_dir)}")


def train(cfg, *, command: str = "cg2a-train") -> RunResult:
    """Train the run ``cfg`` describes (a new run, or ``cfg.resume`` to continue ``cfg.run_dir``).

    ``cfg`` is validated here (options left unset are filled, as from the command line). Raises
    :class:`RunError` with the command line's exit code (2: bad options, inputs or folders, nothing created;
    1: a write failed, the previous checkpoint kept; 130: interrupted without a checkpoint) and
    :class:`~cg2a_ext.rl.core.trainer.TrainingStopped` when stopped by Ctrl-C / SIGTERM after a checkpoint.
    ``command`` starts the resume hints it prints (``<command> --resume --run_dir DIR``)."""
    from cg2a_ext.rl.config import ConfigError
    from cg2a_ext.rl.run import folder as rd
    from cg2a_ext.rl.run.checkpoint import CheckpointError, CheckpointWriteError, list_checkpoints, load_resumable

    try:
        cfg.validate()
        check_networks(cfg)
        check_inputs(cfg)
    except (ConfigError, InputError) as e:
        raise RunError(str(e)) from None

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
        raise RunError(str(e)) from None

    with lock:
        if cfg.resume:
            try:
                finished = rd.read_finished(run_dir)
            except rd.DamagedFileError as e:
                raise RunError(f"--resume: {e}; remove it to resume the run from its last checkpoint") from None
            if finished is not None:
                if cfg.train_steps <= finished["final_step"]:
                    ev = ", ".join(f"{m}={v:.1f}" for m, v in finished["final_evaluation"].items())
                    print(f"{run_dir} is a finished run (step {finished['final_step']}"
                          f"{', final evaluation: ' + ev if ev else ''}); nothing to do. To train it longer, "
                          "resume with a larger --train_steps.", flush=True)
                    return RunResult(run_dir, int(finished["final_step"]), dict(finished["final_evaluation"]), True)
                print(f"extending the finished run {run_dir} from step {finished['final_step']} to "
                      f"{cfg.train_steps}", flush=True)
            if not list_checkpoints(run_dir):      # before building anything
                raise RunError(f"--resume: no checkpoint in {run_dir / rd.CHECKPOINTS} (the run stopped before "
                                   "its first one); start it anew with --overwrite")
        else:
            cfg.run_dir = str(run_dir)
            save_config(cfg, run_dir)
        try:
            return _train(cfg, run_dir, command, rd, load_resumable)
        except CheckpointError as e:
            raise RunError(f"--resume: {e}") from None
        except rd.DamagedFileError as e:       # a log the resumed run continues
            raise RunError(f"--resume: {e}") from None
        except CheckpointWriteError as e:
            raise RunError(f"{e}. {_how_to_continue(command, run_dir)}", 1) from None
        except KeyboardInterrupt:
            raise RunError(f"interrupted without a new checkpoint. {_how_to_continue(command, run_dir)}",
                           130) from None
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                where = e.filename or run_dir
                what = "no space left on" if e.errno != errno.EROFS else "read-only file system at"
                raise RunError(f"{what} {where}. {_how_to_continue(command, run_dir)}", 1) from None
            raise


def _train(cfg, run_dir: Path, command: str, rd, load_resumable) -> RunResult:
    import torch

    from cg2a_ext.rl.core.agent import make_agent
    from cg2a_ext.rl.core.env_stepper import EnvStepper, resolve_env_overlap
    from cg2a_ext.rl.envs import make_env
    from cg2a_ext.rl.core.evaluation import make_eval_envs
    from cg2a_ext.rl.run.host_memory import keep_freed_host_memory
    from cg2a_ext.rl.core.replay import FrameReplayBuffer, frames_device_for
    from cg2a_ext.rl.run.logs import Progress, Rates, RunLogger
    from cg2a_ext.rl.run.seeding import SeedStreams
    from cg2a_ext.rl.core.trainer import CHECKPOINT_FORMAT, PREVIOUS_FORMAT_VERSION, Trainer, TrainingStopped

    # a tiny run (tests, smoke runs) measures for less, as measure_rates does
    threads, why = choose_threads(cfg.num_threads, seconds=max(0.1, 0.5 * min(1.0, cfg.train_steps / 20_000)))
    torch.set_num_threads(threads)
    print(f"torch threads: {threads} ({why})", flush=True)
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
        eval_envs = make_eval_envs(cfg, cfg.all_eval_modes) if cfg.eval_freq > 0 else {}

        state = None
        if cfg.resume:
            state, path = load_resumable(run_dir, replay, map_location=device,
                                         warn=lambda m: print(m, file=sys.stderr, flush=True))
            if int(state.get("format", 1)) < CHECKPOINT_FORMAT:
                raise RunError(f"--resume: {path} was written before checkpoint format {CHECKPOINT_FORMAT} (its networks "
                               "saw pixels scaled x/255 - 0.5 and a fixed overlay set; this version scales x/255 and "
                               "draws fresh overlays, so resuming would change the run). Finish it with the previous "
                               f"version: git checkout {PREVIOUS_FORMAT_VERSION} && pip install --no-build-isolation . "
                               f"&& {command} --resume --run_dir {shlex.quote(str(run_dir))}")
            if int(state["step"]) > cfg.train_steps:
                raise RunError(f"--resume: the run's checkpoint is at step {state['step']}, past --train_steps "
                               f"{cfg.train_steps}")
            rd.truncate_media(run_dir, int(state["step"]))
            (run_dir / rd.FINISHED).unlink(missing_ok=True)    # here only when a finished run is extended
            save_config(cfg, run_dir)                           # with the options changed on resume
        start = int(state["step"]) if state else 0
        logger = RunLogger(run_dir, tensorboard=cfg.tensorboard, resume_step=start if state else None)

        print(f"measuring this machine's speed ({cfg.preset} preset on {device}) ...", flush=True)
        rates = measure_rates(cfg, env, obs_shape, action_dim, device)
        pending = (start == 0 and cfg.eval_freq > 0) or bool(state and state.get("evaluate_first"))
        p = plan(cfg, device, agent.K, run_dir, start, rates, pending)
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
            raise
        progress.close()
        if final:
            print("final evaluation: " + ", ".join(f"{m}={v:.1f}" for m, v in final.items()), flush=True)
        print(f"finished: {run_dir}", flush=True)
        result = RunResult(run_dir, trainer.step, dict(final or {}))
    finally:
        if progress is not None:
            progress.close()
        if logger is not None:
            logger.close()
        env.close()
        for e in eval_envs.values():
            e.close()
    return result
