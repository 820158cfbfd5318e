"""train(cfg): the checks it makes before any run folder exists, and the machine choices it prints."""
from __future__ import annotations

import pytest

from cg2a_ext.rl import TrainConfig, train
from cg2a_ext.rl import training
from cg2a_ext.rl.training import RunError, choose_threads


def test_threads_follow_the_free_cores(monkeypatch):
    monkeypatch.setattr(training.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(training.os, "getloadavg", lambda: (5.6, 0.0, 0.0))
    assert choose_threads(0)[0] == 2
    monkeypatch.setattr(training.os, "getloadavg", lambda: (12.0, 0.0, 0.0))
    assert choose_threads(0)[0] == 1
    monkeypatch.setattr(training.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert choose_threads(0)[0] == 8
    assert choose_threads(3) == (3, "--num_threads")


@pytest.mark.parametrize("kw, message", [
    (dict(image_size=8), "networks cannot be built for 8x8 frames"),
    (dict(critic_lr=float("nan")), "critic_lr must be a finite number"),
    (dict(discount=2.0), "discount must be <= 1"),
    (dict(buffer_capacity=10), "below --batch_size"),
    (dict(seed_steps=5000, train_steps=300), "never update"),
])
def test_bad_options_are_refused_before_the_run_folder_exists(tmp_path, kw, message):
    run = tmp_path / "run"
    with pytest.raises(RunError, match=message) as err:
        train(TrainConfig(task="cartpole_balance", algorithm="drq", preset="cpu", run_dir=str(run), **kw))
    assert err.value.exit_code == 2 and not run.exists()
