"""Structured configs of the Optuna sweeper, registered in Hydra's ConfigStore.

Keys mirror hydra-optuna-sweeper 1.3 (``sampler``, ``direction``, ``study_name``, ``storage``, ``n_trials``,
``n_jobs``, ``max_failure_rate``, ``params``, ``custom_search_space``) so existing
``override hydra/sweeper: optuna`` configs carry over; ``pruner`` and the heartbeat keys are ours.
This module must stay import-light: Hydra imports it whenever it scans plugins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from narm_lightning.config.rules import BOOLEAN, TEXT, Rule, integer, is_list, is_text, key, number

# Hydra only instantiates plugin classes defined under the hydra_plugins package: the shim.
SWEEPER_TARGET = "hydra_plugins.narm_optuna_sweeper.narm_optuna_sweeper.OptunaSweeper"


@dataclass
class TPESamplerConfig:
    """Optuna's default Bayesian sampler (https://optuna.readthedocs.io/en/stable/reference/samplers)."""

    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool = False
    group: bool = False
    constant_liar: bool = True


@dataclass
class RandomSamplerConfig:
    """Independent uniform sampling; a good baseline and cheap for many parallel workers."""

    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = None


@dataclass
class GridSamplerConfig:
    """Exhaustive grid; the sweeper fills ``search_space`` from ``params`` (discrete params only)."""

    _target_: str = "optuna.samplers.GridSampler"
    seed: int | None = None


@dataclass
class CmaEsSamplerConfig:
    """CMA-ES for continuous params (needs the ``cmaes`` package); categoricals fall back to random."""

    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: int | None = None
    x0: dict[str, Any] | None = None
    sigma0: float | None = None
    n_startup_trials: int = 1
    restart_strategy: str | None = None


@dataclass
class MedianPrunerConfig:
    """Prune a trial whose intermediate value is worse than the median of earlier trials at that step."""

    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class HyperbandPrunerConfig:
    """Successive-halving brackets; ``max_resource: auto`` uses the longest finished trial's last step."""

    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"
    reduction_factor: int = 3
    bootstrap_count: int = 0


@dataclass
class NopPrunerConfig:
    """Never prunes: every trial trains to the end (the default, results equal an unpruned sweep)."""

    _target_: str = "optuna.pruners.NopPruner"


_DEFAULTS: list[Any] = ["_self_", {"sampler": "tpe"}, {"pruner": "nop"}]  # groups override our None
DIRECTIONS = ("minimize", "maximize")
_DIRECTION = Rule("minimize or maximize (one objective: multi-objective studies are not supported)",
                  lambda v: isinstance(v, str) and v.lower() in DIRECTIONS, DIRECTIONS)
_NAMES = Rule("a list of key names", lambda v: is_list(v) and all(map(is_text, v)))
_PATHS = Rule("a list of dotted paths", lambda v: is_list(v) and all(map(is_text, v)))


@dataclass
class OptunaSweeperConfig:
    """``hydra.sweeper`` node; semantics are documented in ``narm_lightning.sweeping.sweeper``."""

    _target_: str = SWEEPER_TARGET
    _recursive_: bool = False  # sampler/pruner are built by the sweeper (the grid needs the search space)
    defaults: list[Any] = field(default_factory=lambda: list(_DEFAULTS))
    sampler: Any = None  # filled by the hydra/sweeper/sampler group
    pruner: Any = None  # filled by the hydra/sweeper/pruner group
    direction: str = key("minimize", "minimize or maximize the objective (narm-sweep: maximize valid_metric)",
                          _DIRECTION)
    study_name: str | None = key(None, "null: <study_prefix>-<hash of the search space and fixed overrides>, so the "
                                 "same command resumes its study; a name joins that study on purpose", TEXT)
    study_prefix: str | None = key(None, "the start of a derived study name (null: from study_prefix_key, else the "
                                   "Hydra job name)", TEXT)
    study_prefix_key: str | None = key(None, "a config key whose value starts a derived study name when study_prefix "
                                       "is null; a space that sweeps it (or its group) gives the swept values, "
                                       "joined by +", TEXT)
    identity_ignore: list[str] = key([], "override keys that never change results: not part of a study's identity",
                                  _NAMES)
    storage: str | None = key(None, "Optuna storage URL (null: sqlite:///<cwd>/optuna/<study_name>.db)", TEXT)
    n_trials: int | None = key(None, "finished trials wanted in the study, across all runs (null: the grid's size, "
                               "else 30)", integer(1))
    n_jobs: int = key(1, "trials asked and launched per batch (the launcher may run them in parallel)", integer(1))
    max_failure_rate: float = key(0.25, "stop once failed trials exceed this fraction of n_trials",
                                  number(at_least=0, at_most=1, expect="a number in [0, 1]"))
    params: dict[str, str] | None = key(None, "the search space in Hydra's override grammar", hidden=True)
    preset_group: str | None = key(None, "the config group whose options set params (a preset space): a command line "
                                   "that sweeps a key sweeps only what it names, unless it names this group too", TEXT)
    custom_search_space: str | None = key(None, "dotted path of fn(cfg, trial) for conditional params", TEXT)
    config_check: str | None = key(None, "dotted path of fn(cfg) raising on an invalid trial config: run on every "
                                   "grid point (or each choice and bound) before trial 0", TEXT)
    heartbeat_interval: int | None = key(60, "seconds between heartbeats of running trials (null: none); a trial "
                                         "without one for grace_period is re-run", integer(1))
    grace_period: int | None = key(None, "seconds without heartbeat before a trial is stale (null: 2 x "
                                   "heartbeat_interval)", integer(1))
    plots: bool = key(True, "write Optuna's HTML plots into the sweep dir (plotly.min.js beside them: they open "
                      "offline)", BOOLEAN)
    objective_name: str | None = key(None, "names the objective in plots and tables (null: \"objective\")", TEXT)
    seeds_per_trial: int = key(1, "seeds each trial trains with; its objective is their mean (std kept); >1 makes "
                               "another study. The first seed reports and prunes, the others run if it completes",
                               integer(1))
    seed_key: str = key("seed", "the config key that takes each seed (counted up from its value: 2020, 2021, ...)",
                         TEXT)
    confirm_top: int = key(0, "after the study: retrain its best confirm_top configs and the default config over "
                           "confirm_seeds seeds -> confirm.md/.csv, console, W&B (0: no confirm step)", integer(0))
    confirm_seeds: int = key(3, "seeds of the confirm step (from seed_key's value up)", integer(1))
    confirm_baseline: bool = key(True, "confirm the default config too (no searched parameter set): the paired "
                                 "test compares each config with it", BOOLEAN)
    results_file: str = key("results.json", "the file a finished run leaves in its folder (a stopped trial's folder "
                            "with it is finished: its re-run starts over)", TEXT)
    results_key: str = key("test", "the mapping of metrics in each confirm job's returned results that the confirm "
                           "table reports", TEXT)
    resume_key: str | None = key("resume", "the app's key that continues a run from its folder: a stopped trial's "
                                 "re-run continues its run there (null: re-runs start over)", TEXT)
    study_dir: str | None = key(None, "the sweep's folder, {study} replaced by the study name: every rerun continues "
                                "in it (null, or hydra.sweep.dir on the command line: hydra.sweep.dir)", TEXT)
    report_hooks: list[str] = key([], "dotted paths of fn(report, cfg), each called with the study's report "
                                  "(sweeping/report.py StudyReport) once its files are written (narm-sweep: the W&B "
                                  "summary run)", _PATHS)
    resume_file: str = key("checkpoints/last.ckpt", "the file, in a stopped trial's folder, that makes its run "
                           "continuable (a folder with results_file is finished: its re-run starts over)", TEXT)


SAMPLERS: dict[str, type] = {"tpe": TPESamplerConfig, "random": RandomSamplerConfig, "grid": GridSamplerConfig,
                              "cmaes": CmaEsSamplerConfig}  # hydra/sweeper/sampler=<name>
PRUNERS: dict[str, type] = {"median": MedianPrunerConfig, "hyperband": HyperbandPrunerConfig,
                            "nop": NopPrunerConfig}  # hydra/sweeper/pruner=<name>


def register_configs() -> None:
    """Register the sweeper, sampler and pruner options; idempotent (Hydra may import the shim twice)."""
    cs = ConfigStore.instance()
    cs.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConfig, provider="narm_optuna_sweeper")
    for name, node in SAMPLERS.items():
        cs.store(group="hydra/sweeper/sampler", name=name, node=node, provider="narm_optuna_sweeper")
    for name, node in PRUNERS.items():
        cs.store(group="hydra/sweeper/pruner", name=name, node=node, provider="narm_optuna_sweeper")
