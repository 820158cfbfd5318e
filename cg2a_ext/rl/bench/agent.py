#!/usr/bin/env python
"""Agent benchmarks: critic-update cost of cg2a vs ac vs K backward passes, and agent steps/s.

    python -m cg2a_ext.rl.bench.agent [--quick] [--presets cpu,paper]

Rows: {"suite": "agent", "name", "value", "unit"}. Critic-update rows time one
full critic update (augment, forward, backward(s), aggregation, Adam step) on
a batch already in memory, median over repetitions, for the same K and batch:

* ``ac``            : one backward on the K*B batch, mean of the K losses;
* ``cg2a``          : K per-loss gradients in one batched backward (vmap) + CG2A;
* ``k_backward``    : one forward on K*B, then K backward passes (retain_graph) for the K gradients + CG2A;
* ``k_separate``    : K forward+backward passes, one per B-sized group, + CG2A.

``K gradients ...`` rows time only the K per-loss gradients on one fixed
augmented batch (no augmentation, aggregation or Adam step): per_group_grads
against one forward on K*B followed by K backward passes.

Agent steps/s = 1 / (update + act + env step), each timed separately (the env
step with the real renderer when it can be built, at the configuration's size).

Speed options (issue 11; ``speed_rows``, also alone with ``--speed``): one update broken
down by phase (sampling, preprocessing, TD target, critic, actor; on CUDA also the host's
time to return from ``update`` against the GPU's span of it, by CUDA events), each option of
the ``# ---- speed`` config section on and off (updates alternate between the two agents so
that a shared machine's load hits both alike), end-to-end agent steps/s of the real loop
(act, update, env step, store) with the environment stepped inline or in the worker thread,
and whether the environment step and PyTorch release the GIL (each alone, then two threads).

The process keeps freed host memory (``cg2a_ext.rl.run.host_memory``), as ``train.py``
does by default. On CPU, the ``update ... glibc default malloc`` rows time one
SAC update of ``--preset cpu`` in child processes with and without that setting,
alternating, to show what it is worth.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time


import numpy as np
import torch

from cg2a_ext.bench.timing import median_time, sync


def _cfg(preset: str, **kw):
    """The preset's configuration of cartpole_balance on this machine's device, its unset options filled."""
    from cg2a_ext.rl.config import TrainConfig, resolve

    d = dict(preset=preset, task="cartpole_balance", device="cuda" if torch.cuda.is_available() else "cpu")
    d.update(kw)
    cfg = TrainConfig(**d)
    resolve(cfg)
    return cfg


def critic_update_times(preset: str, reps: int) -> dict:
    from cg2a_ext.rl.core.agent import make_agent
    from cg2a_ext.rl.algorithms.base import critic_loss

    cfg_cg = _cfg(preset, algorithm="cg2a")
    cfg_ac = _cfg(preset, algorithm="ac")
    device = torch.device(cfg_cg.device)
    obs_shape = (3 * cfg_cg.frame_stack, cfg_cg.image_size, cfg_cg.image_size)
    torch.manual_seed(0)
    cg = make_agent(obs_shape, 1, cfg_cg, device)
    ac = make_agent(obs_shape, 1, cfg_ac, device)
    b = cfg_cg.batch_size
    obs = torch.randint(0, 256, (b, *obs_shape), device=device).float()
    action = torch.rand(b, 1, device=device) * 2 - 1
    target = torch.randn(b, 1, device=device)
    K = cg.algorithm.K

    def k_backward():
        strat = cg.algorithm
        views = strat.views(obs)
        q1, q2 = cg.critic(views.reshape(K * b, *obs_shape), action.repeat(K, 1))
        q1, q2 = q1.view(K, b, 1), q2.view(K, b, 1)
        grads = [[] for _ in cg.critic_params]
        for k in range(K):
            lk = ((q1[k] - target) ** 2).mean() + ((q2[k] - target) ** 2).mean()
            for i, g in enumerate(torch.autograd.grad(lk, cg.critic_params, retain_graph=k < K - 1)):
                grads[i].append(g)
        for p in cg.critic_params:
            p.grad = None
        strat.aggregator.apply_(cg.critic_params, [torch.stack(g) for g in grads])
        cg.critic_optimizer.step()

    def k_separate():
        strat = cg.algorithm
        views = strat.views(obs)
        grads = [[] for _ in cg.critic_params]
        for k in range(K):
            lk = critic_loss(cg.critic, views[k], action, target)
            for i, g in enumerate(torch.autograd.grad(lk, cg.critic_params)):
                grads[i].append(g)
        for p in cg.critic_params:
            p.grad = None
        strat.aggregator.apply_(cg.critic_params, [torch.stack(g) for g in grads])
        cg.critic_optimizer.step()

    from cg2a_ext import per_group_grads

    fixed_views = cg.algorithm.views(obs)   # same augmented batch for the gradient-only rows

    def grads_per_group():
        per_group_grads(cg.critic, critic_loss, (fixed_views,), (action, target), params=cg.critic_params)

    def grads_k_backward():
        q1, q2 = cg.critic(fixed_views.reshape(K * b, *obs_shape), action.repeat(K, 1))
        q1, q2 = q1.view(K, b, 1), q2.view(K, b, 1)
        for k in range(K):
            lk = ((q1[k] - target) ** 2).mean() + ((q2[k] - target) ** 2).mean()
            torch.autograd.grad(lk, cg.critic_params, retain_graph=k < K - 1)

    res = {"K": K, "batch": b, "image": cfg_cg.image_size, "device": str(device)}
    res["grads_per_group"] = median_time(grads_per_group, device, reps)
    res["grads_k_backward"] = median_time(grads_k_backward, device, reps)
    res["ac"] = median_time(lambda: ac.update_critic(obs, action, target), device, reps)
    res["cg2a"] = median_time(lambda: cg.update_critic(obs, action, target), device, reps)
    res["k_backward"] = median_time(k_backward, device, reps)
    res["k_separate"] = median_time(k_separate, device, reps)
    return res


def critic_method_rows(preset: str, reps: int) -> list[dict]:
    """One critic update of ac and of cg2a with each per_group_grads method, the four alternating within every
    repetition (a shared machine's load then hits them alike); medians, and each over ac's."""
    from cg2a_ext.rl.core.agent import make_agent

    variants = {"ac": ("ac", None), "cg2a loop": ("cg2a", "loop"), "cg2a vmap": ("cg2a", "vmap"),
                "cg2a split": ("cg2a", "split")}
    agents = {}
    for name, (algorithm, method) in variants.items():
        cfg = _cfg(preset, algorithm=algorithm)
        torch.manual_seed(0)
        agents[name] = make_agent((3 * cfg.frame_stack, cfg.image_size, cfg.image_size), 1, cfg, torch.device(cfg.device))
        if method:
            agents[name].algorithm.grad_method = method
    device = torch.device(cfg.device)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    obs = (torch.randint(0, 256, (cfg.batch_size, 3 * cfg.frame_stack, cfg.image_size, cfg.image_size), device=device)
           .float().contiguous(memory_format=fmt))
    action = torch.rand(cfg.batch_size, 1, device=device) * 2 - 1
    target = torch.randn(cfg.batch_size, 1, device=device)
    times: dict[str, list[float]] = {name: [] for name in agents}
    for rep in range(reps + 1):
        for name, agent in agents.items():
            sync(device)
            start = time.perf_counter()
            agent.update_critic(obs, action, target)
            sync(device)
            if rep:   # the first round warms up
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    tag = f"{preset} K={agents['cg2a loop'].algorithm.K} B={cfg.batch_size} {cfg.image_size}px {device}"
    rows = []
    for name, seconds in medians.items():
        rows.append({"suite": "agent", "name": f"critic update {name} [{tag}]", "value": seconds * 1e3, "unit": "ms"})
        if name != "ac":
            rows.append({"suite": "agent", "name": f"  {name} / ac [{tag}]", "value": seconds / medians["ac"],
                         "unit": "x"})
    return rows


def _agent_and_replay(cfg, obs_shape, adim, device):
    """An agent for ``cfg`` and a replay buffer of 1000 random transitions (frames where ``cfg.replay_device``
    puts them)."""
    from cg2a_ext.rl.core.agent import make_agent
    from cg2a_ext.rl.core.replay import frames_device_for

    agent = make_agent(obs_shape, adim, cfg, device)
    frames_device = frames_device_for(cfg.replay_device, device, obs_shape, 2000, cfg.frame_stack, 250)
    return agent, _random_replay(obs_shape, adim, cfg.frame_stack, frames_device)


def _random_replay(obs_shape, adim, frame_stack, frames_device=None):
    from cg2a_ext.rl.core.replay import FrameReplayBuffer

    rb = FrameReplayBuffer(obs_shape, adim, 2000, frame_stack=frame_stack, episode_steps=250,
                           frames_device=frames_device)
    rng = np.random.default_rng(0)
    rb.add_first(rng.integers(0, 256, obs_shape, dtype=np.uint8))
    for _ in range(1000):
        rb.add(rng.uniform(-1, 1, adim), 0.0, rng.integers(0, 256, obs_shape, dtype=np.uint8), False)
    return rb


def update_time(preset: str, algorithm: str, reps: int) -> float:
    """Seconds per SAC update (critic every step, actor and targets every 2nd), no environment."""
    cfg = _cfg(preset, algorithm=algorithm)
    device = torch.device(cfg.device)
    agent, rb = _agent_and_replay(cfg, (3 * cfg.frame_stack, cfg.image_size, cfg.image_size), 1, device)
    return median_time(lambda: (agent.update(rb), agent.update(rb)), device, reps) / 2


def host_memory_rows(reps: int, rounds: int = 2) -> list[dict]:
    """One ``--preset cpu`` update with glibc's default malloc against freed memory kept, each in a
    fresh child process (mallopt cannot be undone), alternating ``rounds`` times; best of the rounds."""
    threads = torch.get_num_threads()
    rows = []
    for algo in ("drq", "cg2a"):
        best = {"default": float("inf"), "keep": float("inf")}
        for _ in range(rounds):
            for malloc in ("default", "keep"):
                out = subprocess.run([sys.executable, "-m", "cg2a_ext.rl.bench.agent", "--update-time", f"cpu:{algo}", "--malloc", malloc,
                                      "--reps", str(reps), "--threads", str(threads)],
                                     check=True, capture_output=True, text=True).stdout
                best[malloc] = min(best[malloc], float(out.strip().splitlines()[-1]))
        tag = f"cpu {algo} threads={threads}"
        rows.append({"suite": "agent", "name": f"update, glibc default malloc [{tag}]",
                     "value": best["default"] * 1e3, "unit": "ms"})
        rows.append({"suite": "agent", "name": f"update, freed host memory kept [{tag}]",
                     "value": best["keep"] * 1e3, "unit": "ms"})
        rows.append({"suite": "agent", "name": f"default / kept [{tag}]", "value": best["default"] / best["keep"],
                     "unit": "x"})
    return rows


def step_time(preset: str, algorithm: str, reps: int) -> dict:
    """Seconds per agent step: one SAC update (+ actor/target every 2nd), one act, one env step."""
    cfg = _cfg(preset, algorithm=algorithm)
    device = torch.device(cfg.device)
    obs_shape = (3 * cfg.frame_stack, cfg.image_size, cfg.image_size)
    adim = 1
    env_t = float("nan")
    try:
        from cg2a_ext.rl.envs import make_env

        env = make_env(cfg.task, seed=0, image_size=cfg.image_size, frame_stack=cfg.frame_stack,
                       action_repeat=cfg.action_repeat, episode_length=cfg.episode_length)
        adim = env.action_space.shape[0]
        env.reset(seed=0)
        a = np.zeros(adim, np.float32)
        env_t = median_time(lambda: env.step(a), torch.device("cpu"), max(20, reps * 5), warmup=3)
        env.close()
    except Exception as e:  # env module missing or renderer unavailable
        print(f"[agent bench] env step not timed: {e}", file=sys.stderr)
    agent, rb = _agent_and_replay(cfg, obs_shape, adim, device)
    upd = median_time(lambda: (agent.update(rb), agent.update(rb)), device, max(1, reps // 2)) / 2
    o = np.random.default_rng(1).integers(0, 256, obs_shape, dtype=np.uint8)
    act = median_time(lambda: agent.act(o, sample=True), device, 20, warmup=2)
    total = upd + act + (env_t if env_t == env_t else 0.0)
    return {"update": upd, "act": act, "env": env_t, "steps_per_s": 1.0 / total}


# ------------------------------------------------------------------ speed options (issue 11)
def _row(name, value, unit):
    return {"suite": "agent", "name": name, "value": value, "unit": unit}


def update_breakdown(preset: str, algorithm: str, reps: int) -> dict:
    """Seconds per phase of one update (two updates per repetition: the actor runs on the second), synchronising
    after each phase; on CUDA also the host's time to return from ``update`` and the GPU's span (CUDA events)."""
    cfg = _cfg(preset, algorithm=algorithm)
    device = torch.device(cfg.device)
    agent, rb = _agent_and_replay(cfg, (3 * cfg.frame_stack, cfg.image_size, cfg.image_size), 1, device)
    phases = {k: [] for k in ("sample", "preprocess", "td_target", "critic", "actor")}

    def timed(name, fn):
        t = time.perf_counter()
        out = fn()
        sync(device)
        phases[name].append(time.perf_counter() - t)
        return out

    from cg2a_ext.rl.core.agent.precision import matmul_precision

    for rep in range(reps + 1):
        with matmul_precision(agent.precision, device):
            batch = timed("sample", lambda: rb.sample(cfg.batch_size, device=device))
            obs, action, reward, next_obs, not_done = batch
            obs, next_obs = timed("preprocess", lambda: (agent.preprocess(obs), agent.preprocess(next_obs)))
            target = timed("td_target", lambda: agent.td_target(reward, next_obs, not_done))
            timed("critic", lambda: agent.update_critic(obs, action, target))
            timed("actor", lambda: agent.update_actor_and_alpha(obs))
        if rep == 0:   # warm-up
            for v in phases.values():
                v.clear()
    res = {k: statistics.median(v) for k, v in phases.items()}
    res["update"] = res["sample"] + res["preprocess"] + res["td_target"] + res["critic"] + res["actor"] / 2
    if device.type == "cuda":
        host, span = [], []
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            t = time.perf_counter()
            start.record()
            agent.update(rb)
            agent.update(rb)
            end.record()
            host.append((time.perf_counter() - t) / 2)
            torch.cuda.synchronize()
            span.append(start.elapsed_time(end) / 2e3)
        res["host_returns"], res["device_span"] = statistics.median(host), statistics.median(span)
    return res


def option_pair_times(preset: str, algorithm: str, option: str, values: tuple, reps: int) -> dict:
    """Seconds per update (median; each repetition = 2 updates) with ``option`` at each of ``values``, the agents
    alternating; for ``compile`` also the first (compiling) update's seconds."""
    cfg0 = _cfg(preset, algorithm=algorithm)
    device = torch.device(cfg0.device)
    obs_shape = (3 * cfg0.frame_stack, cfg0.image_size, cfg0.image_size)
    runs, times, first = {}, {v: [] for v in values}, {}
    for v in values:
        torch.manual_seed(0)
        runs[v] = _agent_and_replay(_cfg(preset, algorithm=algorithm, **{option: v}), obs_shape, 1, device)
        t = time.perf_counter()
        runs[v][0].update(runs[v][1])
        runs[v][0].update(runs[v][1])
        sync(device)
        first[v] = time.perf_counter() - t
    for _ in range(reps):
        for v in values:
            agent, rb = runs[v]
            t = time.perf_counter()
            agent.update(rb)
            agent.update(rb)
            sync(device)
            times[v].append((time.perf_counter() - t) / 2)
    return {"update": {v: statistics.median(times[v]) for v in values}, "first": first}


def end_to_end_steps(preset: str, algorithm: str, steps: int, env_overlap: bool, cuda_graph: str = "auto") -> float:
    """Agent steps/s of the training loop itself (act, update, env step, store; no logging or evaluation), with
    the environment stepped inline or overlapped with the update in the worker thread, and ``--cuda_graph``
    (on CUDA the warm-up then covers the graphs' capture and self-check)."""
    from cg2a_ext.rl.core.agent.graph import CHECK_UPDATES_PER_PERIOD, WARMUP_PERIODS
    from cg2a_ext.rl.core.env_stepper import EnvStepper
    from cg2a_ext.rl.envs import make_env

    cfg = _cfg(preset, algorithm=algorithm, cuda_graph=cuda_graph)
    device = torch.device(cfg.device)
    env = make_env(cfg.task, seed=0, image_size=cfg.image_size, frame_stack=cfg.frame_stack,
                   action_repeat=cfg.action_repeat, episode_length=cfg.episode_length)
    adim = env.action_space.shape[0]
    agent, rb = _agent_and_replay(cfg, env.observation_space.shape, adim, device)
    stepper = EnvStepper(env, overlap=env_overlap)
    try:
        obs, _ = stepper.reset(seed=0)
        rb.add_first(obs)
        t = None
        warmup = 2 if agent.graph is None else 2 + 2 * (WARMUP_PERIODS + CHECK_UPDATES_PER_PERIOD)
        for i in range(steps + warmup):
            if i == warmup:
                sync(device)
                t = time.perf_counter()
            action = agent.act(obs, sample=True)
            stepper.step_async(action)
            agent.update(rb)
            obs, reward, terminated, truncated, _ = stepper.wait()
            rb.add(action, reward, obs, terminated)
            if terminated or truncated:
                obs, _ = stepper.reset(seed=i)
                rb.add_first(obs)
        sync(device)
        return steps / (time.perf_counter() - t)
    finally:
        stepper.close()


def gil_overlap(preset: str, reps: int) -> dict:
    """Seconds for ``reps`` env steps alone, ``reps`` CPU-bound torch ops alone (a 1-thread conv forward+backward
    of about an env step's length), a pure-Python loop alone, then each of the latter overlapped with the env
    steps in a second thread: overlapped ~ max(alone) means both release the GIL, ~ sum means they serialise."""
    import threading

    from cg2a_ext.rl.envs import make_env

    cfg = _cfg(preset)
    env = make_env(cfg.task, seed=0, image_size=cfg.image_size, frame_stack=cfg.frame_stack,
                   action_repeat=cfg.action_repeat, episode_length=10 ** 6)
    env.reset(seed=0)
    a = np.zeros(env.action_space.shape, np.float32)
    # the env's GL context is current on this thread: step it here and run the other work in the thread
    conv = torch.nn.Conv2d(16, 16, 3)
    x = torch.randn(32, 16, 40, 40)

    def env_steps():
        for _ in range(reps):
            env.step(a)

    def torch_ops():
        for _ in range(reps):
            conv(x).sum().backward()

    def python_loop():
        for _ in range(reps):
            s = 0
            for i in range(300_000):
                s += i

    def alone(fn):
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    def together(fn):
        th = threading.Thread(target=fn)
        t = time.perf_counter()
        th.start()
        env_steps()
        th.join()
        return time.perf_counter() - t

    def probe_stalls(fn):
        """Fraction of ``fn``'s wall time during which a spinning Python thread did not run for > 1 ms. A busy
        machine stalls it as well, whatever holds the GIL: compare with a GIL-releasing and a GIL-holding fn."""
        stop, stamps = threading.Event(), []

        def spin():
            while not stop.is_set():
                stamps.append(time.perf_counter())

        th = threading.Thread(target=spin)
        th.start()
        t = time.perf_counter()
        fn()
        wall = time.perf_counter() - t
        stop.set()
        th.join()
        gaps = np.diff(np.asarray(stamps))
        return float(gaps[gaps > 1e-3].sum()) / wall

    env_steps()   # warm-up
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = {"env": alone(env_steps), "torch": alone(torch_ops), "python": alone(python_loop),
               "env+torch": together(torch_ops), "env+python": together(python_loop),
               "probe stalled by env": probe_stalls(env_steps), "probe stalled by torch": probe_stalls(torch_ops),
               "probe stalled by python": probe_stalls(python_loop)}
    finally:
        torch.set_num_threads(prev)
        env.close()
    return res


def replay_sample_times(preset: str, reps: int) -> dict:
    """Seconds per ``sample`` of one batch from the host numpy ring and from a torch ring (on the CPU; on the GPU
    with CUDA), to the training device, alternating."""
    cfg = _cfg(preset)
    device = torch.device(cfg.device)
    obs_shape = (3 * cfg.frame_stack, cfg.image_size, cfg.image_size)
    rings = {name: _random_replay(obs_shape, 1, cfg.frame_stack, frames_device)
             for name, frames_device in (("numpy", None), ("torch", str(device)))}
    times = {k: [] for k in rings}
    for _ in range(reps):
        for name, rb in rings.items():
            times[name].append(median_time(lambda: rb.sample(cfg.batch_size, device=device), device, 1, warmup=0))
    return {k: statistics.median(v) for k, v in times.items()}


def speed_rows(quick: bool = False, presets: list[str] | None = None) -> list[dict]:
    """The issue-11 rows: update breakdown, each speed option on/off, end-to-end steps/s, GIL overlap."""
    rows = []
    threads = torch.get_num_threads()
    cuda = torch.cuda.is_available()
    presets = presets or (["cpu", "paper"] if cuda else ["cpu"])
    reps = 3 if quick else 6
    for preset in presets:
        for algo in ("drq", "cg2a"):
            tag = f"{preset} {algo} {'cuda' if cuda else 'cpu'} threads={threads}"
            b = update_breakdown(preset, algo, reps)
            for k in ("sample", "preprocess", "td_target", "critic", "actor", "update"):
                rows.append(_row(f"update phase {k} [{tag}]", b[k] * 1e3, "ms"))
            if "device_span" in b:
                rows.append(_row(f"update host returns after [{tag}]", b["host_returns"] * 1e3, "ms"))
                rows.append(_row(f"update GPU span (CUDA events) [{tag}]", b["device_span"] * 1e3, "ms"))
        options = [("precision", ("fp32", "tf32", "bf16") if cuda else ("fp32", "bf16")),
                   ("channels_last", (True, False)), ("replay_device", ("cuda", "cpu") if cuda else ("cpu",)),
                   ("compile", ("off", "on"))]
        for algo in ("drq", "cg2a"):
            tag = f"{preset} {algo} {'cuda' if cuda else 'cpu'} threads={threads}"
            for option, values in options:
                if len(values) < 2:
                    continue
                r = option_pair_times(preset, algo, option, values, reps)
                for v in values:
                    rows.append(_row(f"update {option}={v} [{tag}]", r["update"][v] * 1e3, "ms"))
                    rows.append(_row(f"update {option}={v} / {option}={values[0]} [{tag}]",
                                     r["update"][v] / r["update"][values[0]], "x"))
                if option == "compile":
                    rows.append(_row(f"first 2 updates incl. compiling [{tag}]", r["first"]["on"], "s"))
        r = replay_sample_times(preset, 5 * reps)
        tag = f"{preset} B={_cfg(preset).batch_size} {'cuda' if cuda else 'cpu'}"
        rows.append(_row(f"replay sample, numpy ring [{tag}]", r["numpy"] * 1e3, "ms"))
        rows.append(_row(f"replay sample, torch ring [{tag}]", r["torch"] * 1e3, "ms"))
        for algo in ("drq", "cg2a"):
            tag = f"{preset} {algo} {'cuda' if cuda else 'cpu'} threads={threads}"
            steps = 10 if quick else 30
            serial = end_to_end_steps(preset, algo, steps, env_overlap=False)
            overlap = end_to_end_steps(preset, algo, steps, env_overlap=True)
            rows.append(_row(f"end-to-end agent steps/s, env inline [{tag}]", serial, "steps/s"))
            rows.append(_row(f"end-to-end agent steps/s, env_overlap [{tag}]", overlap, "steps/s"))
            rows.append(_row(f"env_overlap / inline [{tag}]", overlap / serial, "x"))
    g = gil_overlap("cpu", 10 if quick else 30)
    for k, v in g.items():
        rows.append(_row(f"GIL: {k} [cpu preset env, 1 torch thread]", v, "fraction" if "probe" in k else "s"))
    rows.append(_row("GIL: env+torch / max(env, torch)", g["env+torch"] / max(g["env"], g["torch"]), "x"))
    rows.append(_row("GIL: env+torch / (env + torch)", g["env+torch"] / (g["env"] + g["torch"]), "x"))
    rows.append(_row("GIL: env+python / max(env, python)", g["env+python"] / max(g["env"], g["python"]), "x"))
    rows.append(_row("GIL: env+python / (env + python)", g["env+python"] / (g["env"] + g["python"]), "x"))
    return rows


def run(quick: bool = False, presets: list[str] | None = None) -> list[dict]:
    """``quick``: fewer repetitions and only the cpu preset (unless ``presets`` names others)."""
    from cg2a_ext.rl.config import PRESETS
    from cg2a_ext.rl.run.host_memory import keep_freed_host_memory

    kept = keep_freed_host_memory()   # as train.py does by default (False where there is no mallopt)
    rows = []
    threads = torch.get_num_threads()
    presets = presets or (["cpu"] if quick else ["cpu", "paper"])
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise SystemExit(f"agent.py: unknown preset(s) {unknown}; choose from {sorted(PRESETS)}")
    for preset in presets:
        reps = 3 if (quick or preset == "paper") else 7
        r = critic_update_times(preset, reps)
        tag = f"{preset} K={r['K']} B={r['batch']} {r['image']}px {r['device']} threads={threads}"
        for name in ("ac", "cg2a", "k_backward", "k_separate"):
            rows.append({"suite": "agent", "name": f"critic update {name} [{tag}]", "value": r[name] * 1e3,
                         "unit": "ms"})
        rows.append({"suite": "agent", "name": f"cg2a / ac [{tag}]", "value": r["cg2a"] / r["ac"], "unit": "x"})
        rows.append({"suite": "agent", "name": f"k_backward / cg2a [{tag}]", "value": r["k_backward"] / r["cg2a"],
                     "unit": "x"})
        rows.append({"suite": "agent", "name": f"k_separate / cg2a [{tag}]", "value": r["k_separate"] / r["cg2a"],
                     "unit": "x"})
        # the K gradients alone, on one fixed augmented batch (the updates above include augmenting)
        rows.append({"suite": "agent", "name": f"K gradients per_group_grads [{tag}]",
                     "value": r["grads_per_group"] * 1e3, "unit": "ms"})
        rows.append({"suite": "agent", "name": f"K gradients by K backward passes [{tag}]",
                     "value": r["grads_k_backward"] * 1e3, "unit": "ms"})
        rows.append({"suite": "agent", "name": f"K backward passes / per_group_grads [{tag}]",
                     "value": r["grads_k_backward"] / r["grads_per_group"], "unit": "x"})
    for preset in presets:
        for algo in ("drq", "cg2a"):
            s = step_time(preset, algo, 3 if (quick or preset == "paper") else 6)
            tag = f"{preset} {algo} threads={threads}"
            rows.append({"suite": "agent", "name": f"agent steps/s [{tag}]", "value": s["steps_per_s"], "unit": "steps/s"})
            rows.append({"suite": "agent", "name": f"  update [{tag}]", "value": s["update"] * 1e3, "unit": "ms"})
            rows.append({"suite": "agent", "name": f"  env step [{tag}]", "value": s["env"] * 1e3, "unit": "ms"})
    if kept and "cpu" in presets and not torch.cuda.is_available():
        rows += host_memory_rows(3 if quick else 6)
    rows += speed_rows(quick, presets if torch.cuda.is_available() else [p for p in presets if p == "cpu"] or None)
    return rows


def format_table(rows) -> str:
    lines = ["| benchmark | value | unit |", "| --- | ---: | --- |"]
    for r in rows:
        v = r["value"]
        lines.append(f"| {r['name']} | {v:.3g} | {r['unit']} |" if isinstance(v, float) else
                     f"| {r['name']} | {v} | {r['unit']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Agent benchmarks (critic update costs, agent steps/s).")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions; the cpu preset only by default")
    ap.add_argument("--presets", default="", help="comma-separated presets to measure (default: cpu,paper)")
    ap.add_argument("--critic-methods", action="store_true",
                    help="only the critic update of ac and of cg2a with each per_group_grads method")
    ap.add_argument("--speed", action="store_true",
                    help="only the speed-option rows (issue 11): update breakdown, options on/off, end-to-end, GIL")
    # child-process mode of host_memory_rows: print one update's seconds and exit
    ap.add_argument("--update-time", metavar="PRESET:ALGORITHM", help=argparse.SUPPRESS)
    ap.add_argument("--malloc", choices=("default", "keep"), default="keep", help=argparse.SUPPRESS)
    ap.add_argument("--reps", type=int, default=6, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.update_time:
        from cg2a_ext.rl.run.host_memory import keep_freed_host_memory

        if args.malloc == "keep" and not keep_freed_host_memory():
            raise SystemExit("agent.py: mallopt is not available here")
        if args.threads:
            torch.set_num_threads(args.threads)
        preset, algorithm = args.update_time.split(":")
        print(update_time(preset, algorithm, args.reps))
        raise SystemExit(0)
    presets = [p for p in args.presets.split(",") if p] or None
    if args.critic_methods:
        from cg2a_ext.rl.run.host_memory import keep_freed_host_memory

        keep_freed_host_memory()   # as train.py does by default
        rows = [row for preset in presets or ["cpu"] for row in critic_method_rows(preset, 3 if args.quick else 7)]
        print(format_table(rows))
    elif args.speed:
        from cg2a_ext.rl.run.host_memory import keep_freed_host_memory

        keep_freed_host_memory()   # as train.py does by default
        print(format_table(speed_rows(quick=args.quick, presets=presets)))
    else:
        print(format_table(run(quick=args.quick, presets=presets)))
