"""run/logs.py: the progress display (its ETA from the recent rate, its log lines) and the remaining-time model."""
from __future__ import annotations

import io
import sys

import pytest

from cg2a_ext.rl.config import TrainConfig, resolve
from cg2a_ext.rl.run.logs import Progress, Rates, WindowRate, remaining_seconds


def _cfg(**kw) -> TrainConfig:
    cfg = TrainConfig(**kw)
    resolve(cfg)
    return cfg


def test_remaining_time_counts_the_final_evaluation_over_its_own_modes():
    cfg = _cfg(train_steps=1000, seed_steps=100, eval_freq=500, eval_episodes=2, eval_modes=("train", "color_easy"),
               final_eval_modes=("train", "color_easy", "color_hard", "video_easy", "video_hard"))
    # at step 0: the pending evaluation at 0 and the one at 500 (2 modes each), then the final one (5 modes)
    assert remaining_seconds(cfg, 0, Rates(0.01, 1.0, 3.0), evaluation_pending=True) == \
        pytest.approx(100 * 0.01 + 900 * 1.0 + (2 * 2 + 5) * 2 * 3.0)
    assert remaining_seconds(cfg, 1000, Rates(0.01, 1.0, 3.0), evaluation_pending=True) == pytest.approx(5 * 2 * 3.0)


def test_window_rate_forgets_what_fell_out_of_the_window():
    w = WindowRate(window=10.0)
    for _ in range(10):
        w.add(2.0)                      # 20 s of slow steps ...
    for _ in range(150):
        w.add(0.1)                      # ... then 15 s of fast ones: only fast ones are left
    assert w.mean() == pytest.approx(0.1)
    assert WindowRate(5.0).mean() != WindowRate(5.0).mean()      # nothing measured: NaN


def test_eta_uses_the_start_estimate_until_a_minute_is_measured_then_the_recent_rate():
    cfg = _cfg(train_steps=10_000, seed_steps=100, eval_freq=0, eval_modes=("train",))
    p = Progress(cfg, enabled=False, rates=Rates(0.5, 2.0, 3.0))
    for _ in range(100):
        p.advance(0.001, training=False)                # fast seed steps do not shorten the training part
    assert p.eta() == pytest.approx(9900 * 2.0)
    for _ in range(10):
        p.advance(4.0, training=True)                   # 40 s measured: still the start estimate
    assert p.eta() == pytest.approx(9890 * 2.0)
    for _ in range(10):
        p.advance(4.0, training=True)                   # 80 s measured: the measured rate
    assert p.eta() == pytest.approx(9880 * 4.0)
    for _ in range(400):
        p.advance(1.0, training=True)                   # the last 300 s ran at 1 s/step: the slow start is gone
    assert p.eta() == pytest.approx(9480 * 1.0)


def test_a_resumed_run_without_a_start_estimate_uses_its_first_measurements():
    cfg = _cfg(train_steps=1000, seed_steps=10, eval_freq=0, eval_modes=("train",))
    p = Progress(cfg, initial=500, enabled=False, rates=Rates(float("nan"), float("nan"), float("nan")))
    p.advance(0.5, training=True)
    assert p.eta() == pytest.approx(499 * 0.5)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _drive(monkeypatch, stream, steps=1200, seconds=0.1, phases=()):
    monkeypatch.setattr(sys, "stderr", stream)
    clock = [0.0]
    monkeypatch.setattr("time.monotonic", lambda: clock[0])
    monkeypatch.setattr("time.time", lambda: clock[0])
    cfg = _cfg(train_steps=2000, seed_steps=0, eval_freq=0, eval_modes=("train",))
    p = Progress(cfg, rates=Rates(0.01, 0.1, 1.0), desc="cartpole_balance/drq")
    p.phase("training")
    for i in range(steps):
        clock[0] += seconds
        if i in phases:
            for e in range(3):
                p.phase(f"evaluating train episode {e + 1}/3")
            p.phase("training")
        p.advance(seconds, training=True)
    p.close()
    return stream.getvalue()


def test_a_log_file_gets_one_line_per_update_a_minute_apart(monkeypatch):
    """Redirected to a file: whole lines (no carriage returns), one a minute, plus one per phase change (not one per
    evaluation episode) and the last; a terminal gets the live bar."""
    log = _drive(monkeypatch, io.StringIO(), phases={600})
    assert "\r" not in log
    lines = log.splitlines()
    # 120 s of steps: the first line, minutes 1 and 2, the evaluation and the return to training, the last
    assert 4 <= len(lines) <= 7, lines
    assert sum("evaluating train" in line for line in lines) == 1, lines
    assert all(line.startswith("cartpole_balance/drq ") and "ETA" in line for line in lines), lines
    assert "1200/2000" in lines[-1] and "10 steps/s" in lines[-1], lines[-1]
    terminal = _drive(monkeypatch, _Terminal())
    assert terminal.count("\r") >= 100


def test_no_progress_writes_nothing(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    p = Progress(_cfg(train_steps=100, seed_steps=0, eval_freq=0, eval_modes=("train",)), enabled=False)
    p.phase("training")
    p.advance(0.1, training=True)
    p.close()
    assert stream.getvalue() == ""
