"""Typed training configuration: one dataclass, one docstring per field.

Every field is a command-line option (``--field_name VALUE``; booleans are ``--flag`` /
``--no-flag``; tuples take several values, e.g. ``--augmentations overlay overlay_s``), parsed by
tyro from the types and docstrings below. ``--preset NAME`` first applies a named set of defaults:
``paper`` (the dataclass defaults, the paper's configuration), ``cpu`` (a small encoder that
trains in minutes on a CPU) or ``auto`` (paper when CUDA is available, else cpu). Then the
algorithm's own defaults apply (``Algorithm.config_defaults``), then the options given explicitly.

Parsing imports no environment: task names are checked by :func:`check_task` at start.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, Sequence, get_args

from cg2a_ext.rl import algorithms

AlgorithmName = Literal[algorithms.NAMES]  # type: ignore[valid-type]
Mode = Literal["train", "color_easy", "color_hard", "video_easy", "video_hard"]
AugmentationName = Literal["identity", "shift", "conv", "overlay", "overlay_s"]
PresetName = Literal["auto", "paper", "cpu"]
PrecisionName = Literal["auto", "fp32", "tf32", "bf16"]
CompileName = Literal["auto", "on", "off"]
EnvOverlapName = Literal["auto", "on", "off"]
ReplayDeviceName = Literal["auto", "cpu", "cuda"]

# Options that may differ from the run's config when it is resumed (schedule, logging, machine).
RESUMABLE = ("train_steps", "eval_freq", "eval_episodes", "log_freq", "checkpoint_freq", "progress", "device",
             "num_threads", "tensorboard", "save_video", "resume", "run_dir", "runs_root",
             "keep_freed_host_memory", "checkpoint_minutes", "checkpoint_at_episode_end", "overwrite",
             # speed options: the same algorithm up to float rounding, chosen per machine (a run moved
             # between a GPU and a CPU must be able to change them)
             "precision", "channels_last", "compile", "replay_device", "env_overlap")


class ConfigError(ValueError):
    """An option is invalid; raised before any work starts."""


@dataclass
class TrainConfig:
    # ---- task / environment
    preset: PresetName = "auto"
    """Named defaults applied before explicit options: paper (the paper's configuration, for a GPU), cpu
    (48 px frames, a 4-layer 16-channel trunk, 20k steps: minutes on a CPU), auto (paper with CUDA, else cpu).
    config.json records the preset that was applied."""
    task: str = "finger_spin"
    """DMC task name (``domain_task``), one of ``cg2a_ext.rl.envs.TASKS``."""
    algorithm: AlgorithmName = "cg2a"
    """The algorithm (``cg2a_ext.rl.algorithms``): sac, drq, svea, ac (plain mean of augmented losses), cg2a, and the
    baselines soda, sgqn, smg."""
    seed: int = 0
    """Random seed (networks, replay sampling, augmentations, environment)."""
    image_size: int = 84
    """Side of the rendered square observation frames, in pixels."""
    frame_stack: int = 3
    """Number of stacked RGB frames per observation."""
    action_repeat: int = 4
    """Simulator steps per agent step (the action is repeated)."""
    episode_length: int = 1000
    """Episode length in simulator steps (the env truncates there)."""
    data_dir: str = ""
    """DMC-GB data folder for the test modes ("" = the env module's default)."""

    # ---- schedule
    train_steps: int = 500_000
    """Number of agent steps (environment interactions) to train for."""
    seed_steps: int = 1000
    """Initial agent steps with uniformly random actions and no updates."""
    eval_freq: int = 10_000
    """Evaluate every this many agent steps (and at the end); 0 disables."""
    eval_episodes: int = 10
    """Episodes per mode at each periodic evaluation."""
    eval_modes: tuple[Mode, ...] = ("train", "color_easy", "color_hard", "video_easy", "video_hard")
    """Evaluation modes (train and the four DMC-GB test modes)."""
    log_freq: int = 1000
    """Log update metrics and gradient diagnostics every this many agent steps."""
    checkpoint_freq: int = 50_000
    """Write a checkpoint every this many agent steps (and at the end); 0 = only at the end."""
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
    batch_size: int = 128
    """Transitions per update batch (B)."""
    buffer_capacity: int = 0
    """Replay capacity in transitions; 0 = train_steps."""
    discount: float = 0.99
    """Discount factor."""
    actor_lr: float = 1e-3
    """Actor Adam learning rate."""
    actor_beta1: float = 0.9
    """Actor Adam beta1."""
    critic_lr: float = 1e-3
    """Critic Adam learning rate."""
    critic_beta1: float = 0.9
    """Critic Adam beta1."""
    init_temperature: float = 0.1
    """Initial SAC temperature alpha."""
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
    num_conv_layers: int = 11
    """Convolutional layers in the shared trunk (3x3, no padding)."""
    num_filters: int = 32
    """Channels of every convolution."""
    num_stride2: int = 1
    """How many of the first convolutions use stride 2 (DMC-GB: 1)."""
    projection_dim: int = 100
    """Features after the Linear-LayerNorm-tanh projection."""
    hidden_dim: int = 1024
    """Width of the two hidden layers of the actor and Q heads."""

    # ---- augmentation / gradient formation
    augmentations: tuple[AugmentationName, ...] = ("conv", "overlay", "overlay_s")
    """Augmentations combined by ac and cg2a (K = 1 + their number)."""
    svea_augmentation: Literal["overlay", "conv"] = "overlay"
    """The one augmentation of svea (overlay or conv)."""
    svea_alpha: float = 0.5
    """SVEA weight of the clean loss."""
    svea_beta: float = 0.5
    """SVEA weight of the augmented loss."""
    image_bank: str = ""
    """Image folder for overlay augmentations ("" = procedural images)."""
    gas: bool = True
    """cg2a: Gradient Agreement Solver weights (off: w_i = 1/K)."""
    sgs: bool = True
    """cg2a: Soft Gradient Surgery mask (off: m = 1)."""
    gamma: tuple[float, float] = (0.22, 0.28)
    """cg2a: SGS damping gamma ~ U(A, B), drawn per update; A = B for a constant (e.g. 0.3 0.3)."""
    mask: Literal["agree", "positive"] = "agree"
    """cg2a: SGS agreement test, agree (all K of one strict sign) or positive (all > 0, paper Eq. 9 literally)."""
    nonfinite: Literal["skip", "raise"] = "skip"
    """On a non-finite gradient (critic, actor, temperature, auxiliary): skip the optimizer step (counted in the
    logs; the aggregator zeroes its output; decided on the device, no host read-back) or raise FloatingPointError
    (reads a flag back every step)."""
    aux_update_freq: int = 2
    """Run the algorithm's auxiliary update (SODA, SGQN, SMG) every this many updates."""

    # ---- baselines (SODA, SGQN, SMG)
    soda_crop: Literal["random", "shift"] = "random"
    """soda: random (the official protocol: frames rendered soda_crop_margin px larger, independent random crops
    for the critic, actor and both SODA views, a centre crop when acting) or shift (the project's protocol: frames at
    image_size, DrQ shift, two independent shifts for the SODA views)."""
    soda_crop_margin: int = 16
    """soda_crop=random: pixels the crops remove (100 px frames -> 84 px network input); unless --image_size is
    given, soda renders image_size + this margin."""
    soda_augmentation: Literal["overlay", "conv"] = "overlay"
    """soda: augmentation of the online view, overlay (SODA) or conv (the SODA(conv) variant)."""
    soda_batch_size: int = 256
    """soda: observations drawn from the replay for each SODA step (a separate draw)."""
    soda_projection_dim: int = 100
    """soda: width of the BatchNorm projection and predictor MLPs on the flattened trunk output."""
    soda_tau: float = 0.005
    """soda: rate of the momentum target (trunk, projection, predictor copies) after each SODA step."""
    soda_aux_lr: float = 3e-4
    """soda: Adam learning rate of the SODA optimizer (trunk, projection, predictor); the script value 3e-4, the
    argument default 1e-3 is an option."""
    soda_aux_beta1: float = 0.9
    """soda: Adam beta1 of the SODA optimizer."""
    sgqn_quantile: float = 0.95
    """sgqn: saliency quantile rho (pixels at or above it are kept); unless given, 0.98 for cartpole_swingup and
    ball_in_cup_catch and 0.95 for the other tasks (0.90 is an option)."""
    sgqn_consistency_weight: float = 0.5
    """sgqn: weight of the Q consistency between the observation and its saliency-masked copy."""
    sgqn_aux_lr: float = 3e-4
    """sgqn: Adam learning rate of the saliency-prediction optimizer (trunk, critic projection, decoder)."""
    sgqn_aux_beta1: float = 0.9
    """sgqn: Adam beta1 of the saliency-prediction optimizer."""
    smg_protocol: Literal["official", "dmcgb"] = "official"
    """smg: official (batch 64 and projection 256 unless given) or dmcgb (the run's batch and projection,
    a protocol-matched, non-official setting)."""
    smg_mask_ratio: float = 0.06
    """smg: target foreground-mask area rho (0.06 is the official walker_walk value; other tasks' values are
    unpublished in text)."""
    smg_mask_gate: Literal["updates", "env_steps"] = "updates"
    """smg: the mask-area loss starts once the update count (updates) or the agent step (env_steps, the official
    condition read literally) exceeds smg_mask_start."""
    smg_mask_start: int = 1000
    """smg: threshold of smg_mask_gate."""
    smg_attribution_prob: float = 0.25
    """smg: probability that an update's consistency view is the attribution augmentation (else overlay)."""
    smg_consistency_weight: float = 0.5
    """smg: weight of the Q consistency (augmented view against the stop-gradient clean Q)."""
    smg_recon_weight: float = 1.0
    """smg: weight of the reconstruction loss."""
    smg_mask_weight: float = 1.0
    """smg: weight of the mask-area loss."""
    smg_back_weight: float = 2.0
    """smg: weight of the background reconstruction loss."""
    smg_action_weight: float = 1.0
    """smg: weight of the inverse-dynamics loss."""
    smg_fore_weight: float = 0.1
    """smg: weight of the foreground consistency loss."""
    smg_aux_lr: float = 1e-3
    """smg: Adam learning rate of the predictor optimizer (trunk, critic projection and every SMG module)."""
    smg_aux_beta1: float = 0.9
    """smg: Adam beta1 of the predictor optimizer."""
    smg_grad_clip: float = 100.0
    """smg: global gradient-norm clip of the predictor step."""

    # ---- run / machine
    device: str = "auto"
    """Torch device: auto (cuda when available), cpu, cuda, cuda:N."""
    num_threads: int = 0
    """torch.set_num_threads value; 0 = torch's default."""
    keep_freed_host_memory: bool = True
    """Let glibc reuse freed host memory instead of mapping every large tensor anew
    (``cg2a_ext.rl.host_memory``): CPU updates 1.1-1.6x faster here (BENCHMARKS.md); the process keeps its peak heap."""
    run_dir: str = ""
    """Run folder; "" = <runs_root>/<task>/<algorithm>/seed<seed>-<timestamp>."""
    runs_root: str = "runs"
    """Parent folder of automatically named run folders."""
    overwrite: bool = False
    """Start a new run in a run_dir that holds an earlier run, deleting that run's files (without it, refused)."""
    resume: bool = False
    """Continue the run in run_dir from its last checkpoint; options that conflict with its config.json are
    refused, except the schedule, logging and machine options (RESUMABLE)."""
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
    """Run the convolutional trunks channels-last (NHWC weights and inputs): fewer layout conversions on CUDA
    (cuDNN) and CPU (oneDNN)."""
    compile: CompileName = "auto"
    """torch.compile the networks' building blocks (trunk, projections, heads; forward and backward): on, off, or
    auto (off: on a CPU compiling costs more than a short run gains, and on an H100 it measured 1.00x for cg2a and
    0.97x for drq, since the update's cost is its many launches, not the blocks' code: BENCHMARKS.md)."""
    replay_device: ReplayDeviceName = "auto"
    """Where the replay frames live: cuda (sampled on the GPU), cpu (batches staged in pinned memory when training on
    CUDA), auto (cuda when the frame ring fits comfortably in free GPU memory, else cpu)."""
    env_overlap: EnvOverlapName = "auto"
    """Step the environment in a worker thread while the update of the same agent step runs (the transitions and
    updates are the same as stepping in series: the update samples before the new transition is stored): on, off,
    or auto (on for a CPU device, where it measured 1.04x end to end; off on CUDA, where the update's Python holds
    the interpreter lock and the thread measured 0.92x)."""

    # ------------------------------------------------------------------ helpers
    @property
    def K(self) -> int:
        """Number of critic loss terms for the algorithm."""
        return algorithms.get(self.algorithm).num_losses(self)

    @property
    def capacity(self) -> int:
        return self.buffer_capacity or self.train_steps

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """From ``to_dict`` output (JSON lists become tuples; unknown keys are refused)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        if isinstance(values.get("env_overlap"), bool):   # run folders written when it was a switch
            values["env_overlap"] = "on" if values["env_overlap"] else "off"
        return cls(**values)

    def save(self, path) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=False)

    @classmethod
    def load(cls, path) -> "TrainConfig":
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def validate(self) -> "TrainConfig":
        """Check every option (types included: a TrainConfig can be built in code); raise ConfigError."""
        choices = {"preset": get_args(PresetName), "algorithm": algorithms.NAMES, "mask": ("agree", "positive"),
                   "nonfinite": ("skip", "raise"), "svea_augmentation": ("overlay", "conv"),
                   "precision": get_args(PrecisionName), "compile": get_args(CompileName),
                   "replay_device": get_args(ReplayDeviceName), "env_overlap": get_args(EnvOverlapName),
                   "soda_crop": ("random", "shift"), "soda_augmentation": ("overlay", "conv"),
                   "smg_protocol": ("official", "dmcgb"), "smg_mask_gate": ("updates", "env_steps")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"unknown {name} {getattr(self, name)!r}; choose one of {', '.join(allowed)}")
        for name, allowed in (("eval_modes", get_args(Mode)), ("augmentations", get_args(AugmentationName))):
            value = getattr(self, name)
            if not isinstance(value, tuple):
                raise ConfigError(f"--{name} must be a tuple of names, got {value!r}")
            for v in value:
                if v not in allowed:
                    raise ConfigError(f"unknown {name[:-1].replace('_', ' ')} {v!r} in --{name}; "
                                      f"known: {', '.join(allowed)}")
        if not (isinstance(self.gamma, tuple) and len(self.gamma) == 2):
            raise ConfigError(f"--gamma takes two numbers A B (gamma ~ U(A, B)), got {self.gamma!r}")
        lo, hi = self.gamma
        if not (0.0 <= lo <= hi <= 1.0):
            raise ConfigError(f"--gamma {lo} {hi}: need 0 <= A <= B <= 1")
        positive = ("image_size", "frame_stack", "action_repeat", "episode_length", "train_steps",
                    "batch_size", "eval_episodes", "log_freq", "num_conv_layers", "num_filters",
                    "projection_dim", "hidden_dim", "actor_update_freq", "critic_target_update_freq",
                    "aux_update_freq")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name} must be positive, got {getattr(self, name)}")
        for name in ("seed", "seed_steps", "eval_freq", "checkpoint_freq", "buffer_capacity", "num_threads"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if not 1 <= self.num_stride2 <= self.num_conv_layers:
            raise ConfigError("--num_stride2 must be between 1 and --num_conv_layers")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"unknown device {self.device!r}; use auto, cpu, cuda or cuda:N")
        if self.device.startswith("cuda"):
            import torch
            if not torch.cuda.is_available():
                raise ConfigError(f"--device {self.device} asked for but CUDA is not available")
        if self.replay_device == "cuda" and not (self.device.startswith("cuda") or self.device == "auto"):
            raise ConfigError(f"--replay_device cuda needs a CUDA --device, got --device {self.device}")
        if self.replay_device == "cuda":
            import torch
            if not torch.cuda.is_available():
                raise ConfigError("--replay_device cuda asked for but CUDA is not available")
        if self.resume and not self.run_dir:
            raise ConfigError("--resume needs --run_dir (the run folder to continue)")
        algorithms.get(self.algorithm).check_config(self)
        return self


def resolve_preset(name: str) -> str:
    """``auto`` -> ``paper`` when CUDA is available, else ``cpu``."""
    if name != "auto":
        return name
    import torch

    return "paper" if torch.cuda.is_available() else "cpu"


PRESETS: dict[str, dict[str, Any]] = {
    # The paper's configuration: the dataclass defaults.
    "paper": {},
    # A small configuration that trains in minutes on a 2-core CPU: 48x48 frames,
    # a 4-layer trunk of 16 channels whose first two convolutions have stride 2,
    # 50 features, 256-wide heads, the paper's batch of 128, short evaluations on the
    # train mode only. Batch 32 was tried first: 13k drq updates on cartpole_balance
    # stayed at a random policy's return, where batch 128 learns (RESULTS.md).
    "cpu": dict(image_size=48, num_conv_layers=4, num_stride2=2, num_filters=16, projection_dim=50,
                hidden_dim=256, batch_size=128, train_steps=20_000, seed_steps=1000, eval_freq=2000,
                eval_episodes=5, eval_modes=("train",), log_freq=500, checkpoint_freq=5000, device="cpu"),
}


def field_docs(cls=None) -> dict[str, str]:
    """Each field's docstring (the string literal right after it), whitespace collapsed."""
    import ast
    import inspect
    import textwrap

    cls = cls or TrainConfig
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for a, b in zip(body, body[1:]):
        if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name) and isinstance(b, ast.Expr) \
                and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str):
            docs[a.target.id] = " ".join(b.value.value.split())
    return docs


def explicit_options(argv: Sequence[str]) -> set[str]:
    """The config fields named on a command line (``--x``, ``--x=v``, ``--no-x``)."""
    names = {f.name for f in fields(TrainConfig)}
    found = set()
    for token in argv:
        if not token.startswith("--"):
            continue
        key = token[2:].split("=", 1)[0].replace("-", "_")
        if key not in names and key.startswith("no_") and key[3:] in names:
            key = key[3:]
        if key in names:
            found.add(key)
    return found


def _parse(argv: Sequence[str], default: TrainConfig, prog: str | None) -> TrainConfig:
    import tyro

    return tyro.cli(TrainConfig, args=list(argv), default=default, use_underscores=True, prog=prog,
                    description="Train a SAC agent (" + " / ".join(algorithms.NAMES) + ") on DMC-GB.")


def config_from_args(argv: Sequence[str] | None = None, prog: str | None = None) -> TrainConfig:
    """Parse ``argv`` into a validated TrainConfig: preset, then the algorithm's defaults, then explicit options.

    With ``--resume``, the run folder's config.json is the base; explicit options outside RESUMABLE
    that differ from it raise ConfigError listing every conflict.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    explicit = explicit_options(argv)
    # the preset must be known before the defaults of every other option
    preset = "auto"
    for i, token in enumerate(argv):
        if token == "--preset" and i + 1 < len(argv):
            preset = argv[i + 1]
        elif token.startswith("--preset="):
            preset = token.split("=", 1)[1]
    if preset not in get_args(PresetName):
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(get_args(PresetName))}")
    resolved = resolve_preset(preset)
    parsed = _parse(argv, TrainConfig(**{**PRESETS[resolved], "preset": resolved}), prog)
    if parsed.resume:
        return _resume_config(parsed, explicit)
    values = parsed.to_dict()
    values["preset"] = resolved
    for key, value in algorithms.get(parsed.algorithm).config_defaults(parsed).items():
        if key not in explicit:
            values[key] = value
    return TrainConfig(**values).validate()


def _resume_config(parsed: TrainConfig, explicit: set[str]) -> TrainConfig:
    if not parsed.run_dir:
        raise ConfigError("--resume needs --run_dir (the run folder to continue)")
    cfg_path = Path(parsed.run_dir) / "config.json"
    if not cfg_path.is_file():
        raise ConfigError(f"--resume: no config.json in {parsed.run_dir!r} (not a run folder?)")
    try:
        saved = TrainConfig.load(cfg_path)
    except (json.JSONDecodeError, TypeError) as e:
        raise ConfigError(f"--resume: {cfg_path} is not a readable config ({e})") from None
    if saved.buffer_capacity == 0:          # the buffer keeps the capacity it was created with
        saved.buffer_capacity = saved.train_steps
    conflicts = [f"--{k} {getattr(parsed, k)!r} (the run has {getattr(saved, k)!r})"
                 for k in sorted(explicit - set(RESUMABLE) - {"preset"})
                 if getattr(parsed, k) != getattr(saved, k)]
    if "preset" in explicit and resolve_preset(parsed.preset) != saved.preset:
        conflicts.append(f"--preset {parsed.preset!r} (the run has {saved.preset!r})")
    if conflicts:
        raise ConfigError("--resume: options conflict with the run's config.json: " + "; ".join(conflicts)
                          + ". Only these may change on resume: " + ", ".join(RESUMABLE))
    for k in explicit & set(RESUMABLE):
        setattr(saved, k, getattr(parsed, k))
    saved.resume = True
    saved.run_dir = parsed.run_dir
    return saved.validate()


def check_task(cfg: TrainConfig) -> None:
    """Raise ConfigError if ``cfg.task`` is not a dm_control task (imports the environments)."""
    from cg2a_ext.rl.envs import TASKS

    if cfg.task not in TASKS:
        raise ConfigError(f"unknown task {cfg.task!r}; known tasks: {', '.join(sorted(TASKS))}")
