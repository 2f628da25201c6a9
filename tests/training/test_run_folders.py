"""A run folder is data, written by one process at a time: ``resume=`` replays only the run's own config keys,
every run gets a folder of its own, a second writer is refused, and a run that saved no epoch can start over."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from narm_lightning.cli.command_line import config_groups
from narm_lightning.config.keys import known_keys
from narm_lightning.errors import ConfigError
from narm_lightning.training.run_folder import replayable
from narm_lightning.training.runlock import lock_run_dir, release_run_dir
from tests.helpers import REPO, tiny_overrides

RUN = ("epochs=1", "trainer.num_threads=1")


def _train_py(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env={**os.environ, **(env or {})})


class _System:
    """Pickles as ``os.system(<touch marker>)``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize(("arg", "expected"), [
    ("learning_rate=0.01", True),
    ("model.hidden_size=256", True),
    ("data.root=/data", True),
    ("data=diginetica", True),
    ("logger=[wandb,csv]", True),
    ("n_layers='2'", True),
    ("dropout_probs=null", True),
    ("+hydra.callbacks.notes._target_=numpy.load", False),
    ("hydra.job.env_set.LD_PRELOAD=/x.so", False),
    ("hydra.callbacks.x._target_=os.system", False),
    ("+learning_rate=0.01", False),
    ("++learning_rate=0.01", False),
    ("~learning_rate", False),
    ("learning_rate=${oc.env:HOME}", False),
    ("data.root=/x/${oc.env:TOKEN}", False),
    ("data@foo=diginetica", False),
    ("data=../../evil", False),
    ("logger=[wandb,evil]", False),
    ("not_a_key=1", False),
    ("optuna.trial=3", False),
    ("learning_rate", False),
])
def test_only_the_runs_own_config_keys_and_group_options_replay(arg: str, expected: bool) -> None:
    assert replayable(arg, frozenset(known_keys()), config_groups()) is expected


def test_resume_does_not_run_what_a_tampered_folder_asks_for(tiny_root: Path, tmp_path: Path) -> None:
    """The red-team's folder: ``.hydra/overrides.yaml`` adds a Hydra callback that unpickles a file of the folder,
    an ``env_set`` and an ``oc.env`` value. The resume trains on, names what it did not replay, runs nothing."""
    run = tmp_path / "run"
    first = _train_py(*tiny_overrides(tiny_root, *RUN), f"hydra.run.dir={run}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    marker = tmp_path / "pwned"
    np.save(run / "notes.npy", np.array([_System(marker)], dtype=object), allow_pickle=True)
    overrides = run / ".hydra" / "overrides.yaml"
    evil = ["+hydra.callbacks.notes._target_=numpy.load", f"+hydra.callbacks.notes.file={run / 'notes.npy'}",
            "+hydra.callbacks.notes.allow_pickle=true", "+hydra.job.env_set.NARM_TEST_EVIL=1",
            "data.root=${oc.env:HOME}"]
    overrides.write_text(overrides.read_text() + "".join(f"- {a}\n" for a in evil))
    resumed = _train_py(f"resume={run}", "epochs=2", cwd=tmp_path)
    assert not marker.exists()
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "not replayed from" in resumed.stderr
    for arg in evil:
        assert repr(arg)[:60] in resumed.stderr  # each named (long ones cut at 80 characters)
    assert json.loads((run / "results.json").read_text())["epochs_run"] == 2


def test_a_run_folders_config_with_an_interpolation_is_refused_naming_the_key(tiny_root, tmp_path) -> None:
    """A saved ``config.yaml`` whose value reads the environment: refused before anything resolves it."""
    run = tmp_path / "run"
    assert _train_py(*tiny_overrides(tiny_root, *RUN), f"hydra.run.dir={run}", cwd=tmp_path).returncode == 0
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("seed: 2020", "seed: ${oc.env:NARM_SECRET}"))
    proc = _train_py(f"resume={run}", "epochs=2", cwd=tmp_path, env={"NARM_SECRET": "hunter2"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"{config}: seed holds '${{oc.env:NARM_SECRET}}', an OmegaConf interpolation" in proc.stderr
    assert "hunter2" not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_two_runs_started_in_the_same_second_get_a_folder_each(tiny_root: Path, tmp_path: Path) -> None:
    """The default folder names to the microsecond: both runs finish, each folder holds its own seed's run."""
    procs = [subprocess.Popen([sys.executable, str(REPO / "train.py"), *tiny_overrides(tiny_root, *RUN),
                               f"seed={seed}"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for seed in (1, 2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    folders = sorted(p.parent for p in (tmp_path / "outputs" / "tiny").glob("*/results.json"))
    assert len(folders) == 2
    seeds = sorted(yaml.safe_load((f / "config.yaml").read_text())["seed"] for f in folders)
    assert seeds == [1, 2]


@pytest.fixture()
def holder(tmp_path: Path):
    """A process holding a run folder's lock until it is killed."""
    run = tmp_path / "held"
    code = ("import sys, time; from narm_lightning.training.runlock import lock_run_dir; lock_run_dir(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"  # an event, not a sleep
    yield run, proc
    proc.kill()
    proc.wait()


def test_a_second_writer_is_refused_naming_the_holder_and_a_dead_holders_lock_is_taken_over(holder) -> None:
    run, proc = holder
    with pytest.raises(ConfigError, match=rf"{run} is in use: another process \(pid {proc.pid}\) is writing it"):
        lock_run_dir(run)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lock_run_dir(run)  # the kernel dropped the dead process's lock
    release_run_dir(run)
    assert list(run.iterdir()) == []  # the lock is the folder's own: no file joins the run's files


def test_a_run_into_a_folder_another_process_writes_is_refused_on_the_command_line(holder, tiny_root) -> None:
    run, proc = holder
    for args in ([f"hydra.run.dir={run}"], [f"resume={run}"]):
        started = time.monotonic()
        out = _train_py(*tiny_overrides(tiny_root, *RUN), *args, cwd=run.parent)
        assert out.returncode == 2, out.stderr[-2000:]
        assert f"{run} is in use: another process (pid {proc.pid}) is writing it" in out.stderr
        assert "Traceback" not in out.stderr
        assert time.monotonic() - started < 120  # refused up front, not after training
    assert list(run.iterdir()) == []  # nothing written into the holder's folder


def test_a_pinned_folder_whose_run_saved_no_epoch_starts_over(tiny_root: Path, tmp_path: Path) -> None:
    """A requeued job reruns its command into its pinned folder after a stop before the first epoch ended."""
    run = tmp_path / "pinned"
    args = (*tiny_overrides(tiny_root, *RUN), f"hydra.run.dir={run}")
    assert _train_py(*args, cwd=tmp_path).returncode == 0
    for done in (run / "results.json", *(run / "checkpoints").iterdir()):
        done.unlink()  # what a run stopped during its first epoch leaves: config.yaml, .hydra/, train.log
    again = _train_py(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (run / "results.json").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    refused = _train_py(*args, cwd=tmp_path)  # with an epoch saved, the folder is a run to continue
    assert refused.returncode == 2 and f"Continue it with resume={run}" in " ".join(refused.stderr.split())


def test_pickle_marker_helper_would_fire(tmp_path: Path) -> None:
    """The payload of the tampered-folder test runs when unpickled: that test's ``not marker.exists()`` can fail."""
    marker = tmp_path / "fired"
    pickle.loads(pickle.dumps(_System(marker)))
    assert marker.exists()


def test_two_sweep_workers_started_at_once_run_every_grid_point(tiny_root: Path, tmp_path: Path) -> None:
    """The documented "one worker per core", both started in the same second: they share the study and its one
    folder, every job gets a folder of its own, and the 4 grid points all complete (the red-team saw 2 fail and a
    rerun call the study complete)."""
    args = [sys.executable, str(REPO / "sweep.py"), "-m", *tiny_overrides(tiny_root, *RUN), "hydra.sweeper.params=null",
            "learning_rate=0.01,0.005,0.001,0.0005", "hydra.sweeper.study_name=pair"]
    procs = [subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    import optuna

    study = optuna.load_study(study_name="pair", storage=f"sqlite:///{tmp_path / 'optuna' / 'pair.db'}")
    states = [t.state.name for t in study.trials]
    assert sorted(t.params["learning_rate"] for t in study.trials if t.state.name == "COMPLETE") == [
        0.0005, 0.001, 0.005, 0.01], states
    assert [p.name for p in (tmp_path / "multirun").iterdir()] == ["pair"]  # the study's folder, shared
    results = sorted((tmp_path / "multirun" / "pair").glob("*/results.json"))
    assert len(results) == len(study.trials)  # every trial wrote a folder of its own


def test_resume_of_a_finished_run_leaves_its_results_alone_unless_it_trains_longer(tiny_root, tmp_path) -> None:
    """The red-team saw ``resume=`` of a finished run rewrite results.json (fit_seconds 13.2 -> 0.042). A finished
    run is refused, saying why; raising ``epochs`` above what it ran continues it."""
    from narm_lightning.training.run import train
    from tests.helpers import compose_train

    run = tmp_path / "run"
    train(compose_train(tiny_overrides(tiny_root, "epochs=2")), output_dir=run)
    before = (run / "results.json").read_bytes()
    with pytest.raises(ConfigError, match=r"the run is finished \(results\.json: it ran all its 2 epochs \(give "
                                          r"epochs above 2 to train it longer\)\); nothing to resume"):
        train(compose_train(tiny_overrides(tiny_root, "epochs=2", f"resume={run}")))
    assert (run / "results.json").read_bytes() == before
    longer = train(compose_train(tiny_overrides(tiny_root, "epochs=3", f"resume={run}")))
    assert longer["epochs_run"] == 3
    # early stopping's end is final: an early-stopped run is not continued by a larger epochs
    stopped = tmp_path / "stopped"
    done = train(compose_train(tiny_overrides(tiny_root, "epochs=30", "stopping_step=0", "learning_rate=0.05",
                                              "train_batch_size=8")), output_dir=stopped)
    assert done["epochs_run"] < 30
    with pytest.raises(ConfigError, match=rf"early stopping ended it after {done['epochs_run']} of 30 epochs"):
        train(compose_train(tiny_overrides(tiny_root, "epochs=40", "stopping_step=0", "learning_rate=0.05",
                                           "train_batch_size=8", f"resume={stopped}")))


def test_temp_files_of_writes_a_kill_cut_short_are_removed_when_the_run_resumes(tiny_root, tmp_path) -> None:
    """``kill -9`` during a checkpoint write leaves ``.best.ckpt.<random>.tmp`` (20 MB on ml-100k); the process
    that next holds the folder removes them, and keeps every real file."""
    from narm_lightning.training.run import train
    from tests.helpers import compose_train

    run = tmp_path / "run"
    train(compose_train(tiny_overrides(tiny_root, "epochs=1")), output_dir=run)
    stale = [run / "checkpoints" / ".best.ckpt.k2j3h4.tmp", run / "checkpoints" / ".last.ckpt.x8y9.tmp"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    train(compose_train(tiny_overrides(tiny_root, "epochs=2", f"resume={run}")))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


def test_init_from_a_checkpoint_of_other_items_is_refused(tiny_root: Path, tmp_path: Path) -> None:
    """Another dataset with as many items (30): the weights load by shape and would score the wrong items. Our
    checkpoints name their items, so the mismatch is found and named."""
    from narm_lightning.training.run import train
    from tests.conftest import write_inter
    from tests.helpers import compose_train

    first = train(compose_train(tiny_overrides(tiny_root, "epochs=1")), output_dir=tmp_path / "a")
    rows = [(f"u{u}", f"j{(u + t) % 30}", float(t)) for u in range(40) for t in range(12)]
    write_inter(tmp_path / "other" / "other.inter", rows)
    cfg = compose_train([*tiny_overrides(tmp_path, "epochs=0"), "data.dataset=other",
                         f"init_from={first['best_checkpoint']}"])
    with pytest.raises(ConfigError, match=r"init_from=.*best\.ckpt: trained on other items \(30 of 31 item ids "
                                          r"differ; row 1: 'i\d+' there, 'j\d+' here\)"):
        train(cfg, output_dir=tmp_path / "b")
    same = train(compose_train(tiny_overrides(tiny_root, "epochs=0", f"init_from={first['best_checkpoint']}")),
                 output_dir=tmp_path / "c")
    assert same["test"] == first["test"]  # its own dataset: the same weights, the same figures
