"""A run stopped by SIGTERM (schedulers) or SIGINT (Ctrl-C): non-zero exit, the resume command, no result;
a sweep stopped so leaves its trial FAILED, never COMPLETE or RUNNING."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, tiny_overrides

LONG = ("epochs=200", "stopping_step=500")


def _start(script: str, *args: str, cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.Popen([sys.executable, str(REPO / script), *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _signal_once_saved(proc: subprocess.Popen, last: Path, signum: int) -> str:
    """Send ``signum`` once ``last`` exists (an epoch finished); the process's stderr."""
    deadline = time.monotonic() + 240  # a guard against a hang, not a timing assertion
    try:
        while proc.poll() is None and time.monotonic() < deadline and not last.exists():
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before it was signalled: {proc.stderr.read()[-2000:]}"
        os.kill(proc.pid, signum)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return err


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stopped_run_exits_non_zero_and_says_how_to_resume(tiny_root, tmp_path, signum, code) -> None:
    run = tmp_path / "run"
    # the fused GRU (the default on CPU): a SIGINT landing inside torch.compile's machinery was once swallowed
    proc = _start("train.py", *tiny_overrides(tiny_root, *LONG, gru_impl="auto"), f"hydra.run.dir={run}", cwd=tmp_path)
    err = _signal_once_saved(proc, run / "checkpoints" / "last.ckpt", signum)
    assert proc.returncode == code, err[-2000:]
    name = signal.Signals(signum).name
    assert f"interrupted: stopped by {name} during epoch" in err
    assert f"resume with:\n  python train.py resume={run}" in err
    assert "Traceback" not in err
    assert not (run / "results.json").exists()
    if signum == signal.SIGTERM:  # the resume command it printed works
        resumed = subprocess.run([sys.executable, str(REPO / "train.py"), f"resume={run}", "epochs=3"],
                                 cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert json.loads((run / "results.json").read_text())["epochs_run"] == 3  # the epochs before it kept


def test_a_sweep_stopped_by_sigterm_fails_its_trial_and_queues_it_again(tiny_root, tmp_path) -> None:
    args = [*tiny_overrides(tiny_root, *LONG), "learning_rate=0.01,0.001", "hydra.sweeper.n_trials=2",
            "hydra.sweeper.study_name=stopped", "hydra.sweep.dir=multirun/s"]
    proc = _start("sweep.py", "-m", *args, cwd=tmp_path)
    err = _signal_once_saved(proc, tmp_path / "multirun" / "s" / "0" / "checkpoints" / "last.ckpt", signal.SIGTERM)
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err
    with sqlite3.connect(tmp_path / "optuna" / "stopped.db") as db:
        states = [s for (s,) in db.execute("SELECT state FROM trials ORDER BY number")]
        params = [sorted(db.execute("SELECT param_name, param_value FROM trial_params WHERE trial_id = ?", (i,)))
                  for (i,) in db.execute("SELECT trial_id FROM trials ORDER BY number")]
    # FAILED (neither COMPLETE nor left RUNNING), and a copy WAITING with the same params: a grid keeps its point
    # and the rerun of the command runs it (a stale trial's path, so it does not count toward n_trials)
    assert states == ["FAIL", "WAITING"] and params[0] == params[1] != []
