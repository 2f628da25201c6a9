"""How a trial becomes a Hydra job: its overrides (the sampled params, its seed, who it reports to, the stopped run it
continues), its numbered folder in the study's folder, and the composition check before anything starts.

``TrialJobs`` is the sweeper's part that does this (mixed into ``OptunaSweeperImpl``, whose settings and Hydra
context it reads); the loop that asks and tells stays in ``sweeper.py``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.override_parser.types import Quote, QuotedString
from hydra.types import HydraContext
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from narm_lightning.cli.exits import composition_error
from narm_lightning.errors import ConfigError
from narm_lightning.sweeping.space import SearchSpace, params_to_overrides
from narm_lightning.sweeping.storage import study_lock
from narm_lightning.sweeping.study import RUN_DIR_ATTR, resumable_run
from narm_lightning.sweeping.trials import SeedsResult

log = logging.getLogger("narm_lightning.sweeping.sweeper")  # the sweeper's console lines, one logger
IDENTITY_SECTION = "optuna"  # config section the trial identity is written to
JOB_SUBDIR = "${hydra.job.num}"  # each job's folder in the sweep's: its number (Hydra's default, pinned)


def quoted(text: str) -> str:
    return QuotedString(text=text, quote=Quote.single).with_quotes()


def identity_overrides(storage: str, study_name: str, trial_id: int) -> list[str]:
    """Overrides telling a job which trial it is (``++`` so apps without the section still compose)."""
    return [
        f"++{IDENTITY_SECTION}.storage={quoted(storage)}",
        f"++{IDENTITY_SECTION}.study_name={quoted(study_name)}",
        f"++{IDENTITY_SECTION}.trial_id={trial_id}",
    ]


def next_job_index(sweep_dir: Path) -> int:
    """One past the highest numbered job folder in ``sweep_dir`` (0 when there is none)."""
    if not sweep_dir.is_dir():
        return 0
    numbers = [int(p.name) for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(numbers, default=-1) + 1


def from_composition(exc: BaseException) -> bool:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return isinstance(exc, (HydraException, OmegaConfBaseException))


class TrialJobs:
    """The sweeper's jobs: what each trial's job is told, where it runs, and that it composes."""

    config: DictConfig | None
    hydra_context: HydraContext | None
    launcher: Any
    config_check: str | None
    study_dir: str | None
    resume_key: str | None
    resume_file: str
    results_file: str
    seed_key: str
    _db: Any
    _job_overrides: list[str]
    _storage_url: str

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
                detail = str(composition_error(exc, "narm-sweep")) if from_composition(exc) else " ".join(
                    str(exc).split())
                raise ConfigError(f"hydra.sweeper: a trial of this search space would not run ({shown}): "
                                  f"{detail} Nothing was started; fix the key or value and run again.") from None
        log.debug("Checked %d trial configs before the study.", len(points))

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
            self._job_overrides = [f"hydra.sweep.dir={quoted(folder)}"]
        return Path(str(self.config.hydra.sweep.dir))

    def _launch(self, batch: list[list[str]], trials: list[Any] | None = None) -> Any:
        """Hydra's launcher on ``batch``, each job told the study's folder (the jobs compose their own config).

        Job folders are numbered on from the highest in the sweep folder and made under the study's lock, so
        workers that share a study folder (and every rerun) never give two jobs one folder. Each of ``trials``
        (one a job) gets its job's folder recorded before it starts, unless it continues a run in another: a
        stopped trial's re-run finds the run there, however its job ended."""
        assert self.config is not None
        folder = Path(str(self.config.hydra.sweep.dir))
        with study_lock(self._storage_url):
            first = next_job_index(folder)
            for i in range(len(batch)):
                (folder / str(first + i)).mkdir(parents=True, exist_ok=True)
        for i, trial in enumerate(trials or []):
            if RUN_DIR_ATTR not in trial.user_attrs:
                trial.set_user_attr(RUN_DIR_ATTR, str((folder / str(first + i)).resolve()))
        return self.launcher.launch([[*o, *self._job_overrides] for o in batch], initial_job_idx=first)

    def _check_job_folders(self) -> None:
        """The sweeper names each job's folder by its number (``_launch``): Hydra's ``hydra.sweep.subdir`` must
        say the same, or trials.csv and a stopped trial's re-run would look for its run in the wrong folder."""
        assert self.config is not None
        subdir = OmegaConf.to_container(self.config.hydra.sweep, resolve=False).get("subdir")
        if subdir != JOB_SUBDIR:
            raise ConfigError(f"hydra.sweep.subdir is {subdir!r}; the sweeper numbers each trial's folder in the "
                              f"study's folder, so it must be {JOB_SUBDIR!r} (Hydra's default). Drop the override.")

    def _validate_batch(self, batch: list[list[str]]) -> None:
        """Compose each trial's config now, so a bad override fails loudly before any training starts."""
        assert self.hydra_context is not None and self.config is not None
        for overrides in batch:
            self.hydra_context.config_loader.load_sweep_config(
                master_config=self.config, sweep_overrides=list(overrides)
            )

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
        return [f"{self.resume_key}={quoted(str(run.folder))}"]

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
