"""Toy Hydra app for the sweeper tests: a cheap objective with knobs to fail, return NaN, or be pruned."""

from __future__ import annotations

import math
import time

import hydra
from omegaconf import DictConfig


def toy_noise(cfg: DictConfig) -> float:
    """A seed's deterministic share of the objective (``noise`` scales it): seeds differ, reruns do not."""
    return float(cfg.noise) * ((int(cfg.seed) * 7919) % 10) / 10


def returned(value: float) -> dict[str, object]:
    """What the NARM app returns: the objective, and results whose ``test`` metrics the confirm step reads."""
    return {"objective": value, "results": {"test": {"loss": value, "double": 2 * value}}}


def rendezvous(folder: str, workers: int) -> None:
    """Wait until ``workers`` processes have reached this point (an event, not a guess at start-up skew): a
    parallel test then knows every worker holds a trial at once. Gives up after 120 s (the test then fails)."""
    import os
    from pathlib import Path

    here = Path(folder)
    here.mkdir(parents=True, exist_ok=True)
    (here / str(os.getpid())).touch()
    deadline = time.monotonic() + 120
    while len(list(here.iterdir())) < workers and time.monotonic() < deadline:
        time.sleep(0.05)


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | dict[str, object]:
    if cfg.rendezvous:
        rendezvous(cfg.rendezvous, int(cfg.workers))
    if cfg.sleep:
        time.sleep(float(cfg.sleep))
    if cfg.mode == "fail" or (cfg.fail_x is not None and cfg.x == cfg.fail_x):
        raise ValueError(f"toy failure for x={cfg.x}")
    if cfg.mode == "nonfinite":
        return math.nan
    value = (float(cfg.x) - 2.0) ** 2 + float(cfg.size.penalty) + float(cfg.y) + toy_noise(cfg)
    if not cfg.curve:
        return returned(value)
    from narm_lightning.sweeping.pruning import TrialReporter  # only here: it imports torch (seconds per process)

    reporter = TrialReporter.from_config(cfg.optuna)
    if reporter is not None:
        for step in range(5):
            # Good trials share one descending curve (never pruned); a hopeless one stays flat and high.
            reporter.report(100.0 if cfg.hopeless else 4.0 - step, step)
    return returned(value)


if __name__ == "__main__":
    main()
