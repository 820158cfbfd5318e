"""The core's optimizer steps (cg2a_ext.rl.core.agent.optim): a non-finite gradient never reaches a
parameter or an Adam moment, the skip is decided and counted on the device, and a whole SAC update
reads nothing back to the host (so a GPU update never waits for its own kernels)."""
from __future__ import annotations

import pytest
import torch

from agent_support import OBS, A, filled_replay, small_agent_cfg, tiny_cfg
from cg2a_ext.rl.bench.host_reads import HostReadBacks
from cg2a_ext.rl.core.agent import make_agent
from cg2a_ext.rl.core.agent.optim import adam, guarded_step, load_state, nonfinite_flag


def params_with_grads(seed=0, bad=None):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(5, 3, generator=gen)), torch.nn.Parameter(torch.randn(4, generator=gen))]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    if bad is not None:
        params[1].grad[2] = bad
    return params


def snapshot(optimizer, params):
    state = [{k: v.clone() for k, v in optimizer.state[p].items()} for p in params]
    return [p.detach().clone() for p in params], state


def test_a_finite_step_is_adams_step():
    params = params_with_grads()
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    for t, p in zip(twins, params):
        t.grad = p.grad.clone()
    fused, plain = adam(params, 1e-3, 0.9), torch.optim.Adam(twins, lr=1e-3, betas=(0.9, 0.999))
    skipped = torch.zeros(())
    for _ in range(3):
        flag = guarded_step(fused, params, "skip", "critic", skipped)
        plain.step()
        assert flag.item() == 0.0
    for p, t in zip(params, twins):
        torch.testing.assert_close(p, t, rtol=1e-6, atol=1e-7)
    assert skipped.item() == 0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_nonfinite_gradient_changes_nothing_and_is_counted(bad):
    params = params_with_grads()
    optimizer = adam(params, 1e-3, 0.9)
    skipped = torch.zeros(())
    guarded_step(optimizer, params, "skip", "critic", skipped)       # moments exist now
    before, state = snapshot(optimizer, params)
    params[1].grad[2] = bad
    flag = guarded_step(optimizer, params, "skip", "critic", skipped)
    assert flag.item() == 1.0 and skipped.item() == 1
    after, state_after = snapshot(optimizer, params)
    for b, a in zip(before, after):
        assert torch.equal(b, a)
    for s, t in zip(state, state_after):        # exp_avg, exp_avg_sq and the step count alike
        for key in s:
            assert torch.equal(s[key], t[key]), key
    with pytest.raises(FloatingPointError, match="non-finite actor gradient"):
        guarded_step(optimizer, params, "raise", "actor")


def test_the_algorithms_zeroed_flag_skips_a_finite_gradient():
    params = params_with_grads()
    optimizer = adam(params, 1e-3, 0.9)
    before = [p.detach().clone() for p in params]
    skipped = torch.zeros(())
    guarded_step(optimizer, params, "skip", "critic", skipped, zeroed=torch.tensor(True))
    assert skipped.item() == 1 and all(torch.equal(b, p) for b, p in zip(before, params))
    assert nonfinite_flag(params).item() == 0.0 and nonfinite_flag(params, torch.tensor(1.0)).item() == 1.0


def test_a_state_saved_by_the_unfused_adam_resumes_into_the_fused_one():
    """Checkpoints written before the steps were fused hold a for-each Adam's state: loading keeps the fused
    implementation (and its device step counts), and the next steps continue that Adam's trajectory."""
    params = params_with_grads()
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    unfused = torch.optim.Adam(twins, lr=1e-3, betas=(0.9, 0.999))
    for t, p in zip(twins, params):
        t.grad = p.grad.clone()
    unfused.step()
    unfused.step()
    for p, t in zip(params, twins):
        p.data.copy_(t.detach())
    fused = adam(params, 1e-3, 0.9)
    load_state(fused, unfused.state_dict())
    assert all(g["fused"] for g in fused.param_groups)
    assert all(fused.state[p]["step"].item() == 2 for p in params)
    for _ in range(2):
        guarded_step(fused, params, "skip", "critic")
        unfused.step()
    for p, t in zip(params, twins):
        torch.testing.assert_close(p, t, rtol=1e-6, atol=1e-7)
    # without load_state the saved flags would turn the optimizer back into the for-each one
    plain = adam(params, 1e-3, 0.9)
    plain.load_state_dict(unfused.state_dict())
    with pytest.raises(ValueError, match="needs a fused optimizer"):
        guarded_step(plain, params, "skip", "critic")


def test_refuses_an_optimizer_that_cannot_skip_on_the_device():
    params = params_with_grads()
    with pytest.raises(ValueError, match="needs a fused optimizer"):
        guarded_step(torch.optim.Adam(params), params, "skip", "critic")
    with pytest.raises(ValueError, match="unknown nonfinite policy"):
        guarded_step(adam(params, 1e-3, 0.9), params, "ignore", "critic")


@pytest.mark.parametrize("algorithm", ["drq", "ac", "cg2a"])
def test_a_nonfinite_critic_update_skips_the_step_in_the_agent(algorithm):
    torch.manual_seed(0)
    agent = make_agent(OBS, A, small_agent_cfg(algorithm=algorithm), "cpu")
    obs = torch.rand(4, *OBS) * 255
    action, target = torch.rand(4, A) * 2 - 1, torch.randn(4, 1)
    agent.update_critic(obs, action, target)
    before, state = snapshot(agent.critic_optimizer, agent.critic_params)
    target[0] = float("nan")
    agent.update_critic(obs, action, target)
    assert agent.skipped_critic_steps.item() == 1
    after, state_after = snapshot(agent.critic_optimizer, agent.critic_params)
    assert all(torch.equal(b, a) for b, a in zip(before, after))
    assert all(torch.equal(s[k], t[k]) for s, t in zip(state, state_after) for k in s)
    assert agent.state_dict()["skipped_critic_steps"] == 1


# Host reads by design: draws from CPU generators (never a device tensor), one per update.
CPU_DRAWS = {"cg2a": "/aggregator.py", "smg": "/rl/algorithms/smg.py"}     # gamma; smg's choice of view


@pytest.mark.parametrize("algorithm", ["drq", "svea", "ac", "cg2a", "soda", "sgqn", "smg"])
def test_an_update_reads_nothing_back_to_the_host(algorithm):
    """Two updates (sampling, critic, actor, temperature, targets, auxiliary steps) under nonfinite="skip": no
    value is copied to the host, except the algorithm's draws from CPU generators."""
    torch.manual_seed(0)
    agent = make_agent(OBS, A, tiny_cfg(algorithm, batch_size=4, aux_update_freq=1), "cpu")
    replay = filled_replay()
    agent.update(replay)
    agent.update(replay)
    with HostReadBacks() as mode:
        agent.update(replay)
        agent.update(replay)
    allowed = {site for site in mode.sites if algorithm in CPU_DRAWS and site.startswith(CPU_DRAWS[algorithm])}
    assert set(mode.sites) - allowed == set(), dict(mode.sites)
    if algorithm in CPU_DRAWS:
        assert sum(mode.sites[site] for site in allowed) == 2, "one CPU draw per update was expected: is the probe " \
                                                              "still seeing read-backs?"


@pytest.mark.cuda
@pytest.mark.parametrize("algorithm", ["drq", "cg2a"])
def test_a_cuda_update_never_synchronises(algorithm):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    torch.manual_seed(0)
    from cg2a_ext.rl.core.replay import FrameReplayBuffer

    agent = make_agent(OBS, A, small_agent_cfg(algorithm=algorithm, batch_size=4, device="cuda"), "cuda")
    replay = FrameReplayBuffer(OBS, A, 100, frame_stack=3, episode_steps=20, frames_device="cuda")
    replay.add_first(torch.randint(0, 256, OBS, dtype=torch.uint8).numpy())
    for _ in range(40):
        replay.add(torch.rand(A).numpy() * 2 - 1, 0.5, torch.randint(0, 256, OBS, dtype=torch.uint8).numpy(), False)
    agent.update(replay)
    agent.update(replay)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        agent.update(replay)
        agent.update(replay)
    finally:
        torch.cuda.set_sync_debug_mode("default")
