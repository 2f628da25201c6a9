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
* When the sweep ends (normally or aborted), ``report.write_results`` writes the result files.
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
from hydra.core.override_parser.types import Quote, QuotedString
from hydra.core.plugins import Plugins
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from optuna.exceptions import ExperimentalWarning

from narm_lightning.cli.exits import composition_error, fail
from narm_lightning.config.rules import keys_of, schema_problems
from narm_lightning.errors import ConfigError, NarmError, RunInterrupted
from narm_lightning.sweeping import report
from narm_lightning.sweeping.config import OptunaSweeperConfig
from narm_lightning.sweeping.space import SearchSpace, params_to_overrides, parse_search_space
from narm_lightning.sweeping.study import (
    PRUNER_ATTR,
    RESUME_REFUSED_ATTR,
    RUN_DIR_ATTR,
    WORKER_ATTR,
    Heartbeat,
    TrialCounts,
    check_same_space,
    continuable,
    count_trials,
    default_storage_url,
    fail_dead_workers_trials,
    fail_stale_trials,
    heartbeat_enabled,
    make_storage,
    open_study,
    pruner_spec,
    redact_url,
    requeue,
    resumable_run,
    study_lock,
    this_worker,
    trial_ids,
)
from narm_lightning.sweeping.trials import (
    MAX_ERROR_CHARS,
    Progress,
    SeedsResult,
    as_minutes,
    fail_own_running_trials,
    fail_trial,
    job_value,
    jsonable,
    refused_resume,
    tell_trial,
)

log = logging.getLogger(__name__)
DEFAULT_TRIALS = 30  # n_trials: null with a sampler other than the grid

IDENTITY_SECTION = "optuna"  # config section the trial identity is written to
# console lines a study's log is read by (bench/study_status.py: the confirm step's time per sitting)
SITTING_STARTS = ("resuming study ", "new study ")
CONFIRM_STEP_LINE = "Confirm step: "
_GRID_TARGET = "optuna.samplers.GridSampler"


class SweepAbortedError(NarmError):
    """Too many trials failed (``max_failure_rate``): continuing would waste compute on a broken setup."""


def _quoted(text: str) -> str:
    return QuotedString(text=text, quote=Quote.single).with_quotes()


def identity_overrides(storage: str, study_name: str, trial_id: int) -> list[str]:
    """Overrides telling a job which trial it is (``++`` so apps without the section still compose)."""
    return [
        f"++{IDENTITY_SECTION}.storage={_quoted(storage)}",
        f"++{IDENTITY_SECTION}.study_name={_quoted(study_name)}",
        f"++{IDENTITY_SECTION}.trial_id={trial_id}",
    ]


class OptunaSweeperImpl:
    """All sweeper logic; the Hydra plugin class in ``hydra_plugins`` only delegates here."""

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
        self.sampler_cfg = _to_dict(sampler, "hydra.sweeper.sampler")
        self.pruner_cfg = _to_dict(pruner, "hydra.sweeper.pruner")
        self.direction = str(v["direction"]).lower()
        self.study_name, self.study_prefix, self.storage = v["study_name"], v["study_prefix"], v["storage"]
        self.identity_ignore = tuple(str(k) for k in v["identity_ignore"])
        self.n_trials, self.n_jobs, self.max_failure_rate = v["n_trials"], v["n_jobs"], float(v["max_failure_rate"])
        self.params = _to_dict(v["params"], "hydra.sweeper.params") if v["params"] is not None else {}
        self.preset_group, self.custom_search_space = v["preset_group"], v["custom_search_space"]
        self.config_check = v["config_check"]
        self.heartbeat_interval, self.grace_period = v["heartbeat_interval"], v["grace_period"]
        self.plots, self.objective_name = v["plots"], v["objective_name"]
        self.seeds_per_trial, self.seed_key = v["seeds_per_trial"], v["seed_key"]
        self.confirm_top, self.confirm_seeds = v["confirm_top"], v["confirm_seeds"]
        self.confirm_baseline = v["confirm_baseline"]
        self.results_file, self.results_key = v["results_file"], v["results_key"]
        self.resume_key, self.resume_file, self.study_dir = v["resume_key"], v["resume_file"], v["study_dir"]
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
        logging.getLogger("hydra._internal.core_plugins.basic_launcher").setLevel(logging.WARNING)
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # ---------------------------------------------------------------- building blocks
    def _build_sampler(self, space: SearchSpace) -> Any:
        """Instantiate the configured sampler; the grid gets the search space."""
        target = str(self.sampler_cfg.get("_target_", ""))
        if not target.startswith("optuna.samplers."):
            raise ConfigError(
                f"hydra.sweeper.sampler._target_ must be a class in optuna.samplers, got '{target}'. "
                f"Pick one with hydra/sweeper/sampler=tpe|random|grid|cmaes."
            )
        if target == _GRID_TARGET:
            if self.custom_search_space:
                raise ConfigError(
                    "hydra.sweeper.custom_search_space cannot be combined with the grid sampler."
                )
            kwargs = {k: v for k, v in self.sampler_cfg.items() if k != "_target_"}
            return _grid_sampler_class()(search_space=space.grid(), **kwargs)
        try:
            return instantiate(self.sampler_cfg)
        except Exception as exc:
            hint = " (the cmaes sampler needs the 'cmaes' package)" if "CmaEs" in target else ""
            raise ConfigError(f"hydra.sweeper.sampler: cannot build '{target}'{hint}: {exc}") from exc

    def _resolve_names(self, identity: dict[str, Any]) -> tuple[str, str]:
        """study_name and storage URL (default: SQLite under the original cwd).

        Without an explicit study_name, the study is named after the search space and the result-changing fixed
        overrides: the same command resumes its study, another space or setting starts a new one.
        """
        assert self.config is not None
        digest = hashlib.sha256(json.dumps({**identity, "direction": self.direction}, sort_keys=True).encode())
        study_name = self.study_name or f"{self.study_prefix or self.config.hydra.job.name}-{digest.hexdigest()[:8]}"
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

    def _config_groups(self, params: dict[str, Any]) -> frozenset[str]:
        """The swept keys that name config groups (their values are option names, not numbers)."""
        assert self.hydra_context is not None
        loader = self.hydra_context.config_loader
        return frozenset(k for k in params if loader.get_group_options(k))

    def _check_space(self, space: SearchSpace) -> None:
        """Compose (and check with ``config_check``) a trial config for every grid point, or each param's
        choices and bounds, before any study exists: a misspelled key or a bad value is one paragraph now,
        not a traceback after trial 0 started."""
        assert self.hydra_context is not None and self.config is not None
        check = get_method(self.config_check) if self.config_check else None
        groups = self._config_groups(dict(space.distributions))
        points = space.check_points(groups)
        for params in points:
            overrides = [*space.fixed_overrides, *params_to_overrides(params, groups),
                         *identity_overrides("check", "check", 0)]
            try:
                cfg = self.hydra_context.config_loader.load_sweep_config(master_config=self.config,
                                                                         sweep_overrides=overrides)
                if check is not None:
                    check(cfg)
            except Exception as exc:  # noqa: BLE001 - Hydra's and the app's errors alike: one paragraph
                shown = " ".join(f"{k}={v}" for k, v in params.items()) or "the fixed overrides"
                # Hydra's own advice for an unknown key ("use +key=...") would add a key nothing reads: the same
                # "did you mean" as a fixed key's typo instead
                detail = str(composition_error(exc, "narm-sweep")) if _from_composition(exc) else " ".join(
                    str(exc).split())
                raise ConfigError(f"hydra.sweeper: a trial of this search space would not run ({shown}): "
                                  f"{detail} Nothing was started; fix the key or value and run again.") from None
        log.debug("Checked %d trial configs before the study.", len(points))

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

    def _study_dir(self, study_name: str) -> Path:
        """The sweep's folder: ``study_dir`` named after the study, so every rerun of the command continues in the
        folder of the trials before (trials.csv, plots and W&B runs of the whole study in one place), unless the
        command line gives ``hydra.sweep.dir`` itself. The launcher and every job read the same folder."""
        assert self.config is not None
        given = any(str(o).lstrip("+~").split("=", 1)[0] == "hydra.sweep.dir"
                    for o in self.config.hydra.overrides.hydra)
        if self.study_dir and not given:
            folder = self.study_dir.replace("{study}", study_name)
            with read_write(self.config.hydra), open_dict(self.config.hydra):
                self.config.hydra.sweep.dir = folder
            self._job_overrides = [f"hydra.sweep.dir={_quoted(folder)}"]
        return Path(str(self.config.hydra.sweep.dir))

    def _launch(self, batch: list[list[str]]) -> Any:
        """Hydra's launcher on ``batch``, each job told the study's folder (the jobs compose their own config).

        Job folders are numbered on from the highest in the sweep folder and made under the study's lock, so
        workers that share a study folder (and every rerun) never give two jobs one folder."""
        assert self.config is not None
        folder = Path(str(self.config.hydra.sweep.dir))
        with study_lock(self._storage_url):
            first = next_job_index(folder)
            for i in range(len(batch)):
                (folder / str(first + i)).mkdir(parents=True, exist_ok=True)
        return self.launcher.launch([[*o, *self._job_overrides] for o in batch], initial_job_idx=first)

    def _validate_batch(self, batch: list[list[str]]) -> None:
        """Compose each trial's config now, so a bad override fails loudly before any training starts."""
        assert self.hydra_context is not None and self.config is not None
        for overrides in batch:
            self.hydra_context.config_loader.load_sweep_config(
                master_config=self.config, sweep_overrides=list(overrides)
            )

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
        sampler = self._build_sampler(space)
        self._check_space(space)
        is_grid = str(self.sampler_cfg.get("_target_")) == _GRID_TARGET
        spec = pruner_spec(self.pruner_cfg)
        from narm_lightning.sweeping.study import build_pruner

        identity = space.identity(self.identity_ignore)
        if self.seeds_per_trial > 1:  # the objective is another quantity (a mean over seeds): another study
            identity["seeds_per_trial"] = self.seeds_per_trial
        study_name, storage_url = self._resolve_names(identity)
        self._storage_url = storage_url
        with study_lock(storage_url):  # concurrent workers must not race on creating the schema/study
            storage = self._db = make_storage(storage_url, self.heartbeat_interval, self.grace_period)
            study = open_study(storage, study_name, self.direction, sampler, build_pruner(spec))
            check_same_space(study, identity)
            study.set_user_attr(PRUNER_ATTR, spec)
            if self.objective_name:  # plots name their axis after it instead of "Objective Value"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ExperimentalWarning)
                    study.set_metric_names([str(self.objective_name)])
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
            report.write_results(study, sweep_dir, target=target, plots=self.plots)
        if self.confirm_top:
            self._confirm(study, space, storage_url, study_name, sweep_dir)
        return [study]

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
            returns = self._launch(batch)
        except (RunInterrupted, KeyboardInterrupt) as exc:  # the worker stops; its trials must not stay RUNNING
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

    def _resume_overrides(self, study: Any, trial: Any, trial_id: int) -> list[str]:
        """``[<resume_key>=<folder>]`` when ``trial`` re-runs a stopped one whose run can go on (else ``[]``):
        the predecessor's intermediate values are copied first, so the pruner judges the whole curve."""
        if self.resume_key is None:
            return []
        run = resumable_run(study, self._db.get_trial(trial_id), self.resume_file, self.results_file)
        if run is None:
            return []
        for step, value in sorted(run.intermediate_values.items()):
            trial.report(value, step)
        trial.set_user_attr(RUN_DIR_ATTR, str(run.folder))  # a stop before the run records it keeps the folder
        steps = len(run.intermediate_values)
        done = f" ({steps} value{'s' * (steps != 1)} reported before the stop)" if steps else ""
        log.info("Trial %d continues trial %d's run from its last checkpoint%s: %s", trial.number, run.previous,
                 done, run.folder)
        return [f"{self.resume_key}={_quoted(str(run.folder))}"]

    # ---------------------------------------------------------------- seeds and the confirm step
    def _seeds(self, n: int) -> list[int]:
        """``n`` seeds from the config's own (``seed_key``): 2020, 2021, 2022 for RecBole's default 2020."""
        assert self.config is not None
        base = OmegaConf.select(self.config, self.seed_key, default=None)
        if not isinstance(base, int) or isinstance(base, bool):
            raise ConfigError(f"hydra.sweeper.seed_key is {self.seed_key!r}, whose value in the config is {base!r}; "
                              "expected the key of an integer seed (seeds_per_trial and the confirm step count "
                              "from it).")
        return [base + i for i in range(n)]

    def _other_seeds(self, settings: list[list[str]], group: list[str], first: list[Any], seeds: list[Any]
                     ) -> list[Any]:
        """Seeds 2..k of every trial whose first seed completed (a pruned or failed first seed decides the
        trial: no more training is spent on it); each trial's result becomes :class:`SeedsResult`. These jobs
        carry no trial id: the first seed alone reports to the pruner."""
        from hydra.core.utils import JobStatus

        todo = [i for i, ret in enumerate(first) if ret.status == JobStatus.COMPLETED]
        more_batch = [[*settings[i], f"{self.seed_key}={seed}", *group] for i in todo for seed in seeds[1:]]
        more = self._launch(more_batch) if more_batch else []
        out = list(first)
        per = len(seeds) - 1
        for n, i in enumerate(todo):
            out[i] = SeedsResult([first[i], *more[n * per : (n + 1) * per]], seeds)
        return out

    def _confirm_plan(self, study: Any) -> tuple[list[Any], list[int]]:
        from narm_lightning.sweeping.confirm import candidates

        return candidates(study, self.confirm_top, self.confirm_baseline), self._seeds(self.confirm_seeds)

    def _confirm_jobs_left(self, study: Any) -> int:
        from narm_lightning.sweeping.confirm import stored

        if not self.confirm_top:
            return 0
        chosen, seeds = self._confirm_plan(study)
        done = stored(study)
        return sum((c.label, s) not in done for c in chosen for s in seeds)

    def _confirm(self, study: Any, space: SearchSpace, storage_url: str, study_name: str, sweep_dir: Path) -> None:
        """Retrain the top configs and the default over ``confirm_seeds`` seeds, each result stored in the
        study as it ends (a rerun resumes), then the table: sweep folder, console (W&B via the callback)."""
        from narm_lightning.sweeping.confirm import attr_key, read_metrics, stopped_key, stored

        chosen, seeds = self._confirm_plan(study)
        done = stored(study)
        jobs = [(c, s) for c in chosen for s in seeds if (c.label, s) not in done]
        if jobs:
            log.info(CONFIRM_STEP_LINE + "%d configs (%s) x %d seeds; %d runs left.", len(chosen),
                     ", ".join(c.label for c in chosen), len(seeds), len(jobs))
        started = time.monotonic()
        for start in range(0, len(jobs), self.n_jobs):
            chunk = jobs[start : start + self.n_jobs]
            folders = [self._stopped_confirm_run(study, stopped_key(c.label, seed)) for c, seed in chunk]
            batch = [[*space.fixed_overrides, *params_to_overrides(c.params, self._config_groups(c.params)),
                      f"{self.seed_key}={seed}", *identity_overrides(storage_url, study_name, 0)[:2],
                      *([f"{self.resume_key}={_quoted(str(folder))}"] if folder else [])]
                     for (c, seed), folder in zip(chunk, folders)]
            for (c, seed), folder in zip(chunk, folders):
                if folder:
                    log.info("Confirm %s seed %d continues its stopped run from its last checkpoint: %s",
                             c.label, seed, folder)
            try:
                returns = self._launch(batch)
            except RunInterrupted as exc:  # one job at a time: the stopped run is that job's, continued next time
                if len(chunk) == 1 and exc.run_dir is not None and self.resume_key:
                    study.set_user_attr(stopped_key(chunk[0][0].label, chunk[0][1]), str(exc.run_dir))
                    log.warning("Confirm %s seed %d stopped: the rerun of this command continues it from its last "
                                "finished epoch.", chunk[0][0].label, chunk[0][1])
                raise
            returns = list(returns)
            for i, folder in enumerate(folders):
                if folder and refused_resume(returns[i]) is not None:  # the run cannot go on: start it over
                    log.warning("Confirm %s seed %d could not continue its stopped run: it starts over.",
                                chunk[i][0].label, chunk[i][1])
                    study.set_user_attr(stopped_key(chunk[i][0].label, chunk[i][1]), None)
                    returns[i] = self._launch([batch[i][:-1]])[0]
                    folders[i] = None
            for done, ((c, seed), ret, folder) in enumerate(zip(chunk, returns, folders), start=start + 1):
                record: dict[str, Any] = {"params": {k: jsonable(v) for k, v in c.params.items()}}
                try:
                    job_value(ret)  # re-raises a failed job's exception
                    run_dir = folder or ret.hydra_cfg.hydra.runtime.output_dir  # a continued run: its first folder
                    record["metrics"] = read_metrics(run_dir, self.results_file, self.results_key)
                    record["folder"] = str(run_dir)
                except Exception as exc:  # noqa: BLE001 - a failed run is recorded and shown, the rest goes on
                    record["error"] = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
                    log.warning("Confirm %s seed %d FAILED: %s", c.label, seed, record["error"])
                study.set_user_attr(attr_key(c.label, seed), record)
                eta = (time.monotonic() - started) / done * (len(jobs) - done)
                outcome = (", ".join(f"{k} {v:.4g}" for k, v in list(record["metrics"].items())[:3])
                           if "metrics" in record else "FAILED")
                log.info("confirm %d/%d %s seed %d: %s%s", done, len(jobs), c.label, seed, outcome,
                         f", ETA {as_minutes(eta)}" if done < len(jobs) else "")
        self._confirm_report(study, sweep_dir)

    def _stopped_confirm_run(self, study: Any, key: str) -> Path | None:
        """The folder of this confirm job's stopped run, when it can go on (else None: it starts over)."""
        folder = study.user_attrs.get(key)
        if self.resume_key is None or not continuable(folder, self.resume_file, self.results_file):
            return None
        return Path(str(folder))

    def _confirm_report(self, study: Any, sweep_dir: Path | None) -> None:
        """The confirm table on the console, and into ``sweep_dir`` (``confirm.md``, ``confirm.csv``) if given."""
        from narm_lightning.io import write_text_atomic
        from narm_lightning.sweeping.confirm import CSV_FILE, MARKDOWN_FILE, stored, summarize, to_csv, to_markdown

        chosen, seeds = self._confirm_plan(study)
        results = {k: v for k, v in stored(study).items() if k[1] in seeds}
        rows = summarize(results, [c.label for c in chosen])
        params = {c.label: c.params for c in chosen}
        table = to_markdown(rows, params, seeds)
        log.info("Confirm step (%s):\n%s", study.study_name, table)
        if sweep_dir is not None:
            write_text_atomic(sweep_dir / MARKDOWN_FILE, table)
            write_text_atomic(sweep_dir / CSV_FILE, to_csv(rows, params))


def _from_composition(exc: BaseException) -> bool:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return isinstance(exc, (HydraException, OmegaConfBaseException))


def next_job_index(sweep_dir: Path) -> int:
    """One past the highest numbered job folder in ``sweep_dir`` (0 when there is none)."""
    if not sweep_dir.is_dir():
        return 0
    numbers = [int(p.name) for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(numbers, default=-1) + 1


def _grid_sampler_class() -> type:
    """GridSampler whose ``after_trial`` does not call ``study.stop()`` (illegal outside ``optimize``).

    The sweeper stops by itself: the grid caps ``n_trials`` at the grid size.
    """
    from optuna.samplers import GridSampler

    class SweepGridSampler(GridSampler):
        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            return None

    return SweepGridSampler


def _to_dict(node: Any, key: str) -> dict[str, Any]:
    if node is None:
        return {}
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
    if isinstance(node, dict):
        return dict(node)
    raise ConfigError(f"{key} must be a mapping, got {type(node).__name__}: {node!r}")


