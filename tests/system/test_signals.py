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
    # the resume line it printed works by hand too: the run reports to no trial (its trial has failed)
    run = tmp_path / "multirun" / "s" / "0"
    resumed = subprocess.run([sys.executable, str(REPO / "train.py"), f"resume={run}", "epochs=2"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((run / "results.json").read_text())["epochs_run"] == 2


def _tiny_sweep(tiny_root: Path, name: str, *extra: str) -> list[str]:
    """A one-trial study of 12 tiny epochs named ``name``, its folder ``multirun/<name>``."""
    return [*tiny_overrides(tiny_root, "epochs=12", "stopping_step=500"), "learning_rate=0.01",
            "hydra.sweeper.n_trials=1", f"hydra.sweeper.study_name={name}", f"hydra.sweep.dir=multirun/{name}", *extra]


def _stopped_then_rerun(tmp_path: Path, args: list[str], saved: Path, between=None) -> str:
    """``sweep.py -m args`` stopped by SIGTERM once ``saved`` exists (exit 143), ``between()``, then the same
    command again, which must succeed without a traceback; its console."""
    proc = _start("sweep.py", "-m", *args, cwd=tmp_path)
    err = _signal_once_saved(proc, saved, signal.SIGTERM)
    assert proc.returncode == 143, err[-3000:]
    if between is not None:
        between()
    rerun = subprocess.run([sys.executable, str(REPO / "sweep.py"), "-m", *args], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    console = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0 and "Traceback" not in console, console[-3000:]
    return console


def _load(tmp_path: Path, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'optuna' / f'{name}.db'}")


def test_a_stopped_sweep_trial_continues_its_run_when_the_command_is_rerun(tiny_root, tmp_path, monkeypatch) -> None:
    """The re-queued copy resumes the stopped run in its folder (exact resume), carrying its reported epochs:
    a study stopped at a session's end loses the epoch in flight, not the trial. Its trials.csv row names its own
    W&B run and CPU, as a trial's that was never stopped."""
    import csv

    import optuna

    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    epochs, folder = 12, tmp_path / "multirun" / "continued" / "0"
    args = [a for a in _tiny_sweep(tiny_root, "continued", "logger=wandb") if a != "logger=none"]
    console = _stopped_then_rerun(tmp_path, args, folder / "checkpoints" / "last.ckpt")
    assert "Trial 1 continues trial 0's run from its last checkpoint" in console
    assert "exists and is not empty" not in console  # Lightning's warning: continuing there is the point
    # the trial's own params; the fixed overrides were told once, in the start's "every trial also gets" line
    assert "Trial 1: hidden_size=128 n_layers=2 dropout_probs=lightest\n" in console
    study = _load(tmp_path, "continued")
    stopped, continued = study.trials
    assert (stopped.state, continued.state) == (optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE)
    assert continued.user_attrs["output_dir"] == str(folder.resolve()) and "error" not in continued.user_attrs
    from narm_lightning.training.hostcheck import cpu_description

    assert continued.user_attrs["host_cpu"] == cpu_description()  # where it trained: a study's time names it
    (row,) = [r for r in csv.DictReader((tmp_path / "multirun" / "continued" / "trials.csv").open())
              if r["state"] == "COMPLETE"]
    assert row["wandb_run_id"].startswith("trial-1-") and row["host_cpu"] == cpu_description(), row
    assert row["wandb_run_id"] == continued.user_attrs["wandb_run_id"]
    assert stopped.intermediate_values, "the stopped trial had reported its finished epochs"
    # one whole curve: the stopped attempt's epochs, then the continued run's, every epoch once
    assert sorted(continued.intermediate_values) == list(range(epochs))
    assert all(continued.intermediate_values[s] == v for s, v in stopped.intermediate_values.items())
    results = json.loads((folder / "results.json").read_text())
    assert results["epochs_run"] == epochs  # continued: the first attempt's epochs count, none trained twice
    assert not (tmp_path / "multirun" / "s" / "1" / "results.json").exists()
    assert continued.value == pytest.approx(max(continued.intermediate_values.values()))


def test_a_stopped_confirm_run_continues_its_run_when_the_command_is_rerun(tiny_root, tmp_path) -> None:
    """The confirm step's runs are long too: one stopped mid-run goes on from its folder's last checkpoint."""
    epochs, sweep = 12, tmp_path / "multirun" / "confirmed"

    def stopped_mid_confirm() -> None:
        assert (sweep / "0" / "results.json").exists() and not (sweep / "1" / "results.json").exists()

    # job 0 is trial 0; job 1 the first confirm run (the default config, seed 2020)
    args = _tiny_sweep(tiny_root, "confirmed", "hydra.sweeper.confirm_top=1", "hydra.sweeper.confirm_seeds=1")
    console = _stopped_then_rerun(tmp_path, args, sweep / "1" / "checkpoints" / "last.ckpt", stopped_mid_confirm)
    assert "Confirm default seed 2020 continues its stopped run from its last checkpoint" in console
    study = _load(tmp_path, "confirmed")
    record = study.user_attrs["confirm:default:2020"]
    assert record["folder"] == str((sweep / "1").resolve())
    results = json.loads((sweep / "1" / "results.json").read_text())
    assert results["epochs_run"] == epochs and record["metrics"] == pytest.approx(
        {k: v for k, v in results["test"].items() if isinstance(v, float)})
    assert "confirm:trial 0:2020" in study.user_attrs  # and the step went on to the next config


def test_a_stopped_trial_whose_run_cannot_go_on_starts_over_without_counting_as_a_failure(tiny_root, tmp_path) -> None:
    """The app refuses to continue (here: the run's saved config no longer matches, as after an upgrade that
    added a key): the attempt is failed as a stop, not counted, and the point runs again from scratch."""
    import yaml

    folder = tmp_path / "multirun" / "refused" / "0"

    def upgraded() -> None:  # the run's saved config no longer matches what the command composes
        saved = yaml.safe_load((folder / "config.yaml").read_text())
        saved["model"]["embedding_size"] = 8
        (folder / "config.yaml").write_text(yaml.safe_dump(saved))

    console = _stopped_then_rerun(tmp_path, _tiny_sweep(tiny_root, "refused"), folder / "checkpoints" / "last.ckpt",
                                  upgraded)
    assert "Trial 1 could not continue the stopped run: queued to start over." in console
    study = _load(tmp_path, "refused")
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL", "FAIL", "COMPLETE"], states
    assert "model.embedding_size was 8 and is now 16" in study.trials[1].user_attrs["error"]
    fresh = Path(study.trials[2].user_attrs["output_dir"])
    assert fresh != folder.resolve() and json.loads((fresh / "results.json").read_text())["epochs_run"] == 12
    assert sorted(study.trials[2].intermediate_values) == list(range(12))  # its own curve, from epoch 0
    assert "finished (1 complete, 0 pruned, 0 failed)" in console  # the stops did not count as failures
