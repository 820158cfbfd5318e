"""Checkpoint files: the last two kept, damaged ones reported by name and skipped, failing writes
that leave nothing behind and say why."""
import errno
import os
import subprocess

import numpy as np
import pytest
import torch

from cg2a_ext.rl.run import checkpoint as ck
from cg2a_ext.rl.core.replay import FrameReplayBuffer


def small_replay(transitions: int, seed: int = 0) -> FrameReplayBuffer:
    rng = np.random.default_rng(seed)
    rb = FrameReplayBuffer((9, 8, 8), 2, 32, frame_stack=3, episode_steps=8, seed=seed)
    rb.add_first(rng.integers(0, 256, (9, 8, 8), dtype=np.uint8))
    for _ in range(transitions):
        rb.add(rng.uniform(-1, 1, 2).astype(np.float32), float(rng.normal()),
               rng.integers(0, 256, (9, 8, 8), dtype=np.uint8), False)
    return rb


def state(step: int) -> dict:
    return {"agent": {"w": torch.full((4,), float(step))}, "rng": {}, "episode": step // 10}


def save(run_dir, step: int) -> None:
    ck.save_checkpoint(run_dir, step, state(step), small_replay(step))


def names(run_dir):
    return sorted(p.name for p in ck.checkpoint_dir(run_dir).iterdir())


def test_the_last_two_checkpoints_and_their_buffers_are_kept(tmp_path):
    for step in (10, 20, 30):
        save(tmp_path, step)
    assert names(tmp_path) == ["replay_000000020.npz", "replay_000000030.npz",
                               "step_000000020.pt", "step_000000030.pt"]
    rb = small_replay(0)
    st, path = ck.load_resumable(tmp_path, rb)
    assert path.name == "step_000000030.pt" and st["step"] == 30 and rb.num_transitions == 30
    assert torch.equal(st["agent"]["w"], torch.full((4,), 30.0))
    ref = small_replay(30)
    assert np.array_equal(rb.frames.array, ref.frames.array) and np.array_equal(rb.actions, ref.actions)


class NotATensor:
    pass


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "unsafe_pickle", "not_a_checkpoint"])
def test_a_damaged_checkpoint_is_named_and_the_previous_one_used(tmp_path, damage):
    save(tmp_path, 10)
    save(tmp_path, 20)
    bad = ck.checkpoint_path(tmp_path, 20)
    if damage == "truncated":
        bad.write_bytes(bad.read_bytes()[:300])
    elif damage == "garbage":
        bad.write_bytes(os.urandom(4096))
    elif damage == "empty":
        bad.write_bytes(b"")
    elif damage == "unsafe_pickle":      # a pickle of an arbitrary class: torch would suggest weights_only=False
        torch.save({**state(20), "step": 20, "replay_file": None, "x": NotATensor()}, bad)
    else:
        torch.save({"weights": torch.zeros(2)}, bad)
    with pytest.raises(ck.CheckpointError) as e:
        ck.load_checkpoint(bad)
    msg = str(e.value)
    assert str(bad) in msg and "weights_only" not in msg and "Weights only" not in msg
    # torch's own error (and its advice) is not chained into the traceback
    assert e.value.__cause__ is None and (e.value.__context__ is None or e.value.__suppress_context__)
    warnings = []
    rb = small_replay(0)
    st, path = ck.load_resumable(tmp_path, rb, warn=warnings.append)
    assert st["step"] == 10 and path.name == "step_000000010.pt" and rb.num_transitions == 10
    assert len(warnings) == 1 and str(bad) in warnings[0] and "weights_only" not in warnings[0]
    # the damaged file is set aside: neither used again nor counted among the last two
    assert (bad.parent / (bad.name + ".corrupt")).is_file()
    assert names(tmp_path) == ["replay_000000010.npz", "step_000000010.pt", "step_000000020.pt.corrupt"]
    save(tmp_path, 15)
    assert [s for s, _ in ck.list_checkpoints(tmp_path)] == [10, 15]


def test_a_damaged_replay_file_falls_back_too(tmp_path):
    save(tmp_path, 10)
    save(tmp_path, 20)
    buf = ck.replay_path(tmp_path, 20)
    data = bytearray(buf.read_bytes())
    data[len(data) // 3: len(data) // 3 + 64] = b"\0" * 64        # flipped bytes inside the frames array
    buf.write_bytes(bytes(data))
    warnings = []
    st, path = ck.load_resumable(tmp_path, small_replay(0), warn=warnings.append)
    assert st["step"] == 10
    assert len(warnings) == 1 and f"replay file {buf}" in warnings[0]


def test_no_usable_checkpoint_lists_every_failure(tmp_path):
    save(tmp_path, 10)
    save(tmp_path, 20)
    for step in (10, 20):
        ck.checkpoint_path(tmp_path, step).write_bytes(b"junk")
    with pytest.raises(ck.CheckpointError) as e:
        ck.load_resumable(tmp_path, small_replay(0), warn=lambda m: None)
    assert "step_000000010.pt" in str(e.value) and "step_000000020.pt" in str(e.value)
    assert "weights_only" not in str(e.value)
    with pytest.raises(ck.CheckpointError, match="no checkpoint in"):
        ck.load_resumable(tmp_path / "nothing", small_replay(0))


def test_failing_write_says_so_and_leaves_nothing_behind(tmp_path, monkeypatch):
    save(tmp_path, 10)
    before = {p.name: p.read_bytes() for p in ck.checkpoint_dir(tmp_path).iterdir()}
    real_replace = os.replace

    def replace_on_a_full_disk(src, dst):
        if str(dst).endswith(".pt"):                 # the buffer is in place; the state file fails
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_replace(src, dst)

    monkeypatch.setattr(ck.os, "replace", replace_on_a_full_disk)
    replay = small_replay(20)
    with pytest.raises(ck.CheckpointWriteError) as e:
        ck.save_checkpoint(tmp_path, 20, state(20), replay)
    monkeypatch.setattr(ck.os, "replace", real_replace)
    need_mb = -(-sum(np.asarray(a).nbytes for a in replay.state_dict().values()) // 2**20)
    assert str(e.value).startswith(f"no space left on {ck.checkpoint_dir(tmp_path)}: need about {need_mb} MB "
                                   "for checkpoint step_000000020.pt and replay_000000020.npz")
    assert {p.name: p.read_bytes() for p in ck.checkpoint_dir(tmp_path).iterdir()} == before


def _mount_tmpfs(path, size):
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}); "
                    "test_failing_write_says_so_and_leaves_nothing_behind simulates the failure")


def test_full_and_read_only_file_systems(tmp_path):
    mnt = tmp_path / "small"
    _mount_tmpfs(mnt, "256k")
    try:
        run_dir = mnt / "run"
        save(run_dir, 10)
        before = names(run_dir)
        big = {**state(20), "agent": {"w": torch.zeros(100_000)}}       # 400 kB: more than the file system holds
        with pytest.raises(ck.CheckpointWriteError, match=rf"^no space left on {ck.checkpoint_dir(run_dir)}: "
                                                          r"need about 1 MB for checkpoint step_000000020.pt"):
            ck.save_checkpoint(run_dir, 20, big, small_replay(20))
        assert names(run_dir) == before
        assert ck.load_resumable(run_dir, small_replay(0))[0]["step"] == 10
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        with pytest.raises(ck.CheckpointWriteError, match="read-only file system"):
            save(run_dir, 30)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_checkpoint_holds_no_pickled_objects(tmp_path):
    save(tmp_path, 10)
    # weights_only loading is what the run uses; it must accept every checkpoint the run writes
    st = torch.load(ck.checkpoint_path(tmp_path, 10), weights_only=True)
    assert st["replay_file"] == "replay_000000010.npz"
    with np.load(ck.replay_path(tmp_path, 10), allow_pickle=False) as z:
        assert int(z["num_transitions"]) == 10


def test_checkpoint_schedule_falls_due_by_steps_and_minutes_and_waits_for_the_episode_end():
    from cg2a_ext.rl.run.checkpoint import CheckpointSchedule

    clock = [0.0]
    s = CheckpointSchedule(every_steps=10, every_minutes=1.0, at_episode_end=True, clock=lambda: clock[0])
    s.step_done(9)
    assert not s.due
    s.step_done(10)
    assert s.due and not s.take_now(10, 100, in_episode=True)      # waits for the episode end
    assert s.take_now(12, 100, in_episode=False)
    s.taken()
    clock[0] += 59.0
    s.step_done(13)
    assert not s.due
    clock[0] += 1.0                                                # a minute since the last one
    s.step_done(14)
    assert s.due
    assert not s.take_now(100, 100, in_episode=False)              # the end of the run is not periodic
    now = CheckpointSchedule(every_steps=10, every_minutes=0, at_episode_end=False, clock=lambda: clock[0])
    now.step_done(10)
    assert now.take_now(10, 100, in_episode=True)                  # at once
    never = CheckpointSchedule(every_steps=0, every_minutes=0, at_episode_end=True, clock=lambda: clock[0])
    clock[0] += 1e6
    never.step_done(10)
    assert not never.due
