"""Hyper-parameter search for NARM: `python sweep.py -m [overrides]` (Optuna via our Hydra sweeper).

Each trial is one `train(cfg)` run; its `best_valid_score` (the valid_metric) is the objective.
Run the same command again to continue the study (see conf/sweep.yaml). `--params-file=hyper.test` takes
RecBole's search-space file instead of the default space.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from narm_lightning.errors import NarmError

log = logging.getLogger(__name__)


@hydra.main(config_path="conf", config_name="sweep", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """One trial: train and return the score the sweeper optimizes."""
    from narm_lightning.training import train  # imported here: heavy (torch), and only trials need it

    try:
        result = train(cfg)
    except NarmError as exc:
        # A clean one-paragraph message (no traceback) in the log and in trials.csv's error column.
        log.error("%s: %s", type(exc).__name__, exc)
        raise RuntimeError(f"{type(exc).__name__}: {exc}") from None
    return float(result["best_valid_score"])


if __name__ == "__main__":
    import sys

    from narm_lightning.cli import run_or_exit
    from narm_lightning.recbole.hyper import expand_params_file_arg

    sys.argv = run_or_exit(expand_params_file_arg, sys.argv)  # RecBole's hyper.test: --params-file=FILE
    run_or_exit(main)  # a sweep stopped by SIGTERM/SIGINT exits 143/130, its unfinished trials FAILED
