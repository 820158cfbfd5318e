"""The update as CUDA graphs (``--cuda_graph``): static buffers, capture, and a self-check before use.

A GPU update of the paper's networks is host-bound: the host spends longer issuing its several hundred
kernels than the GPU spends running them. Captured once in a CUDA graph, the whole update (critic step
with its per-loss gradients and aggregate, the optimizer steps, and on actor updates the actor,
temperature and target steps) is one replay. What makes that safe:

* **Static buffers.** :class:`StaticUpdate` keeps one set of batch tensors; the replay sampler's batch
  is copied into them before each replay (the sampling itself, numpy indices and a gather, stays on the
  host, outside the graph). The update is ``SACAgent.update_on`` itself, run on those buffers, so the
  graph and the eager update are one piece of code.
* **Device draws.** A graph replays its kernels with their captured arguments, so a number drawn on
  the host would be frozen. Shift offsets, augmentation choices, overlay images and the policy noise
  already come from device generators; the algorithm's ``use_device_draws`` moves the rest there
  (CG2A's gamma). Device generators are registered with each graph, which advances them at every
  replay as the eager kernels would.
* **Two graphs by update parity** (more generally one per (actor step, target step) pattern in the
  period of ``actor_update_freq`` and ``critic_target_update_freq``).
* **Nothing read back.** Non-finite gradients skip their steps on the device (``optim.guarded_step``);
  ``--nonfinite raise``, which reads a flag back every step, is not captured.
* **A self-check before use** (:func:`self_check`): after a few eager updates (the optimizers' state
  exists, per_group_grads has chosen its method), the graphs are captured, then ``CHECK_UPDATES``
  updates run twice from the same state on the same batches, once replayed and once eagerly, and every
  parameter, optimizer moment, counter, metric and generator state is compared (``RTOL``, ``ATOL``: the
  graph replays the eager kernels, so only the order of atomic adds may differ). The graphs are used only
  if they agree; otherwise the update stays eager and one line says why (``--cuda_graph on``: an error).
  Either way the run continues from the state before the check.

Updates that ask for gradient diagnostics (they read values back) run eagerly between replays: both
paths update the same tensors in place. Static buffers are not state: a checkpoint holds the networks,
optimizers and generators as always, and a loaded optimizer state (new tensors) makes the graphs be
captured again.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

# The self-check: updates compared, and the tolerance of every compared tensor (torch.allclose).
CHECK_UPDATES_PER_PERIOD = 2
RTOL = 1e-4
ATOL = 1e-6
# eager updates before the capture, per period of update patterns: the optimizers' state is created by their
# first step, and per_group_grads measures its methods at its first call (host work a graph cannot hold)
WARMUP_PERIODS = 2


class GraphCheckError(RuntimeError):
    """``--cuda_graph on``, and the captured update does not equal the eager one (the message says where)."""


def capture_blocker(cfg) -> str | None:
    """Why the update of ``cfg`` (a TrainConfig) cannot be captured in a CUDA graph, or None when it can."""
    from cg2a_ext.rl import algorithms

    algorithm = algorithms.get(cfg.algorithm)
    if not algorithm.capturable:
        return f"{algorithm.name}'s update cannot be captured: {algorithm.not_capturable_because}"
    if cfg.nonfinite == "raise":
        return "--nonfinite raise reads a finite-check flag back to the host at every step, which a graph cannot"
    if cfg.compile == "on":
        return "--compile on: compiled blocks are not captured here (choose one of the two)"
    if cfg.precision == "bf16":
        return "--precision bf16: autocast's cached weight casts are not safe to capture"
    return None


def resolve_cuda_graph(cfg, device: torch.device) -> tuple[bool, str]:
    """(whether to capture the update, a line to report or ""). ``auto`` is off on a CPU (silently) and for a
    config that cannot be captured (with a line); ``on`` refuses both (ValueError, as config.check does)."""
    mode = getattr(cfg, "cuda_graph", "off")
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"unknown cuda_graph {mode!r}; choose auto, on or off")
    if mode == "off":
        return False, ""
    if torch.device(device).type != "cuda":
        if mode == "on":
            raise ValueError(f"--cuda_graph on needs a CUDA device, got {device}")
        return False, ""
    blocker = capture_blocker(cfg)
    if blocker:
        if mode == "on":
            raise ValueError(f"--cuda_graph on: {blocker}")
        return False, f"cuda_graph auto: eager update ({blocker})"
    return True, ""


def update_keys(actor_update_freq: int, critic_target_update_freq: int) -> list[tuple[bool, bool]]:
    """The (actor step, target step) patterns of one period of updates, in the order updates 1, 2, ... meet
    them (drq's 2 and 2: ``[(False, False), (True, True)]``, the two parities)."""
    period = math.lcm(actor_update_freq, critic_target_update_freq)
    keys: list[tuple[bool, bool]] = []
    for n in range(1, period + 1):
        key = (n % actor_update_freq == 0, n % critic_target_update_freq == 0)
        if key not in keys:
            keys.append(key)
    return keys


class StaticUpdate:
    """The agent's update on one set of batch tensors: ``fill`` copies a sampled batch into them, ``step(key)``
    runs ``SACAgent.update_on`` on them (no diagnostics, no auxiliary update) and returns its metrics."""

    def __init__(self, agent) -> None:
        self.agent = agent
        self.buffers: tuple[torch.Tensor, ...] | None = None

    def fill(self, batch) -> None:
        if self.buffers is None:        # allocated once, outside any graph's memory pool
            self.buffers = tuple(t.clone() for t in batch)
            return
        for static, t in zip(self.buffers, batch):
            static.copy_(t, non_blocking=True)

    def sample(self, replay) -> None:
        """A batch from the replay sampler (indices on the host, gathered where the frames live) into the buffers."""
        self.fill(replay.sample(self.agent.cfg.batch_size, device=self.agent.device))

    def step(self, key: tuple[bool, bool]):
        actor_step, target_step = key
        return self.agent.update_on(self.buffers, actor_step, target_step)


# ---------------------------------------------------------------------- the agent's state, in place
def state_tensors(agent) -> dict[str, torch.Tensor]:
    """Every tensor an update changes, by name: parameters and buffers, the temperature, the optimizers'
    state, the skip counters. Restored in place (a graph holds their addresses)."""
    out: dict[str, torch.Tensor] = {}
    for name in ("actor", "critic", "critic_target"):
        for key, value in getattr(agent, name).state_dict(keep_vars=True).items():
            out[f"{name}.{key}"] = value
    out["log_alpha"] = agent.log_alpha
    for name in ("actor_optimizer", "critic_optimizer", "log_alpha_optimizer"):
        for i, state in enumerate(getattr(agent, name).state.values()):
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    out[f"{name}[{i}].{key}"] = value
    out["skipped_critic_steps"] = agent.skipped_critic_steps
    out["skipped_actor_steps"] = agent.skipped_actor_steps
    out["skipped_aux_steps"] = agent.algorithm.skipped_aux_steps
    return out


def generators(agent) -> list[torch.Generator]:
    """The generators an update draws from: the algorithm's (augmentations, gamma) and the default one of the
    agent's device (the policy's sampling noise)."""
    gens = [v for v in vars(agent.algorithm).values() if isinstance(v, torch.Generator)]
    device = agent.device
    if device.type == "cuda":
        gens.append(torch.cuda.default_generators[device.index if device.index is not None
                                                  else torch.cuda.current_device()])
    else:
        gens.append(torch.default_generator)
    return gens


class Snapshot:
    """A copy of the agent's state (tensors, generators, counters), restored in place."""

    def __init__(self, agent) -> None:
        self.agent = agent
        self.tensors = {name: t.detach().clone() for name, t in state_tensors(agent).items()}
        self.generators = [(g, g.get_state()) for g in generators(agent)]
        self.counters = (agent.num_updates, agent.algorithm.num_aux_updates)

    def restore(self) -> None:
        current = state_tensors(self.agent)
        with torch.no_grad():
            for name, saved in self.tensors.items():
                current[name].copy_(saved)
        for g, state in self.generators:
            g.set_state(state)
        self.agent.num_updates, self.agent.algorithm.num_aux_updates = self.counters


def _difference(name: str, a, b) -> str | None:
    """Why ``a`` (the graph's) and ``b`` (the eager update's) disagree, or None."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        a, b = torch.as_tensor(a).detach(), torch.as_tensor(b).detach()
        if a.shape != b.shape:
            return f"{name}: shape {tuple(a.shape)} vs {tuple(b.shape)}"
        a64, b64 = a.double().cpu(), b.to(a.device).double().cpu()
        if not torch.allclose(a64, b64, rtol=RTOL, atol=ATOL, equal_nan=True):
            return f"{name} differs by up to {(a64 - b64).abs().nan_to_num(math.inf).max().item():.3g}"
        return None
    return None if a == b else f"{name}: {a!r} vs {b!r}"


def self_check(agent, replay, graph_step: Callable[[tuple, tuple[bool, bool]], dict],
               keys: list[tuple[bool, bool]], updates: int) -> str | None:
    """Run ``updates`` updates (their patterns cycling through ``keys``) twice from the agent's current state on
    the same batches, once through ``graph_step(batch, key)`` and once eagerly (``agent.update_on``), and
    compare the states, metrics and generator states they reach. Returns None when they agree (``RTOL``,
    ``ATOL``), else the first difference. Leaves the agent, and the replay's sampler, as they were."""
    start = Snapshot(agent)
    rng_state = replay.rng.bit_generator.state
    batches = [tuple(t.clone() for t in replay.sample(agent.cfg.batch_size, device=agent.device))
               for _ in range(updates)]
    replay.rng.bit_generator.state = rng_state
    pattern = [keys[i % len(keys)] for i in range(updates)]
    try:
        graph_metrics = [_detached(graph_step(batch, key)) for batch, key in zip(batches, pattern)]
        graph_state = {name: t.detach().clone() for name, t in state_tensors(agent).items()}
        graph_generators = [g.get_state() for g in generators(agent)]
        start.restore()
        eager_metrics = [_detached(agent.update_on(batch, *key)) for batch, key in zip(batches, pattern)]
        eager_state = state_tensors(agent)
        for i, (gm, em) in enumerate(zip(graph_metrics, eager_metrics)):
            if gm.keys() != em.keys():
                return f"update {i + 1}: metrics {sorted(gm)} vs {sorted(em)}"
            for name in gm:
                why = _difference(f"update {i + 1}'s {name}", gm[name], em[name])
                if why:
                    return why
        for name, value in graph_state.items():
            why = _difference(f"{name} after {updates} updates", value, eager_state[name])
            if why:
                return why
        for g, gs in zip(generators(agent), graph_generators):
            if not torch.equal(gs, g.get_state()):
                return f"the {g.device} generator's state differs after {updates} updates (draws out of step)"
        return None
    finally:
        start.restore()


def _detached(metrics) -> dict:
    """A copy of an update's metrics that later updates cannot change (a graph's outputs are overwritten)."""
    return {k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in metrics.items()}


class _Replay:
    """One captured graph and the metrics tensors it writes."""

    def __init__(self, graph, outputs) -> None:
        self.graph, self.outputs = graph, outputs

    def __call__(self):
        self.graph.replay()
        return self.outputs


def capture_graphs(static: StaticUpdate, keys: list[tuple[bool, bool]], warmup: int = 2) -> dict:
    """One CUDA graph per update pattern of ``keys`` on ``static``'s buffers (filled), sharing one memory pool:
    key -> a callable that replays it and returns its metrics (static tensors). The warm-up runs (cuBLAS and
    cuDNN set up their workspaces on first use) are undone: the agent's state is as before."""
    agent = static.agent
    device = agent.device
    before = Snapshot(agent)
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            for key in keys:
                static.step(key)
    torch.cuda.current_stream(device).wait_stream(side)
    before.restore()
    for optimizer in (agent.actor_optimizer, agent.critic_optimizer, agent.log_alpha_optimizer):
        for group in optimizer.param_groups:
            # optimizers refuse to be captured unless told; fused Adam's step is the same kernel either way
            group["capturable"] = True
    default = torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    own = [g for g in generators(agent) if g.device.type == "cuda" and g is not default]
    pool = torch.cuda.graph_pool_handle()
    runners = {}
    try:
        for key in keys:
            graph = torch.cuda.CUDAGraph()
            for g in own:     # the default generator is registered by the capture itself
                graph.register_generator_state(g)
            # thread_local: the environment's thread may use the GPU (rendering) while the capture runs
            with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
                outputs = static.step(key)
            runners[key] = _Replay(graph, outputs)
    finally:
        before.restore()      # a capture runs nothing, but it moves the generators' offsets
    return runners


class GraphedUpdate:
    """``--cuda_graph`` for one agent. ``update(replay, key)`` returns the update's metrics from a graph replay,
    or None when the update is to run eagerly (during the first updates, and for good after a failed check).

    ``capture``: builds the replays from (static, keys) (:func:`capture_graphs`; tests give an eager stand-in
    to exercise the check and the fallback on a CPU)."""

    def __init__(self, agent, capture: Callable = capture_graphs) -> None:
        self.agent = agent
        self.mode = agent.cfg.cuda_graph
        self.capture = capture
        self.static = StaticUpdate(agent)
        self.keys = update_keys(agent.cfg.actor_update_freq, agent.cfg.critic_target_update_freq)
        self.check_updates = CHECK_UPDATES_PER_PERIOD * math.lcm(agent.cfg.actor_update_freq,
                                                                agent.cfg.critic_target_update_freq)
        agent.algorithm.use_device_draws()    # from the first update: the eager ones draw as the graphs will
        self.reset()

    def reset(self) -> None:
        """Drop the graphs; capture again after the warm-up (the state's tensors were replaced)."""
        self.runners: dict = {}
        self.status = "warming up"
        self.eager_left = WARMUP_PERIODS * math.lcm(self.agent.cfg.actor_update_freq,
                                                    self.agent.cfg.critic_target_update_freq)

    @property
    def active(self) -> bool:
        return bool(self.runners)

    def update(self, replay, key: tuple[bool, bool]):
        if self.status == "eager":
            return None
        if not self.runners:
            if self.eager_left > 0:
                self.eager_left -= 1
                return None
            self.start(replay)
            if not self.runners:
                return None
        self.static.sample(replay)
        metrics = self.runners[key]()
        from cg2a_ext.rl.core.agent.sac_agent import UpdateMetrics

        # copies: the graph overwrites its outputs at the next replay, and the trainer averages a window
        return UpdateMetrics(_detached(metrics))

    def _graph_step(self, batch, key):
        self.static.fill(batch)
        return self.runners[key]()

    def start(self, replay) -> None:
        """Capture, check, and either use the graphs or fall back to the eager update with one line."""
        agent = self.agent
        try:
            rng_state = replay.rng.bit_generator.state     # the capture's batch leaves the run's sampling as it was
            self.static.sample(replay)
            replay.rng.bit_generator.state = rng_state
            self.runners = self.capture(self.static, self.keys)
            reason = self_check(agent, replay, self._graph_step, self.keys, self.check_updates)
        except Exception as e:       # a capture that fails is a reason to stay eager (auto), not to stop
            if self.mode == "on":
                raise
            reason = f"capture failed: {type(e).__name__}: {e}"
        if reason is None:
            self.status = "graph"
            agent.report(f"cuda_graph {self.mode}: the update runs as {len(self.runners)} CUDA graphs (self-check: "
                         f"{self.check_updates} updates equal the eager ones within rtol {RTOL}, atol {ATOL})")
            return
        self.runners = {}
        self.status = "eager"
        if self.mode == "on":
            raise GraphCheckError(f"--cuda_graph on: the captured update differs from the eager one ({reason}); "
                                  "use --cuda_graph auto or off")
        agent.report(f"cuda_graph auto: eager update (the captured update's self-check failed: {reason})")
