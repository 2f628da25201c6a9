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

from narm_lightning.errors import ConfigError, DataError
from narm_lightning.training.checkpointing import RunState, config_differences, keep_csv_history
from narm_lightning.training.run import train
from narm_lightning.training.run_folder import resume_argv
from tests.helpers import REPO, compose_train, tiny_overrides

# small batches make an epoch long enough (~50 steps) that the poller sees each epoch; at this learning rate the
# tiny data's best epoch comes early and early stopping (patience stopping_step + 1 = 3 epochs) ends the run
RUN = ("epochs=12", "stopping_step=2", "train_batch_size=8", "learning_rate=0.05", "trainer.num_threads=1")


def _last_epoch(path: Path) -> int | None:
    try:
        return int(torch.load(path, weights_only=True)["epoch"])
    except (FileNotFoundError, EOFError, RuntimeError):
        return None


def _train_py(*args: str) -> list[str]:
    return [sys.executable, str(REPO / "train.py"), *args]


def _valid_history(run: Path) -> list[dict[str, float]]:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    return ckpt["callbacks"][RunState.__qualname__]["valid_history"]


def test_sigkill_mid_run_then_resume_gives_the_same_test_metrics(tiny_root, tmp_path) -> None:
    """Killed while early stopping's patience is counting (after the best epoch, before the stop): the resumed run
    must stop at the same epoch (patience restored), keep the earlier best (best score restored), and see the same
    valid metrics epoch by epoch (torch's global and the shuffle's generators restored: training draws from both).
    Python's and NumPy's global generators are restored too, but training draws nothing from them, so this test
    cannot see their loss (``test_run_state_restores_every_generator`` checks them directly)."""
    threads = torch.get_num_threads()
    try:
        uninterrupted = train(compose_train(tiny_overrides(tiny_root, *RUN, gru_impl="auto")),  # the fused GRU
                              output_dir=tmp_path / "a")
    finally:
        torch.set_num_threads(threads)
    best, stop = uninterrupted["best_epoch"], uninterrupted["epochs_run"]
    # the setting must give what the test is about: an early stop, well after the best epoch
    assert stop < 12 and stop - 1 - best == 3, (best, stop)

    run_b = tmp_path / "b"
    last = run_b / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(_train_py(*tiny_overrides(tiny_root, *RUN, gru_impl="auto"), f"hydra.run.dir={run_b}"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240  # a guard against a hang, not a timing assertion
        while proc.poll() is None and time.monotonic() < deadline:
            epoch = _last_epoch(last) if last.exists() else None
            if epoch is not None and epoch > best:  # the first epoch after the best: patience at 1
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, f"run B was not killed mid-run: {proc.stderr.read()[-2000:]!r}"
    killed_at = _last_epoch(last)
    assert killed_at is not None and best < killed_at < stop - 1 and not (run_b / "results.json").exists()

    resumed = subprocess.run(_train_py(f"resume={run_b}"), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = json.loads((run_b / "results.json").read_text())
    assert after["test"] == uninterrupted["test"]
    assert after["best_valid"] == uninterrupted["best_valid"]
    assert after["best_epoch"] == uninterrupted["best_epoch"]
    assert after["epochs_run"] == uninterrupted["epochs_run"]  # the same early stop: patience survived the kill
    assert _valid_history(run_b) == _valid_history(tmp_path / "a")  # epoch by epoch, exactly
    assert torch.load(run_b / "checkpoints" / "best.ckpt", weights_only=True)["epoch"] == best
    # seconds per epoch are over the epochs this process ran: the ones after the last checkpoint
    assert uninterrupted["epochs_timed"] == stop and after["epochs_timed"] == stop - 1 - killed_at

    # every checkpoint (callback states included) is tensors and plain data
    for name in ("last.ckpt", "best.ckpt"):
        ckpt = torch.load(run_b / "checkpoints" / name, weights_only=True)
        state = ckpt["callbacks"][RunState.__qualname__]
        assert {"python", "numpy", "torch", "shuffle", "valid_history"} <= set(state)
    assert not list((run_b / "checkpoints").glob(".*.tmp")), "no temp files left behind"


def test_run_state_restores_every_generator() -> None:
    """Each generator ``RunState`` saves comes back: the draws after a restore repeat the draws made right after the
    save, one generator a component (a generator left unrestored has moved on, so its component differs)."""
    import random

    import numpy as np

    shuffle = torch.Generator().manual_seed(1)
    state = RunState(shuffle)
    state._stage = "fit"
    saved = state.state_dict()

    def draws() -> tuple[float, ...]:
        return (random.random(), float(np.random.rand()), float(torch.rand(1)), float(torch.rand(1, generator=shuffle)))

    first = draws()
    state.load_state_dict(saved)
    assert draws() == first


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


def test_a_sweep_trials_folder_resumed_by_hand_reports_to_no_trial(tmp_path) -> None:
    """Its trial has failed (stopped): replaying ``++optuna.trial_id`` would report to a finished trial."""
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text(
        "- learning_rate=0.01\n- ++optuna.storage='sqlite:///s.db'\n- ++optuna.study_name='s'\n- ++optuna.trial_id=7\n")
    argv = resume_argv(["train.py", f"resume={tmp_path}"])
    assert argv == ["train.py", f"resume={tmp_path}", "learning_rate=0.01", f"hydra.run.dir={tmp_path}",
                    "hydra.output_subdir=null"]
    saved = {"optuna": {"storage": "sqlite:///s.db", "study_name": "s", "trial_id": 7}, "epochs": 3}
    assert config_differences(saved, {"optuna": {"storage": None, "study_name": None, "trial_id": None},
                                      "epochs": 3}) == []


RANKS = ("LOCAL_RANK", "RANK", "NODE_RANK")


@pytest.fixture
def first_process(monkeypatch):
    """A process that is no DDP child (none of the rank variables set, or set to 0); locks released after."""
    from narm_lightning.training.runlock import release_run_dirs

    for key in RANKS:
        monkeypatch.delenv(key, raising=False)
    yield monkeypatch
    release_run_dirs()


def _saved_run(folder: Path, *overrides: str) -> Path:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    return folder


def test_resume_argv_replays_only_what_it_may_and_names_the_rest(tmp_path, first_process, capsys) -> None:
    """The run's own keys and group options replay (a key the user repeats is theirs); Hydra's keys, ``+``
    additions and a trial's identity do not (the first two named on stderr); the folder is locked; a folder
    name holding ``=`` is read whole."""
    from narm_lightning.training.runlock import holds_lock

    run = _saved_run(tmp_path / "r=un", "learning_rate=0.01", "hydra.job.name=x", "++optuna.trial_id=3",
                     "+colour=red", "dropout_probs=light", "hydra.run.dir=elsewhere", "epochs=4")
    argv = resume_argv(["train.py", f"resume={run}", "learning_rate=0.02", "~epochs"])
    assert argv == ["train.py", f"resume={run}", "dropout_probs=light", f"hydra.run.dir={run}",
                    "hydra.output_subdir=null", "learning_rate=0.02", "~epochs"]
    assert capsys.readouterr().err == (f"resume: not replayed from {run / '.hydra' / 'overrides.yaml'} (only the "
                                       "run's config keys and group options are): 'hydra.job.name=x', '+colour=red'\n")
    assert holds_lock(run)
    given = resume_argv(["train.py", f"resume={run}", "hydra.run.dir=there", "hydra.output_subdir=out"])
    assert given == ["train.py", f"resume={run}", "learning_rate=0.01", "dropout_probs=light", "epochs=4",
                     "hydra.run.dir=there", "hydra.output_subdir=out"]
    capsys.readouterr()
    long = _saved_run(tmp_path / "long", "hydra.job.name=" + "x" * 100)
    resume_argv(["train.py", f"resume={long}"])
    assert capsys.readouterr().err.endswith(f": 'hydra.job.name={'x' * 65}'\n")  # 80 characters of each, no more


@pytest.mark.parametrize("value", ["", "null", "None", "nowhere"])
def test_resume_argv_leaves_a_resume_of_no_folder_to_train(value, tmp_path, first_process) -> None:
    argv = ["train.py", f"resume={tmp_path / value if value == 'nowhere' else value}", "epochs=5"]
    assert resume_argv(list(argv)) == argv


def test_resume_argv_without_resume_refuses_a_used_folder_and_locks_a_new_one(tmp_path, first_process) -> None:
    from narm_lightning.training.runlock import holds_lock

    used = tmp_path / "u=sed"
    (used / "checkpoints").mkdir(parents=True)
    (used / "checkpoints" / "last.ckpt").write_bytes(b"x")
    with pytest.raises(ConfigError, match=rf"{used} already holds a run \(checkpoints\); .* resume={used}, "):
        resume_argv(["train.py", f"hydra.run.dir={used}", "epochs=5"])
    fresh = tmp_path / "fresh"
    assert resume_argv(["train.py", f"hydra.run.dir={fresh}"]) == ["train.py", f"hydra.run.dir={fresh}"]
    assert holds_lock(fresh) and not holds_lock(used / "checkpoints")


@pytest.mark.parametrize("rank", RANKS)
def test_a_ddp_child_re_runs_the_command_into_its_parents_folder_unlocked(rank, tmp_path, first_process) -> None:
    """DDP's extra processes (any rank variable not 0) run the same command line into the folder the first one
    began and locked: no lock, no used-folder refusal; a rank variable of 0 is the first process."""
    from narm_lightning.training.runlock import holds_lock, release_run_dirs

    used = tmp_path / "used"
    (used / "checkpoints").mkdir(parents=True)
    (used / "checkpoints" / "last.ckpt").write_bytes(b"x")
    first_process.setenv(rank, "0")
    with pytest.raises(ConfigError, match="already holds a run"):
        resume_argv(["train.py", f"hydra.run.dir={used}"])
    release_run_dirs()
    first_process.setenv(rank, "1")
    assert resume_argv(["train.py", f"hydra.run.dir={used}"]) == ["train.py", f"hydra.run.dir={used}"]
    run = _saved_run(tmp_path / "run", "epochs=4")
    assert resume_argv(["train.py", f"resume={run}"])[2] == "epochs=4"
    assert not holds_lock(used) and not holds_lock(run)


def test_a_damaged_saved_overrides_or_config_file_is_one_paragraph_naming_it(tmp_path) -> None:
    """In-process, word for word (the command-line tests of damaged folders run as child processes)."""
    from narm_lightning.training.checkpointing import load_yaml_config
    from narm_lightning.training.run_folder import read_saved_overrides

    over = tmp_path / "overrides.yaml"
    over.write_bytes(b"- a=1\n- b=\xff\n")
    with pytest.raises(ConfigError) as exc:
        read_saved_overrides(over)
    assert str(exc.value) == (f"{over}: not valid YAML (not UTF-8 text: byte 10); expected the list of overrides Hydra "
                              "saved for the run. Restore it, or delete it and give the run's overrides again after "
                              "resume=.")
    over.write_text("a: 1\n")
    with pytest.raises(ConfigError) as exc:
        read_saved_overrides(over)
    assert str(exc.value) == (f"{over}: holds dict, not a list of override strings; expected the overrides Hydra saved "
                              "for the run.")
    over.write_text("- 3\n")
    with pytest.raises(ConfigError, match=rf"^{over}: holds list, not a list of override strings"):
        read_saved_overrides(over)
    over.write_text("- hydra.run.dir=outputs/${now:%H}\n- lr=1\n")  # a user's ${now:} is saved: read, screened later
    assert read_saved_overrides(over) == ["hydra.run.dir=outputs/${now:%H}", "lr=1"]
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(DataError, match=r"dir.yaml: is a directory; expected a YAML list of overrides"):
        read_saved_overrides(tmp_path / "dir.yaml")

    cfg = tmp_path / "config.yaml"
    cfg.write_bytes(b"epochs: \xfe\n")
    with pytest.raises(ConfigError) as exc:
        load_yaml_config(cfg)
    assert str(exc.value).startswith(f"{cfg}: not a readable config (UnicodeDecodeError: 'utf-8' codec can't decode "
                                     "byte 0xfe in position 8")
    assert str(exc.value).endswith("; expected the config.yaml a run saved. Restore it, or start a new run without "
                                   "resume=.")
    cfg.write_text("- 1\n")
    with pytest.raises(ConfigError) as exc:
        load_yaml_config(cfg)
    assert str(exc.value) == f"{cfg}: holds a list, not a mapping of keys; expected the config.yaml a run saved."
    with pytest.raises(DataError, match=r"dir.yaml: is a directory; expected the run's saved config \(YAML\)"):
        load_yaml_config(tmp_path / "dir.yaml")
    cfg.write_text("epochs: 3\nmodel: {hidden_size: 8}\n")
    assert load_yaml_config(cfg) == {"epochs": 3, "model": {"hidden_size": 8}}


def test_config_differences_name_keys_only_one_side_has() -> None:
    assert config_differences({"a": 1, "m": {"x": 1}}, {"a": 1, "m": {"y": None}}) == [
        "m.x was 1 and is now '<absent>'", "m.y was '<absent>' and is now None"]
    assert config_differences({"a": 1}, {"a": 2, "b": 3}) == ["a was 1 and is now 2", "b was '<absent>' and is now 3"]


@pytest.mark.parametrize(("arg", "key"), [
    ("learning_rate=0.01", "learning_rate"), ("+model.x=1", "model.x"), ("++a.b=c=d", "a.b"), ("~epochs", "epochs"),
    ("data@x=ml-100k", "data"), ("logger=[a,b@c]", "logger"), ("a@b@c=1", "a"),
])
def test_an_overrides_key_is_read_without_prefix_package_or_value(arg: str, key: str) -> None:
    from narm_lightning.cli.command_line import override_key as _override_key

    assert _override_key(arg) == key


@pytest.mark.parametrize(("arg", "ok"), [
    ("learning_rate=0.01", True), ("learning_rate=a=b", True), ("~learning_rate", False), ("+learning_rate=1", False),
    ("hydra.job.name=x", False), ("HYDRA_x=1", True), ("optuna.trial_id=3", False), ("data@p=ml-100k", False),
    ("learning_rate=${oc.env:HOME}", False), ("data=ml-100k", True), ("logger=[wandb,csv]", True),
    ("logger=[wandb", False), ("logger=wandb]", False), ("data=nowhere", False), ("dropout_probs=null", True),
])
def test_which_saved_overrides_replay(arg: str, ok: bool) -> None:
    from narm_lightning.cli.command_line import config_groups
    from narm_lightning.training.run_folder import replayable

    assert replayable(arg, frozenset({"learning_rate", "HYDRA_x"}), config_groups()) is ok


def test_csv_history_is_kept_across_resumes(tmp_path) -> None:
    (tmp_path / "csv").mkdir()
    for n in (1, 2):
        (tmp_path / "csv" / "metrics.csv").write_text(f"run {n}\n")
        keep_csv_history(tmp_path)
    assert sorted(p.name for p in (tmp_path / "csv").iterdir()) == ["metrics.part1.csv", "metrics.part2.csv"]
    assert (tmp_path / "csv" / "metrics.part2.csv").read_text() == "run 2\n"


# --- run folders: reuse, moves, changed data, damaged files ----------------------------------------------


def test_a_used_run_folder_is_refused_without_resume(tiny_root, tmp_path) -> None:
    run = tmp_path / "run"
    args = [*tiny_overrides(tiny_root, "epochs=1"), f"hydra.run.dir={run}"]
    assert subprocess.run(_train_py(*args), capture_output=True, timeout=300).returncode == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    second = subprocess.run(_train_py(*args, "learning_rate=0.01"), capture_output=True, text=True, timeout=300)
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert f"error: {run} already holds a run (config.yaml, results.json, checkpoints)" in second.stderr
    assert f"resume={run}" in second.stderr
    assert before == {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}, "nothing of run 1 changed"
    with pytest.raises(ConfigError, match="already holds a run"):  # the library call too
        train(compose_train(tiny_overrides(tiny_root, "epochs=1")), output_dir=run)


def test_a_moved_run_folder_resumes_with_its_best_checkpoint_and_score(tiny_root, tmp_path) -> None:
    """A run that never improves after its first epoch (plain SGD at lr 1e-12): once its folder is moved and it is
    resumed, the first epoch must stay the best. Were the saved best score dropped, epoch 1 would be written as
    ``best.ckpt`` while ``results.json`` (from the valid history) names epoch 0: test figures off the wrong weights."""
    first = tmp_path / "first"
    still = ("learner=sgd", "learning_rate=1e-12")
    train(compose_train(tiny_overrides(tiny_root, "epochs=1", *still)), output_dir=first)
    moved = tmp_path / "moved"
    first.rename(moved)
    resumed = train(compose_train(tiny_overrides(tiny_root, "epochs=3", *still, f"resume={moved}")))
    names = sorted(p.name for p in (moved / "checkpoints").iterdir())
    assert names == ["best.ckpt", "last.ckpt"], "no best-v1.ckpt beside a stale best.ckpt"
    best = torch.load(moved / "checkpoints" / "best.ckpt", weights_only=True)
    last = torch.load(moved / "checkpoints" / "last.ckpt", weights_only=True)
    state = next(v for k, v in last["callbacks"].items() if k.startswith("RunCheckpoint{'monitor': 'valid"))
    assert state["dirpath"] == str(moved / "checkpoints")  # the moved folder's paths, carried over
    assert state["best_model_path"] == str(moved / "checkpoints" / "best.ckpt")
    assert resumed["epochs_run"] == 3 and resumed["best_epoch"] == 0
    assert best["epoch"] == resumed["best_epoch"]  # the test figures come from the best epoch's weights
    assert float(state["best_model_score"]) == pytest.approx(resumed["best_valid_score"])


def test_resume_on_changed_data_is_refused_by_name(tiny_root, tmp_path) -> None:
    run = tmp_path / "run"
    train(compose_train(tiny_overrides(tiny_root, "epochs=1")), output_dir=run)
    inter = tiny_root / "tiny" / "tiny.inter"
    lines = inter.read_text().splitlines()
    inter.write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")  # same rows, another order
    with pytest.raises(DataError, match=r"resume: the data differ from what .*last\.ckpt was trained on: "
                                        r".*tiny\.inter now gives other examples"):
        train(compose_train(tiny_overrides(tiny_root, "epochs=2", f"resume={run}")))
    inter.write_text("\n".join([*lines, "u0\tnew_item\t99.0"]) + "\n")  # a new item: no size-mismatch traceback
    with pytest.raises(DataError, match="the data differ"):
        train(compose_train(tiny_overrides(tiny_root, "epochs=2", f"resume={run}")))


@pytest.mark.parametrize(("damage", "message"), [
    (lambda run: (run / "checkpoints" / "last.ckpt").write_bytes(b""), r"last\.ckpt: file is empty"),
    (lambda run: (run / "checkpoints" / "last.ckpt").write_bytes(os.urandom(4096)), r"last\.ckpt: not a readable"),
    (lambda run: (run / "checkpoints" / "last.ckpt").write_bytes(
        (run / "checkpoints" / "last.ckpt").read_bytes()[:5000]), r"last\.ckpt: not a readable"),
    (lambda run: torch.save({"foreign": torch.ones(1)}, run / "checkpoints" / "last.ckpt"),
     r"last\.ckpt: a torch file, but not a last\.ckpt written by narm-lightning"),
    (lambda run: (run / "config.yaml").write_text("seed: [1\n"), r"config\.yaml: not valid YAML"),
    (lambda run: (run / "config.yaml").write_text("- 1\n"), r"config\.yaml: holds a list, not a mapping"),
])
def test_a_damaged_run_folder_is_one_paragraph(tiny_root, tmp_path, damage, message) -> None:
    run = tmp_path / "run"
    train(compose_train(tiny_overrides(tiny_root, "epochs=1")), output_dir=run)
    damage(run)
    with pytest.raises((ConfigError, DataError), match=message):
        train(compose_train(tiny_overrides(tiny_root, "epochs=2", f"resume={run}")))


def test_a_corrupt_overrides_file_is_one_paragraph_at_the_command_line(tmp_path) -> None:
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_bytes(b"- a\n\x00\xff: [")
    proc = subprocess.run(_train_py(f"resume={tmp_path}"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "overrides.yaml: not valid YAML" in proc.stderr
    (tmp_path / ".hydra" / "overrides.yaml").write_text("a: 1\n")
    with pytest.raises(ConfigError, match="holds dict, not a list of override strings"):
        resume_argv(["train.py", f"resume={tmp_path}"])
