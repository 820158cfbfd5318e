"""Typed training configuration: one dataclass, one docstring per field.

Every field is a command-line option (``--field_name VALUE``; booleans also
accept ``--field_name`` / ``--no-field_name``). ``--preset NAME`` first applies
a named set of defaults (``paper`` = the dataclass defaults, the paper's
configuration; ``cpu`` = a small encoder and batch that train in minutes on a
CPU); options given explicitly override the preset.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import textwrap
import typing
from dataclasses import dataclass, fields
from typing import Any

ALGORITHMS = ("sac", "drq", "svea", "ac", "cg2a")


class ConfigError(ValueError):
    """An option is invalid; raised before any work starts."""


@dataclass
class TrainConfig:
    # ---- task / environment
    task: str = "finger_spin"
    """DMC task name (``domain_task``), one of ``cg2a_ext.rl.envs.TASKS``."""
    algorithm: str = "cg2a"
    """How the critic gradient is formed: sac | drq | svea | ac | cg2a."""
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
    eval_modes: str = "train,color_easy,color_hard,video_easy,video_hard"
    """Comma-separated evaluation modes (subset of cg2a_ext.rl.envs.MODES)."""
    log_freq: int = 1000
    """Log update metrics and gradient diagnostics every this many agent steps."""
    checkpoint_freq: int = 50_000
    """Write a checkpoint every this many agent steps (and at the end); 0 = only at the end."""
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
    augmentations: str = "conv,overlay,overlay_s"
    """Augmentations combined by ac and cg2a (K = 1 + their number); names from AUGMENTATIONS."""
    svea_augmentation: str = "overlay"
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
    gamma: str = "uniform:0.22,0.28"
    """cg2a: SGS gamma, ``uniform:A,B`` (drawn per update) or ``const:V``."""
    mask: str = "agree"
    """cg2a: SGS agreement test, ``agree`` (all same strict sign) or ``positive`` (all > 0, paper Eq. 9 literally)."""
    nonfinite: str = "skip"
    """On a non-finite gradient: ``skip`` (no optimizer step, counted in the logs) or ``raise``."""

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
    resume: bool = False
    """Continue the run in run_dir from its last checkpoint (its config.json wins)."""
    tensorboard: bool = True
    """Write TensorBoard event files besides the CSV metrics."""
    progress: bool = True
    """Show a progress bar (steps/s, ETA, latest returns)."""

    # ------------------------------------------------------------------ helpers
    @property
    def K(self) -> int:
        """Number of critic loss terms for the algorithm."""
        return {"sac": 1, "drq": 1, "svea": 2}.get(self.algorithm, 1 + len(self.augmentation_list))

    @property
    def augmentation_list(self) -> list[str]:
        return [a.strip() for a in self.augmentations.split(",") if a.strip()]

    @property
    def eval_mode_list(self) -> list[str]:
        return [m.strip() for m in self.eval_modes.split(",") if m.strip()]

    @property
    def capacity(self) -> int:
        return self.buffer_capacity or self.train_steps

    def gamma_range(self) -> tuple[float, float]:
        return parse_gamma(self.gamma)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def save(self, path) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=False)

    @classmethod
    def load(cls, path) -> "TrainConfig":
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def validate(self) -> "TrainConfig":
        """Check every option; raise ConfigError with a clear message."""
        from cg2a_ext.rl.envs import MODES, TASKS
        from cg2a_ext.rl.augmentations import AUGMENTATIONS

        if self.task not in TASKS:
            raise ConfigError(f"unknown task {self.task!r}; known tasks: {', '.join(sorted(TASKS))}")
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(f"unknown algorithm {self.algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
        parse_gamma(self.gamma)
        if self.mask not in ("agree", "positive"):
            raise ConfigError(f"unknown mask {self.mask!r}; choose agree or positive")
        if self.nonfinite not in ("skip", "raise"):
            raise ConfigError(f"unknown nonfinite policy {self.nonfinite!r}; choose skip or raise")
        for m in self.eval_mode_list:
            if m not in MODES:
                raise ConfigError(f"unknown evaluation mode {m!r}; known modes: {', '.join(MODES)}")
        augs = self.augmentation_list
        if self.algorithm in ("ac", "cg2a") and not augs:
            raise ConfigError("ac/cg2a need at least one augmentation in --augmentations")
        for a in augs + [self.svea_augmentation]:
            if a not in AUGMENTATIONS:
                raise ConfigError(f"unknown augmentation {a!r}; known: {', '.join(sorted(AUGMENTATIONS))}")
        positive = ("image_size", "frame_stack", "action_repeat", "episode_length", "train_steps",
                    "batch_size", "eval_episodes", "log_freq", "num_conv_layers", "num_filters",
                    "projection_dim", "hidden_dim", "actor_update_freq", "critic_target_update_freq")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name} must be positive, got {getattr(self, name)}")
        for name in ("seed_steps", "eval_freq", "checkpoint_freq", "buffer_capacity", "num_threads"):
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
        if self.resume and not self.run_dir:
            raise ConfigError("--resume needs --run_dir (the run folder to continue)")
        return self


def parse_gamma(spec: str) -> tuple[float, float]:
    """``const:V`` -> (V, V); ``uniform:A,B`` -> (A, B) with 0 <= A <= B <= 1."""
    try:
        kind, _, rest = spec.partition(":")
        if kind == "const":
            v = float(rest)
            lo, hi = v, v
        elif kind == "uniform":
            a, b = rest.split(",")
            lo, hi = float(a), float(b)
        else:
            raise ValueError
    except ValueError:
        raise ConfigError(f"malformed gamma {spec!r}; expected 'const:V' or 'uniform:A,B' (e.g. uniform:0.22,0.28)") from None
    if not (0.0 <= lo <= hi <= 1.0):
        raise ConfigError(f"gamma {spec!r} must satisfy 0 <= A <= B <= 1")
    return lo, hi


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
                eval_episodes=5, eval_modes="train", log_freq=500, checkpoint_freq=5000, device="cpu"),
}


def field_docs(cls=TrainConfig) -> dict[str, str]:
    """Attribute docstrings (the string literal right after each field)."""
    try:
        src = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    tree = ast.parse(src)
    body = tree.body[0].body
    docs = {}
    for a, b in zip(body, body[1:]):
        if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name) and isinstance(b, ast.Expr) \
                and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str):
            docs[a.target.id] = " ".join(b.value.value.split())
    return docs


def _str2bool(v: str) -> bool:
    if v.lower() in ("1", "true", "yes", "on"):
        return True
    if v.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {v!r}")


def build_parser(description: str = "Train a SAC agent (sac/drq/svea/ac/cg2a) on DMC-GB.") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.HelpFormatter)
    parser.add_argument("--preset", default="paper", choices=sorted(PRESETS),
                        help="named defaults applied before explicit options (cpu: " + ", ".join(
                            f"{k}={v}" for k, v in PRESETS["cpu"].items()) + ")")
    docs = field_docs()
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        typ = hints[f.name]
        help_ = docs.get(f.name, "").replace("%", "%%")   # argparse formats help with %
        if typ is bool:
            parser.add_argument(f"--{f.name}", nargs="?", const=True, default=None, type=_str2bool,
                                metavar="BOOL", help=help_ + f" (default {f.default})")
            parser.add_argument(f"--no-{f.name}", dest=f.name, action="store_const", const=False,
                                help=argparse.SUPPRESS)
        else:
            parser.add_argument(f"--{f.name}", type=typ, default=None, help=help_ + f" (default {f.default!r})")
    return parser


def config_from_args(argv=None) -> TrainConfig:
    """Parse ``argv`` into a validated TrainConfig (preset, then explicit options).

    With ``--resume``, the run folder's saved config is loaded and only
    ``train_steps``, ``device``, ``num_threads``, ``progress`` and ``eval_freq``
    may be overridden from the command line.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    explicit = {k: v for k, v in vars(args).items() if k != "preset" and v is not None}
    if explicit.get("resume"):
        from pathlib import Path
        run_dir = explicit.get("run_dir", "")
        if not run_dir:
            raise ConfigError("--resume needs --run_dir (the run folder to continue)")
        cfg_path = Path(run_dir) / "config.json"
        if not cfg_path.is_file():
            raise ConfigError(f"--resume: no config.json in {run_dir!r} (not a run folder?)")
        cfg = TrainConfig.load(cfg_path)
        if cfg.buffer_capacity == 0:          # the buffer keeps the capacity it was created with
            cfg.buffer_capacity = cfg.train_steps
        for k in ("train_steps", "device", "num_threads", "progress", "eval_freq"):
            if k in explicit:
                setattr(cfg, k, explicit[k])
        cfg.resume = True
        cfg.run_dir = run_dir
        return cfg.validate()
    values = dict(PRESETS[args.preset])
    values.update(explicit)
    return TrainConfig(**values).validate()
