"""The command-line programs: ``narm-train`` and ``narm-sweep`` (``python train.py`` / ``python sweep.py -m`` in a
checkout call the same functions). Hydra finds the shipped configs beside this module (``conf/``, package
data), so the programs work from any folder; ``--help`` prints ``hydra.help`` of ``conf/train.yaml`` /
``conf/sweep.yaml``. ``narm-recommend`` is ``serving.cli.main``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig

from narm_lightning import CONF_DIR
from narm_lightning.cli.command_line import quote_group_numbers
from narm_lightning.cli.entry import raise_if_stopped
from narm_lightning.cli.exits import run_hydra_app, run_or_exit
from narm_lightning.cli.help import print_help_if_asked, sweep_sections, train_sections
from narm_lightning.config.schema import register
from narm_lightning.data.locate import locate_data
from narm_lightning.errors import NarmError, TrialFailed
from narm_lightning.recbole.config import with_recbole_config_file
from narm_lightning.training.run_folder import resume_argv, resume_paths

if TYPE_CHECKING:
    from narm_lightning.training.run import RunRecord

log = logging.getLogger(__name__)


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")  # the shipped configs
def _train_app(cfg: DictConfig) -> float:
    run_or_exit(refuse_bad_config, cfg)
    from narm_lightning.training.run import train  # Lightning and what it imports: seconds

    return run_or_exit(_after_imports, train, cfg)["best_valid_score"]


def refuse_bad_config(cfg: DictConfig) -> None:
    """A config that cannot run, a ``resume=`` folder that holds no run, an ``init_from`` file or data that is not
    where the config says are refused before Lightning loads (a typo costs ~2 s, not the ~7 s of the imports a run
    needs); ``train`` checks them again, for callers that start there."""
    from narm_lightning.config.validation import validate  # imports torch: its device checks need it
    from narm_lightning.safe_load import init_from_file  # torch too

    cfg = with_recbole_config_file(cfg)
    validate(cfg)
    if cfg.get("resume"):
        resume_paths(cfg.resume)
    if cfg.get("init_from"):
        init_from_file(cfg.init_from)
    locate_data(cfg.data)


def _after_imports(train: Callable[[DictConfig], dict[str, Any]], cfg: DictConfig) -> dict[str, Any]:
    """A signal that came while torch and Lightning were importing ends the run before it begins."""
    raise_if_stopped()
    return train(cfg)


@hydra.main(config_path=str(CONF_DIR), config_name="sweep", version_base="1.3")
def _sweep_app(cfg: DictConfig) -> dict[str, object]:
    """One trial, as a Hydra job of the sweep."""
    return run_trial(cfg)


def run_trial(cfg: DictConfig, output_dir: Path | None = None) -> dict[str, object]:
    """One trial: train, and return what the sweeper records (``sweeping/trials.py`` says the shape): the score it
    optimizes, the test metrics RecBole's run_hyper.py prints for each parameter set (console, trials.csv), the
    results (the confirm step's table) and the trial's W&B run and CPU, which a failed, pruned or stopped run
    carries on its exception."""
    from narm_lightning.sweeping.trials import with_attrs
    from narm_lightning.training.run import RunRecord, train

    record = RunRecord()
    try:
        result = train(cfg, output_dir, record=record)
    except NarmError as exc:
        # A clean one-paragraph message (no traceback) in the log and in trials.csv's error column.
        log.error("%s: %s", type(exc).__name__, exc)
        raise with_attrs(TrialFailed(exc), _trial_attrs(record)) from None
    except BaseException as exc:
        with_attrs(exc, _trial_attrs(record))
        raise
    return {"objective": float(result["best_valid_score"]),
            "report": {f"test {name}": value for name, value in (result.get("test") or {}).items()},
            "results": result, "attrs": _trial_attrs(record)}


def _trial_attrs(record: RunRecord) -> dict[str, str]:
    """The trial's W&B run and the CPU it trained on (a study's trials/hour names it)."""
    from narm_lightning.sweeping.study import HOST_ATTR, WANDB_RUN_ATTR
    from narm_lightning.training.hostcheck import cpu_description

    return {HOST_ATTR: cpu_description(), **({WANDB_RUN_ATTR: record.wandb_run_id} if record.wandb_run_id else {})}


TRAIN_EXAMPLES = [
    "narm-train                                   # NARM on ml-100k with RecBole's defaults",
    "narm-train model.hidden_size=256 learning_rate=0.0005 seed=1",
    "narm-train experiment=narm_paper_diginetica logger=csv",
    "narm-train init_from=saved/NARM-ml-100k.pth epochs=0   # evaluate RecBole weights",
    "narm-train config_file=recbole.yaml          # a RecBole config file, command line wins",
    "narm-train resume=outputs/ml-100k/<run>      # continue a stopped run",
]
SWEEP_EXAMPLES = [
    "narm-sweep -m                                # RecBole's NARM hyper.test grid (30 points)",
    "narm-sweep -m learning_rate=0.01,0.001 n_layers=1,2",
    "narm-sweep -m --params-file=hyper.test hydra/sweeper/sampler=tpe hydra.sweeper.n_trials=50",
    "narm-sweep -m ...same command again...       # resumes the study",
]


def train_main() -> None:
    """``narm-train [key=value ...]``; ``resume=<run dir>`` replays that run's overrides into that folder."""
    print_help_if_asked(sys.argv, "narm-train", train_sections, TRAIN_EXAMPLES)
    # @hydra.main reads its command line from sys.argv and has no public parameter for another one, so the
    # replayed overrides are handed over there (here only, in the program's own entry point).
    sys.argv = run_or_exit(resume_argv, quote_group_numbers(sys.argv))
    register()  # the schemas into Hydra's ConfigStore: the shipped YAML includes them
    run_hydra_app(_train_app, "narm-train")


def sweep_main() -> None:
    """``narm-sweep -m [overrides]``; ``--params-file=hyper.test`` takes RecBole's search-space file."""
    from narm_lightning.recbole.hyper import expand_params_file_arg

    print_help_if_asked(sys.argv, "narm-sweep", lambda: sweep_sections() + train_sections(), SWEEP_EXAMPLES)
    sys.argv = quote_group_numbers(run_or_exit(expand_params_file_arg, sys.argv), sweeps=False)
    # a sweep stopped by SIGTERM/SIGINT exits 143/130, its unfinished trials FAILED
    register()
    run_hydra_app(_sweep_app, "narm-sweep")
