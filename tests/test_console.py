"""What a user reads on every run: one line of dataset and model sizes, no third-party adverts or deprecation
noise, a host warning at most once, progress bars within 100 columns."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.helpers import REPO, tiny_overrides

NOISE = ("💡 Tip", "litlogger", "LeafSpec", "GPU available", "TPU available", "ExperimentalWarning",
         "Loaded model weights", "wandb: Run data is saved locally")


def _run(script: str, *args: str, cwd) -> str:
    env = {**os.environ, "COLUMNS": "240", "WANDB_MODE": "offline"}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_a_training_run_reads_cleanly(tiny_root, tmp_path) -> None:
    args = [a for a in tiny_overrides(tiny_root, "epochs=2") if not a.startswith(("trainer.enable_progress_bar",
                                                                                  "logger="))]
    out = _run("train.py", *args, "logger=wandb", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert re.search(r"tiny: 40 users, 30 items, 480 interactions; examples train 360 / valid 40 / test 40, "
                     r"mean history \d+\.\d\. NARM: [\d,]+ parameters\.", out)
    for noise in NOISE:
        assert noise not in out, noise
    bars = [seg for line in out.splitlines() for seg in line.split("\r") if "it/s" in seg or "s/it" in seg]
    assert bars, "the progress bar is shown"
    assert max(len(re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", b)) for b in bars) <= 100
    assert not any("v_num" in b for b in bars)
    assert out.count("W&B offline run (complete)") == 1


def test_a_sweep_reads_cleanly(tiny_root, tmp_path) -> None:
    out = _run("sweep.py", "-m", *tiny_overrides(tiny_root, "epochs=1"), "learning_rate=0.01,0.001",
               "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=quiet", "hydra.sweep.dir=multirun/q", cwd=tmp_path)
    for noise in NOISE:
        assert noise not in out, noise
