"""Seeding: named, independent seed streams, and every generator of the agent and the replay in their state dicts."""
import numpy as np
import pytest
import torch

from cg2a_ext.rl.core.agent import make_agent
from cg2a_ext.rl.core.replay import FrameReplayBuffer

from agent_support import filled_replay, small_agent_cfg

OBS = (9, 32, 32)
A = 2


def test_seed_streams_are_named_and_independent():
    from cg2a_ext.rl.run.seeding import SeedStreams
    a, b = SeedStreams(0), SeedStreams(1)
    assert a.integer("replay") == SeedStreams(0).integer("replay")
    assert len({a.integer("replay"), a.integer("augment"), b.integer("replay"), a.integer("episodes", 0),
                a.integer("episodes", 1)}) == 5
    g1, g2 = a.torch_generator("augment"), a.torch_generator("augment")
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))
    assert 0 <= a.integer("episodes", 5, bits=31) < 2**31
    with pytest.raises(ValueError, match="seed must be >= 0"):
        SeedStreams(-1)


def test_agent_and_replay_own_their_rng_state():
    """Every generator of the agent (its algorithm's) and the buffer's sampler come back from their state dicts."""
    cfg = small_agent_cfg(algorithm="cg2a")
    ag = make_agent(OBS, A, cfg, "cpu")
    rb = filled_replay()
    ag.update(rb)
    agent_state, replay_state = ag.state_dict(), rb.state_dict()
    obs = torch.randint(0, 256, (4, *OBS), dtype=torch.uint8)
    expected = (ag.algorithm.views(ag.preprocess(obs)), ag.algorithm.aggregator.draw_gamma(), rb.sample_indices(5))
    ag2 = make_agent(OBS, A, cfg, "cpu")
    rb2 = FrameReplayBuffer(OBS, A, 100, frame_stack=3, episode_steps=20, seed=99)
    ag2.load_state_dict(agent_state)
    rb2.load_state_dict(replay_state)
    got = (ag2.algorithm.views(ag2.preprocess(obs)), ag2.algorithm.aggregator.draw_gamma(), rb2.sample_indices(5))
    assert torch.equal(expected[0], got[0]) and expected[1] == got[1] and np.array_equal(expected[2], got[2])

