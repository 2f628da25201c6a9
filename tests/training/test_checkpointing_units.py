"""checkpointing.py's pieces in-process, each with its exact words: the command-line tests of the same behaviour
run as child processes (skipped under mutation testing), so these are what ``make mutate`` checks them by."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from narm_lightning.cli.command_line import config_groups
from narm_lightning.errors import ConfigError, DataError
from narm_lightning.training.checkpointing import (
    RESUME_MAY_DIFFER,
    RunCheckpoint,
    RunState,
    check_resume_config,
    check_resume_data,
    read_run_state,
)
from narm_lightning.training.run_folder import check_fresh_run_dir, resume_paths, started_over


def test_a_folder_holds_a_run_once_an_epoch_or_its_results_are_saved(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    check_fresh_run_dir(run)  # empty
    (run / "config.yaml").write_text("epochs: 1\n")
    assert started_over(run)
    check_fresh_run_dir(run)  # a config but no epoch saved: it may start over
    (run / "results.json").write_text("{}")
    assert not started_over(run)
    with pytest.raises(ConfigError) as exc:
        check_fresh_run_dir(run)
    assert str(exc.value) == (f"{run} already holds a run (config.yaml, results.json); a new run there would mix its "
                              f"files with that one's. Continue it with resume={run}, or give another hydra.run.dir "
                              "(or remove the folder).")
    (run / "results.json").unlink()
    (run / "checkpoints").mkdir()
    check_fresh_run_dir(run)  # checkpoints/ without last.ckpt: nothing saved yet
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert not started_over(run)
    with pytest.raises(ConfigError, match=r"already holds a run \(config.yaml, checkpoints\);"):
        check_fresh_run_dir(run)


def test_resume_paths_name_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        resume_paths(tmp_path / "none")
    assert str(exc.value) == (f"resume={tmp_path / 'none'}: not a folder; expected the run folder of an earlier run "
                              "(holding config.yaml and checkpoints/last.ckpt).")
    with pytest.raises(ConfigError) as exc:
        resume_paths(tmp_path)
    assert str(exc.value) == (f"resume={tmp_path}: {tmp_path / 'config.yaml'} is missing; expected the run folder of "
                              "an earlier run that saved at least one epoch.")
    (tmp_path / "config.yaml").write_text("a: 1\n")
    with pytest.raises(ConfigError, match=r"checkpoints/last.ckpt is missing"):
        resume_paths(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert resume_paths(str(tmp_path)) == (tmp_path, tmp_path / "checkpoints" / "last.ckpt")


def test_resume_refuses_other_data_naming_both_fingerprints(tmp_path: Path) -> None:
    last = tmp_path / "last.ckpt"
    check_resume_data({"data": {"sha256": "a" * 64}}, "a" * 64, "f.inter", last)
    check_resume_data({}, "b" * 64, "f.inter", last)  # a checkpoint from before the fingerprint
    check_resume_data({"data": None}, "b" * 64, "f.inter", last)
    with pytest.raises(DataError) as exc:
        check_resume_data({"data": {"sha256": "a" * 64}}, "b" * 64, "f.inter", last)
    assert str(exc.value) == (f"resume: the data differ from what {last} was trained on: f.inter now gives other "
                              f"examples (fingerprint {'b' * 12} vs {'a' * 12} saved: items added, rows changed or "
                              "reordered, or a protocol setting changed). Restore that data, or start a new run "
                              "without resume=.")


def test_a_checkpoint_without_run_state_is_no_last_ckpt(tmp_path: Path) -> None:
    last = tmp_path / "last.ckpt"
    for ckpt in ({"state_dict": {}}, {"callbacks": {"RunState": []}, "state_dict": {}},
                 {"callbacks": {"RunState": {"x": 1}}}, [1, 2]):
        torch.save(ckpt, last)
        with pytest.raises(DataError) as exc:
            read_run_state(last)
        assert str(exc.value) == (f"{last}: a torch file, but not a last.ckpt written by narm-lightning's train.py (no "
                                  "state_dict or run state); resume needs the run folder's own checkpoint.")
    torch.save({"callbacks": {"RunState": {"x": 1}}, "state_dict": {}}, last)
    assert read_run_state(last) == {"x": 1}


def test_a_moved_run_folders_checkpoint_paths_follow_the_folder(tmp_path: Path) -> None:
    old, new = tmp_path / "old" / "checkpoints", tmp_path / "new" / "checkpoints"
    ckpt = RunCheckpoint(dirpath=str(new), filename="best", monitor="valid/mrr@10", mode="max")
    elsewhere = str(tmp_path / "other" / "x.ckpt")
    ckpt.load_state_dict({"dirpath": str(old), "best_model_path": str(old / "best.ckpt"),
                          "kth_best_model_path": elsewhere, "last_model_path": "", "best_model_score": 0.5,
                          "best_k_models": {str(old / "best.ckpt"): 0.5, elsewhere: 0.1}, "monitor": "valid/mrr@10"})
    assert ckpt.dirpath == str(new) and ckpt.best_model_path == str(new / "best.ckpt")
    assert ckpt.kth_best_model_path == elsewhere and ckpt.last_model_path == ""
    assert ckpt.best_k_models == {str(new / "best.ckpt"): 0.5, elsewhere: 0.1}
    same = RunCheckpoint(dirpath=str(new), filename="best", monitor="valid/mrr@10", mode="max")
    same.load_state_dict({"dirpath": str(new), "best_model_path": str(new / "best.ckpt"), "best_k_models": {},
                          "best_model_score": 0.2, "monitor": "valid/mrr@10"})
    assert same.best_model_path == str(new / "best.ckpt")


class _Module:
    valid_history: list[dict[str, float]] = []


def test_run_state_puts_back_every_random_stream_and_the_history_in_fit_only() -> None:
    shuffle = torch.Generator().manual_seed(7)
    state = RunState(shuffle, data={"sha256": "s"})
    module = _Module()
    module.valid_history = [{"epoch": 0, "mrr@10": 0.1}]
    state.setup(None, module, "fit")  # type: ignore[arg-type]
    random.seed(1), np.random.seed(2), torch.manual_seed(3), torch.rand(1, generator=shuffle)
    saved = state.state_dict()
    assert saved["data"] == {"sha256": "s"} and saved["valid_history"] == [{"epoch": 0, "mrr@10": 0.1}]
    expected = (random.random(), np.random.random(), torch.rand(1).item(), torch.rand(1, generator=shuffle).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9), shuffle.manual_seed(9)
    module.valid_history = []
    saved["python"] = list(saved["python"])  # a checkpoint round trip hands tuples back as lists
    state.load_state_dict(saved)
    assert (random.random(), np.random.random(), torch.rand(1).item(),
            torch.rand(1, generator=shuffle).item()) == expected
    assert module.valid_history == [{"epoch": 0, "mrr@10": 0.1}]
    testing = RunState(torch.Generator().manual_seed(7))
    testing.setup(None, module, "test")  # type: ignore[arg-type]
    module.valid_history = [{"epoch": 4, "mrr@10": 0.3}]
    random.seed(5)
    before = random.getstate()
    testing.load_state_dict(saved)  # restoring best.ckpt for the test: the live run is left alone
    assert module.valid_history == [{"epoch": 4, "mrr@10": 0.3}] and random.getstate() == before


def test_a_resume_may_change_only_the_keys_that_change_no_result(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("epochs: 3\nlearning_rate: 0.001\ntrainer: {num_threads: 1}\n")
    check_resume_config(OmegaConf.create({"epochs": 9, "learning_rate": 0.001, "trainer": {"num_threads": 2}}),
                        tmp_path)
    with pytest.raises(ConfigError) as exc:
        check_resume_config(OmegaConf.create({"epochs": 3, "learning_rate": 0.01, "trainer": {"num_threads": 1},
                                              "seed": 1}), tmp_path)
    assert str(exc.value) == (
        f"resume={tmp_path}: the config differs from the run's saved {tmp_path / 'config.yaml'}: learning_rate was "
        "0.001 and is now 0.01; seed was '<absent>' and is now 1. Drop those overrides (the saved config is used) or "
        "start a new run; only " + ", ".join(RESUME_MAY_DIFFER[1:-1]) + " may change on resume.")
    assert "epochs, trainer.enable_progress_bar" in str(exc.value) and "data.num_workers may change" in str(exc.value)
    (tmp_path / "config.yaml").write_text("a: ${b}\nb: 1\n")
    with pytest.raises(ConfigError, match="interpolation"):
        check_resume_config(OmegaConf.create({"a": 1, "b": 1}), tmp_path)


def test_config_groups_are_the_shipped_option_files() -> None:
    groups = config_groups()
    assert groups["n_layers"] == {"1", "2", "3"} and groups["search"] == {"hyper_test"}
    assert "hydra" not in groups and "__pycache__" not in groups and "recbole_exact" in groups["experiment"]


def test_the_last_checkpoint_path_follows_a_moved_folder_too(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    ckpt = RunCheckpoint(dirpath=str(new), filename="last")
    ckpt.load_state_dict({"dirpath": str(old), "best_model_path": "", "last_model_path": str(old / "last.ckpt"),
                          "best_model_score": None,
                          "best_k_models": {}})
    assert ckpt.last_model_path == str(new / "last.ckpt")


def test_a_run_state_from_an_older_checkpoint_lacks_history_and_shuffle(tmp_path: Path) -> None:
    state = RunState(torch.Generator().manual_seed(1))
    module = _Module()
    module.valid_history = [{"epoch": 3, "mrr@10": 0.2}]
    state.setup(None, module, "fit")  # type: ignore[arg-type]
    saved = state.state_dict()
    del saved["valid_history"], saved["shuffle"]
    state.load_state_dict(saved)
    assert module.valid_history == []


def test_a_last_ckpt_that_is_no_torch_file_is_named_as_what_it_should_be(tmp_path: Path) -> None:
    last = tmp_path / "last.ckpt"
    last.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match=r"last.ckpt: not a readable narm-lightning checkpoint \(the last.ckpt a "
                                        r"training run writes\)"):
        read_run_state(last)


def test_a_key_set_to_none_on_one_side_only_is_a_difference() -> None:
    from narm_lightning.training.checkpointing import config_differences

    assert config_differences({"x": None}, {}) == ["x was None and is now '<absent>'"]
    assert config_differences({}, {"x": None}) == ["x was '<absent>' and is now None"]


def test_the_current_config_is_compared_resolved(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("a: 1\nb: 1\n")
    check_resume_config(OmegaConf.create({"a": "${b}", "b": 1}), tmp_path)


@pytest.mark.parametrize(("value", "plain"), [("'a'", "a"), ('"a"', "a"), ("''", ""), ("'a", "'a"), ("a'", "a'"),
                                              ("XaX", "XaX"), ("a", "a"), ("'", "'")])
def test_a_saved_value_loses_one_pair_of_matching_quotes(value: str, plain: str) -> None:
    from narm_lightning.training.run_folder import _unquoted

    assert _unquoted(value) == plain


def test_declared_hydra_or_optuna_keys_never_replay() -> None:
    from narm_lightning.training.run_folder import replayable

    keys = frozenset({"optuna.trial_id", "hydra.x", "lr"})
    assert not replayable("optuna.trial_id=3", keys, {}) and not replayable("hydra.x=1", keys, {})
    assert replayable("lr=1", keys, {}) and not replayable("lr=${x}", keys, {})


def test_config_groups_skip_hydras_folder_and_bytecode(tmp_path: Path, monkeypatch) -> None:
    import narm_lightning

    for folder in ("hydra/launcher", "__pycache__", "size"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "size" / "1.yaml").write_text("{}\n")
    (tmp_path / "__pycache__" / "x.yaml").write_text("{}\n")
    monkeypatch.setattr(narm_lightning, "CONF_DIR", tmp_path)
    assert config_groups() == {"size": {"1"}}


def test_saved_overrides_that_are_no_yaml_name_their_file_and_a_folder_without_them_replays_nothing(
        tmp_path: Path, monkeypatch) -> None:
    from narm_lightning.training.run_folder import read_saved_overrides, resume_argv
    from narm_lightning.training.runlock import release_run_dirs

    over = tmp_path / "overrides.yaml"
    over.write_text("- [unclosed\n")
    with pytest.raises(ConfigError, match=rf"^{over}"):
        read_saved_overrides(over)
    for key in ("LOCAL_RANK", "RANK", "NODE_RANK"):
        monkeypatch.delenv(key, raising=False)
    run = tmp_path / "run"
    run.mkdir()
    try:
        assert resume_argv(["train.py", f"resume={run}"]) == ["train.py", f"resume={run}", f"hydra.run.dir={run}",
                                                               "hydra.output_subdir=null"]
    finally:
        release_run_dirs()
