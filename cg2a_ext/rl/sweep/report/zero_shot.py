"""Zero-shot evaluation of a finished run's final policy, cached in the run folder.

The cache (``RunFolder.zero_shot_cache``) keeps, per mode, every episode's return, the data the
mode used and the checkpoint step it was measured at; for a family whose episodes report success
(``EnvFamily.reports_success``: robot), every episode's success too. A mode is evaluated again only if
it is missing, was measured on another checkpoint, has fewer episodes than asked (asking for fewer
takes the first ones: episode seeds do not depend on the count), or lacks the successes its family
reports (a cache written before they were kept).

Seeds: mode m (its index i in the modes of the task's environment family) gets the environment seed ``zero_shot_env`` i and
episode e the reset seed ``zero_shot`` (0, i, e) from the run's seed streams. They do not depend on
which modes are evaluated together, so a cached mode equals a fresh one; they are the seeds
``python/eval.py`` uses when it is given all the family's modes in their usual order. A sweep whose
tasks belong to several families asks each run for the modes of its own family (``own_modes``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from cg2a_ext.rl.run.folder import ZERO_SHOT_CACHE, RunFolder

CACHE_FILE = ZERO_SHOT_CACHE        # kept for callers that name the cache by this module
STREAM = "zero_shot"


def zero_shot_seeds(seeds, mode_index: int, episodes: int) -> tuple[int, list[int]]:
    """The environment seed and the episodes' reset seeds of the mode at ``mode_index`` (in its family's
    modes) from a run's ``SeedStreams``: what the report evaluates a run of that seed on."""
    return (seeds.integer(f"{STREAM}_env", mode_index, bits=31),
            [seeds.integer(STREAM, 0, mode_index, e, bits=31) for e in range(episodes)])


def load_cache(run_dir) -> dict:
    path = RunFolder(run_dir).zero_shot_cache
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {"modes": {}}
    doc.setdefault("modes", {})
    return doc


def _save_cache(run_dir, doc: dict) -> None:
    path = RunFolder(run_dir).zero_shot_cache
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)


def cached_result(doc: dict, mode: str, step: int, episodes: int, needs_success: bool = False) -> dict | None:
    """The cached result of ``mode`` cut to ``episodes`` (with ``success_rate`` where the cache holds the
    episodes' successes), or None if it cannot serve; ``needs_success``: a result without successes cannot."""
    r = doc.get("modes", {}).get(mode)
    if not r or int(r.get("checkpoint_step", -1)) != step or len(r.get("returns", [])) < episodes:
        return None
    successes = r.get("successes")
    has_successes = isinstance(successes, list) and len(successes) >= episodes
    if needs_success and not has_successes:
        return None
    returns = [float(x) for x in r["returns"][:episodes]]
    arr = np.asarray(returns, dtype=np.float64)
    out = {"returns": returns, "mean": float(arr.mean()), "std": float(arr.std()), "episodes": episodes,
           "data_source": r.get("data_source", ""), "checkpoint_step": step}
    if has_successes:
        out["success_rate"] = float(np.mean([bool(x) for x in successes[:episodes]]))
    return out


def modes_to_evaluate(run_dir, modes, episodes: int, step: int, needs_success: bool = False) -> list[str]:
    doc = load_cache(run_dir)
    return [m for m in modes if cached_result(doc, m, step, episodes, needs_success) is None]


def evaluate_run(run_dir, modes, episodes: int, device: str = "cpu", data_dir: str | None = None,
                 threads: int = 1) -> dict:
    """{mode: result} for ``modes`` on the run's newest checkpoint, evaluating only what the cache lacks."""
    from cg2a_ext.rl.run.checkpoint import latest_checkpoint, load_checkpoint
    from cg2a_ext.rl.config import TrainConfig
    from cg2a_ext.rl.envs import family_of

    run_dir = Path(run_dir)
    cfg = TrainConfig.load(RunFolder(run_dir).config)
    family = family_of(cfg.task)
    MODES = family.modes
    for m in modes:
        if m not in MODES:
            raise ValueError(f"unknown mode {m!r} for task {cfg.task}; known modes: {', '.join(MODES)}")
    ckpt = latest_checkpoint(run_dir)
    step = int(ckpt.stem.split("_")[1])
    todo = modes_to_evaluate(run_dir, modes, episodes, step, family.reports_success)
    if todo:
        import torch

        from cg2a_ext.rl.core.agent import make_agent
        from cg2a_ext.rl.envs import make_env
        from cg2a_ext.rl.core.evaluation import run_episodes, summarize
        from cg2a_ext.rl.run.seeding import SeedStreams

        if threads > 0:
            torch.set_num_threads(threads)
        if data_dir is not None:
            cfg.data_dir = data_dir
        seeds = SeedStreams(cfg.seed)
        state = load_checkpoint(ckpt, map_location=device)
        agent = None
        doc = load_cache(run_dir)
        for mode in todo:
            i = MODES.index(mode)
            env_seed, episode_seeds = zero_shot_seeds(seeds, i, episodes)
            env = make_env(cfg.task, mode=mode, seed=env_seed,
                           image_size=cfg.image_size, frame_stack=cfg.frame_stack, action_repeat=cfg.action_repeat,
                           episode_length=cfg.episode_length, data_dir=cfg.data_dir or None)
            try:
                if agent is None:
                    agent = make_agent(env.observation_space.shape, env.action_space.shape[0], cfg,
                                       device=torch.device(device))
                    agent.load_state_dict(state["agent"], networks_only=True)
                    agent.train(False)
                successes: list[bool] = []
                returns = run_episodes(agent, env, episodes, episode_seeds=episode_seeds, successes=successes)
                source = str(getattr(env, "data_source", mode))
            finally:
                env.close()
            doc["modes"][mode] = {"returns": returns, **summarize(returns), "data_source": source,
                                  "checkpoint_step": step, **({"successes": successes} if successes else {})}
            _save_cache(run_dir, doc)       # after each mode: an interrupted report keeps what it measured
    doc = load_cache(run_dir)
    return {m: cached_result(doc, m, step, episodes, family.reports_success) for m in modes}


def own_modes(run_dir, modes) -> list[str]:
    """Those of ``modes`` that the run's task has (its environment family's), in the order given."""
    from cg2a_ext.rl.config import TrainConfig
    from cg2a_ext.rl.envs import family_of

    known = family_of(TrainConfig.load(RunFolder(run_dir).config).task).modes
    return [m for m in modes if m in known]


def _evaluate_job(args) -> tuple[str, dict | str]:
    run_dir, modes, episodes, device, data_dir = args
    try:
        return str(run_dir), evaluate_run(run_dir, own_modes(run_dir, modes), episodes, device=device,
                                          data_dir=data_dir)
    except Exception as e:                                          # noqa: BLE001 - reported per run
        return str(run_dir), f"{type(e).__name__}: {e}"


def evaluate_runs(run_dirs, modes, episodes: int, jobs: int = 1, device: str = "cpu",
                  data_dir: str | None = None, log=print) -> dict[str, dict | str]:
    """Evaluate several runs (``jobs`` processes at a time); {run_dir: results or an error message}."""
    tasks = [(str(d), tuple(modes), episodes, device, data_dir) for d in run_dirs]
    out: dict[str, dict | str] = {}
    if jobs <= 1 or len(tasks) <= 1:
        for t in tasks:
            out[t[0]] = _evaluate_job(t)[1]
            log(f"zero-shot: {Path(t[0]).name}: " + _describe(out[t[0]]))
        return out
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        for run_dir, result in pool.map(_evaluate_job, tasks):
            out[run_dir] = result
            log(f"zero-shot: {Path(run_dir).name}: " + _describe(result))
    return out


def _describe(result) -> str:
    if isinstance(result, str):
        return f"error: {result}"
    return ", ".join(f"{m}={r['mean']:.0f}" for m, r in result.items())
