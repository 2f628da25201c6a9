"""A trial's bookkeeping, apart from the ask/tell loop: its result told to the study (one objective, or the mean
over seeds, with the run's test figures as a report), a failed or stale trial failed, and the progress line with
its ETA.

A trial's results travel one way: the job returns them (its value, or the exception it ended with, carrying the
same ``attrs``) and the sweeper records them; no job writes a trial attribute (the in-trial pruning agent only
reports intermediate values, Optuna's protocol for pruning). What a task may return:

* a float: the objective; or a mapping with
* ``objective`` (a float), ``report`` (``{name: number}``: shown in the trial's console line and trials.csv, never
  optimized), ``results`` (what the run found: the confirm step tabulates ``results[results_key]``) and ``attrs``
  (``{name: text}`` of ``JOB_ATTRS``: recorded on the trial, e.g. its W&B run and the CPU it trained on).

A job that fails, is pruned or is stopped carries its ``attrs`` on its exception (``with_attrs``)."""

from __future__ import annotations

import contextlib
import io
import logging
import math
import statistics
from collections.abc import Mapping
from typing import Any

from narm_lightning.errors import NarmError, TrialFailed
from narm_lightning.sweeping.study import (
    ERROR_ATTR,
    HOST_ATTR,
    REPORT_ATTR,
    WANDB_RUN_ATTR,
    WORKER_ATTR,
    retry_history,
    this_worker,
    trial_ids,
)

# the sweeper's logger: a trial's FAILED / PRUNED lines read as the loop's own
log = logging.getLogger("narm_lightning.sweeping.sweeper")
MAX_ERROR_CHARS = 2000  # a failed trial's message kept in the study
JOB_ATTRS = (WANDB_RUN_ATTR, HOST_ATTR)  # the trial attributes a job may return (trials.csv has a column for each)
ATTRS = "attrs"  # the key of a job's returned mapping, and the attribute of its exception, that carries them


def job_value(ret: Any) -> Any:
    """A Hydra job's return value, or its exception raised again. Hydra's ``JobReturn.return_value`` also writes
    "Error executing job with overrides: [...]" to stderr, every override of the trial on one line (its storage URL
    included); the trial's own FAILED line says what failed, so that line stays off the console."""
    with contextlib.redirect_stderr(io.StringIO()):
        return ret.return_value


class SeedsResult:
    """One trial trained with several seeds, as a Hydra ``JobReturn`` look-alike for ``tell_trial``: the mean of the
    seeds' objectives (all must complete; the std and each value are kept as trial user attrs)."""

    def __init__(self, returns: list[Any], seeds: list[int]) -> None:
        from hydra.core.utils import JobStatus

        self.returns, self.seeds = returns, seeds
        self.hydra_cfg = returns[0].hydra_cfg
        failed = next((r for r in returns if r.status != JobStatus.COMPLETED), None)
        self.status = JobStatus.COMPLETED if failed is None else failed.status
        self._failed = failed

    @property
    def return_value(self) -> Any:
        if self._failed is not None:
            return job_value(self._failed)  # re-raises that seed's exception
        return [job_value(r) for r in self.returns]


def refused_resume(ret: Any) -> NarmError | None:
    """The error of a job that was to continue a stopped run and was refused before training (the app raises
    a ``NarmError``: its config or data differ from the run's, its folder is damaged); None otherwise."""
    from hydra.core.utils import JobStatus

    if ret.status == JobStatus.COMPLETED:
        return None
    try:
        job_value(ret)  # re-raises the job's exception
    except TrialFailed as exc:  # the app's NarmError, wrapped for the log
        return exc.error
    except NarmError as exc:
        return exc
    except BaseException:  # noqa: BLE001 - any other failure is the trial's own, told as usual
        return None
    return None


def objective_and_report(value: Any) -> tuple[Any, dict[str, float]]:
    """A task's objective and its report (the module's docstring says what a task returns): the report (e.g. the
    run's test metrics, which RecBole's run_hyper.py prints for each parameter set) is shown in the trial's console
    line and trials.csv, never optimized."""
    if isinstance(value, Mapping) and "objective" in value:
        report = value.get("report") or {}
        numbers = {str(k): float(v) for k, v in report.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)} if isinstance(report, Mapping) else {}
        return value["objective"], numbers
    return value, {}


def with_attrs(exc: BaseException, attrs: Mapping[str, str]) -> BaseException:
    """``exc`` carrying its job's ``attrs`` to the sweeper (a failed, pruned or stopped trial is recorded too)."""
    setattr(exc, ATTRS, dict(attrs))
    return exc


def returned_attrs(value: Any) -> dict[str, str]:
    """The ``attrs`` a job returned, or carried on its exception ({} when none)."""
    attrs = value.get(ATTRS) if isinstance(value, Mapping) else getattr(value, ATTRS, None)
    return dict(attrs) if isinstance(attrs, Mapping) else {}


def attrs_problem(attrs: Mapping[str, Any]) -> str | None:
    """Why a job's ``attrs`` cannot be recorded (None when they can): names outside ``JOB_ATTRS`` would overwrite
    the sweeper's own bookkeeping (its error, worker or folder)."""
    unknown = sorted(set(attrs) - set(JOB_ATTRS))
    if unknown:
        return f"the task returned attrs {unknown}; a task may return some of {list(JOB_ATTRS)}"
    return None


def record_attrs(trial: Any, attrs: Mapping[str, Any]) -> None:
    """Record a job's ``attrs`` on its trial: the sweeper is their only writer."""
    for name, value in attrs.items():
        if value not in (None, ""):
            trial.set_user_attr(name, str(value))


def mean_report(reports: list[dict[str, float]]) -> dict[str, float]:
    """The seeds' reports, each name's mean over the seeds that reported it."""
    names = dict.fromkeys(k for r in reports for k in r)
    return {k: statistics.fmean(r[k] for r in reports if k in r) for k in names}


def jsonable(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


class Progress:
    """One line per finished trial: its place in the study, params, result, duration and the ETA.

    A trial's duration counts the attempts it re-ran (stopped ones it continued or started over): what the point
    cost. The ETA is the mean duration of this process's trials times the slots left, over ``n_jobs``.
    """

    def __init__(self, target: int, finished_at_start: int, n_jobs: int) -> None:
        self.target, self.n_jobs = target, n_jobs
        self.durations: list[float] = []
        self.finished = finished_at_start

    def line(self, study: Any, number: int) -> str:
        trials = study.trials
        trial = trials[number]
        self.finished += 1
        seconds = sum(trial_seconds(trials[n]) for n in [*retry_history(trial), number])
        self.durations.append(seconds)
        params = " ".join(f"{k}={v}" for k, v in trial.params.items())
        spread = (f" ± {trial.user_attrs['value_std']:.2g} over {len(trial.user_attrs.get('seed_values', {}))} seeds"
                  if "value_std" in trial.user_attrs else "")
        if trial.state.name == "PRUNED":  # Optuna gives a pruned trial its last reported value: say it was pruned
            steps = trial.intermediate_values
            outcome = "PRUNED" + (f" at step {max(steps)} (value {steps[max(steps)]:.4g})" if steps else "")
        elif trial.value is not None:
            report = trial.user_attrs.get(REPORT_ATTR) or {}
            outcome = f"value {trial.value:.4g}{spread}" + "".join(f", {k} {v:.4g}" for k, v in report.items())
        else:
            outcome = trial.state.name + (f" ({trial.user_attrs[ERROR_ATTR][:80]})"
                                          if ERROR_ATTR in trial.user_attrs else "")
        left = max(self.target - self.finished, 0)
        eta = sum(self.durations) / len(self.durations) * left / self.n_jobs
        return (f"trial {self.finished}/{self.target} {params}: {outcome}, {as_minutes(seconds)}"
                + (f", ETA {as_minutes(eta)}" if left else ""))


def trial_seconds(trial: Any) -> float:
    """How long one trial (attempt) ran; 0 if it never started or has not ended."""
    if trial.datetime_complete and trial.datetime_start:
        return (trial.datetime_complete - trial.datetime_start).total_seconds()
    return 0.0


def as_minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def fail_own_running_trials(study: Any, storage: Any, message: str) -> None:
    """FAIL this process's RUNNING trials (best effort: the storage may be what failed)."""
    from optuna.trial import Trial, TrialState

    me = this_worker()
    try:
        mine = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if t.user_attrs.get(WORKER_ATTR) == me]
        for trial_id in trial_ids(storage, study, mine):
            fail_trial(study, Trial(study, trial_id), message)  # Trial(study, id): see sweeping/pruning.py
    except Exception as exc:  # noqa: BLE001 - the original error matters more; a rerun detects the rest
        log.warning("Could not fail this worker's running trials: %s", exc)


def fail_trial(study: Any, trial: Any, message: str) -> None:
    message = message[:MAX_ERROR_CHARS]
    log.warning("Trial %d FAILED: %s", trial.number, message)
    trial.set_user_attr(ERROR_ATTR, message)
    study.tell(trial, state=trial_state("FAIL"))


def trial_state(name: str) -> Any:
    from optuna.trial import TrialState

    return TrialState[name]


def outcome(ret: Any) -> Any:
    """A Hydra job's return value, or the exception it ended with."""
    try:
        return job_value(ret)  # Hydra re-raises a failed job's exception here
    except Exception as exc:  # noqa: BLE001 - any exception of a trial is its failure, told to the study
        return exc


def tell_trial(study: Any, trial: Any, ret: Any) -> None:
    """Turn one Hydra JobReturn into COMPLETE / PRUNED / FAILED, with the attrs the job returned recorded (those of
    the first seed, which trains as the trial)."""
    import optuna
    from hydra.core.utils import JobStatus

    value = outcome(ret)
    attrs = returned_attrs(outcome(ret.returns[0]) if isinstance(ret, SeedsResult) else value)
    problem = attrs_problem(attrs)
    if problem:
        fail_trial(study, trial, problem)
        return
    record_attrs(trial, attrs)
    if ret.status != JobStatus.COMPLETED:
        if isinstance(value, optuna.TrialPruned):
            log.info("Trial %d PRUNED: %s", trial.number, value)
            study.tell(trial, state=trial_state("PRUNED"))
            return
        fail_trial(study, trial, f"{type(value).__name__}: {value}")
        return
    if isinstance(ret, SeedsResult):  # the trial's objective: the mean over its seeds
        split = [objective_and_report(v) for v in value]
        try:
            values = [float(v) for v, _ in split]
        except (TypeError, ValueError):
            fail_trial(study, trial, f"the task returned {value!r}; it must return the objective as a float")
            return
        trial.set_user_attr("seed_values", dict(zip(map(str, ret.seeds), values)))
        trial.set_user_attr("value_std", statistics.stdev(values))
        value, report = statistics.fmean(values), mean_report([r for _, r in split])
    else:
        value, report = objective_and_report(value)
    if report:
        trial.set_user_attr(REPORT_ATTR, report)
    if isinstance(value, bool) or value is None:
        fail_trial(study, trial, f"the task returned {value!r}; it must return the objective as a float")
        return
    try:
        number = float(value)
    except (TypeError, ValueError):
        fail_trial(study, trial, f"the task returned {value!r}; it must return the objective as a float")
        return
    if not math.isfinite(number):
        fail_trial(study, trial, f"the task returned a non-finite objective ({number})")
        return
    study.tell(trial, number)
