"""A trial's results travel one way: its job returns them (its value, or the exception it ended with), the sweeper
records them; the report the sweeper writes its files from is what its report hooks get, nothing read back."""

from __future__ import annotations

import csv
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
import yaml
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.distributions import FloatDistribution

from narm_lightning.errors import RunInterrupted
from narm_lightning.sweeping.study import HOST_ATTR, RUN_DIR_ATTR, WANDB_RUN_ATTR
from narm_lightning.sweeping.sweeper import OptunaSweeperImpl
from narm_lightning.sweeping.trials import with_attrs

RunToy = Callable[..., subprocess.CompletedProcess[str]]


def _sweeper(tmp_path: Path, launch: Callable[..., Any], storage: Any) -> OptunaSweeperImpl:
    """A sweeper whose launcher is ``launch`` (in-process: no Hydra, no training)."""
    sweeper = OptunaSweeperImpl(sampler=None, pruner=None, resume_key=None)
    sweeper.config = OmegaConf.create({"seed": 1, "hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}})
    sweeper.launcher = SimpleNamespace(launch=launch)
    sweeper._db = storage
    sweeper.hydra_context = SimpleNamespace(config_loader=SimpleNamespace(
        get_group_options=lambda key: [], load_sweep_config=lambda **kwargs: None))
    return sweeper


def _batch(tmp_path: Path, n: int) -> tuple[optuna.Study, list[Any], list[int], Any]:
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(storage=storage, direction="maximize")
    trials = [study.ask({"x": FloatDistribution(0, 1)}) for _ in range(n)]
    return study, trials, [t._trial_id for t in trials], storage


def test_the_sweeper_records_what_each_job_hands_back_and_names_its_folder_before_it_starts(tmp_path: Path) -> None:
    """A completed job's returned attrs, a pruned or failed one's carried on its exception, are recorded by the
    sweeper; a job may not return the sweeper's own attributes (its folder): that trial fails, saying so."""
    study, trials, ids, storage = _batch(tmp_path, 4)
    folders_at_launch: list[Any] = []

    def launch(batch: list[list[str]], initial_job_idx: int) -> list[JobReturn]:
        folders_at_launch.extend(t.user_attrs.get(RUN_DIR_ATTR) for t in study.get_trials())
        return [
            JobReturn(status=JobStatus.COMPLETED, _return_value={
                "objective": 0.5, "attrs": {HOST_ATTR: "cpu A", WANDB_RUN_ATTR: "trial-0-aa"}}),
            JobReturn(status=JobStatus.FAILED,
                      _return_value=with_attrs(optuna.TrialPruned("pruned at step 1"), {HOST_ATTR: "cpu B"})),
            JobReturn(status=JobStatus.FAILED,
                      _return_value=with_attrs(ValueError("boom"), {WANDB_RUN_ATTR: "trial-2-cc"})),
            JobReturn(status=JobStatus.COMPLETED,
                      _return_value={"objective": 0.7, "attrs": {RUN_DIR_ATTR: "/elsewhere"}}),
        ]

    sweeper = _sweeper(tmp_path, launch, storage)
    sweeper._run_batch(study, trials, ids, SimpleNamespace(fixed_overrides=[]), "sqlite://", "s")
    expected = [str((tmp_path / "sweep" / str(n)).resolve()) for n in range(4)]
    assert folders_at_launch == expected, "each trial's folder is recorded before its job starts"
    done = study.get_trials()
    assert [t.state.name for t in done] == ["COMPLETE", "PRUNED", "FAIL", "FAIL"]
    assert {k: done[0].user_attrs.get(k) for k in (HOST_ATTR, WANDB_RUN_ATTR)} == {
        HOST_ATTR: "cpu A", WANDB_RUN_ATTR: "trial-0-aa"}
    assert done[1].user_attrs[HOST_ATTR] == "cpu B" and WANDB_RUN_ATTR not in done[1].user_attrs
    assert done[2].user_attrs[WANDB_RUN_ATTR] == "trial-2-cc" and done[2].user_attrs["error"] == "ValueError: boom"
    assert done[3].user_attrs[RUN_DIR_ATTR] == expected[3], "the sweeper's own record stands"
    assert "the task returned attrs ['output_dir']" in done[3].user_attrs["error"]


def test_a_stopped_jobs_attrs_are_recorded_on_its_trial_which_is_queued_again(tmp_path: Path) -> None:
    study, trials, ids, storage = _batch(tmp_path, 1)

    def launch(batch: list[list[str]], initial_job_idx: int) -> list[JobReturn]:
        stop = RunInterrupted("SIGTERM", 143, "stopped by SIGTERM", run_dir=None)
        raise with_attrs(stop, {HOST_ATTR: "cpu A", WANDB_RUN_ATTR: "trial-0-aa"})

    with pytest.raises(RunInterrupted):
        _sweeper(tmp_path, launch, storage)._run_batch(study, trials, ids, SimpleNamespace(fixed_overrides=[]), "sqlite://",
                                              "s")
    stopped, queued = study.get_trials()
    assert stopped.state.name == "FAIL" and stopped.user_attrs[WANDB_RUN_ATTR] == "trial-0-aa"
    assert stopped.user_attrs[HOST_ATTR] == "cpu A" and queued.state.name == "WAITING"


def test_report_hooks_get_the_rows_the_sweeper_wrote_once_the_study_and_its_confirm_step_are_done(
    run_toy: RunToy, tmp_path: Path
) -> None:
    args = ("hydra.sweep.dir=multirun/h", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=2", "noise=0.5",
            "hydra.sweeper.confirm_top=1", "hydra.sweeper.confirm_seeds=2",
            "hydra.sweeper.report_hooks=[hooks.save_report]")
    run_toy(*args)
    out = tmp_path / "multirun" / "h"
    (report,) = [json.loads(line) for line in (out / "report.jsonl").read_text().splitlines()]

    def as_text(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
        return [{k: "" if v is None else str(v) for k, v in row.items() if k != "duration_s"} for row in rows]

    def read(name: str) -> list[dict[str, str]]:
        with (out / name).open(newline="") as fh:
            return [{k: v for k, v in row.items() if k != "duration_s"} for row in csv.DictReader(fh)]

    assert len(report["trials"]) == 2 and as_text(report["trials"]) == read("trials.csv")
    assert report["params"] == ["x"] and report["study_name"] == "toy" and report["direction"] == "minimize"
    assert [[str(c) for c in p] for p in report["curves"]] == [list(r.values()) for r in read("curves.csv")]
    assert len(report["confirm"]) == 2 * 2 and as_text(report["confirm"]) == read("confirm.csv")
    assert report["summary"] == yaml.safe_load((out / "optimization_results.yaml").read_text())
    # the study is complete: a rerun runs nothing and writes no report
    run_toy(*args)
    assert len((out / "report.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize(("override", "said"), [
    ("hydra.sweeper.report_hooks=[hooks.nowhere]",
     "hydra.sweeper.report_hooks: 'hooks.nowhere' is no function that can be imported"),
    ("hydra.sweep.subdir=trial-${hydra.job.num}",
     "hydra.sweep.subdir is 'trial-${hydra.job.num}'; the sweeper numbers each trial's folder"),
])
def test_a_hook_or_job_folder_the_sweeper_cannot_honour_fails_before_any_study(
    run_toy: RunToy, tmp_path: Path, override: str, said: str
) -> None:
    proc = run_toy("hydra.sweep.dir=multirun/bad", override, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert said in proc.stderr
    assert not (tmp_path / "optuna").exists() and not (tmp_path / "multirun").exists()
