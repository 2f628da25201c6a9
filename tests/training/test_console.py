"""What a user reads on every run: one line of dataset and model sizes, no third-party adverts or deprecation
noise, a host warning at most once, progress bars within 100 columns on a terminal, and one line per epoch in the
run's log always and on the console when no bar is drawn there (a file or a pipe)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios

from tests.helpers import REPO, tiny_overrides

NOISE = ("💡 Tip", "litlogger", "LeafSpec", "GPU available", "TPU available", "ExperimentalWarning",
         "Loaded model weights", "wandb: Run data is saved locally", "Automatic Mixed Precision",
         "is smaller than the logging interval", "`Trainer.fit` stopped")


def _run(script: str, *args: str, cwd) -> str:
    env = {**os.environ, "COLUMNS": "240", "WANDB_MODE": "offline"}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _run_on_terminal(script: str, *args: str, cwd) -> str:
    """The program with its stdout on a pseudo-terminal (as a user at a shell sees it); stdout and stderr as text."""
    env = {**os.environ, "COLUMNS": "240", "WANDB_MODE": "offline"}
    env.pop("HYDRA_FULL_ERROR", None)
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 240, 0, 0))  # a new pty is 0 x 0: no bar fits
    with subprocess.Popen([sys.executable, str(REPO / script), *args], cwd=cwd, env=env, stdout=follower,
                          stderr=subprocess.PIPE) as proc:
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the program closed the terminal (it ended)
                break
            if not chunk:
                break
            chunks.append(chunk)
        err = proc.stderr.read().decode() if proc.stderr else ""
        assert proc.wait(timeout=600) == 0, err[-3000:]
    os.close(leader)
    return b"".join(chunks).decode(errors="replace") + err


EPOCH_LINE = re.compile(r"epoch (\d+) \((\d+)/(\d+)\) \| train loss \d+\.\d{4} \| "
                        r"valid recall@10 [\d.]+ mrr@10 ([\d.]+) ndcg@10 [\d.]+ hit@10 [\d.]+ precision@10 [\d.]+ "
                        r"\| [\d.]+ s \| best mrr@10 ([\d.]+) "
                        r"\(epoch (\d+)\), patience (\d+)/11")


def _epoch_lines(text: str) -> list[re.Match[str]]:
    return [m for m in map(EPOCH_LINE.search, text.splitlines()) if m]


def test_a_training_run_reads_cleanly(tiny_root, tmp_path) -> None:
    args = [a for a in tiny_overrides(tiny_root, "epochs=2") if not a.startswith(("trainer.enable_progress_bar",
                                                                                  "logger="))]
    out = _run_on_terminal("train.py", *args, "logger=wandb", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert re.search(r"tiny: 40 users, 30 items, 480 interactions; examples train 360 / valid 40 / test 40, "
                     r"mean history \d+\.\d\. NARM: [\d,]+ parameters, precision (bf16-mixed|32-true)\.", out)
    for noise in NOISE:
        assert noise not in out, noise
    bars = [seg for line in out.splitlines() for seg in line.split("\r") if "it/s" in seg or "s/it" in seg]
    assert bars, "the progress bar is shown"
    assert max(len(re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", b)) for b in bars) <= 100
    assert not any("v_num" in b for b in bars)
    assert out.count("W&B offline run (complete)") == 1
    assert not _epoch_lines(out), "the bar shows the epoch: no epoch lines between its redraws"
    assert len(_epoch_lines((tmp_path / "run" / "train.log").read_text())) == 2, "the log has every epoch"


def test_into_a_file_each_epoch_is_one_line_and_no_bar_is_drawn(tiny_root, tmp_path) -> None:
    """stdout to a file (nohup, a batch job, `| tee`): the bar would be carriage returns, so each epoch is one line
    there and in train.log, with the run's own figures: the best epoch and the patience left as results.json says."""
    import json

    args = [a for a in tiny_overrides(tiny_root, "epochs=4", "stopping_step=10") if
            not a.startswith("trainer.enable_progress_bar")]
    out = _run("train.py", *args, "learning_rate=0.05", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert "\r" not in out and "it/s" not in out
    lines = _epoch_lines(out)
    log_lines = _epoch_lines((tmp_path / "run" / "train.log").read_text())
    assert [m[0] for m in lines] == [m[0] for m in log_lines]
    assert [(int(m[1]), int(m[2]), int(m[3])) for m in lines] == [(e, e + 1, 4) for e in range(4)]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    best = results["best_epoch"]
    last = lines[-1]
    assert int(last[6]) == best
    assert float(last[5]) == round(results["best_valid"]["mrr@10"], 4)
    assert int(last[7]) == 11 - (3 - best), "patience: 11 epochs without a better value, less those since the best"
    # each line's valid figure is that epoch's, and the best so far is the running maximum of them
    values = [float(m[4]) for m in lines]
    assert [float(m[5]) for m in lines] == [max(values[: i + 1]) for i in range(4)]


def test_the_epoch_line_counts_patience_from_the_best_epoch() -> None:
    """The line's own arithmetic, against made-up histories (a new best resets the count; ties keep the first)."""
    from types import SimpleNamespace

    from pytorch_lightning.callbacks import EarlyStopping

    from narm_lightning.training.epoch_log import EpochLog

    stopper = EarlyStopping(monitor="valid/mrr@10", patience=4)
    history = [{"epoch": 0, "mrr@10": 0.1}, {"epoch": 1, "mrr@10": 0.3}, {"epoch": 2, "mrr@10": 0.3},
               {"epoch": 3, "mrr@10": 0.2}]
    trainer = SimpleNamespace(current_epoch=3, max_epochs=9, callbacks=[stopper],
                              callback_metrics={"train/loss_epoch": 1.5})
    line = EpochLog("valid/mrr@10", bar=False).line(trainer, SimpleNamespace(valid_history=history), 2.04)
    assert line == ("epoch 3 (4/9) | train loss 1.5000 | valid mrr@10 0.2000 | 2.0 s | best mrr@10 0.3000 (epoch 1), "
                    "patience 2/4")
    unvalidated = SimpleNamespace(current_epoch=4, max_epochs=9, callbacks=[], callback_metrics={})
    assert EpochLog("valid/mrr@10", bar=False).line(unvalidated, SimpleNamespace(valid_history=history), 1.0) == (
        "epoch 4 (5/9) | 1.0 s | best mrr@10 0.3000 (epoch 1)")


def test_a_sweep_reads_cleanly(tiny_root, tmp_path) -> None:
    out = _run("sweep.py", "-m", *tiny_overrides(tiny_root, "epochs=1"), "learning_rate=0.01,0.001",
               "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=quiet", "hydra.sweep.dir=multirun/q", cwd=tmp_path)
    for noise in NOISE:
        assert noise not in out, noise
