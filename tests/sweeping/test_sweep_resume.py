"""A stopped trial's re-run: a clean copy of the grid point, and the run it continues when its folder allows.

The end-to-end path (a real sweep stopped by SIGTERM, rerun, the trial continued in its folder) is in
``tests/system/test_signals.py``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from narm_lightning.sweeping.report import trials_csv
from narm_lightning.sweeping.study import (
    ERROR_ATTR,
    MAX_STALE_RETRIES,
    RUN_DIR_ATTR,
    WANDB_RUN_ATTR,
    WORKER_ATTR,
    requeue,
    resumable_run,
)

RESUME_FILE, RESULTS = "checkpoints/last.ckpt", "results.json"


def _stopped(study: optuna.Study, folder: Path | None, values: dict[int, float], keep: str = "mine") -> int:
    """Ask a trial, give it what one attempt records, fail it as a stop would; its storage id."""
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    for step, value in values.items():
        trial.report(value, step)
    trial.set_user_attr(ERROR_ATTR, "interrupted: stopped by SIGTERM during epoch 3")
    trial.set_user_attr(WORKER_ATTR, "host:1")
    trial.set_user_attr(WANDB_RUN_ATTR, "abc123")
    trial.set_user_attr("note", keep)
    if folder is not None:
        trial.set_user_attr(RUN_DIR_ATTR, str(folder))
    study.tell(trial, state=TrialState.FAIL)
    return trial._trial_id


def _next(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The WAITING copy, as the sweeper gets it (ask takes the queued trial)."""
    trial = study.ask()
    return study._storage.get_trial(trial._trial_id)


def _run_folder(tmp_path: Path, *, checkpoint: bool = True, results: bool = False) -> Path:
    folder = tmp_path / "sweep" / "0"
    (folder / "checkpoints").mkdir(parents=True)
    if checkpoint:
        (folder / RESUME_FILE).write_bytes(b"ckpt")
    if results:
        (folder / RESULTS).write_text("{}")
    return folder


def test_a_requeued_trial_keeps_its_point_but_not_the_attempts_error_folder_or_run() -> None:
    study = optuna.create_study()
    trial_id = _stopped(study, Path("/somewhere"), {0: 0.1, 1: 0.2}, keep="kept")
    requeue(study, study._storage, trial_id, max_retry=None)
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1
    copy = waiting[0]
    assert copy.params == study.trials[0].params
    assert copy.system_attrs["retry_history"] == [0] and copy.system_attrs["failed_trial"] == 0
    assert copy.user_attrs == {"note": "kept"}, "the predecessor's error, worker, folder and W&B run stay with it"
    assert copy.intermediate_values == {}, "a re-run that starts over must report its own epochs"
    assert study.trials[0].user_attrs[ERROR_ATTR].startswith("interrupted"), "the failed attempt keeps its own"


def test_stops_requeue_without_limit_while_crashes_give_up_after_max_stale_retries() -> None:
    for max_retry, expected in ((None, MAX_STALE_RETRIES + 2), (MAX_STALE_RETRIES, MAX_STALE_RETRIES)):
        study = optuna.create_study()
        trial_id = _stopped(study, None, {})
        for _ in range(MAX_STALE_RETRIES + 2):
            requeue(study, study._storage, trial_id, max_retry=max_retry)
            if not study.get_trials(states=(TrialState.WAITING,)):
                break
            trial = study.ask()
            study.tell(trial, state=TrialState.FAIL)
            trial_id = trial._trial_id
        retried = [t for t in study.trials if t.system_attrs.get("retry_history")]
        assert len(retried) == expected


def test_a_rerun_continues_its_predecessors_run_only_where_that_run_can_go_on(tmp_path: Path) -> None:
    study = optuna.create_study()
    study.ask()
    assert resumable_run(study, study.trials[0], RESUME_FILE, RESULTS) is None  # not a re-run

    folder = _run_folder(tmp_path)
    study = optuna.create_study()
    requeue(study, study._storage, _stopped(study, folder, {0: 0.1, 1: 0.25}), max_retry=None)
    run = resumable_run(study, _next(study), RESUME_FILE, RESULTS)
    assert run is not None
    assert (run.folder, run.previous, run.intermediate_values) == (folder, 0, {0: 0.1, 1: 0.25})


@pytest.mark.parametrize("case", ["no folder recorded", "folder gone", "no checkpoint", "finished run"])
def test_a_rerun_starts_over_when_there_is_nothing_to_continue(tmp_path: Path, case: str) -> None:
    folder = {
        "no folder recorded": None,
        "folder gone": tmp_path / "elsewhere",  # a study restored from its journal on another machine
        "no checkpoint": _run_folder(tmp_path, checkpoint=False) if case == "no checkpoint" else None,
        "finished run": _run_folder(tmp_path, results=True) if case == "finished run" else None,
    }[case]
    study = optuna.create_study()
    requeue(study, study._storage, _stopped(study, folder, {0: 0.1}), max_retry=None)
    assert resumable_run(study, _next(study), RESUME_FILE, RESULTS) is None


def test_the_latest_attempt_decides_after_several_stops(tmp_path: Path) -> None:
    """Stopped twice: the second attempt continued in the first one's folder and recorded more epochs."""
    folder = _run_folder(tmp_path)
    study = optuna.create_study()
    requeue(study, study._storage, _stopped(study, folder, {0: 0.1}), max_retry=None)
    second = study.ask()
    for step, value in {0: 0.1, 1: 0.3, 2: 0.35}.items():
        second.report(value, step)
    second.set_user_attr(RUN_DIR_ATTR, str(folder))
    study.tell(second, state=TrialState.FAIL)
    requeue(study, study._storage, second._trial_id, max_retry=None)
    run = resumable_run(study, _next(study), RESUME_FILE, RESULTS)
    assert run is not None and run.previous == 1 and run.intermediate_values == {0: 0.1, 1: 0.3, 2: 0.35}


def test_trials_csv_shows_an_error_only_on_a_failed_trial() -> None:
    """Studies recorded before re-runs were cleaned hold COMPLETE trials with their predecessor's error."""
    study = optuna.create_study()
    failed = study.ask()
    failed.set_user_attr(ERROR_ATTR, "interrupted")
    study.tell(failed, state=TrialState.FAIL)
    done = study.ask()
    done.set_user_attr(ERROR_ATTR, "interrupted")  # inherited, as Optuna's retry copied it
    study.tell(done, 0.5)
    rows = list(csv.DictReader(io.StringIO(trials_csv(study))))
    assert [(r["state"], r["error"]) for r in rows] == [("FAIL", "interrupted"), ("COMPLETE", "")]


def test_a_confirm_run_whose_stopped_run_is_refused_starts_over_at_once(tmp_path: Path) -> None:
    """The app refuses to continue a stopped confirm run (its config no longer matches): that job is launched
    again without ``resume=`` in the same sitting, and the table gets the fresh run's metrics."""
    from types import SimpleNamespace

    from hydra.core.utils import JobReturn, JobStatus
    from omegaconf import OmegaConf

    from narm_lightning.errors import ConfigError, TrialFailed
    from narm_lightning.sweeping.confirm import attr_key, stopped_key
    from narm_lightning.sweeping.sweeper import OptunaSweeperImpl

    stopped, fresh = _run_folder(tmp_path), tmp_path / "sweep" / "1"
    fresh.mkdir(parents=True)
    launched: list[list[str]] = []

    def launch(batch: list[list[str]], initial_job_idx: int) -> list[JobReturn]:
        launched.extend(batch)
        if any(o.startswith("resume=") for o in batch[0]):
            return [JobReturn(status=JobStatus.FAILED, _return_value=TrialFailed(ConfigError("config differs")))]
        hydra_cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(fresh)}}})
        return [JobReturn(status=JobStatus.COMPLETED, hydra_cfg=hydra_cfg,
                          _return_value={"objective": 0.05, "results": {"test": {"mrr@10": 0.05}}})]

    study = optuna.create_study(direction="maximize")
    study.set_user_attr(stopped_key("default", 2020), str(stopped))
    sweeper = OptunaSweeperImpl(sampler=None, pruner=None, confirm_top=1, confirm_seeds=1)
    sweeper.config = OmegaConf.create({"seed": 2020, "hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}})
    sweeper.launcher = SimpleNamespace(launch=launch)
    sweeper.hydra_context = SimpleNamespace(config_loader=SimpleNamespace(get_group_options=lambda key: []))
    sweeper._confirm(study, SimpleNamespace(fixed_overrides=["x=1"]), "sqlite://", "s", tmp_path / "sweep")
    assert len(launched) == 2 and launched[0][-1] == f"resume='{stopped}'" and launched[1] == launched[0][:-1]
    record = study.user_attrs[attr_key("default", 2020)]
    assert record["metrics"] == {"mrr@10": 0.05} and record["folder"] == str(fresh)
    assert study.user_attrs[stopped_key("default", 2020)] is None  # never tried again


def test_a_continued_trials_progress_line_counts_the_attempts_it_continued() -> None:
    """Trial 1 continued trial 0's run: the point cost both attempts' time (and the ETA is made of that)."""
    import datetime as dt

    from optuna.distributions import FloatDistribution

    from narm_lightning.sweeping.trials import Progress

    start = dt.datetime(2026, 12, 6, 18, 0)
    dist = {"x": FloatDistribution(0, 1)}
    def attempt(state: TrialState, value: float | None, begin: int, end: int, retried: list[int]) -> None:
        study.add_trial(optuna.trial.FrozenTrial(
            number=0, trial_id=0, state=state, value=value, values=None, params={"x": 0.5}, distributions=dist,
            datetime_start=start + dt.timedelta(minutes=begin), datetime_complete=start + dt.timedelta(minutes=end),
            user_attrs={}, system_attrs={"retry_history": retried} if retried else {}, intermediate_values={}))

    study = optuna.create_study()
    attempt(TrialState.FAIL, None, 0, 10, [])  # stopped after 10 minutes
    attempt(TrialState.COMPLETE, 0.25, 20, 25, [0])  # continued it for 5 more
    line = Progress(target=3, finished_at_start=0, n_jobs=1).line(study, 1)
    assert line == "trial 1/3 x=0.5: value 0.25, 15.0 min, ETA 30.0 min"
