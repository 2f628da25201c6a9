"""Experiment loggers chosen by the ``logger`` config group (several at once), and what a run reports to them."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger, Logger
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

from narm_lightning.errors import ConfigError
from narm_lightning.tracking.wandb_runs import finish_run, open_run

KNOWN = ("wandb", "csv", "tensorboard", "none")
STEP_KEY = "trainer/global_step"


class WandbRunLogger(Logger):
    """Lightning metrics into one W&B run of its own, opened lazily at the first log and finished by the caller.

    Not Lightning's ``WandbLogger``: with pytorch_lightning 2.6 it silently reuses any run already active in
    the process (a sweep's trials would pile into one run), sets ``WANDB_MODE`` for the whole process when
    offline, refuses ``log_model`` offline, and logs the module's hparams nested under keys that clash with
    the flat Hydra config. The few lines below avoid all four.
    """

    def __init__(self, options: Mapping[str, Any], run_dir: Path, name: str, group: str | None,
                 config: Mapping[str, Any]) -> None:
        super().__init__()
        self.options = dict(options)
        self.run_dir = run_dir
        self._name, self._group, self._config = name, group, dict(config)
        self._run: Any = None

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The W&B run, created on first use with the whole flattened config."""
        if self._run is None:
            self._run = open_run(self.options, self.run_dir, job_type="train", name=self._name, group=self._group,
                                 config=self._config)
            self._run.define_metric(STEP_KEY)
            self._run.define_metric("*", step_metric=STEP_KEY, step_sync=True)
        return self._run

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        return self._run.id if self._run is not None else ""

    @property
    def save_dir(self) -> str:
        return str(self.options.get("dir") or self.run_dir)

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Opens the run; the resolved Hydra config it was given is the config (the module's hparams are a subset)."""
        _ = self.experiment

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.experiment.log({**metrics, **({STEP_KEY: step} if step is not None else {})})

    @rank_zero_only
    def log_results(self, results: Mapping[str, Any]) -> None:
        """Test metrics, best valid values and best epoch into the summary; the best checkpoint if ``log_model``."""
        run = self.experiment
        run.summary.update({
            **{f"test/{k}": v for k, v in results["test"].items()},
            **{f"test_{mode}/{k}": v for mode, values in (results.get("extra_tests") or {}).items()
               for k, v in values.items()},
            **{f"best_valid/{k}": v for k, v in results["best_valid"].items()},
            "best_valid_score": results["best_valid_score"],
            "best_epoch": results["best_epoch"],
            "epochs_run": results["epochs_run"],
            "fit_seconds": results["fit_seconds"],
            "seconds_per_epoch": results["seconds_per_epoch"],
            "peak_rss_mib": results["peak_rss_mib"],
        })
        ckpt = results.get("best_checkpoint")
        if self.options.get("log_model") and ckpt and Path(ckpt).is_file():
            import wandb

            artifact = wandb.Artifact(f"model-{run.id}", type="model",
                                      metadata={"best_epoch": results["best_epoch"],
                                                "best_valid_score": results["best_valid_score"]})
            artifact.add_file(str(ckpt), name="best.ckpt")
            run.log_artifact(artifact, aliases=["best"])

    def finish(self, state: str) -> None:
        """Finish the run (if one was opened) tagged ``state``, so the next run in this process starts clean."""
        if self._run is not None:
            run, self._run = self._run, None
            finish_run(run, state)


def build_loggers(
    logger_cfg: Mapping[str, Any] | None,
    run_dir: Path,
    run_config: Mapping[str, Any] | None = None,
    default_name: str | None = None,
    default_group: str | None = None,
    wandb_dir: Path | None = None,
) -> list[Logger]:
    """One Lightning logger per entry of ``logger`` (``{}`` means none).

    ``run_config`` is what W&B stores as the run's config (flat keys); ``default_name``/``default_group``
    apply where ``logger.wandb.name``/``group`` are null (a sweep sets those per trial instead).
    ``wandb_dir`` holds the ``wandb/`` folder where ``logger.wandb.dir`` is null (default: ``run_dir``).
    """
    loggers: list[Logger] = []
    for name, options in (logger_cfg or {}).items():
        options = dict(options or {})
        if name == "csv":
            loggers.append(CSVLogger(save_dir=str(run_dir), name=options.get("name", "csv"), version=""))
        elif name == "tensorboard":
            if not any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")):
                raise ConfigError("logger=tensorboard needs the tensorboard package, which is not installed: "
                                  "pip install 'narm-lightning[tensorboard]' (tensorboardX) or tensorboard (or "
                                  "choose logger=wandb or logger=csv).")
            from pytorch_lightning.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(save_dir=str(run_dir), name=options.get("name", "tensorboard"),
                                             version=""))
        elif name == "wandb":
            run_name = default_name or f"run-{time.strftime('%Y%m%d-%H%M%S')}"
            loggers.append(WandbRunLogger(options, wandb_dir or run_dir, run_name, default_group, run_config or {}))
        else:
            raise ConfigError(f"logger.{name} is not a known logger; expected any of {', '.join(KNOWN)}.")
    return loggers


def log_results(loggers: Sequence[Logger], results: Mapping[str, Any]) -> None:
    """Hand a finished run's results to the loggers that keep a summary (W&B)."""
    for logger in loggers:
        if isinstance(logger, WandbRunLogger):
            logger.log_results(results)


def finish_loggers(loggers: Sequence[Logger], state: str) -> None:
    """Finish every W&B run of ``loggers`` tagged ``state`` (complete / pruned / failed); always all of them."""
    errors: list[BaseException] = []
    for logger in loggers:
        if isinstance(logger, WandbRunLogger):
            try:
                logger.finish(state)
            except Exception as exc:  # noqa: BLE001 - finish the others first, then report
                errors.append(exc)
    if errors:
        raise errors[0]


def wandb_run_id(loggers: list[Logger]) -> str | None:
    """The id of the W&B run among ``loggers`` (None when there is none, or it was never opened)."""
    return next((lg.version for lg in loggers if isinstance(lg, WandbRunLogger) and lg.version), None)
