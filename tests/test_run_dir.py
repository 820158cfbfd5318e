"""Run folders that never lie: lock, refusal, resume row for row, finished runs, fallback, full disks,
inputs checked first, Ctrl-C / SIGTERM, evaluation images, the progress display. Tiny CPU runs."""
import csv
import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

import train as train_script  # noqa: E402
from cg2a_ext.rl.run.checkpoint import list_checkpoints  # noqa: E402
from cg2a_ext.rl.run.folder import RunDirError, RunLock, run_status  # noqa: E402

# 10 agent steps per episode (40 simulator steps, action repeat 4), 20 seed steps
TINY = ["--task", "cartpole_balance", "--preset", "cpu", "--image_size", "32", "--episode_length", "40",
        "--num_conv_layers", "2", "--num_filters", "8", "--projection_dim", "16", "--hidden_dim", "32",
        "--batch_size", "8", "--seed_steps", "20", "--eval_episodes", "1", "--final_eval_modes", "train",
        "--no-progress", "--device", "cpu"]
# cg2a (diagnostics rows too); checkpoints fall due at 15 / 30 / 45 and are taken at episode ends 20 / 30 / 50;
# update rows every 25 steps, so a checkpoint at 30 holds a partial logging accumulator (updates 26-30)
RESUMED = ["--algorithm", "cg2a", "--train_steps", "60", "--eval_freq", "20", "--log_freq", "25",
           "--checkpoint_freq", "15", "--buffer_capacity", "100"]
TIMING = {"elapsed_s", "steps_per_s"}
LOGS = ("train.csv", "update.csv", "diagnostics.csv", "eval.csv")


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run(d, *extra):
    return train_script.build_and_train(TINY + ["--run_dir", str(d), *extra])


def logs_without_timing(d):
    return {name: [{k: v for k, v in r.items() if k not in TIMING} for r in rows(d / name)] for name in LOGS}


def final_state(d):
    return torch.load(sorted((d / "checkpoints").glob("step_*.pt"))[-1], weights_only=True)


def assert_same_networks(a, b):
    assert a["step"] == b["step"] and a["agent"]["num_updates"] == b["agent"]["num_updates"]
    for net in ("actor", "critic", "critic_target"):
        for k in a["agent"][net]:
            assert torch.equal(a["agent"][net][k], b["agent"][net][k]), (net, k)
    assert torch.equal(a["agent"]["log_alpha"], b["agent"]["log_alpha"])


def tensorboard_scalars(d, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(d / "tb"), purge_orphaned_data=True)
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


class Killed(BaseException):
    """A hard kill: nothing in the program handles it (unlike Ctrl-C)."""


def kill_at_transition(monkeypatch, n, capacity, action=None):
    """Patch the replay buffer so that storing transition ``n`` in the run's buffer (of ``capacity``: the
    speed measurement at start fills a scratch buffer of its own) raises Killed (or calls ``action``)."""
    from cg2a_ext.rl.core.replay import FrameReplayBuffer

    orig_add = FrameReplayBuffer.add

    def add(self, *a, **k):
        orig_add(self, *a, **k)
        if self.num_transitions == n and self.capacity == capacity:
            if action is None:
                raise Killed
            action()

    monkeypatch.setattr(FrameReplayBuffer, "add", add)
    return lambda: monkeypatch.setattr(FrameReplayBuffer, "add", orig_add)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run with the RESUMED options."""
    return run(tmp_path_factory.mktemp("reference") / "run", *RESUMED)


# --------------------------------------------------------------------------- the lock
LOCKER = ("import sys, time\nfrom cg2a_ext.rl.run.folder import RunLock\nRunLock(sys.argv[1]).acquire()\n"
          "print('locked', flush=True)\ntime.sleep(600)\n")


def test_second_process_is_refused_and_a_stale_lock_taken_over(tmp_path, capsys):
    d = tmp_path / "run"
    d.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    holder = subprocess.Popen([sys.executable, "-c", LOCKER, str(d)], stdout=subprocess.PIPE, env=env, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        with pytest.raises(RunDirError, match=f"in use by process {holder.pid}"):
            RunLock(d).acquire()
        with pytest.raises(SystemExit) as e:
            run(d, "--train_steps", "30", "--eval_freq", "0")
        assert e.value.code == 2 and f"in use by process {holder.pid}" in capsys.readouterr().err
        assert not (d / "config.json").exists()
    finally:
        holder.kill()
        holder.wait()
    assert (d / ".lock").read_text().strip() == str(holder.pid)     # a killed holder leaves its lock file
    with RunLock(d):
        err = capsys.readouterr().err
        assert f"stale lock of process {holder.pid} (no longer running)" in err
        assert (d / ".lock").read_text().strip() == str(os.getpid())
    assert not (d / ".lock").exists()


def test_a_launch_that_loses_the_race_deletes_nothing(tmp_path, monkeypatch):
    """Issue 19, defect 1: a second launch that found no folder, then lost the lock to a first launch that
    created the folder meanwhile, used to delete the folder the winner was writing."""
    from cg2a_ext.rl.run.folder import open_new_run

    d = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    original = Path.mkdir
    holder = None

    def mkdir_after_the_winner(self, *args, **kwargs):
        nonlocal holder
        if self == d and holder is None:       # the winner creates, locks and writes between our look and mkdir
            original(self, parents=True)
            (d / "train.csv").write_text("step\n1\n")
            holder = subprocess.Popen([sys.executable, "-c", LOCKER, str(d)], stdout=subprocess.PIPE, env=env, cwd=ROOT)
            assert holder.stdout.readline().strip() == b"locked"
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir_after_the_winner)
    try:
        with pytest.raises(RunDirError, match="in use by process"):
            open_new_run(d)
        assert (d / "train.csv").read_text() == "step\n1\n"       # the winner's folder and files are intact
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()


def test_a_refused_new_run_removes_only_the_empty_folder_it_created(tmp_path, monkeypatch):
    from cg2a_ext.rl.run import folder
    from cg2a_ext.rl.run.folder import open_new_run

    d = tmp_path / "fresh"
    monkeypatch.setattr(folder, "clean_stale_temporaries", lambda run_dir: (_ for _ in ()).throw(OSError("boom")))
    with pytest.raises(OSError, match="boom"):
        open_new_run(d)
    assert not d.exists()


# --------------------------------------------------------------------------- new runs, finished runs
def test_new_run_refuses_an_earlier_runs_logs_unless_overwrite(tmp_path, capsys):
    d = tmp_path / "run"
    d.mkdir()
    (d / "train.csv").write_text("step,episode\n10,0\n")        # logs without a checkpoint
    assert run_status(d) == "partial"
    with pytest.raises(SystemExit) as e:
        run(d, "--train_steps", "30", "--eval_freq", "0")
    err = capsys.readouterr().err
    assert e.value.code == 2 and "holds an earlier run" in err and "train.csv" in err and "--overwrite" in err
    assert (d / "train.csv").read_text() == "step,episode\n10,0\n"
    run(d, "--train_steps", "30", "--eval_freq", "0", "--overwrite")
    assert [(r["step"], r["episode"]) for r in rows(d / "train.csv")] == [("10", "0"), ("20", "1"), ("30", "2")]
    assert json.loads((d / "config.json").read_text())["overwrite"] is False
    assert run_status(d) == "finished"


def test_wall_clock_checkpoints(tmp_path):
    # a tiny interval: due after every step, taken at every episode end (10 steps); the last two are kept
    d = run(tmp_path / "run", "--algorithm", "drq", "--train_steps", "30", "--eval_freq", "0",
            "--checkpoint_freq", "0", "--checkpoint_minutes", "1e-6")
    assert [s for s, _ in list_checkpoints(d)] == [20, 30]
    assert json.loads((d / "plan.json").read_text())["checkpoints"]["every_minutes"] == 1e-6


def test_run_status(tmp_path, reference):
    assert run_status(tmp_path / "missing") == "new"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".lock").write_text("")
    assert run_status(tmp_path / "empty") == "new"
    assert run_status(reference) == "finished"
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "config.json").write_text("{}")
    assert run_status(tmp_path / "partial") == "partial"


def test_resuming_a_finished_run_does_nothing(reference, capsys):
    before = {n: (reference / n).read_bytes() for n in (*LOGS, "finished.json")}
    ck_before = sorted(p.name for p in (reference / "checkpoints").iterdir())
    assert train_script.build_and_train(["--resume", "--run_dir", str(reference)]) == reference
    out = capsys.readouterr().out
    assert "finished run (step 60" in out and "nothing to do" in out
    assert {n: (reference / n).read_bytes() for n in before} == before
    assert sorted(p.name for p in (reference / "checkpoints").iterdir()) == ck_before
    finished = json.loads((reference / "finished.json").read_text())
    assert finished["final_step"] == 60 and set(finished["final_evaluation"]) == {"train"}
    assert finished["wall_time_s"] > 0


# --------------------------------------------------------------------------- kill and resume
def test_killed_run_resumes_row_for_row_and_bit_for_bit(tmp_path, monkeypatch, reference):
    d = tmp_path / "killed"
    revive = kill_at_transition(monkeypatch, 47, capacity=100)
    with pytest.raises(Killed):
        run(d, *RESUMED)
    revive()
    assert run_status(d) == "partial"
    names = sorted(p.name for p in (d / "checkpoints").glob("step_*.pt"))
    assert names == ["step_000000020.pt", "step_000000030.pt"]        # due at 15 and 30, taken at episode ends
    st = torch.load(d / "checkpoints" / names[-1], weights_only=True)
    assert not st["episode_in_progress"] and st["log_accumulator"]["critic_loss"]   # updates 26-30, not logged yet
    assert [r["step"] for r in rows(d / "eval.csv")] == ["0", "20", "40"]            # 40: after the checkpoint
    train_script.build_and_train(["--resume", "--run_dir", str(d)])
    assert logs_without_timing(d) == logs_without_timing(reference)
    assert rows(d / "diagnostics.csv") and [r["step"] for r in rows(d / "update.csv")] == ["25", "50"]
    assert_same_networks(final_state(d), final_state(reference))
    for tag in ("update/critic_loss", "train/episode_return", "eval/train/mean_return"):
        assert tensorboard_scalars(d, tag) == tensorboard_scalars(reference, tag), tag
    assert run_status(d) == "finished"


def test_corrupt_checkpoint_falls_back_and_stale_temporaries_are_removed(tmp_path, monkeypatch, capsys, reference):
    d = tmp_path / "killed"
    revive = kill_at_transition(monkeypatch, 47, capacity=100)
    with pytest.raises(Killed):
        run(d, *RESUMED)
    revive()
    ck = d / "checkpoints"
    newest = ck / "step_000000030.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])        # truncated
    stale = [ck / ".step_000000040.pt.tmp999999", ck / ".replay_000000040.npz.tmp999999",
             ck / "replay_000000035.npz", d / ".train.csv.tmp999999"]
    for p in stale:
        p.write_bytes(b"left by a killed process")
    capsys.readouterr()
    train_script.build_and_train(["--resume", "--run_dir", str(d)])
    err = capsys.readouterr().err
    assert f"checkpoint {newest} is unreadable (truncated" in err and "trying the previous checkpoint" in err
    assert "weights_only" not in err
    assert not any(p.exists() for p in stale)
    assert (ck / "step_000000030.pt.corrupt").is_file()
    # resumed from step 20, an episode end: the same run as the uninterrupted one
    assert logs_without_timing(d) == logs_without_timing(reference)
    assert_same_networks(final_state(d), final_state(reference))


# --------------------------------------------------------------------------- failing writes
def test_failed_checkpoint_write_keeps_the_previous_one_and_resumes(tmp_path, monkeypatch, capsys):
    import cg2a_ext.rl.run.checkpoint as checkpoint

    calls = []
    real_savez = np.savez

    def savez_on_a_full_disk(f, **arrays):
        calls.append(1)
        if len(calls) == 2:
            f.write(b"x" * 1000)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_savez(f, **arrays)

    monkeypatch.setattr(checkpoint.np, "savez", savez_on_a_full_disk)
    d = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        run(d, "--algorithm", "drq", "--train_steps", "40", "--eval_freq", "0", "--checkpoint_freq", "10")
    monkeypatch.setattr(checkpoint.np, "savez", real_savez)
    err = capsys.readouterr().err
    assert e.value.code == 1
    assert f"no space left on {d / 'checkpoints'}: need about " in err and " MB for checkpoint step_000000020.pt" in err
    assert f"python python/train.py --resume --run_dir {d}" in err
    assert sorted(p.name for p in (d / "checkpoints").iterdir()) == ["replay_000000010.npz", "step_000000010.pt"]
    train_script.build_and_train(["--resume", "--run_dir", str(d)])
    assert run_status(d) == "finished" and final_state(d)["step"] == 40


def test_disk_full_on_a_small_tmpfs(tmp_path, capsys):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1100k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}); "
                    "test_failed_checkpoint_write_keeps_the_previous_one_and_resumes simulates a full disk")
    try:
        d = mnt / "run"
        opts = ["--algorithm", "drq", "--train_steps", "80", "--eval_freq", "0", "--checkpoint_freq", "20",
                "--no-tensorboard"]
        with pytest.raises(SystemExit) as e:
            run(d, *opts)
        err = capsys.readouterr().err
        assert e.value.code == 1 and f"no space left on {d}" in err and "need about" in err, err
        assert not list(d.rglob(".*.tmp*"))
        kept = sorted(p.name for p in (d / "checkpoints").glob("step_*.pt"))
        assert kept, "the first checkpoint should have fitted"
        subprocess.run(["mount", "-o", "remount,size=16m", str(mnt)], check=True)    # space freed
        train_script.build_and_train(["--resume", "--run_dir", str(d)])
        assert run_status(d) == "finished" and final_state(d)["step"] == 80
        assert [int(r["step"]) for r in rows(d / "train.csv")] == list(range(10, 81, 10))
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# --------------------------------------------------------------------------- inputs first
def _clip_folder(tmp_path):
    d = tmp_path / "dmcgb"
    (d / "video_easy").mkdir(parents=True)
    (d / "video_easy" / "video0.mp4").write_bytes(b"not a video")
    return d


def _image_folder(tmp_path):
    from PIL import Image

    d = tmp_path / "images" / "class"
    d.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "good.png")
    (d / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    return d.parent


@pytest.mark.parametrize("case", ["missing_data", "missing_color", "bad_clip", "missing_bank", "bad_image"])
def test_data_inputs_are_checked_before_the_run_folder(tmp_path, capsys, case):
    ev = ["--eval_freq", "30", "--train_steps", "30"]
    argv = {
        "missing_data": lambda: ev + ["--data_dir", str(tmp_path / "nope"), "--eval_modes", "color_easy"],
        "missing_color": lambda: ev + ["--data_dir", str(_clip_folder(tmp_path)), "--eval_modes", "train",
                                       "color_hard"],
        "bad_clip": lambda: ev + ["--data_dir", str(_clip_folder(tmp_path)), "--eval_modes", "video_easy"],
        "missing_bank": lambda: ["--image_bank", str(tmp_path / "no_images"), "--algorithm", "cg2a"],
        "bad_image": lambda: ["--image_bank", str(_image_folder(tmp_path)), "--algorithm", "cg2a"],
    }[case]()
    expected = {"missing_data": "does not exist", "missing_color": "color_hard.json",
                "bad_clip": "video0.mp4' cannot be decoded", "missing_bank": "does not exist",
                "bad_image": "bad.jpg' cannot be decoded"}[case]
    d = tmp_path / "runs" / "run"
    with pytest.raises(SystemExit) as e:
        run(d, *argv)
    assert e.value.code == 2 and expected in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- Ctrl-C and SIGTERM
def test_ctrl_c_writes_a_checkpoint_and_prints_the_resume_command(tmp_path, monkeypatch, capsys):
    d = tmp_path / "run"
    revive = kill_at_transition(monkeypatch, 25, capacity=40, action=lambda: os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(SystemExit) as e:
        run(d, "--algorithm", "drq", "--train_steps", "40", "--eval_freq", "0", "--checkpoint_freq", "0")
    revive()
    out = capsys.readouterr().out
    assert e.value.code == 128 + signal.SIGINT
    assert "stopped at step 25" in out and f"python python/train.py --resume --run_dir {d}" in out
    st = final_state(d)
    assert st["step"] == 25 and st["episode_in_progress"] and st["episode"] == 2
    train_script.build_and_train(["--resume", "--run_dir", str(d)])
    assert run_status(d) == "finished"
    # episode 2 restarted at step 25: it ends at 35, the next (shortened by the end of the run) at 40
    assert [(int(r["step"]), int(r["episode"])) for r in rows(d / "train.csv")] == [(10, 0), (20, 1), (35, 2)]


def test_sigterm_during_an_evaluation_repeats_it_on_resume(tmp_path, monkeypatch, capsys):
    import cg2a_ext.rl.core.evaluation as evaluation

    real = evaluation.run_episodes
    calls = []

    def run_episodes(*a, on_episode=None, **k):
        calls.append(1)

        def hook(e):
            on_episode(e)
            if len(calls) == 2 and e == 0:            # the evaluation at step 20, before its first episode
                os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, on_episode=hook, **k)

    monkeypatch.setattr(evaluation, "run_episodes", run_episodes)
    d = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        run(d, "--algorithm", "drq", "--train_steps", "30", "--eval_freq", "20", "--eval_episodes", "2")
    monkeypatch.setattr(evaluation, "run_episodes", real)
    assert e.value.code == 128 + signal.SIGTERM
    st = final_state(d)
    assert st["step"] == 20 and st["evaluate_first"]
    assert [r["step"] for r in rows(d / "eval.csv")] == ["0"]
    train_script.build_and_train(["--resume", "--run_dir", str(d)])
    assert [r["step"] for r in rows(d / "eval.csv")] == ["0", "20", "30"]


# --------------------------------------------------------------------------- images, display, plan
def test_evaluation_images_and_progress_display(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from cg2a_ext.rl import algorithms

    drq = algorithms.get("drq")
    seen = []

    class WithImages(drq):
        def evaluation_images(self, agent, obs):
            seen.append(obs)
            rgb = obs[:, -3:].permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
            return {"last frame": rgb, "inverted": 255 - rgb}

    real_get = algorithms.get
    monkeypatch.setattr(algorithms, "get", lambda name: WithImages if name == "drq" else real_get(name))
    d = tmp_path / "run"
    train_script.build_and_train(TINY[:-3] + ["--progress", "--device", "cpu", "--run_dir", str(d), "--algorithm",
                                              "drq", "--train_steps", "30", "--eval_freq", "20"])
    out, err = capsys.readouterr()
    assert [sorted(p.name for p in (d / "images" / s).iterdir()) for s in
            ("step_000000000", "step_000000020", "step_000000030")] == [["inverted.png", "last_frame.png"]] * 3
    assert len(seen) == 3
    obs = seen[0]
    assert obs.shape == (4, 9, 32, 32) and obs.dtype == torch.float32 and obs.device.type == "cpu"
    grid = np.asarray(Image.open(d / "images" / "step_000000000" / "last_frame.png"))
    assert grid.shape == (64, 64, 3)                                  # 4 tiles of 32 x 32 in a 2 x 2 grid
    tiles = obs[:, -3:].permute(0, 2, 3, 1).round().to(torch.uint8).numpy()
    assert np.array_equal(grid[:32, :32], tiles[0]) and np.array_equal(grid[32:, 32:], tiles[3])
    for phase in ("seed steps", "training", "evaluating train episode 1/1", "ETA"):
        assert phase in err, phase
    assert "estimated time: about" in out and "K=1" in out and "preset cpu" in out
    plan = json.loads((d / "plan.json").read_text())
    assert plan["measured"]["train_steps_per_s"] > 0 and plan["evaluation"]["modes"] == ["train"]


# --------------------------------------------------------------------------- two launches into one new folder
def test_a_launch_that_loses_the_lock_deletes_nothing(tmp_path, monkeypatch):
    """Two launches into one new folder: the loser (here, delayed between creating the folder and locking it
    while the winner locks it and writes config.json) must not delete the folder the winner is writing."""
    from cg2a_ext.rl.run import folder as rd

    d = tmp_path / "runs" / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    winner = []
    acquire = rd.RunLock.acquire

    def delayed_acquire(self):
        if not winner:                          # the other launch gets in first
            d.mkdir(parents=True, exist_ok=True)
            winner.append(subprocess.Popen([sys.executable, "-c", LOCKER, str(d)], stdout=subprocess.PIPE,
                                           env=env, cwd=ROOT))
            assert winner[0].stdout.readline().strip() == b"locked"
            (d / "config.json").write_text("{}\n")
        return acquire(self)

    monkeypatch.setattr(rd.RunLock, "acquire", delayed_acquire)
    try:
        with pytest.raises(RunDirError, match="in use by process"):
            rd.open_new_run(d)
        assert (d / "config.json").read_text() == "{}\n" and (d / ".lock").is_file()
    finally:
        for p in winner:
            p.kill()
            p.wait()


def test_a_failed_new_run_removes_only_the_empty_folder_it_created(tmp_path):
    from cg2a_ext.rl.run import folder as rd

    d = tmp_path / "fresh"
    lock = rd.open_new_run(d)
    lock.release()
    assert d.is_dir() and not any(d.iterdir())
    lock = rd.RunLock(d).acquire()
    (d / "keep").write_text("x")
    assert lock.remove_empty_folder() is False and (d / "keep").is_file() and not lock.held
    (d / "keep").unlink()
    assert rd.RunLock(d).acquire().remove_empty_folder() is True and not d.exists()
    with pytest.raises(RuntimeError, match="not held"):
        rd.RunLock(tmp_path).remove_empty_folder()
