"""Typed training configuration: the core options of every run, one docstring per field, and the chosen
algorithm's own options (``TrainConfig.options``, a dataclass the algorithm module owns).

Options left ``None`` take their value, in order, from the algorithm (SMG's batch of 64, SODA's larger
frames, SGQN's per-task quantile, ...), from the task's environment family (frames, size, action repeat,
episode length) and from the preset (``paper``: the paper's configuration; ``cpu``: a small encoder for a
CPU; ``auto``: paper with CUDA, else cpu). :meth:`TrainConfig.validate` resolves them and checks every
option, the same way from Python, from the command line (``cg2a_ext.rl.cli.options``) and from a sweep;
config.json records the resolved values.

    cfg = TrainConfig(task="cartpole_swingup", algorithm="sgqn").validate()
    cfg.options.quantile            # 0.98, SGQN's value for cartpole_swingup
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args

PresetName = Literal["auto", "paper", "cpu"]
PrecisionName = Literal["auto", "fp32", "tf32", "bf16"]
CompileName = Literal["auto", "on", "off"]
CudaGraphName = Literal["auto", "on", "off"]
EnvOverlapName = Literal["auto", "on", "off"]
ReplayDeviceName = Literal["auto", "cpu", "cuda"]
NonfiniteName = Literal["skip", "raise"]

# Options that may differ from the run's config when it is resumed (schedule, logging, machine).
RESUMABLE = ("train_steps", "eval_freq", "eval_episodes", "log_freq", "checkpoint_freq", "progress", "device",
             "num_threads", "tensorboard", "save_video", "resume", "run_dir", "runs_root",
             "keep_freed_host_memory", "checkpoint_minutes", "checkpoint_at_episode_end", "overwrite",
             # speed options: the same algorithm up to float rounding, chosen per machine (a run moved
             # between a GPU and a CPU must be able to change them)
             "precision", "channels_last", "compile", "replay_device", "env_overlap", "cuda_graph")


class ConfigError(ValueError):
    """An option is invalid; raised before any work starts."""


@dataclass
class TrainConfig:
    # ---- task / environment
    preset: PresetName = "auto"
    """Named defaults for the options left unset: paper (the paper's configuration, for a GPU), cpu (48 px frames, a
    4-layer encoder, 20k steps, cg2a with the overlay pair: about an hour on 2 cores), auto (paper with CUDA, else
    cpu). config.json records the preset applied."""
    task: str = "finger_spin"
    """Task name of a registered environment family (dmc: domain_task, e.g. walker_walk)."""
    algorithm: str = "cg2a"
    """The algorithm (cg2a_ext.rl.algorithms): sac, drq, svea, ac, cg2a, soda, sgqn, smg."""
    options: Any = None
    """The algorithm's own options (its Options dataclass); None = its defaults."""
    seed: int = 0
    """Random seed (networks, replay sampling, augmentations, environment)."""
    image_size: int | None = None
    """Side of the rendered square observation frames in pixels; None = the family's for the preset (dmc: 84,
    cpu 48; soda renders its crop margin more)."""
    frame_stack: int | None = None
    """Number of stacked RGB frames per observation; None = the family's (dmc: 3)."""
    action_repeat: int | None = None
    """Simulator steps per agent step (the action is repeated); None = the family's (dmc: 4)."""
    episode_length: int | None = None
    """Episode length in simulator steps (the env truncates there); None = the family's (dmc: 1000)."""
    data_dir: str = ""
    """Test-mode data folder of the family (dmc: DMC-GB's colours and videos; "" = CG2A_DMCGB_DATA, else the
    procedural sets)."""

    # ---- schedule
    train_steps: int | None = None
    """Agent steps (environment interactions) to train for; None = the preset's (paper 500k, cpu 20k)."""
    seed_steps: int | None = None
    """Initial agent steps with uniformly random actions and no updates; None = the preset's (1000)."""
    eval_freq: int | None = None
    """Evaluate every this many agent steps (and at the end); 0 disables; None = the preset's (paper 10k, cpu 2k)."""
    eval_episodes: int | None = None
    """Episodes per mode at each periodic evaluation; None = the preset's (paper 10, cpu 5)."""
    eval_modes: tuple[str, ...] | None = None
    """Evaluation modes of the task's family; None = all of them (paper) or train only (cpu)."""
    final_eval_modes: tuple[str, ...] | None = None
    """Modes of the final evaluation (the zero-shot test at the end); None = every mode of the task's family."""
    log_freq: int | None = None
    """Log update metrics and gradient diagnostics every this many agent steps; None = the preset's."""
    checkpoint_freq: int | None = None
    """Write a checkpoint every this many agent steps (and at the end); 0 = only at the end; None = the preset's."""
    checkpoint_minutes: float = 10.0
    """Also write a checkpoint when this many minutes have passed since the last one (so a run stopped
    early can resume); 0 disables the wall-clock interval."""
    checkpoint_at_episode_end: bool = True
    """Take periodic checkpoints at the first episode end after they fall due, so that a resumed run is
    bit-identical to an uninterrupted one; off: at once (a resumed run then restarts that episode)."""
    save_buffer: bool = True
    """Include the replay buffer in checkpoints (needed for an exact --resume)."""
    save_video: bool = False
    """Record the first episode of each evaluation mode as a video."""

    # ---- SAC (DMC-GB hyper-parameters)
    batch_size: int | None = None
    """Transitions per update batch (B); None = 128, or the algorithm's (smg: 64)."""
    buffer_capacity: int = 0
    """Replay capacity in transitions; 0 = train_steps."""
    discount: float = 0.99
    """Discount factor, in (0, 1]."""
    actor_lr: float = 1e-3
    """Actor Adam learning rate."""
    actor_beta1: float = 0.9
    """Actor Adam beta1."""
    critic_lr: float = 1e-3
    """Critic Adam learning rate."""
    critic_beta1: float = 0.9
    """Critic Adam beta1."""
    init_temperature: float = 0.1
    """Initial SAC temperature."""
    alpha_lr: float = 1e-4
    """Temperature Adam learning rate."""
    alpha_beta1: float = 0.5
    """Temperature Adam beta1."""
    actor_update_freq: int = 2
    """Update actor and temperature every this many updates."""
    critic_target_update_freq: int = 2
    """Soft-update the target critic every this many updates."""
    critic_tau: float = 0.01
    """Soft target rate of the Q heads."""
    encoder_tau: float = 0.05
    """Soft target rate of the critic encoder (trunk + projection)."""
    actor_log_std_min: float = -10.0
    """Lower bound of the policy log-std."""
    actor_log_std_max: float = 2.0
    """Upper bound of the policy log-std."""

    # ---- architecture
    num_conv_layers: int | None = None
    """Convolutional layers in the shared trunk (3x3, no padding); None = the preset's (paper 11, cpu 4)."""
    num_filters: int | None = None
    """Channels of every convolution; None = the preset's (paper 32, cpu 16)."""
    num_stride2: int | None = None
    """How many of the first convolutions use stride 2; None = the preset's (paper 1 as DMC-GB, cpu 2)."""
    projection_dim: int | None = None
    """Features after the Linear-LayerNorm-tanh projection; None = the preset's (paper 100, cpu 50) or the
    algorithm's (smg: 256)."""
    hidden_dim: int | None = None
    """Width of the two hidden layers of the actor and Q heads; None = the preset's (paper 1024, cpu 256)."""

    # ---- augmentations shared by the algorithms that overlay images
    image_bank: str = ""
    """Image folder of the overlay augmentations (Places365 for fidelity); "" = CG2A_OVERLAY_DATA, else the
    procedural images (results say so)."""
    overlay_pool_size: int = 2048
    """Images decoded (a folder: a random subset, chosen from the run's seed) or made (procedural) once per run
    for the overlays; every overlay draws a fresh random resized crop and flip of one of them. Memory:
    pool_size * 3 * (2 * image_size)^2 bytes on the host and again on a CUDA device (2048: 173 MB at 84 px,
    57 MB at 48 px)."""
    overlay_s_mu: float = 0.1
    """Weight mu of CG2A's overlay-S, (1 - mu) * o + mu * 255 * image, in (0, 0.2) (the paper: mu < 0.2; the
    random overlay's is 0.5)."""
    nonfinite: NonfiniteName = "skip"
    """On a non-finite gradient (critic, actor, temperature, auxiliary): skip the optimizer step (counted in the
    logs; decided on the device, no host read-back) or raise FloatingPointError (reads a flag back every step)."""
    aux_update_freq: int = 2
    """Run the algorithm's auxiliary update (soda, sgqn, smg) every this many updates."""

    # ---- run / machine
    device: str = "auto"
    """Torch device: auto (cuda when available; the cpu preset: cpu), cpu, cuda, cuda:N."""
    num_threads: int = 0
    """torch's intra-op threads; 0 = the cores free at start (the cores minus those busy over half a second: two on
    an idle 2-core machine, one beside another job)."""
    keep_freed_host_memory: bool = True
    """Let glibc reuse freed host memory instead of mapping every large tensor anew: CPU updates 1.1-1.6x faster
    here (BENCHMARKS.md); the process keeps its peak heap."""
    run_dir: str = ""
    """Run folder; "" = <runs_root>/<task>/<algorithm>/seed<seed>-<timestamp>."""
    runs_root: str = "runs"
    """Parent folder of automatically named run folders."""
    overwrite: bool = False
    """Start a new run in a run_dir that holds an earlier run, deleting that run's files (without it, refused)."""
    resume: bool = False
    """Continue the run in run_dir from its last checkpoint; options that conflict with its config.json are
    refused, except the schedule, logging and machine options."""
    tensorboard: bool = True
    """Write TensorBoard event files besides the CSV metrics."""
    progress: bool = True
    """Show a progress bar (steps/s, ETA, latest returns)."""

    # ---- speed (each only changes how fast the same updates run, up to float rounding)
    precision: PrecisionName = "auto"
    """Network arithmetic: fp32, tf32 (CUDA TF32 matmuls and convolutions; fp32 on a CPU), bf16 (bfloat16 autocast of
    the network forwards; parameters, gradients, aggregation and optimizer state stay float32), auto (tf32 on CUDA,
    fp32 on a CPU)."""
    channels_last: bool = True
    """Run the convolutional trunks channels-last (NHWC weights and inputs)."""
    compile: CompileName = "auto"
    """torch.compile the networks' building blocks: on, off, or auto (off: it measured no gain, BENCHMARKS.md)."""
    cuda_graph: CudaGraphName = "auto"
    """Run each update as a captured CUDA graph on static buffers (cg2a_ext.rl.core.agent.graph): on, off, or auto
    (on CUDA: captured after the first updates and used only if a few graph updates equal the eager ones on the same
    batches, else eager with one line saying why; off on the CPU and for algorithms that cannot be captured)."""
    replay_device: ReplayDeviceName = "auto"
    """Where the replay frames live: cuda (sampled on the GPU), cpu (batches staged in pinned memory when training on
    CUDA), auto (cuda when the frame ring fits comfortably in free GPU memory, else cpu)."""
    env_overlap: EnvOverlapName = "auto"
    """Step the environment in a worker thread while the update of the same agent step runs (the same run as in
    series): on, off, or auto (on for a CPU device, off on CUDA)."""

    # ------------------------------------------------------------------ helpers
    @property
    def K(self) -> int:
        """Number of critic loss terms of the algorithm."""
        from cg2a_ext.rl import algorithms

        cfg = copy.deepcopy(self)      # options left unset (cg2a's augmentations) depend on the preset
        resolve(cfg)
        return algorithms.get(self.algorithm).num_losses(cfg.options)

    @property
    def all_eval_modes(self) -> tuple[str, ...]:
        """Every mode a run evaluates: the periodic ones, then those only the final evaluation adds."""
        return tuple(dict.fromkeys((*self.eval_modes, *self.final_eval_modes)))

    @property
    def capacity(self) -> int:
        return self.buffer_capacity or self.train_steps

    def resolved_options(self):
        """The algorithm's options (its defaults when unset)."""
        from cg2a_ext.rl import algorithms

        return self.options if self.options is not None else algorithms.get(self.algorithm).Options()

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["options"] = dataclasses.asdict(self.resolved_options())
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """From ``to_dict`` output, or a config.json written before the algorithms owned their options (their flat
        ``<prefix>_<option>`` keys are taken into the algorithm's options; other algorithms' keys are dropped).
        Unknown keys are refused."""
        from cg2a_ext.rl import algorithms

        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a JSON object, got {type(d).__name__}")
        d = dict(d)
        name = d.get("algorithm", cls.algorithm)
        if name not in algorithms.NAMES:
            raise ConfigError(f"unknown algorithm {name!r}; registered: {', '.join(algorithms.NAMES)}")
        algo = algorithms.get(name)
        options = d.pop("options", None)
        legacy = algorithms.take_legacy_options(d)          # removes every algorithm's flat keys from d
        if options is None:
            options = legacy.get(name, {})
        if isinstance(d.get("env_overlap"), bool):           # run folders written when it was a switch
            d["env_overlap"] = "on" if d["env_overlap"] else "off"
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        for f in fields(cls):
            if f.name in values and f.default is not None and f.name != "options":
                if not _same_kind(values[f.name], f.default):
                    raise ConfigError(f"{f.name} must be {type(f.default).__name__}, got {values[f.name]!r}")
        return cls(**values, options=algo.options_from_dict(options))

    def save(self, path) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=False)

    @classmethod
    def load(cls, path) -> "TrainConfig":
        """Read a config.json; ConfigError naming the file when it is missing, damaged or not a config."""
        path = Path(path)
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
            return cls.from_dict(data)
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, ValueError) as e:
            raise ConfigError(f"{path} is not a readable config.json ({type(e).__name__}: {e})") from None

    # ------------------------------------------------------------------ resolution and checks
    def validate(self) -> "TrainConfig":
        """Fill the options left None (algorithm, family, preset: see the module doc), then check every option
        (types included: a TrainConfig can be built in code); raise ConfigError. Returns ``self``."""
        resolve(self)
        check(self)
        return self


def field_docs(cls=None) -> dict[str, str]:
    """Each field's docstring (the string literal right after it) of a dataclass (default: TrainConfig; an
    algorithm's Options too, with the fields it inherits), whitespace collapsed."""
    cls = cls or TrainConfig
    import ast
    import inspect
    import textwrap

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body
        for a, b in zip(body, body[1:]):
            if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name) and isinstance(b, ast.Expr) \
                    and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str):
                docs[a.target.id] = " ".join(b.value.value.split())
    return docs


# Options whose None means "the algorithm's, the family's or the preset's".
PRESETS: dict[str, dict[str, Any]] = {
    # The paper's configuration (DMC-GB's SAC and encoder).
    "paper": dict(train_steps=500_000, seed_steps=1000, eval_freq=10_000, eval_episodes=10, log_freq=1000,
                  checkpoint_freq=50_000, batch_size=128, num_conv_layers=11, num_filters=32, num_stride2=1,
                  projection_dim=100, hidden_dim=1024),
    # A small configuration for a 2-core CPU: a 4-layer trunk of 16 channels whose first two convolutions have
    # stride 2, 50 features, 256-wide heads, the paper's batch of 128 (batch 32 did not learn: RESULTS.md),
    # short evaluations on the train mode only.
    "cpu": dict(train_steps=20_000, seed_steps=1000, eval_freq=2000, eval_episodes=5, eval_modes=("train",),
                log_freq=500, checkpoint_freq=5000, batch_size=128, num_conv_layers=4, num_filters=16,
                num_stride2=2, projection_dim=50, hidden_dim=256, device="cpu"),
}
UNSET_MEANS_DEFAULT = ("image_size", "frame_stack", "action_repeat", "episode_length", "train_steps", "seed_steps",
                       "eval_freq", "eval_episodes", "eval_modes", "final_eval_modes", "log_freq", "checkpoint_freq",
                       "batch_size",
                       "num_conv_layers", "num_filters", "num_stride2", "projection_dim", "hidden_dim")


def _same_kind(value, default) -> bool:
    """A JSON value fits a field whose default is ``default`` (an int for a float field is fine)."""
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, type(default))


def resolve_preset(name: str) -> str:
    """``auto`` -> ``paper`` when CUDA is available, else ``cpu``."""
    if name != "auto":
        return name
    import torch

    return "paper" if torch.cuda.is_available() else "cpu"


def given_options(cfg: TrainConfig) -> set[str]:
    """The options of ``cfg`` that were set (not left to the algorithm, family or preset)."""
    given = {name for name in UNSET_MEANS_DEFAULT if getattr(cfg, name) is not None}
    if cfg.device != "auto":
        given.add("device")
    return given


def resolve(cfg: TrainConfig) -> None:
    """Fill, in place, the options of ``cfg`` left unset; idempotent (a resolved config is unchanged)."""
    from cg2a_ext.rl import algorithms
    from cg2a_ext.rl.envs import family_of

    if cfg.preset not in get_args(PresetName):
        raise ConfigError(f"unknown preset {cfg.preset!r}; choose one of {', '.join(get_args(PresetName))}")
    if cfg.algorithm not in algorithms.NAMES:
        raise ConfigError(f"unknown algorithm {cfg.algorithm!r}; choose one of {', '.join(algorithms.NAMES)}")
    try:
        family = family_of(cfg.task)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    given = given_options(cfg)
    cfg.preset = resolve_preset(cfg.preset)
    layered: dict[str, Any] = {"eval_modes": family.modes if cfg.preset == "paper" else ("train",),
                               "final_eval_modes": family.modes,
                               **PRESETS[cfg.preset],
                               **dataclasses.asdict(family.observation_defaults(cfg.task, cfg.preset))}
    for name, value in layered.items():
        if name not in given:
            setattr(cfg, name, value)
    algo = algorithms.get(cfg.algorithm)
    if cfg.options is None:
        cfg.options = algo.Options()
    elif not isinstance(cfg.options, algo.Options):
        raise ConfigError(f"options of {cfg.algorithm} must be {algo.Options.__module__}.{algo.Options.__qualname__},"
                          f" got {type(cfg.options).__name__}")
    algo.resolve_options(cfg.options, cfg)
    for name, value in algo.core_defaults(cfg.options, cfg, given).items():
        if name not in given:
            setattr(cfg, name, value)


def _finite(name: str, value, *, low=None, high=None, low_open=False, high_open=False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"--{name} must be a finite number, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ConfigError(f"--{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ConfigError(f"--{name} must be {'<' if high_open else '<='} {high}, got {value}")


def check(cfg: TrainConfig) -> None:
    """Every check of a resolved config that needs no environment or network (ConfigError naming the option)."""
    from cg2a_ext.rl import algorithms
    from cg2a_ext.rl.envs import family_of

    choices = {"precision": get_args(PrecisionName), "compile": get_args(CompileName),
               "cuda_graph": get_args(CudaGraphName),
               "replay_device": get_args(ReplayDeviceName), "env_overlap": get_args(EnvOverlapName),
               "nonfinite": get_args(NonfiniteName)}
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            raise ConfigError(f"unknown {name} {getattr(cfg, name)!r}; choose one of {', '.join(allowed)}")
    modes = family_of(cfg.task).modes
    if not isinstance(cfg.eval_modes, tuple) or not cfg.eval_modes:
        raise ConfigError(f"--eval_modes must be a non-empty tuple of mode names, got {cfg.eval_modes!r}")
    if not isinstance(cfg.final_eval_modes, tuple) or not cfg.final_eval_modes:
        raise ConfigError(f"--final_eval_modes must be a non-empty tuple of mode names, got {cfg.final_eval_modes!r}")
    for m in (*cfg.eval_modes, *cfg.final_eval_modes):
        if m not in modes:
            raise ConfigError(f"unknown evaluation mode {m!r} for task {cfg.task}; choose from {', '.join(modes)}")
    ints = {name: getattr(cfg, name) for name in (
        "seed", "image_size", "frame_stack", "action_repeat", "episode_length", "train_steps", "seed_steps",
        "eval_freq", "eval_episodes", "log_freq", "checkpoint_freq", "batch_size", "buffer_capacity",
        "actor_update_freq", "critic_target_update_freq", "num_conv_layers", "num_filters", "num_stride2",
        "projection_dim", "hidden_dim", "aux_update_freq", "num_threads")}
    for name, value in ints.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"--{name} must be an integer, got {value!r}")
    positive = ("image_size", "frame_stack", "action_repeat", "episode_length", "train_steps", "batch_size",
                "eval_episodes", "log_freq", "num_conv_layers", "num_filters", "projection_dim", "hidden_dim",
                "actor_update_freq", "critic_target_update_freq", "aux_update_freq")
    for name in positive:
        if ints[name] <= 0:
            raise ConfigError(f"--{name} must be positive, got {ints[name]}")
    for name in ("seed", "seed_steps", "eval_freq", "checkpoint_freq", "buffer_capacity", "num_threads"):
        if ints[name] < 0:
            raise ConfigError(f"--{name} must be >= 0, got {ints[name]}")
    if not 1 <= cfg.num_stride2 <= cfg.num_conv_layers:
        raise ConfigError("--num_stride2 must be between 1 and --num_conv_layers")
    if cfg.seed_steps >= cfg.train_steps:
        raise ConfigError(f"--seed_steps {cfg.seed_steps} >= --train_steps {cfg.train_steps}: the run would never "
                          "update the agent")
    if cfg.capacity < cfg.batch_size:
        raise ConfigError(f"the replay capacity ({cfg.capacity}: --buffer_capacity, else --train_steps) is below "
                          f"--batch_size {cfg.batch_size}")
    for name in ("actor_lr", "critic_lr", "alpha_lr", "init_temperature"):
        _finite(name, getattr(cfg, name), low=0.0, low_open=True)
    for name in ("actor_beta1", "critic_beta1", "alpha_beta1"):
        _finite(name, getattr(cfg, name), low=0.0, high=1.0, high_open=True)
    _finite("discount", cfg.discount, low=0.0, high=1.0, low_open=True)
    for name in ("critic_tau", "encoder_tau"):
        _finite(name, getattr(cfg, name), low=0.0, high=1.0, low_open=True)
    _finite("actor_log_std_min", cfg.actor_log_std_min)
    _finite("actor_log_std_max", cfg.actor_log_std_max, low=cfg.actor_log_std_min, low_open=True)
    _finite("checkpoint_minutes", cfg.checkpoint_minutes, low=0.0)
    if cfg.device not in ("auto", "cpu") and not cfg.device.startswith("cuda"):
        raise ConfigError(f"unknown device {cfg.device!r}; use auto, cpu, cuda or cuda:N")
    if cfg.replay_device == "cuda" and cfg.device == "cpu":
        raise ConfigError(f"--replay_device cuda needs a CUDA --device, got --device {cfg.device}")
    if cfg.device.startswith("cuda") or cfg.replay_device == "cuda":
        import torch

        if not torch.cuda.is_available():
            what = f"--device {cfg.device}" if cfg.device.startswith("cuda") else "--replay_device cuda"
            raise ConfigError(f"{what} asked for but CUDA is not available")
    if cfg.resume and not cfg.run_dir:
        raise ConfigError("--resume needs --run_dir (the run folder to continue)")
    if cfg.resume and cfg.overwrite:
        raise ConfigError("--overwrite starts a new run: it cannot be combined with --resume")
    algorithms.get(cfg.algorithm).check_config(cfg.options, cfg)
    if cfg.cuda_graph == "on":
        from cg2a_ext.rl.core.agent.graph import capture_blocker

        import torch

        if cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()):
            raise ConfigError(f"--cuda_graph on needs a CUDA --device, got --device {cfg.device} (auto: captured "
                              "only on CUDA)")
        blocker = capture_blocker(cfg)
        if blocker:
            raise ConfigError(f"--cuda_graph on: {blocker}; use --cuda_graph auto or off")
    if isinstance(cfg.overlay_pool_size, bool) or not isinstance(cfg.overlay_pool_size, int) \
            or cfg.overlay_pool_size < 1:
        raise ConfigError(f"--overlay_pool_size must be a positive integer, got {cfg.overlay_pool_size!r}")
    _finite("overlay_s_mu", cfg.overlay_s_mu, low=0.0, high=0.2, low_open=True, high_open=True)


def check_task(cfg: TrainConfig) -> None:
    """Raise ConfigError if ``cfg.task`` is no registered family's task (imports the environments)."""
    from cg2a_ext.rl.envs import family_of

    try:
        family_of(cfg.task)
    except ValueError as e:
        raise ConfigError(str(e)) from None
