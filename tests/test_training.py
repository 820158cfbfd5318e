"""train(cfg): the checks it makes before any run folder exists, and the machine choices it prints."""
from __future__ import annotations

import pytest

from cg2a_ext.rl import TrainConfig, train
from cg2a_ext.rl import training
from cg2a_ext.rl.training import RunError, choose_threads


def test_threads_follow_the_free_cores(monkeypatch):
    monkeypatch.setattr(training.os, "cpu_count", lambda: 8)
    for busy, threads in ((5.6, 2), (12.0, 1), (0.0, 8)):
        monkeypatch.setattr(training, "busy_cores", lambda seconds, busy=busy: busy)
        assert choose_threads(0)[0] == threads
    # where /proc/stat cannot be read, the 1-minute load average
    monkeypatch.setattr(training, "busy_cores", lambda seconds: None)
    monkeypatch.setattr(training.os, "getloadavg", lambda: (5.6, 0.0, 0.0))
    assert choose_threads(0) == (2, "8 cores, 5.6 load: the free ones; --num_threads N to choose")
    assert choose_threads(3) == (3, "--num_threads")


def test_busy_cores_reads_this_machines_cpu_time():
    """A process spinning one core for the whole window shows as about one busy core (more if others run)."""
    import threading
    import time

    stop = time.perf_counter() + 0.6

    def spin():
        while time.perf_counter() < stop:
            pass

    t = threading.Thread(target=spin)
    t.start()
    busy = training.busy_cores(0.4)
    t.join()
    assert busy is not None and 0.7 <= busy <= training.os.cpu_count(), busy


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


def test_a_checkpoint_of_the_previous_format_is_refused_with_how_to_finish_it(tmp_path):
    import torch

    from cg2a_ext.rl.run.checkpoint import list_checkpoints

    run = tmp_path / "run"
    small = dict(task="cartpole_balance", algorithm="drq", preset="cpu", train_steps=30, seed_steps=10, eval_freq=0,
                 batch_size=8, buffer_capacity=100, episode_length=80, image_size=32, num_conv_layers=2,
                 num_filters=4, projection_dim=8, hidden_dim=16, progress=False, tensorboard=False, run_dir=str(run))
    train(TrainConfig(**small))
    path = list_checkpoints(run)[-1][1]
    state = torch.load(path, weights_only=True)
    assert state["format"] == 2
    del state["format"]                                   # as the previous version wrote it
    torch.save(state, path)
    with pytest.raises(RunError, match="Finish it with the previous version: git checkout 3bcb0b2") as err:
        train(TrainConfig(**{**small, "train_steps": 40, "resume": True}))
    assert err.value.exit_code == 2


def test_the_cpu_preset_trains_cg2a_with_the_overlay_pair_and_the_paper_preset_with_random_conv_too():
    cpu = TrainConfig(task="finger_spin", algorithm="cg2a", preset="cpu").validate()
    paper = TrainConfig(task="finger_spin", algorithm="cg2a", preset="paper").validate()
    assert cpu.options.augmentations == ("overlay", "overlay_s") and cpu.K == 3
    assert paper.options.augmentations == ("conv", "overlay", "overlay_s") and paper.K == 4
    assert TrainConfig(task="finger_spin", algorithm="ac", preset="cpu").K == 3
    # a given combination is kept at either preset
    from cg2a_ext.rl.algorithms.cg2a import CG2AOptions

    given = TrainConfig(task="finger_spin", algorithm="cg2a", preset="cpu",
                        options=CG2AOptions(augmentations=("conv",))).validate()
    assert given.options.augmentations == ("conv",)


def test_the_final_evaluation_is_zero_shot_on_every_mode_of_the_family(tmp_path, capsys):
    from cg2a_ext.rl.run.folder import RunFolder

    run = tmp_path / "run"
    cfg = TrainConfig(task="cartpole_balance", algorithm="drq", preset="cpu", train_steps=20, seed_steps=10,
                      eval_freq=10, eval_episodes=1, batch_size=8, episode_length=40, image_size=32,
                      num_conv_layers=2, num_filters=4, projection_dim=8, hidden_dim=16, progress=False,
                      tensorboard=False, run_dir=str(run))
    result = train(cfg)
    modes = ("train", "color_easy", "color_hard", "video_easy", "video_hard")
    assert tuple(result.final_evaluation) == modes
    rows = RunFolder(run).rows("eval")
    assert [(int(r["step"]), r["mode"]) for r in rows] == [(0, "train"), (10, "train"), *((20, m) for m in modes)]
    assert "at the end train, color_easy, color_hard, video_easy, video_hard (zero-shot)" in capsys.readouterr().out
