"""Resume after SIGKILL ends with the same metrics as an uninterrupted run; checkpoints are plain data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from narm_lightning.checkpointing import RunState, config_differences, keep_csv_history, resume_argv
from narm_lightning.errors import ConfigError
from narm_lightning.training import train
from tests.helpers import CONF_DIR, compose_train, tiny_overrides

# small batches make an epoch long enough (~50 steps) that the poller sees epoch 2 before the run ends
RUN = ("epochs=8", "stopping_step=100", "train_batch_size=8", "learning_rate=0.002", "trainer.num_threads=1")


def _last_epoch(path: Path) -> int | None:
    try:
        return int(torch.load(path, weights_only=True)["epoch"])
    except (FileNotFoundError, EOFError, RuntimeError):
        return None


def _train_py(*args: str) -> list[str]:
    return [sys.executable, str(CONF_DIR.parent / "train.py"), *args]


def test_sigkill_mid_run_then_resume_gives_the_same_test_metrics(tiny_root, tmp_path) -> None:
    threads = torch.get_num_threads()
    try:
        uninterrupted = train(compose_train(tiny_overrides(tiny_root, *RUN)), output_dir=tmp_path / "a")
    finally:
        torch.set_num_threads(threads)

    run_b = tmp_path / "b"
    last = run_b / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(_train_py(*tiny_overrides(tiny_root, *RUN), f"hydra.run.dir={run_b}"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240  # a guard against a hang, not a timing assertion
        while proc.poll() is None and time.monotonic() < deadline:
            epoch = _last_epoch(last) if last.exists() else None
            if epoch is not None and epoch >= 2:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, f"run B was not killed mid-run: {proc.stderr.read()[-2000:]!r}"
    killed_at = _last_epoch(last)
    assert killed_at is not None and killed_at < 7 and not (run_b / "results.json").exists()

    resumed = subprocess.run(_train_py(f"resume={run_b}"), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = json.loads((run_b / "results.json").read_text())
    assert after["test"] == uninterrupted["test"]
    assert after["best_valid"] == uninterrupted["best_valid"]
    assert after["best_epoch"] == uninterrupted["best_epoch"]
    assert after["epochs_run"] == uninterrupted["epochs_run"] == 8  # the valid history survived the kill
    # seconds per epoch are over the epochs this process ran: the ones after the last checkpoint
    assert uninterrupted["epochs_timed"] == 8 and after["epochs_timed"] == 7 - killed_at

    # every checkpoint (callback states included) is tensors and plain data
    for name in ("last.ckpt", "best.ckpt"):
        ckpt = torch.load(run_b / "checkpoints" / name, weights_only=True)
        state = ckpt["callbacks"][RunState.__qualname__]
        assert {"python", "numpy", "torch", "shuffle", "valid_history"} <= set(state)
    assert not list((run_b / "checkpoints").glob(".*.tmp")), "no temp files left behind"


def test_resume_refuses_a_contradicting_config_before_touching_the_run(tiny_root, tmp_path) -> None:
    run = tmp_path / "run"
    train(compose_train(tiny_overrides(tiny_root, "epochs=1")), output_dir=run)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    with pytest.raises(ConfigError, match=r"model.hidden_size was 16 and is now 32"):
        train(compose_train(tiny_overrides(tiny_root, "epochs=1", "model.hidden_size=32", f"resume={run}")))
    assert before == {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    with pytest.raises(ConfigError, match="last.ckpt is missing"):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "config.yaml").write_text("seed: 1\n")
        train(compose_train(tiny_overrides(tiny_root, f"resume={tmp_path / 'empty'}")))
    with pytest.raises(ConfigError, match="not a folder"):
        train(compose_train(tiny_overrides(tiny_root, f"resume={tmp_path / 'nope'}")))


def test_resume_may_extend_epochs_only_among_training_keys() -> None:
    saved = {"epochs": 3, "model": {"hidden_size": 16}, "trainer": {"num_threads": None}, "resume": None}
    assert config_differences(saved, {**saved, "epochs": 9, "resume": "x", "trainer": {"num_threads": 2}}) == []
    assert config_differences(saved, {**saved, "model": {"hidden_size": 8}}) == [
        "model.hidden_size was 16 and is now 8"
    ]


def test_resume_argv_replays_the_saved_overrides(tmp_path) -> None:
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- data.dataset=tiny\n- epochs=3\n- resume=old\n")
    argv = resume_argv(["train.py", f"resume={tmp_path}", "epochs=5"])
    assert argv == ["train.py", f"resume={tmp_path}", "data.dataset=tiny", f"hydra.run.dir={tmp_path}",
                    "hydra.output_subdir=null", "epochs=5"]
    assert resume_argv(["train.py", "epochs=5"]) == ["train.py", "epochs=5"]


def test_csv_history_is_kept_across_resumes(tmp_path) -> None:
    (tmp_path / "csv").mkdir()
    for n in (1, 2):
        (tmp_path / "csv" / "metrics.csv").write_text(f"run {n}\n")
        keep_csv_history(tmp_path)
    assert sorted(p.name for p in (tmp_path / "csv").iterdir()) == ["metrics.part1.csv", "metrics.part2.csv"]
    assert (tmp_path / "csv" / "metrics.part2.csv").read_text() == "run 2\n"
