"""A study's life in its storage: opened (direction and search space checked), its trials' attributes, heartbeats,
stale trials failed and re-queued, continued runs, trial counts. Where the storage is and its lock: ``storage.py``.

Semantics (documented for users in the sweeper's docstring):

* A trial counts toward ``n_trials`` once it is COMPLETE, PRUNED or FAILED. A trial left RUNNING by a
  killed process stops getting heartbeats; after ``grace_period`` it is marked FAILED and re-queued with
  the same params (Optuna's RetryHeartbeatStaleTrialCallback). Such stale failures do NOT count.
* A re-queued trial whose run folder still holds its last checkpoint (and no result) continues that run
  (``resumable_run``): a stopped or killed study loses at most the epoch in flight, not the whole trial.
* Creating the study and counting + asking happen under the storage's lock (``storage.study_lock``), so several
  workers on one study never create more than ``n_trials`` trials, and grid workers never pick the same point.
"""

from __future__ import annotations

import copy
import datetime
import logging
import os
import socket
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from narm_lightning.errors import ConfigError

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

PRUNER_ATTR = "narm_sweeper.pruner"
ERROR_ATTR = "error"
WORKER_ATTR = "worker"  # "<host>:<pid>" of the sweep process that asked for a trial
RUN_DIR_ATTR = "output_dir"  # the trial's run folder, recorded by the sweeper as its job starts (jobs._launch)
WANDB_RUN_ATTR = "wandb_run_id"  # a trial's W&B run, returned by its job (trials.JOB_ATTRS), for trials.csv
HOST_ATTR = "host_cpu"  # where the trial's run trained ("<model>, <n> cores[, AMX]"), returned by its job
REPORT_ATTR = "report"  # what the task reported beside its objective ({"test mrr@10": 0.04, ...}): console, trials.csv
RESUME_REFUSED_ATTR = "resume_refused"  # this attempt's app refused to continue the stopped run: start over
# what one attempt at a grid point recorded: a re-queued copy must not inherit its predecessor's error or folder
ATTEMPT_ATTRS = (ERROR_ATTR, WORKER_ATTR, RUN_DIR_ATTR, WANDB_RUN_ATTR, RESUME_REFUSED_ATTR, HOST_ATTR)
MAX_STALE_RETRIES = 3  # a trial that kills its worker more often than this counts as a real failure
_PRUNER_MODULE = "optuna.pruners."


def open_study(storage: Any, study_name: str, direction: str, sampler: Any, pruner: Any) -> optuna.Study:
    """Create the study or load it (``load_if_exists``), refusing a direction change."""
    import optuna

    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        direction=direction,  # type: ignore[arg-type]
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    stored = study.direction.name.lower()
    if stored != direction:
        raise ConfigError(
            f"hydra.sweeper.direction: study '{study_name}' in the storage was created with direction "
            f"'{stored}', but the config says '{direction}'. Use another study_name or the stored direction."
        )
    return study


SPACE_ATTR = "search_space"  # the study's params and fixed overrides, stored when it is created


def check_same_space(study: optuna.Study, identity: dict[str, Any]) -> None:
    """Store the search space in a new study; refuse a run whose space contradicts the stored one (a param
    swept with another distribution, on which Optuna fails mid-sweep), before any trial runs."""
    stored = study.user_attrs.get(SPACE_ATTR)
    if stored is None:
        if not study.trials:
            study.set_user_attr(SPACE_ATTR, identity)
        return
    # a param swept by both with another distribution: Optuna cannot mix those (params added, dropped or
    # fixed, and other fixed overrides, are what joining a study on purpose may do)
    differ = sorted(k for k in set(stored["params"]) & set(identity["params"])
                    if stored["params"][k] != identity["params"][k])
    if differ:
        said = [f"param {k}: stored {stored['params'][k]}, now {identity['params'][k]}" for k in differ]
        raise ConfigError(
            f"hydra.sweeper.study_name: study '{study.study_name}' was created with another search space "
            f"({'; '.join(said)}). Drop study_name to get the study of this command, or use another name."
        )


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail RUNNING trials whose heartbeat stopped; the storage callback re-queues them."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def this_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def fail_dead_workers_trials(study: optuna.Study, storage: Any, grace_seconds: float) -> list[int]:
    """Fail (and re-queue, as a stale trial) the RUNNING trials whose worker is gone.

    A worker killed with -9 leaves its trial RUNNING; heartbeats find it only after the grace period, and
    not at all if it died before its first beat. On this host the owner's pid answers at once; a trial that
    never got its owner recorded (killed within a millisecond of asking, or from an older version) is
    orphaned once it has been RUNNING for longer than ``grace_seconds``.
    """
    from optuna.trial import TrialState

    host = socket.gethostname()
    failed = []
    now = datetime.datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner_host, _, pid = str(trial.user_attrs.get(WORKER_ATTR, "")).rpartition(":")
        if WORKER_ATTR not in trial.user_attrs:
            started = trial.datetime_start or now
            if (now - started).total_seconds() <= grace_seconds:
                continue
        elif owner_host != host or not pid.isdigit() or _alive(int(pid)):
            continue
        trial_id = trial_ids(storage, study, [trial])[0]
        if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            requeue(study, storage, trial_id)
            failed.append(trial.number)
    if failed:
        log.warning("Trial(s) %s were left RUNNING by a sweep process that no longer exists (killed?): failed "
                    "and queued to run again.", ", ".join(map(str, failed)))
    return failed


def requeue(study: optuna.Study, storage: Any, trial_id: int, max_retry: int | None = MAX_STALE_RETRIES) -> None:
    """Queue a FAILED trial to run again with the same params, as a stale one: it then does not count toward
    ``n_trials`` (``count_trials``) and a grid keeps its point. For trials whose worker died (at most
    ``max_retry`` times) or was stopped on purpose (``max_retry=None``: a stop is not the trial's fault)."""
    retry_callback(max_retry)(study, storage.get_trial(trial_id))


def retry_callback(max_retry: int | None) -> Any:
    """Optuna's stale-trial retry (it keeps ``failed_trial`` / ``retry_history``), minus the attempt's own
    user attrs (``ATTEMPT_ATTRS``), which Optuna copies: a completed re-run showed its predecessor's error."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        trial = copy.deepcopy(trial)
        trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in ATTEMPT_ATTRS}
        retry(study, trial)

    return callback


def retry_history(trial: optuna.trial.FrozenTrial) -> list[int]:
    """The numbers of the attempts this re-queued trial repeats, oldest first (empty for a first attempt), through
    Optuna's public reader (``RetryFailedTrialCallback.retry_history``, experimental since Optuna 3: its note kept
    off the console)."""
    import optuna
    from optuna.storages import RetryFailedTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return list(RetryFailedTrialCallback.retry_history(trial))


@dataclass(frozen=True)
class ResumableRun:
    """A re-queued trial's predecessor whose run can go on: its folder and the values it reported."""

    folder: Path
    previous: int  # the trial number that ran there last
    intermediate_values: dict[int, float]


def resumable_run(study: optuna.Study, trial: optuna.trial.FrozenTrial, resume_file: str,
                  results_file: str) -> ResumableRun | None:
    """The run a re-queued ``trial`` continues, or None (not a re-run, or nothing left to continue).

    Its latest predecessor must have recorded its folder (``RUN_DIR_ATTR``), which must still hold
    ``resume_file`` (the last checkpoint) and no ``results_file`` (a finished run is not continued: its
    trial failed after it, so the point starts over), and must not have been refused by the app already
    (``RESUME_REFUSED_ATTR``). A study restored on another machine has the folders of none: it starts over.
    """
    history = retry_history(trial)
    if not history:
        return None
    previous = study.get_trials(deepcopy=False)[int(history[-1])]
    folder = previous.user_attrs.get(RUN_DIR_ATTR)
    if previous.user_attrs.get(RESUME_REFUSED_ATTR) or not continuable(folder, resume_file, results_file):
        return None
    return ResumableRun(Path(str(folder)), previous.number, dict(previous.intermediate_values))


def continuable(folder: str | Path | None, resume_file: str, results_file: str) -> bool:
    """Whether a stopped run's folder can go on: it holds ``resume_file`` and no ``results_file`` (finished)."""
    if not folder:
        return False
    path = Path(str(folder))
    return (path / resume_file).is_file() and not (path / results_file).exists()


def heartbeat_enabled(storage: Any) -> bool:
    """Whether stale RUNNING trials will ever be detected (so it is worth waiting for them)."""
    from optuna.storages import RDBStorage

    return isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None


def trial_ids(storage: Any, study: optuna.Study, trials: list[Any]) -> list[int]:
    """The storage ids of trials (what a job needs to report to its trial), through the storage's public API."""
    study_id = storage.get_study_id_from_name(study.study_name)
    return [storage.get_trial_id_from_study_id_trial_number(study_id, t.number) for t in trials]


@dataclass(frozen=True)
class TrialCounts:
    """Trial states of a study, with stale (retried) failures separated from real failures."""

    complete: int
    pruned: int
    failed: int
    stale: int
    running: int
    waiting: int

    @property
    def finished(self) -> int:
        """Trials that count toward n_trials."""
        return self.complete + self.pruned + self.failed


def stale_trial_numbers(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    """Numbers of trials that went stale and were re-queued (their slot is re-run, so they don't count)."""
    numbers: set[int] = set()
    for trial in trials:
        numbers.update(retry_history(trial))
    return numbers


def count_trials(study: optuna.Study) -> TrialCounts:
    """Count trial states the way ``n_trials`` and ``max_failure_rate`` are defined."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    stale = stale_trial_numbers(trials)
    states = [t.state for t in trials]
    n_stale = sum(1 for t in trials if t.state == TrialState.FAIL and t.number in stale)
    return TrialCounts(
        complete=states.count(TrialState.COMPLETE),
        pruned=states.count(TrialState.PRUNED),
        failed=states.count(TrialState.FAIL) - n_stale,
        stale=n_stale,
        running=states.count(TrialState.RUNNING),
        waiting=states.count(TrialState.WAITING),
    )


class Heartbeat:
    """Records heartbeats of the trials of the running batch from a daemon thread of the sweeper.

    Optuna only beats inside ``study.optimize``; with ask/tell the sweeper must do it, so that trials of
    a killed sweeper become stale while trials of a live one (however long) never do.
    """

    def __init__(self, storage: Any, ids: list[int]) -> None:
        self._storage = storage
        self._trial_ids = list(ids)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._interval = storage.get_heartbeat_interval() if heartbeat_enabled(storage) else None

    def __enter__(self) -> Heartbeat:
        if self._interval is not None and self._trial_ids:
            self._beat()
            self._thread = threading.Thread(target=self._run, name="optuna-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _beat(self) -> None:
        for trial_id in self._trial_ids:
            try:
                self._storage.record_heartbeat(trial_id)
            except Exception as exc:  # noqa: BLE001 - a transient DB error must not kill the sweep
                log.warning("Could not record heartbeat of trial id %s: %s", trial_id, exc)

    def _run(self) -> None:
        assert self._interval is not None
        while not self._stop.wait(self._interval):
            self._beat()


def pruner_spec(pruner_cfg: dict[str, Any]) -> dict[str, Any]:
    """Validate a pruner config (``_target_`` + kwargs) that jobs will rebuild from the study."""
    target = str(pruner_cfg.get("_target_", ""))
    if not target.startswith(_PRUNER_MODULE):
        raise ConfigError(
            f"hydra.sweeper.pruner._target_ must be a class in {_PRUNER_MODULE}*, got '{target}'. "
            f"Pick one with hydra/sweeper/pruner=median|hyperband|nop."
        )
    return dict(pruner_cfg)


def build_pruner(spec: dict[str, Any] | None) -> optuna.pruners.BasePruner:
    """Instantiate a pruner spec (only classes of ``optuna.pruners``; a missing spec never prunes)."""
    import optuna
    from hydra.utils import instantiate

    if not spec:
        return optuna.pruners.NopPruner()
    spec = pruner_spec(spec)
    try:
        return instantiate(spec)
    except Exception as exc:
        raise ConfigError(f"hydra.sweeper.pruner: cannot build {spec}: {exc}") from exc
