"""Pruning bridge: lets a training job report intermediate values to its Optuna trial.

The sweeper passes the trial identity as overrides of the config section ``optuna``
(``optuna.storage``, ``optuna.study_name``, ``optuna.trial_id``); all null when training by hand, and
then nothing here does anything. The pruner is rebuilt from the study (the sweeper stores its config as
the study user attr ``narm_sweeper.pruner``), so the job prunes with exactly the sweep's settings.

It reports intermediate values (Optuna's protocol for pruning: the pruner compares them across trials) and writes
nothing else: what the trial leaves for the study (its W&B run, its CPU) travels back with the job's return value or
its exception, and the sweeper records it (``trials.py``).

Lightning 2.6: ``OptunaPruningCallback`` raises ``optuna.TrialPruned`` from ``on_validation_end``.
Lightning's ``_call_and_handle_interrupt`` tears the trainer down and re-raises it out of ``fit``, so the
job ends with ``TrialPruned`` and the sweeper records the trial as PRUNED. Pass ``raise_on_prune=False`` to
instead set ``trainer.should_stop`` and call ``check_pruned()`` after ``fit`` yourself.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import optuna
import pytorch_lightning as pl

from narm_lightning.errors import ConfigError

log = logging.getLogger(__name__)


class TrialReporter:
    """Reports values of one running trial to its study and raises ``optuna.TrialPruned`` when told to."""

    def __init__(self, storage: str, study_name: str, trial_id: int) -> None:
        from narm_lightning.sweeping.storage import make_storage
        from narm_lightning.sweeping.study import PRUNER_ATTR, build_pruner

        db = make_storage(storage, None, None)  # one connection; the sweeper beats the trial's heartbeat
        spec = db.get_study_user_attrs(db.get_study_id_from_name(study_name)).get(PRUNER_ATTR)
        self.study = optuna.load_study(study_name=study_name, storage=db, pruner=build_pruner(spec))
        # Optuna has no public way to reach a trial asked by another process (here: the sweeper) but building
        # its Trial from the storage id; report() and should_prune() on it are public. tests/system/
        # test_private_apis.py fails when that constructor changes.
        self.trial = optuna.trial.Trial(self.study, int(trial_id))

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | Any | None) -> TrialReporter | None:
        """Build from the ``optuna`` config section; None when not running as a sweep trial."""
        if section is None or section.get("trial_id") is None:
            return None
        missing = [key for key in ("storage", "study_name") if not section.get(key)]
        if missing:
            raise ConfigError(f"optuna.{missing[0]} is null but optuna.trial_id is set: set both or neither.")
        return cls(str(section["storage"]), str(section["study_name"]), int(section["trial_id"]))

    @property
    def number(self) -> int:
        """The trial's number in its study (what users see in reports)."""
        return self.trial.number

    def report(self, value: float, step: int) -> None:
        """Record ``value`` at ``step``; raise ``optuna.TrialPruned`` if the pruner stops the trial."""
        value = float(value)
        self.trial.report(value, step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"trial {self.number} pruned at step {step} (value {value})")


class OptunaPruningCallback(pl.Callback):
    """Reports ``trainer.callback_metrics[monitor]`` after each validation (step = epoch) and prunes."""

    def __init__(self, monitor: str, reporter: TrialReporter, raise_on_prune: bool = True) -> None:
        self.monitor = monitor
        self.reporter = reporter
        self.raise_on_prune = raise_on_prune
        self.pruned: optuna.TrialPruned | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # on_validation_end (not *_epoch_end): epoch metrics are in callback_metrics only by now.
        if trainer.sanity_checking or self.pruned is not None:
            return
        if self.monitor not in trainer.callback_metrics:
            raise ConfigError(
                f"optuna pruning: metric '{self.monitor}' was not logged during validation; logged metrics: "
                f"{sorted(trainer.callback_metrics)}."
            )
        value = float(trainer.callback_metrics[self.monitor])
        # Under DDP only rank 0 reports (once per epoch, not once per process); its decision is broadcast so
        # every rank stops together instead of one waiting forever in the next collective.
        message: str | None = None
        if trainer.is_global_zero:
            try:
                self.reporter.report(value, step=trainer.current_epoch)
            except optuna.TrialPruned as exc:
                message = str(exc)
        message = trainer.strategy.broadcast(message, src=0)
        if message is None:
            return
        pruned = optuna.TrialPruned(message)
        log.info("%s", pruned)
        if self.raise_on_prune:
            raise pruned
        self.pruned = pruned
        trainer.should_stop = True

    def check_pruned(self) -> None:
        """Raise the recorded ``TrialPruned`` (only needed with ``raise_on_prune=False``)."""
        if self.pruned is not None:
            raise self.pruned


def callback_from_config(
    section: Mapping[str, Any] | Any | None, monitor: str
) -> OptunaPruningCallback | None:
    """The pruning callback for a sweep trial, or None when training by hand."""
    reporter = TrialReporter.from_config(section)
    return None if reporter is None else OptunaPruningCallback(monitor, reporter)
