"""The trainer's speed options (issue 11): each leaves the algorithm as it is.

precision (fp32 adds nothing to the plain float path; bf16 autocast keeps float32 gradients close to
fp32's), channels_last (equal in float64 to the contiguous layout, also under vmap) and compiled
network blocks (equal to eager within float tolerance). The replay's frame rings are tested in
test_replay.py, the environment stepped in a worker thread in test_env_stepper.py.
"""
import copy

import numpy as np
import pytest
import torch

from cg2a_ext import per_group_grads
from cg2a_ext.rl.core.agent import make_agent
from cg2a_ext.rl.core.agent.networks import build_networks
from cg2a_ext.rl.algorithms.base import critic_loss
from cg2a_ext.rl.cli.options import config_from_args
from cg2a_ext.rl.config import ConfigError, TrainConfig
from cg2a_ext.rl.core.agent.precision import autocast_dtype, matmul_precision, resolve_precision

from agent_support import filled_replay, small_agent_cfg

OBS = (9, 32, 32)
A = 2


def twin_agents(algorithm, first: dict, second: dict):
    """Two agents with the same initial networks, differing in the options ``first`` / ``second``."""
    torch.manual_seed(0)
    a = make_agent(OBS, A, small_agent_cfg(algorithm=algorithm, **first), "cpu")
    torch.manual_seed(0)
    b = make_agent(OBS, A, small_agent_cfg(algorithm=algorithm, **second), "cpu")
    for name in ("actor", "critic", "critic_target"):
        getattr(b, name).load_state_dict(getattr(a, name).state_dict())
    return a, b


def float_batch(b=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randint(0, 256, (b, *OBS), generator=g).float()
    return obs, torch.rand(b, A, generator=g) * 2 - 1, torch.randn(b, 1, generator=g)


# ---------------------------------------------------------------------------------------- precision
def test_precision_names_resolve_per_device():
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("auto", "cuda") == "tf32"   # resolution only: no CUDA call for auto/tf32
    assert [resolve_precision(p, "cpu") for p in ("fp32", "tf32", "bf16")] == ["fp32", "tf32", "bf16"]
    assert autocast_dtype("bf16") is torch.bfloat16 and autocast_dtype("tf32") is None
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ConfigError, match="unknown precision 'half'"):
        small_agent_cfg(precision="half").validate()
    # the CUDA switches are left alone on a CPU device
    before = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    with matmul_precision("tf32", "cpu"):
        assert (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision) == before


def test_matmul_precision_sets_and_restores_cuda_switches():
    """The TF32 switches are process-wide: the block sets them and puts the previous values back, even on error."""
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = matmul.fp32_precision, conv.fp32_precision
    with matmul_precision("tf32", torch.device("cuda")):
        assert (matmul.fp32_precision, conv.fp32_precision) == ("tf32", "tf32")
    with pytest.raises(KeyError):
        with matmul_precision("fp32", torch.device("cuda")):
            assert (matmul.fp32_precision, conv.fp32_precision) == ("ieee", "ieee")
            raise KeyError
    assert (matmul.fp32_precision, conv.fp32_precision) == before


@pytest.mark.parametrize("algorithm", ["drq", "cg2a"])
def test_fp32_critic_gradient_is_the_plain_float_path(algorithm, monkeypatch):
    """precision fp32 (the CPU default) adds nothing: the critic gradient equals plain autograd bit for bit.
    per_group_grads' "auto" is pinned to the loop: it picks by timing, and vmap's batched convolutions may
    differ from K plain backward passes in the last bits (test_ops_per_group_grads compares them)."""
    import sys

    class AlwaysLoop(dict):
        def get(self, key, default=None):
            return "loop"

    monkeypatch.setattr(sys.modules["cg2a_ext.per_group_grads"], "_AUTO_CHOICE", AlwaysLoop())
    torch.manual_seed(0)
    agent = make_agent(OBS, A, small_agent_cfg(algorithm=algorithm, precision="fp32"), "cpu")
    assert agent.precision == "fp32" and agent.critic.autocast_dtype is None
    obs, action, target = float_batch()
    obs = obs.contiguous(memory_format=torch.channels_last)
    params = agent.critic_params
    if algorithm == "drq":
        expected = torch.autograd.grad(critic_loss(agent.critic, obs, action, target), params)
        agent.algorithm.critic_gradient(agent.critic_step(obs, action, target))
        got = [p.grad for p in params]
    else:   # the K per-loss gradients the aggregator receives, against K plain backward passes
        state = agent.algorithm.generator.get_state()
        views = agent.algorithm.views(obs)
        per_view = [torch.autograd.grad(critic_loss(agent.critic, v, action, target), params) for v in views]
        expected = [torch.stack(gs) for gs in zip(*per_view)]
        agent.algorithm.generator.set_state(state)
        got, _ = agent.algorithm.per_loss_grads(agent.nets, obs, action, target)
    for g, e in zip(got, expected):
        assert torch.equal(g, e)


@pytest.mark.parametrize("algorithm", ["drq", "cg2a"])
def test_bf16_update_gives_finite_fp32_gradients_close_to_fp32(algorithm):
    fp32, bf16 = twin_agents(algorithm, dict(precision="fp32"), dict(precision="bf16"))
    assert bf16.critic.autocast_dtype is torch.bfloat16 and bf16.actor.autocast_dtype is torch.bfloat16
    obs, action, _ = float_batch()
    target = fp32.td_target(torch.rand(8, 1), obs, torch.ones(8, 1))
    grads = {}
    for name, agent in (("fp32", fp32), ("bf16", bf16)):
        agent.algorithm.generator.manual_seed(3)   # the same augmentation draws
        if algorithm == "cg2a":
            agent.algorithm.gamma_generator.manual_seed(4)
        out = agent.algorithm.critic_gradient(agent.critic_step(obs, action, target))
        assert not out.zeroed and out.loss.dtype == torch.float32
        grads[name] = [p.grad.clone() for p in agent.critic_params]
    differs = False
    for g32, g16, p in zip(grads["fp32"], grads["bf16"], bf16.critic_params):
        assert g16.dtype == torch.float32 == p.dtype and torch.isfinite(g16).all()
        # bfloat16 keeps 8 bits of mantissa; cg2a's sign-agreement mask also flips on near-zero entries, which
        # moves a small tensor (an 8-unit bias: cos 0.973 with one draw of the overlays) more than a large one
        cos = torch.nn.functional.cosine_similarity(g16.flatten(), g32.flatten(), dim=0)
        assert cos > 0.95, (tuple(p.shape), float(cos))
        differs |= not torch.equal(g16, g32)
    g16, g32 = (torch.cat([g.flatten() for g in grads[name]]) for name in ("bf16", "fp32"))
    cos = torch.nn.functional.cosine_similarity(g16, g32, dim=0)
    rel = (g16 - g32).norm() / g32.norm().clamp_min(1e-12)
    assert cos > 0.98 and rel < 0.25, (float(cos), float(rel))      # the whole critic gradient
    assert differs, "bf16 autocast changed nothing: the forwards did not run in bfloat16"
    # whole updates (critic, actor, temperature, targets) stay finite and float32
    rb = filled_replay()
    for step in range(2):
        torch.manual_seed(step)
        m = bf16.update(rb)
        assert torch.isfinite(m["critic_loss"]) and m["critic_loss"].dtype == torch.float32
    assert torch.isfinite(m["actor_loss"]) and torch.isfinite(m["alpha_loss"])   # the actor ran on the 2nd
    assert m["skipped_critic_steps"] == 0 and m["skipped_actor_steps"] == 0
    for net in (bf16.actor, bf16.critic, bf16.critic_target):
        assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in net.parameters())
    # acting runs under the same autocast and returns float32 actions
    a = bf16.act(np.zeros(OBS, np.uint8), sample=True)
    assert a.dtype == np.float32 and np.isfinite(a).all()


def test_a_recorded_split_method_that_no_longer_applies_is_measured_again(monkeypatch):
    """A run that chose split and resumes with options split cannot serve (e.g. --compile on, a resumable
    option) measures the methods again instead of failing."""
    import sys

    import cg2a_ext._split_grads as split_module

    pgg = sys.modules["cg2a_ext.per_group_grads"]
    monkeypatch.setattr(pgg, "_AUTO_CHOICE", {})
    agent = make_agent(OBS, A, small_agent_cfg(algorithm="cg2a", augmentations=("overlay",)), "cpu")
    agent.algorithm.grad_method = "split"       # as restored from such a checkpoint
    obs, action, target = float_batch()
    reason = lambda module, names: "submodule 'encoder' is compiled (as with --compile on)"   # noqa: E731
    monkeypatch.setattr(split_module, "unsupported_reason", reason)
    monkeypatch.setattr(pgg, "unsupported_reason", reason)
    grads, _ = agent.algorithm.per_loss_grads(agent.nets, obs, action, target)
    assert agent.algorithm.grad_method in ("loop", "vmap")
    assert all(torch.isfinite(g).all() for g in grads)


def test_bf16_per_loss_gradients_by_vmap_split_and_loop_agree():
    """Autocast inside per_group_grads: the three methods give the same float32 gradients."""
    torch.manual_seed(0)
    agent = make_agent(OBS, A, small_agent_cfg(algorithm="cg2a", precision="bf16"), "cpu")
    obs, action, target = float_batch()
    views = agent.algorithm.views(agent.preprocess(obs.to(torch.uint8)))
    res = {m: per_group_grads(agent.critic, critic_loss, (views,), (action, target), params=agent.critic_params,
                              method=m) for m in ("vmap", "loop", "split")}
    for gv, gs, gl in zip(res["vmap"][0], res["split"][0], res["loop"][0]):
        assert gv.dtype == gs.dtype == torch.float32
        torch.testing.assert_close(gv, gl, rtol=2e-2, atol=1e-4)
        torch.testing.assert_close(gs, gl, rtol=2e-2, atol=1e-4)


# ------------------------------------------------------------------------------------ channels_last
def test_channels_last_networks_equal_contiguous_in_float64():
    """NHWC convolution weights and inputs give the outputs and gradients of the NCHW networks (float64)."""
    torch.manual_seed(0)
    nets = build_networks(OBS, A, num_conv_layers=3, num_filters=8, num_stride2=2, projection_dim=16, hidden_dim=32)
    plain = [n.double() for n in nets]
    nhwc = [copy.deepcopy(n).to(memory_format=torch.channels_last) for n in plain]
    w = nhwc[1].encoder.shared_cnn.layers[0].weight
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    x = torch.randint(0, 256, (4, *OBS)).double()
    action = torch.rand(4, A, dtype=torch.float64)
    for x_in in (x, x.contiguous(memory_format=torch.channels_last)):
        out = {}
        for name, (actor, critic, _) in (("nchw", plain), ("nhwc", nhwc)):
            trunk = critic.encoder.shared_cnn(x_in if name == "nhwc" else x)
            if name == "nhwc":
                assert trunk.is_contiguous(memory_format=torch.channels_last)
            q1, q2 = critic(x_in if name == "nhwc" else x, action)
            mu, _, _, _ = actor(x_in if name == "nhwc" else x, compute_pi=False)
            loss = q1.sum() + q2.square().sum()
            out[name] = (q1, q2, mu, torch.autograd.grad(loss, list(critic.parameters())))
        for a, b in zip(out["nchw"][:3], out["nhwc"][:3]):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        for a, b in zip(out["nchw"][3], out["nhwc"][3]):
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)


def test_per_group_grads_vmap_on_channels_last_critic():
    """vmap used to fail on the channels-last trunk (a memory-format copy inside vmap); it equals the loop now."""
    torch.manual_seed(0)
    agent = make_agent(OBS, A, small_agent_cfg(algorithm="cg2a", channels_last=True), "cpu")
    agent.critic.double()
    obs, action, target = float_batch()
    views = agent.algorithm.views(obs.double().contiguous(memory_format=torch.channels_last))
    params = [p for p in agent.critic.parameters() if p.requires_grad]
    assert params[0].is_contiguous(memory_format=torch.channels_last)
    gv, lv = per_group_grads(agent.critic, critic_loss, (views,), (action.double(), target.double()), params=params,
                             method="vmap")
    gl, ll = per_group_grads(agent.critic, critic_loss, (views,), (action.double(), target.double()), params=params,
                             method="loop")
    torch.testing.assert_close(lv, ll, rtol=1e-12, atol=1e-12)
    for a, b in zip(gv, gl):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_channels_last_agent_state_loads_into_contiguous_agent():
    cl, plain = twin_agents("drq", dict(channels_last=True), dict(channels_last=False))
    conv_w = cl.critic.encoder.shared_cnn.layers[0].weight
    assert conv_w.is_contiguous(memory_format=torch.channels_last)
    assert plain.critic.encoder.shared_cnn.layers[0].weight.is_contiguous()
    assert cl.preprocess(torch.zeros(2, *OBS, dtype=torch.uint8)).is_contiguous(memory_format=torch.channels_last)
    assert plain.preprocess(torch.zeros(2, *OBS, dtype=torch.uint8)).is_contiguous()
    rb = filled_replay()
    torch.manual_seed(0)
    cl.update(rb)
    plain.load_state_dict(cl.state_dict())
    x = torch.randint(0, 256, (3, *OBS)).float()
    a = torch.rand(3, A)
    for q_cl, q_plain in zip(cl.critic(x, a), plain.critic(x, a)):
        torch.testing.assert_close(q_cl, q_plain, rtol=1e-5, atol=1e-6)


def test_speed_options_are_cli_switches_and_may_change_on_resume(tmp_path):
    cfg = config_from_args(["--task", "cartpole_balance", "--preset", "cpu", "--precision", "bf16",
                            "--no-channels_last", "--compile", "on", "--replay_device", "cpu", "--env_overlap", "off"])
    assert (cfg.precision, cfg.channels_last, cfg.compile, cfg.replay_device, cfg.env_overlap) == \
        ("bf16", False, "on", "cpu", "off")
    run = tmp_path / "run"
    run.mkdir()
    TrainConfig(task="cartpole_balance", run_dir=str(run)).save(run / "config.json")
    resumed = config_from_args(["--resume", "--run_dir", str(run), "--precision", "fp32", "--compile", "off",
                                "--env_overlap", "on", "--no-channels_last", "--replay_device", "cpu"])
    assert (resumed.precision, resumed.compile, resumed.env_overlap, resumed.channels_last) == \
        ("fp32", "off", "on", False)


def test_env_overlap_auto_is_on_for_a_cpu_and_off_for_cuda_and_old_switches_load(tmp_path):
    from cg2a_ext.rl.core.env_stepper import resolve_env_overlap

    assert resolve_env_overlap("auto", "cpu") and not resolve_env_overlap("auto", "cuda")
    assert resolve_env_overlap("on", "cuda") and not resolve_env_overlap("off", "cpu")
    with pytest.raises(ValueError, match="unknown env_overlap setting 'yes'"):
        resolve_env_overlap("yes", "cpu")
    with pytest.raises(ConfigError, match="unknown env_overlap"):
        small_agent_cfg(env_overlap=True).validate()
    # a config.json written when the option was a switch (true/false) still loads
    old = small_agent_cfg().to_dict() | {"env_overlap": False}
    (tmp_path / "config.json").write_text(__import__("json").dumps(old))
    assert TrainConfig.load(tmp_path / "config.json").env_overlap == "off"


# ------------------------------------------------------------------------------------------ compile
def test_compiled_update_equals_eager():
    """torch.compile'd network blocks (inductor on the CPU) give the eager updates, for drq and cg2a.

    Cost: about 35 s of CPU time with a cold inductor cache (most of it compiling the drq graphs; cg2a
    reuses them), a few seconds with a warm one; kept to tiny networks and two updates per algorithm."""
    for algorithm in ("drq", "cg2a"):
        eager, compiled = twin_agents(algorithm, dict(compile="off"), dict(compile="on"))
        assert compiled.compiled and not eager.compiled
        rb_e, rb_c = filled_replay(), filled_replay()
        for step in range(2):   # the second update runs the actor, temperature and target updates too
            torch.manual_seed(step)
            m_e = eager.update(rb_e)
            torch.manual_seed(step)
            m_c = compiled.update(rb_c)
            for key in ("critic_loss", "target_q"):
                torch.testing.assert_close(m_c[key], m_e[key], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(m_c["actor_loss"], m_e["actor_loss"], rtol=1e-4, atol=1e-6)
        # two Adam steps of lr 1e-3: float rounding moves parameters by much less than a step
        for net in ("critic", "actor"):
            for p_e, p_c in zip(getattr(eager, net).parameters(), getattr(compiled, net).parameters()):
                torch.testing.assert_close(p_c, p_e, rtol=0, atol=1e-4)
        # a compiled agent's state dict is the eager one's (same names)
        assert set(compiled.state_dict()["critic"]) == set(eager.state_dict()["critic"])


@pytest.mark.parametrize("algorithm", ["ac", "cg2a"])
def test_per_loss_gradient_method_is_chosen_once_and_kept_across_a_restart(algorithm, monkeypatch):
    """per_group_grads' "auto" picks by timing; the algorithm keeps its first choice in its state, so a
    resumed run (a new process, a new measurement) computes its gradients the same way."""
    import sys

    pgg = sys.modules["cg2a_ext.per_group_grads"]
    monkeypatch.setattr(pgg, "_AUTO_CHOICE", {})
    torch.manual_seed(0)
    agent = make_agent(OBS, A, small_agent_cfg(algorithm=algorithm, augmentations=("overlay",)), "cpu")
    obs, action, target = float_batch()
    assert agent.algorithm.grad_method is None and agent.algorithm.state_dict()["grad_method"] == ""
    agent.algorithm.per_loss_grads(agent.nets, obs, action, target)
    chosen = agent.algorithm.grad_method
    assert chosen in ("vmap", "loop", "split") and list(pgg._AUTO_CHOICE.values()) == [chosen]
    state = agent.algorithm.state_dict()
    assert state["grad_method"] == chosen

    # "a new process": nothing measured yet, and measuring again would be a failure
    monkeypatch.setattr(pgg, "_AUTO_CHOICE", {})
    monkeypatch.setattr(pgg, "_timed", lambda *a, **k: pytest.fail("auto measured again after a restore"))
    resumed = make_agent(OBS, A, small_agent_cfg(algorithm=algorithm, augmentations=("overlay",)), "cpu")
    resumed.algorithm.load_state_dict(state)
    assert resumed.algorithm.grad_method == chosen
    resumed.algorithm.per_loss_grads(resumed, obs, action, target)
    older = {k: v for k, v in state.items() if k != "grad_method"}      # a checkpoint from before the record
    resumed.algorithm.load_state_dict(older)
    assert resumed.algorithm.grad_method is None


def test_compile_auto_is_off_on_every_device():
    """`--compile auto` compiles nothing: the compiled blocks measured no gain on an H100 (BENCHMARKS.md)."""
    from cg2a_ext.rl.core.agent.sac_agent import resolve_compile

    assert not resolve_compile("auto", "cuda") and not resolve_compile("auto", "cpu")
    assert resolve_compile("on", "cpu") and not resolve_compile("off", "cuda")
    with pytest.raises(ValueError, match="unknown compile setting 'maybe'"):
        resolve_compile("maybe", "cpu")
