"""The Optuna sweeper: ask a batch of trials, launch them as Hydra jobs, tell the results, repeat.

Semantics a user can rely on:

* ``n_trials`` is a study-wide target: the sweep runs until that many trials are finished
  (COMPLETE + PRUNED + FAILED) in the study, across invocations and workers. Running the same command
  again therefore resumes (and does nothing once the study is done). With the grid sampler the target is
  capped at the grid size. Stale trials (their worker died) are failed, re-queued with the same params
  and do not count (see ``study.py``); so are trials stopped by SIGTERM / Ctrl-C.
* A re-queued trial continues its predecessor's run (``<resume_key>=<its folder>``) when that folder still
  holds ``resume_file`` and no ``results_file``; the predecessor's intermediate values are copied to it, so
  the pruner and the plots see one whole curve. Otherwise it starts over.
* Each trial is a Hydra job (own job dir, own composed config) with the sampled params as overrides plus
  ``++optuna.storage=...``, ``++optuna.study_name=...``, ``++optuna.trial_id=<storage id>`` so the job can
  report intermediate values for pruning (``narm_lightning.sweeping.pruning``).
* A job that raises ``optuna.TrialPruned`` -> PRUNED. Any other exception, or a return value that is not
  a finite float -> FAILED with the message in the trial's user attr ``error``; the sweep goes on until
  failed trials exceed ``max_failure_rate * n_trials``, then it stops with ``SweepAbortedError``.
* When the sweep ends (normally or aborted), ``report.write_results`` writes the result files; a sweep that
  ends normally then hands the same report (the confirm table added) to each of ``report_hooks``.
* A trial's results travel one way: the job returns them and the sweeper records them (``trials.py``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf
from optuna.exceptions import ExperimentalWarning

from narm_lightning.cli.exits import fail
from narm_lightning.config.rules import keys_of, schema_problems
from narm_lightning.errors import ConfigError, NarmError, RunInterrupted, first_line
from narm_lightning.sweeping import report
from narm_lightning.sweeping.config import OptunaSweeperConfig
from narm_lightning.sweeping.confirm_step import ConfirmStep
from narm_lightning.sweeping.jobs import identity_overrides
from narm_lightning.sweeping.samplers import GRID_TARGET, build_sampler, to_dict
from narm_lightning.sweeping.space import SearchSpace, params_to_overrides, parse_search_space, study_prefix_from
from narm_lightning.sweeping.storage import default_storage_url, make_storage, redact_url, study_lock
from narm_lightning.sweeping.study import (
    MAX_STALE_RETRIES,
    PRUNER_ATTR,
    RESUME_REFUSED_ATTR,
    RUN_DIR_ATTR,
    WORKER_ATTR,
    Heartbeat,
    TrialCounts,
    check_same_space,
    count_trials,
    fail_dead_workers_trials,
    fail_stale_trials,
    heartbeat_enabled,
    open_study,
    pruner_spec,
    requeue,
    retry_callback,
    this_worker,
    trial_ids,
)
from narm_lightning.sweeping.trials import (
    Progress,
    attrs_problem,
    fail_own_running_trials,
    fail_trial,
    record_attrs,
    refused_resume,
    returned_attrs,
    tell_trial,
)

log = logging.getLogger(__name__)
DEFAULT_TRIALS = 30  # n_trials: null with a sampler other than the grid
# the first words of a sitting's first line (bench/study_status.py reads a study's console log by them)
SITTING_STARTS = ("resuming study ", "new study ")
# Private name: Hydra's basic launcher logs its job dumps under its module's name and has no public verbosity
# switch; tests/system/test_private_apis.py fails when the module moves (the dumps would come back unnoticed)
LAUNCHER_LOGGER = "hydra._internal.core_plugins.basic_launcher"


class SweepAbortedError(NarmError):
    """Too many trials failed (``max_failure_rate``): continuing would waste compute on a broken setup."""


class OptunaSweeperImpl(ConfirmStep):
    """The sweep: ask a batch, launch it, tell the study, until ``n_trials`` are finished; then the confirm step.
    The Hydra plugin class in ``hydra_plugins`` only delegates here; each trial's job is made by ``jobs.TrialJobs``
    and the confirm step is ``confirm_step.ConfirmStep``, both parts of this class."""

    def __init__(self, sampler: Any, pruner: Any, **settings: Any) -> None:
        """``hydra.sweeper``'s keys: each one's type, default, range and help are declared once, in
        ``sweeping/config.py`` (``OptunaSweeperConfig``), and checked here as the app's keys are checked."""
        declared = {k.name: k.default for k in keys_of(OptunaSweeperConfig)}
        unknown = sorted(set(settings) - set(declared))
        if unknown:
            raise ConfigError(f"hydra.sweeper has unknown key(s) {unknown}; expected some of {sorted(declared)}.")
        v = {**declared, **settings}
        problems = schema_problems(v, OptunaSweeperConfig, "hydra.sweeper.")
        if problems:
            raise ConfigError("; ".join(problems) + ".")
        self.sampler_cfg = to_dict(sampler, "hydra.sweeper.sampler")
        self.pruner_cfg = to_dict(pruner, "hydra.sweeper.pruner")
        self.direction = str(v["direction"]).lower()
        self.study_name, self.study_prefix, self.storage = v["study_name"], v["study_prefix"], v["storage"]
        self.study_prefix_key = v["study_prefix_key"]
        self.identity_ignore = tuple(str(k) for k in v["identity_ignore"])
        self.n_trials, self.n_jobs, self.max_failure_rate = v["n_trials"], v["n_jobs"], float(v["max_failure_rate"])
        self.params = to_dict(v["params"], "hydra.sweeper.params") if v["params"] is not None else {}
        self.preset_group, self.custom_search_space = v["preset_group"], v["custom_search_space"]
        self.config_check = v["config_check"]
        self.heartbeat_interval, self.grace_period = v["heartbeat_interval"], v["grace_period"]
        self.plots, self.objective_name = v["plots"], v["objective_name"]
        self.seeds_per_trial, self.seed_key = v["seeds_per_trial"], v["seed_key"]
        self.confirm_top, self.confirm_seeds = v["confirm_top"], v["confirm_seeds"]
        self.confirm_baseline = v["confirm_baseline"]
        self.results_file, self.results_key = v["results_file"], v["results_key"]
        self.resume_key, self.resume_file, self.study_dir = v["resume_key"], v["resume_file"], v["study_dir"]
        self.report_hooks = [str(h) for h in v["report_hooks"]]
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self._db: Any = None  # the opened Optuna storage of the running sweep (``storage`` is its URL)
        self._progress: Progress | None = None
        self._job_overrides: list[str] = []  # what every job is told besides its trial (the study's folder)
        self._storage_url = ""  # the running sweep's storage URL (its lock guards job folder numbers too)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """Keep Hydra's context and build the launcher that runs each trial as a job."""
        import optuna

        # The console tells the story in our own lines ("new study ...", "trial 3/30 ..."): Optuna's INFO
        # lines ("A new study created in RDB") and the basic launcher's job dumps (every override again,
        # the trial identity included) would only repeat them.
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        logging.getLogger(LAUNCHER_LOGGER).setLevel(logging.WARNING)
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # ---------------------------------------------------------------- building blocks
    def _resolve_names(self, identity: dict[str, Any], space: SearchSpace) -> tuple[str, str]:
        """study_name and storage URL (default: SQLite under the original cwd).

        Without an explicit study_name, the study is named after the search space and the result-changing fixed
        overrides: the same command resumes its study, another space or setting starts a new one.
        """
        assert self.config is not None
        digest = hashlib.sha256(json.dumps({**identity, "direction": self.direction}, sort_keys=True).encode())
        prefix = self.study_prefix or study_prefix_from(self.config, self.study_prefix_key, space)
        study_name = self.study_name or f"{prefix or self.config.hydra.job.name}-{digest.hexdigest()[:8]}"
        storage = self.storage or default_storage_url(self.config.hydra.runtime.cwd, study_name)
        return study_name, storage

    def _target_trials(self, space: SearchSpace, is_grid: bool) -> int:
        """``n_trials``; null means the grid's size (every point once), or DEFAULT_TRIALS for other samplers."""
        size = space.size() if is_grid else None
        if self.n_trials is None:
            return size if size is not None else DEFAULT_TRIALS
        if size is not None and size < self.n_trials:
            log.info("The grid has %d points: n_trials %d capped to %d.", size, self.n_trials, size)
            return size
        return self.n_trials

    def _report_hooks(self) -> list[Any]:
        """``report_hooks`` imported before any trial starts: a misspelled one is one paragraph now, not a traceback
        after the study ran."""
        hooks = []
        for path in self.report_hooks:
            try:
                hooks.append(get_method(path))
            except Exception as exc:  # noqa: BLE001 - Hydra's import errors vary: one paragraph whatever the cause
                raise ConfigError(f"hydra.sweeper.report_hooks: {path!r} is no function that can be imported "
                                  f"({first_line(exc)}). Nothing was started.") from None
        return hooks

    def _grace_seconds(self) -> float:
        """How long a RUNNING trial may go without its owner recorded: the heartbeat grace period."""
        interval = self.heartbeat_interval or 60
        return float(self.grace_period or 2 * interval)

    def _check_failures(self, counts: TrialCounts, target: int) -> None:
        allowed = math.floor(self.max_failure_rate * target + 1e-9)
        if counts.failed > allowed:
            raise SweepAbortedError(
                f"hydra.sweeper.max_failure_rate: {counts.failed} of {target} trials failed, more than the "
                f"allowed {allowed} ({self.max_failure_rate:.0%} of n_trials). See the 'error' column of "
                f"trials.csv in the sweep dir; fix the cause or raise max_failure_rate."
            )

    def _ask(self, study: Any, space: SearchSpace) -> Any:
        with warnings.catch_warnings():  # the sweeper beats itself (study.Heartbeat); Optuna warns anyway
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = study.ask(fixed_distributions=dict(space.distributions))
        trial.set_user_attr(WORKER_ATTR, this_worker())  # a rerun on this host sees at once if we are gone
        if heartbeat_enabled(self._db):  # a beat from the start: a trial never lacks one, however we die
            self._db.record_heartbeat(trial_ids(self._db, study, [trial])[0])
        if self.custom_search_space:
            assert self.config is not None
            get_method(self.custom_search_space)(self.config, trial)
        return trial

    def _search_space(self, arguments: list[str], parser: OverridesParser) -> SearchSpace:
        """What the study sweeps. A command line that sweeps any key sweeps what it names and nothing else (what a
        Hydra user expects of ``-m lr=0.01,0.001``); the configured ``params`` (a preset: RecBole's hyper.test by
        default) are the space when it sweeps nothing, and are merged under it (the command line wins per key) when
        it names ``preset_group`` as well. The preset's name itself is no trial setting: it is dropped."""
        named = [a for a in arguments if self.preset_group and a.lstrip("+~").split("=", 1)[0] == self.preset_group]
        rest = [a for a in arguments if a not in named]
        own = parse_search_space({}, rest, parser)
        if own.distributions and not named:
            return own
        return parse_search_space(self.params, rest, parser)

    # ---------------------------------------------------------------- the sweep
    def sweep(self, arguments: list[str]) -> list[Any]:
        """Run trials until the study has ``n_trials`` finished ones; return the study.

        A ``NarmError`` (a bad search space or storage) is one paragraph and exit status 2 here: Hydra
        would print it as a traceback.
        """
        try:
            return self._sweep(arguments)
        except NarmError as exc:
            fail(exc)

    def _sweep(self, arguments: list[str]) -> list[Any]:
        assert self.config is not None and self.hydra_context is not None and self.launcher is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        space = self._search_space(list(arguments), parser)
        if not space.distributions and not self.custom_search_space:
            raise ConfigError(
                "hydra.sweeper.params: nothing to search. Give params in hydra.sweeper.params or sweep "
                "overrides on the command line (e.g. 'lr=interval(1e-4,1e-1)')."
            )
        sampler = build_sampler(self.sampler_cfg, space, self.custom_search_space)
        self._check_space(space)
        self._check_job_folders()
        hooks = self._report_hooks()
        is_grid = str(self.sampler_cfg.get("_target_")) == GRID_TARGET
        study, study_name, storage_url = self._open(space, sampler)
        target = self._target_trials(space, is_grid)
        finished = count_trials(study).finished
        sampler_name = "grid" if is_grid else str(self.sampler_cfg.get("_target_", "")).rsplit(".", 1)[-1]
        begun = bool(study.get_trials(deepcopy=False))  # a first sitting killed mid-trial has none finished
        log.info("%s%s: %d/%d finished. Space: %s; n_trials %d (%s)",
                 SITTING_STARTS[0] if begun else SITTING_STARTS[1], study_name, finished, target,
                 space.describe(is_grid), target, sampler_name)
        confirm_left = self._confirm_jobs_left(study) if finished >= target else None
        if finished >= target and not confirm_left:  # nothing to run: no new sweep folder or W&B summary run
            log.info("Study %s is complete (%d/%d finished); raise hydra.sweeper.n_trials to run more.",
                     study_name, finished, target)
            if self.confirm_top:
                self._confirm_report(study, None)
            return [study]
        self._progress = Progress(target, finished, self.n_jobs)

        sweep_dir = self._study_dir(study_name)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        log.info("Storage %s (%s); every trial also gets %s", redact_url(storage_url), self.direction,
                 " ".join(space.fixed_overrides) or "no fixed override")
        try:
            if finished < target:
                self._loop(study, space, storage_url, study_name, target)
        except BaseException as exc:  # whatever stops this worker, none of its trials stays RUNNING
            fail_own_running_trials(study, self._db, f"the sweep process stopped ({type(exc).__name__}: {exc})")
            raise
        finally:
            done = report.write_results(study, sweep_dir, target=target, plots=self.plots,
                                        objective_name=self.objective_name)
        if self.confirm_top:
            done.confirm = self._confirm(study, space, storage_url, study_name, sweep_dir)
        for hook in hooks:
            hook(done, self.config)
        return [study]

    def _open(self, space: SearchSpace, sampler: Any) -> tuple[Any, str, str]:
        """The study of this search space (created, or joined: same direction and compatible space), its name and
        its storage URL; the pruner's settings stored in it for the trials' own pruners."""
        from narm_lightning.sweeping.study import build_pruner

        spec = pruner_spec(self.pruner_cfg)
        identity = space.identity(self.identity_ignore)
        if self.seeds_per_trial > 1:  # the objective is another quantity (a mean over seeds): another study
            identity["seeds_per_trial"] = self.seeds_per_trial
        study_name, storage_url = self._resolve_names(identity, space)
        self._storage_url = storage_url
        with study_lock(storage_url):  # concurrent workers must not race on creating the schema/study
            storage = self._db = make_storage(storage_url, self.heartbeat_interval, self.grace_period,
                                              retry_callback(MAX_STALE_RETRIES))
            study = open_study(storage, study_name, self.direction, sampler, build_pruner(spec))
            check_same_space(study, identity)
            study.set_user_attr(PRUNER_ATTR, spec)
            if self.objective_name:  # plots name their axis after it instead of "Objective Value"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ExperimentalWarning)
                    study.set_metric_names([str(self.objective_name)])
        return study, study_name, storage_url

    def _loop(self, study: Any, space: SearchSpace, storage_url: str, study_name: str, target: int) -> None:
        while True:
            with study_lock(storage_url):
                fail_dead_workers_trials(study, self._db, self._grace_seconds())
                fail_stale_trials(study)
                counts = count_trials(study)
                self._check_failures(counts, target)
                n_ask = min(self.n_jobs, target - counts.finished - counts.running)
                trials = [self._ask(study, space) for _ in range(max(n_ask, 0))]
            if not trials:
                if counts.finished < target and counts.running > 0 and heartbeat_enabled(self._db):
                    # Others' trials are in flight: wait for them to finish or go stale (then re-run here).
                    time.sleep(min(5.0, float(self._db.get_heartbeat_interval())))
                    continue
                log.info("Study has %d finished trials (target %d): done.", counts.finished, target)
                return
            ids = trial_ids(self._db, study, trials)  # storage ids: for the heartbeat and for each job
            with Heartbeat(self._db, ids):
                self._run_batch(study, trials, ids, space, storage_url, study_name)

    def _run_batch(
        self,
        study: Any,
        trials: list[Any],
        ids: list[int],
        space: SearchSpace,
        storage_url: str,
        study_name: str,
    ) -> None:
        """Launch one batch of trials (each with its seeds) and tell the study."""
        seeds = self._seeds(self.seeds_per_trial) if self.seeds_per_trial > 1 else [None]
        # what each trial trains with; each job adds its seed (if several) and who it reports to
        settings = [[*space.fixed_overrides, *params_to_overrides(t.params, self._config_groups(t.params))]
                    for t in trials]
        resumes = [self._resume_overrides(study, trial, trial_id) for trial, trial_id in zip(trials, ids)]
        batch = [[*s, *([f"{self.seed_key}={seeds[0]}"] if seeds[0] is not None else []),
                  *identity_overrides(storage_url, study_name, trial_id), *resume]
                 for s, trial_id, resume in zip(settings, ids, resumes)]
        try:
            self._validate_batch(batch)
        except Exception as exc:
            for trial in trials:
                fail_trial(study, trial, f"invalid overrides: {exc}")
            raise ConfigError(f"hydra.sweeper.params: a trial's overrides do not compose: {exc}") from exc
        for trial in trials:  # the fixed overrides were told once, at the start; values as the user typed them
            log.info("Trial %d: %s", trial.number, " ".join(f"{k}={v}" for k, v in trial.params.items()))
        try:
            returns = self._launch(batch, trials)
        except (RunInterrupted, KeyboardInterrupt) as exc:  # the worker stops; its trials must not stay RUNNING
            self._record_stopped(trials, exc)
            for trial, trial_id in zip(trials, ids):  # nor be lost: the next run of the command runs them again
                fail_trial(study, trial, f"interrupted: {exc}".strip())
                requeue(study, self._db, trial_id, max_retry=None)  # a stop is not the trial's failure
            log.warning("Trial(s) %s stopped: queued to run again when this command is rerun%s.",
                        ", ".join(str(t.number) for t in trials),
                        ", from the last finished epoch" if self.resume_key else "")
            raise
        if len(seeds) > 1:
            group = identity_overrides(storage_url, study_name, 0)[:2]  # study, not trial: the W&B group
            returns = self._other_seeds(settings, group, returns, seeds)
        for trial, trial_id, ret, resume in zip(trials, ids, returns, resumes):
            refused = refused_resume(ret) if resume else None
            if refused is not None:  # e.g. the config gained a key since: the run cannot go on, the point can
                trial.set_user_attr(RESUME_REFUSED_ATTR, True)
                fail_trial(study, trial, f"could not continue the stopped run: {refused}")
                requeue(study, self._db, trial_id, max_retry=None)
                log.warning("Trial %d could not continue the stopped run: queued to start over.", trial.number)
                continue
            tell_trial(study, trial, ret)
            if self._progress is not None:
                log.info("%s", self._progress.line(study, trial.number))

    @staticmethod
    def _record_stopped(trials: list[Any], exc: BaseException) -> None:
        """The attrs a stopped job carried, on its trial: the batch's one, or the one whose run folder it names."""
        attrs = returned_attrs(exc)
        folder = getattr(exc, "run_dir", None)
        mine = trials if len(trials) == 1 else [
            t for t in trials if folder is not None and t.user_attrs.get(RUN_DIR_ATTR) == str(Path(folder).resolve())]
        if attrs and not attrs_problem(attrs):
            for trial in mine:
                record_attrs(trial, attrs)
