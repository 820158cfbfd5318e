"""Learning curves per mode and the gradient-diagnostics figure (paper Fig. 1), as PNG."""
from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path

import numpy as np
from cg2a_ext.rl.run.folder import RunFolder


def _read_csv(path) -> list[dict]:
    from cg2a_ext.rl.run.folder import read_csv_rows

    return read_csv_rows(path)


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def recorded_options(algorithm: str, config: dict):
    """The Options of ``algorithm`` recorded in a config.json (its ``options`` object, or the flat keys of one
    written before the algorithms owned their options); its defaults where the record is unreadable, None
    for an algorithm the registry does not know."""
    from cg2a_ext.rl import algorithms
    from cg2a_ext.rl.config import ConfigError

    if algorithm not in algorithms.NAMES:
        return None
    algo = algorithms.get(algorithm)
    recorded = config.get("options")
    if not isinstance(recorded, dict):
        recorded = algorithms.take_legacy_options(dict(config)).get(algorithm, {})
    try:
        return algo.options_from_dict(recorded)
    except ConfigError:
        return algo.Options()


def _default_options(algo, task: str):
    """The algorithm's options a paper-preset run of ``task`` gets when none is given (per-task defaults filled):
    a label names what differs from the paper's method, whatever the preset (a cpu-preset cg2a run shows its
    overlay pair)."""
    from cg2a_ext.rl.config import TrainConfig

    options = algo.Options()
    try:
        algo.resolve_options(options, TrainConfig(task=task, algorithm=algo.name, preset="paper"))
    except Exception:                                   # noqa: BLE001 - a label falls back to the plain defaults
        options = algo.Options()
    return options


def draws_overlay_images(config: dict) -> bool:
    """Whether a run configuration (a run's config.json or ``TrainConfig.to_dict()``) overlays images; True for an
    algorithm the registry does not know (its results must not lose the label)."""
    from cg2a_ext.rl import algorithms

    name = config.get("algorithm")
    if name not in algorithms.NAMES:
        return True
    return algorithms.get(name).overlays_with(recorded_options(name, config))


def overlay_images(run_dir, config: dict, unrecorded: str = "procedural") -> str:
    """The images a run's overlay augmentations drew from: plan.json's ``overlay_images`` (what the run resolved,
    CG2A_OVERLAY_DATA included), else config.json's ``image_bank``, else ``unrecorded``; "" for a run that
    overlays no images (its algorithm's ``draws_overlay_images`` is False, or its options leave the overlays out)."""
    if not draws_overlay_images(config):
        return ""
    try:
        recorded = (RunFolder(run_dir).read_plan() or {}).get("overlay_images")
    except (OSError, ValueError, AttributeError):
        recorded = None
    return str(recorded or config.get("image_bank") or unrecorded)


def _shown(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def run_label(run_dir) -> str:
    """``task algorithm`` plus every option of the algorithm's ``method_options`` (runs that differ in
    them are different methods, e.g. ablations, not seeds of one curve) that differs from its default, and,
    for an algorithm that overlays images, the images it drew (``image_bank=procedural``: an approximation
    of Places365, always said)."""
    cfg_path = RunFolder(run_dir).config
    if not cfg_path.is_file():
        return Path(run_dir).name
    from cg2a_ext.rl import algorithms
    from cg2a_ext.rl.config import TrainConfig

    from cg2a_ext.rl.run.folder import DamagedFileError, read_json

    cfg = read_json(cfg_path)
    if not isinstance(cfg, dict):
        raise DamagedFileError(f"{cfg_path} is not a config (a JSON object), got {type(cfg).__name__}")
    name, task = cfg.get("algorithm", "?"), cfg.get("task", "?")
    label = f"{task} {name}"
    if name not in algorithms.NAMES:
        return label
    algo = algorithms.get(name)
    options, defaults = recorded_options(name, cfg), _default_options(algo, task)
    core_defaults = TrainConfig()
    own = {f.name for f in dataclasses.fields(algo.Options)}
    for option in algo.method_options:
        if option in own:
            value, default = getattr(options, option), getattr(defaults, option)
            if value is None:                           # left unset: the algorithm's default for the task
                continue
        elif option == "image_bank" or option not in cfg:
            continue                                    # the images: below, from what the run recorded
        else:
            value, default = cfg[option], getattr(core_defaults, option, None)
        value = tuple(value) if isinstance(value, list) else value
        if value != default:
            label += f" {option}={_shown(value)}"
    images = overlay_images(run_dir, cfg)
    if images:
        label += f" image_bank={images}"
    return label


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


# Below this many points a line hides the data: draw markers, and say so in a panel with fewer than two.
FEW_POINTS = 20


def _marker(n_points: int) -> dict:
    return {"marker": "o", "ms": 3} if n_points < FEW_POINTS else {}


def _note_too_few(ax, n_points: int, what: str) -> None:
    """Write in a panel that a curve needs more than ``n_points`` points (a short run's figure is not empty
    for no reason)."""
    if n_points < 2:
        ax.text(0.5, 0.5, f"{n_points} {what} logged: too few for a curve\n(the run is short; a point per "
                f"logging interval)", transform=ax.transAxes, ha="center", va="center", fontsize=8, color="0.4")


# Columns of the run logs the curves read (eval.csv: one row per evaluation and mode; train.csv: one per episode).
EVAL_RETURN, EVAL_SUCCESS = "mean_return", "success_rate"
TRAIN_RETURN, TRAIN_SUCCESS = "episode_return", "success"
# A training episode's success is 0 or 1: its curve is the moving mean over this many episodes (fewer at the start).
SUCCESS_WINDOW = 20


@dataclasses.dataclass(frozen=True)
class Panel:
    """One panel of the learning curves: a column of eval.csv (rows of ``mode``) or of train.csv (mode None)."""

    title: str
    column: str
    mode: str | None = None
    ylabel: str = "return"

    @property
    def success(self) -> bool:
        return self.column in (EVAL_SUCCESS, TRAIN_SUCCESS)

    def curve(self, run_dir) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of one run; a success panel leaves out rows without a value (logs of runs from
        before the column, or of a family without success)."""
        folder = RunFolder(run_dir)
        rows = folder.rows("train") if self.mode is None else [r for r in folder.rows("eval") if r["mode"] == self.mode]
        xs = np.array([_num(r["step"]) for r in rows])
        ys = np.array([_num(r.get(self.column)) for r in rows])
        if self.success:
            keep = np.isfinite(ys)
            xs, ys = xs[keep], ys[keep]
            if self.mode is None and len(ys):
                ys = moving_mean(ys, SUCCESS_WINDOW)
        return xs, ys


def moving_mean(values: np.ndarray, window: int) -> np.ndarray:
    """The trailing mean of the last ``window`` values at each point (of all values so far before that)."""
    sums = np.cumsum(np.concatenate([[0.0], values]))
    idx = np.arange(1, len(values) + 1)
    start = np.maximum(idx - window, 0)
    return (sums[idx] - sums[start]) / (idx - start)


def _has_values(run_dirs, kind: str, column: str) -> bool:
    return any(np.isfinite(_num(r.get(column))) for d in run_dirs for r in RunFolder(d).rows(kind))


def learning_curve_panels(run_dirs) -> list[Panel]:
    """A return panel per evaluation mode and one of the training episodes; then, where the runs' logs carry
    success (robot tasks), a success-rate panel per evaluation mode and one of the training episodes."""
    modes: list[str] = []
    for d in run_dirs:
        for r in RunFolder(d).rows("eval"):
            if r["mode"] not in modes:
                modes.append(r["mode"])
    panels = [Panel(m, EVAL_RETURN, m) for m in modes] + [Panel("training episodes", TRAIN_RETURN)]
    if _has_values(run_dirs, "eval", EVAL_SUCCESS):
        panels += [Panel(f"{m}: success rate", EVAL_SUCCESS, m, "success rate") for m in modes]
    if _has_values(run_dirs, "train", TRAIN_SUCCESS):
        panels.append(Panel("training episodes: success", TRAIN_SUCCESS, None,
                            f"success (mean of the last {SUCCESS_WINDOW} episodes)"))
    return panels


def plot_learning_curves(run_dirs, out_path) -> Path:
    """One panel per evaluation mode (plus training episode returns), and success-rate panels where the runs
    log success (``learning_curve_panels``); runs with the same label (task + algorithm) are averaged, the band
    is ± one sample std over runs (ddof = 1)."""
    plt = _plt()
    groups: dict[str, list] = {}
    for d in run_dirs:
        groups.setdefault(run_label(d), []).append(Path(d))
    panels = learning_curve_panels(run_dirs)
    ncol = min(3, len(panels))
    nrow = (len(panels) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.5 * ncol, 3.4 * nrow), squeeze=False)
    # One colour per label across panels, one legend for the figure: per-panel legends hid the curves.
    colours = {label: f"C{i % 10}" for i, label in enumerate(groups)}
    handles: dict[str, object] = {}
    for ax, panel in zip(axes.flat, panels):
        most_points = 0
        for label, dirs in groups.items():
            curves = [c for c in (panel.curve(d) for d in dirs) if len(c[0])]
            if not curves:
                continue
            most_points = max(most_points, *(len(x) for x, _ in curves))
            c = colours[label]
            if len(curves) == 1:
                n = len(curves[0][0])
                (line,) = ax.plot(*curves[0], color=c, **(_marker(n) if panel.mode is None else {"marker": "o", "ms": 3}))
                name = label
            else:
                grid = np.unique(np.concatenate([c_[0] for c_ in curves]))
                ys = np.stack([np.interp(grid, x, y, left=np.nan, right=np.nan) for x, y in curves])
                with warnings.catch_warnings():     # a step only one run reached has no spread: no band there
                    warnings.simplefilter("ignore", RuntimeWarning)
                    m, s = np.nanmean(ys, 0), np.nanstd(ys, 0, ddof=1)
                (line,) = ax.plot(grid, m, color=c, **_marker(len(grid)))
                ax.fill_between(grid, m - s, m + s, alpha=0.2, color=c)
                name = f"{label} (mean of {len(curves)} runs, band ± sample std)"
            handles.setdefault(name, line)
        _note_too_few(ax, most_points, "episodes" if panel.mode is None else "evaluations")
        ax.set_title(panel.title)
        ax.set_xlabel("agent steps")
        if panel.success:
            ax.set_ylabel(panel.ylabel, fontsize=8)
            ax.set_ylim(-0.05, 1.05)
        else:
            ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    rows = (len(handles) + 1) // 2
    fig.legend(list(handles.values()), list(handles.keys()), loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 * rows / nrow, 1, 1))
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def aggregate_shares(row: dict, k: int) -> np.ndarray:
    """Each loss's share of the aggregated gradient d = sum_j w_j g_j (before SGS), from one
    diagnostics row: share_i = w_i <g_i, d> / |d|^2 = w_i (G w)_i / (w^T G w), with the Gram
    matrix G rebuilt from the logged norms and cosines. The shares sum to 1; a loss with a
    large gradient can dominate d even when its weight is moderate."""
    n = np.array([_num(row.get(f"grad_norm_{i}")) for i in range(k)])
    w = np.array([_num(row.get(f"weight_{i}")) for i in range(k)])
    gram = np.diag(n ** 2)
    for i in range(k):
        for j in range(i + 1, k):
            gram[i, j] = gram[j, i] = _num(row.get(f"cos_{i}_{j}")) * n[i] * n[j]
    gw = gram @ w
    total = float(w @ gw)
    return w * gw / total if total > 0 else np.full(k, np.nan)


def plot_gradient_diagnostics(run_dir, out_path) -> Path | None:
    """Per-loss gradient norms, pairwise cosines, conflict fraction, GAS weights and gamma over training."""
    rows = RunFolder(run_dir).rows("diagnostics")
    if not rows:
        return None
    plt = _plt()
    cols = list(rows[0].keys())
    step = np.array([_num(r["step"]) for r in rows])
    get = lambda c: np.array([_num(r.get(c)) for r in rows])
    norms = sorted([c for c in cols if re.fullmatch(r"grad_norm_\d+", c)], key=lambda c: int(c.split("_")[-1]))
    coss = [c for c in cols if re.fullmatch(r"cos_\d+_\d+", c)]
    weights = sorted([c for c in cols if re.fullmatch(r"weight_\d+", c)], key=lambda c: int(c.split("_")[-1]))
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    mark = _marker(len(rows))
    for c in norms:
        axes[0, 0].plot(step, get(c), label=f"loss {c.split('_')[-1]}", **mark)
    axes[0, 0].set_title("per-loss gradient norm")
    axes[0, 0].set_yscale("log")
    for c in coss:
        i, j = c.split("_")[1:]
        axes[0, 1].plot(step, get(c), label=f"cos(g{i}, g{j})", **mark)
    axes[0, 1].axhline(0, color="k", lw=0.5)
    axes[0, 1].set_title("pairwise cosine similarity")
    shares = np.stack([aggregate_shares(r, len(weights)) for r in rows]) if weights else None
    for idx, c in enumerate(weights):
        line, = axes[1, 0].plot(step, get(c), label=f"w{c.split('_')[-1]}", **mark)
        axes[1, 0].plot(step, shares[:, idx], ls="--", lw=0.8, color=line.get_color(),
                        label=f"share {idx}", **mark)
    axes[1, 0].set_title("GAS weight w_i (solid), loss i's share of the update (dashed)", fontsize=10)
    axes[1, 1].plot(step, get("conflict_fraction"), label="conflict fraction (sign disagreement)", **mark)
    if "neg_cos_pairs" in cols:
        axes[1, 1].plot(step, get("neg_cos_pairs"), label="fraction of pairs with cos < 0", **mark)
    if "gamma" in cols:
        axes[1, 1].plot(step, get("gamma"), label="gamma", lw=0.8, **mark)
    axes[1, 1].set_title("conflicts and SGS gamma")
    for ax in axes.flat:
        _note_too_few(ax, len(rows), "diagnostics rows")
        ax.set_xlabel("agent steps")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"gradient diagnostics: {run_label(run_dir)} (K={len(norms)}; loss 0 = clean)")
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def evaluation_image_steps(run_dir) -> dict[int, dict[str, Path]]:
    """``{step: {name: png}}`` of the images a run saved at its evaluations (``images/step_<N>/<name>.png``)."""
    found: dict[int, dict[str, Path]] = {}
    for step, d in RunFolder(run_dir).image_steps():
        pngs = {p.stem: p for p in sorted(d.glob("*.png"))}
        if pngs:
            found[step] = pngs
    return found


def spread(items: list, count: int) -> list:
    """At most ``count`` of ``items``, evenly spaced, the first and the last included."""
    if len(items) <= count:
        return list(items)
    picks = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[i] for i in dict.fromkeys(picks.tolist())]


def plot_evaluation_images(run_dir, out_path, max_rows: int = 4) -> Path | None:
    """The algorithm's evaluation images (SGQN's saliency and masks, SMG's reconstructions, ...) over
    training in one figure: a row per evaluation step (at most ``max_rows``, spread from the first to the
    last), a column per image name. None when the run saved no images."""
    found = evaluation_image_steps(run_dir)
    if not found:
        return None
    steps = spread(sorted(found), max_rows)
    # the input first, then the algorithm's maps
    names = sorted({n for s in steps for n in found[s]}, key=lambda n: ("observation" not in n, n))
    plt = _plt()
    from PIL import Image

    fig, axes = plt.subplots(len(steps), len(names), figsize=(2.6 * len(names), 2.6 * len(steps)), squeeze=False)
    for i, step in enumerate(steps):
        for j, name in enumerate(names):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if name in found[step]:
                ax.imshow(np.asarray(Image.open(found[step][name]).convert("RGB")), interpolation="nearest")
            if i == 0:
                ax.set_title(name, fontsize=9)
            if j == 0:
                ax.set_ylabel(f"step {step}", fontsize=9)
    fig.suptitle(f"evaluation images: {run_label(run_dir)}", fontsize=10)
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path
