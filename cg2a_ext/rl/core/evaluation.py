"""Zero-shot evaluation of an agent on DMC-GB modes, optional videos, result tables."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np



def run_episodes(agent, env, episodes: int, episode_seeds=None, video_path=None, fps: int = 30,
                 on_episode=None, successes: list | None = None) -> list[float]:
    """Return per-episode returns with deterministic (mean) actions; record episode 0 if ``video_path``.

    ``episode_seeds``: one reset seed per episode (None: the env's own sequence);
    ``on_episode(e)`` is called before episode e starts; ``successes`` (a list) receives each episode's final
    ``info["success"]`` where the env reports one (robot tasks: latched for the episode)."""
    returns = []
    for ep in range(episodes):
        if on_episode is not None:
            on_episode(ep)
        obs, _ = env.reset(seed=None if episode_seeds is None else int(episode_seeds[ep]))
        frames = [env.render_frame()] if (video_path is not None and ep == 0) else None
        total, done = 0.0, False
        while not done:
            action = agent.act(obs, sample=False)
            obs, reward, terminated, truncated, info = env.step(action)
            total += float(reward)
            done = terminated or truncated
            if frames is not None:
                frames.append(env.render_frame())
        returns.append(total)
        if successes is not None and "success" in info:
            successes.append(bool(info["success"]))
        if frames is not None:
            write_video(frames, video_path, fps=fps)
    return returns


def summarize(returns) -> dict:
    r = np.asarray(returns, dtype=np.float64)
    return {"mean": float(r.mean()) if len(r) else float("nan"),
            "std": float(r.std()) if len(r) else float("nan"), "episodes": int(len(r))}


def make_eval_envs(cfg, modes, stream: str = "evaluation") -> dict:
    """One environment per mode, seeded from the run's ``stream`` (never the training env's)."""
    from cg2a_ext.rl.envs import make_env
    from cg2a_ext.rl.run.seeding import SeedStreams

    seeds = SeedStreams(cfg.seed)
    envs = {}
    for i, mode in enumerate(modes):
        envs[mode] = make_env(cfg.task, mode=mode, seed=seeds.integer(f"{stream}_env", i, bits=31),
                              image_size=cfg.image_size, frame_stack=cfg.frame_stack,
                              action_repeat=cfg.action_repeat, episode_length=cfg.episode_length,
                              data_dir=cfg.data_dir or None)
    return envs


def evaluate_modes(agent, envs: dict, episodes: int, video_dir=None, tag: str = "", seeds=None,
                   stream: str = "evaluation", index: int = 0, progress=None) -> dict:
    """{mode: {"returns", "mean", "std", "episodes", "data_source"[, "success_rate"]}} for each env in ``envs``.

    Episode e of mode m is reset with ``seeds.integer(stream, index, m, e)`` (``seeds``: the run's
    SeedStreams; None leaves the envs' own seeds). ``progress(mode, episode, episodes)`` is called
    before each episode."""
    agent.train(False)
    out = {}
    try:
        for i, (mode, env) in enumerate(envs.items()):
            vp = None
            if video_dir is not None:
                Path(video_dir).mkdir(parents=True, exist_ok=True)
                vp = Path(video_dir) / f"{tag}{mode}.mp4"
            ep_seeds = None if seeds is None else [seeds.integer(stream, index, i, e, bits=31) for e in range(episodes)]
            report = None if progress is None else (lambda e, m=mode: progress(m, e, episodes))
            wins: list[bool] = []
            rets = run_episodes(agent, env, episodes, episode_seeds=ep_seeds, video_path=vp, on_episode=report,
                                successes=wins)
            out[mode] = {"returns": rets, **summarize(rets), "data_source": str(getattr(env, "data_source", mode))}
            if wins:          # tasks with a success test: the rate beside the return
                out[mode]["success_rate"] = float(np.mean(wins))
    finally:
        agent.train(True)
    return out


def write_video(frames, path, fps: int = 30) -> Path:
    """Write RGB uint8 frames to ``path`` (mp4 via PyAV; falls back to an animated GIF)."""
    path = Path(path)
    frames = [np.asarray(f, dtype=np.uint8) for f in frames]
    h, w = frames[0].shape[:2]
    try:
        import av

        with av.open(str(path), mode="w") as container:
            stream = None
            for codec in ("libx264", "h264", "mpeg4"):
                try:
                    stream = container.add_stream(codec, rate=fps)
                    break
                except Exception:  # codec not in this build
                    continue
            if stream is None:
                raise RuntimeError("no video codec")
            stream.width, stream.height = w + (w % 2), h + (h % 2)
            stream.pix_fmt = "yuv420p"
            for f in frames:
                if f.shape[0] != stream.height or f.shape[1] != stream.width:
                    f = np.pad(f, ((0, stream.height - h), (0, stream.width - w), (0, 0)))
                for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        return path
    except Exception:
        from PIL import Image

        gif = path.with_suffix(".gif")
        imgs = [Image.fromarray(f) for f in frames]
        imgs[0].save(gif, save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0)
        return gif


# --------------------------------------------------------------------------- tables
def _fmt(mean, std) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    return f"{mean:.0f} ± {std:.0f}"


def aggregate_runs(results: list[dict], modes) -> dict:
    """Combine per-run results {mode: summary}: mean/std over all episodes and over the runs' means."""
    agg = {}
    for mode in modes:
        per = [r[mode] for r in results if mode in r]
        if not per:
            continue
        all_eps = [x for p in per for x in p["returns"]]
        means = np.asarray([p["mean"] for p in per])
        agg[mode] = {
            "runs": len(per), "episodes_per_run": [p["episodes"] for p in per],
            "episode_mean": float(np.mean(all_eps)), "episode_std": float(np.std(all_eps)),
            "run_mean": float(means.mean()), "run_std": float(means.std()) if len(per) > 1 else 0.0,
            "data_source": sorted({p["data_source"] for p in per}),
        }
        rates = [p["success_rate"] for p in per if p.get("success_rate") is not None]
        if rates:         # tasks with a success test: the runs' success rates, summarised as their returns
            agg[mode].update({"success_runs": len(rates), "success_rate": float(np.mean(rates)),
                              "success_rate_std": float(np.std(rates)) if len(rates) > 1 else 0.0})
    return agg


def _reports_success(task: str) -> bool:
    from cg2a_ext.rl.envs import family_of

    try:
        return family_of(task).reports_success
    except ValueError:
        return False


def _success_cell(a: dict | None) -> str:
    if not a or a.get("success_rate") is None:
        return "n/a"
    rate = f"{a['success_rate']:.2f}"
    return rate if a["success_runs"] == 1 else f"{rate} ± {a['success_rate_std']:.2f}"


def markdown_table(rows: list[dict], modes) -> str:
    """Paper layout: one row per (task, algorithm), one column per mode, 'mean ± std'.

    ``rows``: [{"task", "algorithm", "aggregate": {mode: ...}}]. With one run the
    std is over episodes; with several it is over the runs' means (the paper's way),
    and the per-episode figure follows in brackets. Where a row's task family reports success
    (``EnvFamily.reports_success``), a success-rate column per mode follows: the run's share of
    successful episodes, or the mean ± std over the runs' shares.
    """
    success = any(_reports_success(row["task"]) for row in rows)
    columns = list(modes) + ([f"{m} success rate" for m in modes] if success else [])
    header = "| task | algorithm | runs | " + " | ".join(columns) + " |"
    lines = [header, "| " + " | ".join(["---"] * (3 + len(columns))) + " |"]
    for row in rows:
        cells = []
        nruns = 0
        for m in modes:
            a = row["aggregate"].get(m)
            if a is None:
                cells.append("n/a")
                continue
            nruns = a["runs"]
            if a["runs"] > 1:
                cells.append(f"{_fmt(a['run_mean'], a['run_std'])} (episodes: {_fmt(a['episode_mean'], a['episode_std'])})")
            else:
                cells.append(_fmt(a["episode_mean"], a["episode_std"]))
        if success:
            cells += [_success_cell(row["aggregate"].get(m)) for m in modes]
        lines.append(f"| {row['task']} | {row['algorithm']} | {nruns} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Data used by each mode:")
    lines.append("")
    seen = {}
    for row in rows:
        for m in modes:
            a = row["aggregate"].get(m)
            if a:
                seen.setdefault(m, set()).update(a["data_source"])
    for m in modes:
        if m in seen:
            lines.append(f"- `{m}`: {'; '.join(sorted(seen[m]))}")
    return "\n".join(lines) + "\n"


def save_json(obj, path) -> None:
    Path(path).write_text(json.dumps(obj, indent=2))
