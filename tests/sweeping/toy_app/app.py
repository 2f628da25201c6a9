"""Toy Hydra app for the sweeper tests: a cheap objective with knobs to fail, return NaN, or be pruned."""

from __future__ import annotations

import math
import time

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    if cfg.sleep:
        time.sleep(float(cfg.sleep))
    if cfg.mode == "fail" or (cfg.fail_x is not None and cfg.x == cfg.fail_x):
        raise ValueError(f"toy failure for x={cfg.x}")
    if cfg.mode == "nonfinite":
        return math.nan
    value = (float(cfg.x) - 2.0) ** 2 + float(cfg.size.penalty) + float(cfg.y)
    if not cfg.curve:
        return value
    from narm_lightning.pruning import TrialReporter  # only here: it imports torch (seconds per process)

    reporter = TrialReporter.from_config(cfg.optuna)
    if reporter is not None:
        for step in range(5):
            # Good trials share one descending curve (never pruned); a hopeless one stays flat and high.
            reporter.report(100.0 if cfg.hopeless else 4.0 - step, step)
    return value


if __name__ == "__main__":
    main()
