"""--cuda_graph on a CPU: the static-buffer update equals the normal one, the self-check and its fallback, the
refusals. (The capture itself needs a GPU: ``python python/gpu_checks.py run --stages graph``.)"""
from __future__ import annotations

import pytest
import torch

from agent_support import filled_replay, small_agent_cfg
from cg2a_ext.rl import algorithms
from cg2a_ext.rl.config import ConfigError
from cg2a_ext.rl.core.agent import make_agent
from cg2a_ext.rl.core.agent import graph as G

OBS = (9, 32, 32)
CAPTURABLE = ("drq", "svea", "ac", "cg2a")


def _agent(algorithm: str, **kw):
    torch.manual_seed(0)
    cfg = small_agent_cfg(algorithm=algorithm, **kw)
    return make_agent(OBS, 2, cfg, "cpu")


def _eager_capture(static, keys):
    """A stand-in for capture_graphs on a CPU: each 'graph' runs the static step eagerly."""
    return {key: (lambda key=key: static.step(key)) for key in keys}


class _OwnRNG:
    """The global CPU generator (the policy's sampling noise) per agent, so that two agents stepped in turn each
    draw the stream one agent alone would."""

    def __init__(self) -> None:
        self.state = torch.get_rng_state()

    def __enter__(self):
        self.outer = torch.get_rng_state()
        torch.set_rng_state(self.state)

    def __exit__(self, *exc) -> None:
        self.state = torch.get_rng_state()
        torch.set_rng_state(self.outer)


def _states_equal(a, b) -> list[str]:
    sa, sb = G.state_tensors(a), G.state_tensors(b)
    return [name for name in sa if not torch.equal(sa[name], sb[name])]


@pytest.mark.parametrize("algorithm", CAPTURABLE)
def test_static_buffer_step_equals_the_normal_update(algorithm):
    """Same seeds, six consecutive updates (both parities: actor and target steps on the even ones): the static
    step (batches copied into one set of buffers, every draw on the device, cg2a's gamma as a device tensor)
    leaves every parameter, moment and counter bit for bit where the normal update does, with the same metrics."""
    normal, static_agent = _agent(algorithm), _agent(algorithm)
    replay_a, replay_b = filled_replay(OBS), filled_replay(OBS)
    static_agent.algorithm.use_device_draws()
    static = G.StaticUpdate(static_agent)
    cfg = static_agent.cfg
    assert (cfg.actor_update_freq, cfg.critic_target_update_freq) == (2, 2)
    rng_a, rng_b = _OwnRNG(), _OwnRNG()
    for n in range(1, 7):
        with rng_a:
            m_normal = normal.update(replay_a)
        static_agent.num_updates += 1
        with rng_b:
            static.sample(replay_b)
            m_static = static.step((n % 2 == 0, n % 2 == 0))
        assert m_normal.keys() == m_static.keys()
        for key in m_normal:
            assert torch.equal(torch.as_tensor(m_normal[key]), torch.as_tensor(m_static[key])), (n, key)
        assert _states_equal(normal, static_agent) == [], n
    assert ("actor_loss" in m_static) and static.buffers[0].dtype == torch.uint8


def test_cg2a_device_gamma_is_exact_and_draws_the_same_numbers():
    """The device-gamma aggregate (two op calls blended by gamma) writes exactly the fused op's output, and the
    generator moves as the host draw moves it."""
    host, device = _agent("cg2a"), _agent("cg2a")
    device.algorithm.use_device_draws()
    params = host.critic_params
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(4, *p.shape, generator=g) for p in params]
    for p in params:
        p.grad = None
    res_host = host.algorithm.aggregator.apply_(params, grads)
    out_host = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    res_device = device.algorithm.aggregate_with_device_gamma(params, grads)
    assert all(torch.equal(a, p.grad) for a, p in zip(out_host, params))
    assert isinstance(res_device.gamma, torch.Tensor) and float(res_device.gamma) == res_host.gamma
    assert torch.equal(host.algorithm.gamma_generator.get_state(), device.algorithm.gamma_generator.get_state())


def test_graphed_update_with_a_passing_check_runs_the_same_training():
    """The controller with an eager stand-in for the graphs: warm-up updates, capture, the self-check (which
    leaves the state and the replay's sampler as they were), then 'replays'; the run equals one without it."""
    plain, graphed = _agent("cg2a"), _agent("cg2a")
    replay_a, replay_b = filled_replay(OBS), filled_replay(OBS)
    lines = []
    graphed.report = lines.append
    graphed.graph = G.GraphedUpdate(graphed, capture=_eager_capture)
    rng_a, rng_b = _OwnRNG(), _OwnRNG()
    for n in range(1, 9):
        with rng_a:
            plain.update(replay_a)
        with rng_b:
            graphed.update(replay_b, diagnostics=(n == 7))   # a diagnostics update runs eagerly between replays
        assert _states_equal(plain, graphed) == [], n
    assert graphed.graph.status == "graph" and graphed.graph.active
    assert len(lines) == 1 and lines[0].startswith("cuda_graph auto: the update runs as 2 CUDA graphs"), lines


def _perturbing_capture(static, keys):
    def run(key):
        metrics = static.step(key)
        with torch.no_grad():
            static.agent.log_alpha.add_(1e-3)      # a 'graph' that computes something else
        return metrics
    return {key: (lambda key=key: run(key)) for key in keys}


def test_failed_self_check_falls_back_to_eager_with_one_line():
    plain, graphed = _agent("drq"), _agent("drq")
    replay_a, replay_b = filled_replay(OBS), filled_replay(OBS)
    lines = []
    graphed.report = lines.append
    graphed.graph = G.GraphedUpdate(graphed, capture=_perturbing_capture)
    rng_a, rng_b = _OwnRNG(), _OwnRNG()
    for n in range(1, 9):
        with rng_a:
            plain.update(replay_a)
        with rng_b:
            graphed.update(replay_b)
    assert graphed.graph.status == "eager" and not graphed.graph.active
    assert len(lines) == 1 and lines[0].startswith("cuda_graph auto: eager update (the captured update's self-check "
                                                   "failed: update 2's critic_loss differs by up to"), lines
    assert _states_equal(plain, graphed) == []     # the check left no trace: the run went on eagerly


def test_failed_self_check_with_on_is_an_error():
    agent = _agent("drq")
    agent.cfg.cuda_graph = "on"        # as on a GPU (on a CPU the agent refuses "on" before any update)
    agent.graph = G.GraphedUpdate(agent, capture=_perturbing_capture)
    replay = filled_replay(OBS)
    with pytest.raises(G.GraphCheckError, match="--cuda_graph on: the captured update differs"):
        for _ in range(8):
            agent.update(replay)


def test_self_check_catches_draws_out_of_step():
    """A 'graph' that draws one number more than the eager update after its last update: the same values, but
    the generators would drift apart (the next update, and a resumed run, would differ)."""
    agent = _agent("drq")
    replay = filled_replay(OBS)
    for _ in range(4):
        agent.update(replay)
    calls = []

    def step(batch, key):
        metrics = agent.update_on(batch, *key)
        calls.append(key)
        if len(calls) == 4:
            torch.rand((), generator=agent.algorithm.generator)
        return metrics

    reason = G.self_check(agent, replay, step, G.update_keys(2, 2), 4)
    assert reason is not None and "generator's state differs" in reason
    assert G.self_check(agent, replay, lambda b, k: agent.update_on(b, *k), G.update_keys(2, 2), 4) is None


def test_update_patterns_per_period():
    assert G.update_keys(2, 2) == [(False, False), (True, True)]
    assert G.update_keys(1, 2) == [(True, False), (True, True)]
    assert G.update_keys(2, 3) == [(False, False), (True, False), (False, True), (True, True)]


def test_every_algorithm_declares_whether_it_can_be_captured():
    for name in algorithms.NAMES:
        algo = algorithms.get(name)
        assert isinstance(algo.capturable, bool)
        assert algo.capturable == (name in ("sac", *CAPTURABLE)), name
        assert algo.capturable or len(algo.not_capturable_because) > 20, name


def test_auto_off_on_cpu_and_refusals(monkeypatch):
    cpu = torch.device("cpu")
    assert G.resolve_cuda_graph(small_agent_cfg(algorithm="cg2a"), cpu) == (False, "")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        G.resolve_cuda_graph(small_agent_cfg(algorithm="cg2a", cuda_graph="on"), cpu)
    cuda = torch.device("cuda")    # resolving touches no GPU
    assert G.resolve_cuda_graph(small_agent_cfg(algorithm="cg2a"), cuda) == (True, "")
    for name in ("soda", "sgqn", "smg"):
        use, line = G.resolve_cuda_graph(small_agent_cfg(algorithm=name), cuda)
        assert not use and line.startswith(f"cuda_graph auto: eager update ({name}'s update cannot be captured: ")
    use, line = G.resolve_cuda_graph(small_agent_cfg(algorithm="drq", nonfinite="raise"), cuda)
    assert not use and "--nonfinite raise" in line
    assert G.resolve_cuda_graph(small_agent_cfg(algorithm="drq", cuda_graph="off"), cuda) == (False, "")
    # the config's checks: on needs CUDA, and an algorithm that can be captured
    with pytest.raises(ConfigError, match="--cuda_graph on needs a CUDA --device"):
        small_agent_cfg(algorithm="drq", cuda_graph="on").validate()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ConfigError, match="--cuda_graph on: sgqn's update cannot be captured: guided backprop"):
        small_agent_cfg(algorithm="sgqn", cuda_graph="on", device="cuda").validate()
    with pytest.raises(ConfigError, match="unknown cuda_graph"):
        small_agent_cfg(algorithm="drq", cuda_graph="sometimes").validate()


def test_cuda_graph_is_a_command_line_option():
    from cg2a_ext.rl.cli.options import config_from_args

    assert config_from_args(["--cuda_graph", "off"]).cuda_graph == "off"
    assert config_from_args([]).cuda_graph == "auto"


def test_checkpoint_with_gamma_drawn_elsewhere_resumes_from_a_seed_it_determines(capsys):
    """A checkpoint whose gamma generator lived on the other side (a CUDA generator's 16-byte state here): the
    generator is seeded from it, the same way each time, and one line says so."""
    agent = _agent("cg2a")
    state = agent.algorithm.state_dict()
    state["gamma_generator"] = torch.arange(16, dtype=torch.uint8)     # a CUDA generator's (seed, offset)
    draws = []
    for _ in range(2):
        agent.algorithm.load_state_dict(state)
        draws.append(torch.rand(3, generator=agent.algorithm.gamma_generator))
    assert torch.equal(draws[0], draws[1])
    assert "the checkpoint drew gamma on the GPU" in capsys.readouterr().err
    cpu_state = _agent("cg2a").algorithm.state_dict()
    agent.algorithm.load_state_dict(cpu_state)       # the same side: the stream itself continues
    assert torch.equal(agent.algorithm.gamma_generator.get_state(), cpu_state["gamma_generator"])


def test_loading_a_state_drops_the_graphs():
    agent = _agent("drq")
    replay = filled_replay(OBS)
    agent.graph = G.GraphedUpdate(agent, capture=_eager_capture)
    for _ in range(6):
        agent.update(replay)
    assert agent.graph.active
    agent.load_state_dict(agent.state_dict())
    assert not agent.graph.active and agent.graph.status == "warming up"


@pytest.mark.cuda
@pytest.mark.parametrize("algorithm", CAPTURABLE)
def test_captured_update_passes_its_self_check_and_trains_as_eager(algorithm):
    """On a GPU: the real capture passes the self-check, and twelve further updates replayed as graphs stay
    within the check's tolerance of the same updates run eagerly from the same state on the same batches."""
    torch.manual_seed(0)
    cfg = small_agent_cfg(algorithm=algorithm, device="cuda", cuda_graph="on", image_bank="")
    agent = make_agent(OBS, 2, cfg, "cuda")
    lines = []
    agent.report = lines.append
    replay = filled_replay(OBS)
    for _ in range(8):
        agent.update(replay)
    assert agent.graph.status == "graph", lines
    assert lines and lines[-1].startswith("cuda_graph on: the update runs as 2 CUDA graphs"), lines
    assert G.self_check(agent, replay, agent.graph._graph_step, agent.graph.keys, 12) is None
