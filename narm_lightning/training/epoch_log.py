"""One line per epoch, as RecBole users read them: epoch, train loss, each valid metric, seconds, best so far and
the patience left. Always in the run's log file (``train.log``); on the console whenever no progress bar is drawn
there (the bar is off, or stdout is a file or a pipe, where a bar would be hundreds of carriage returns).

Lightning has no per-epoch text log (its loggers write metrics files; its bar is redrawn in place), so this small
callback writes one.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import EarlyStopping

EPOCH_LOGGER = "narm_lightning.epochs"
log = logging.getLogger(EPOCH_LOGGER)


def bar_shown(enabled: bool) -> bool:
    """Whether a progress bar is drawn: asked for, and stdout a terminal (a file or pipe gets epoch lines)."""
    return bool(enabled) and sys.stdout.isatty()


class _FileOnly(logging.Filter):
    """On console handlers while a bar is drawn: epoch lines go to the log file only (the bar shows them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(EPOCH_LOGGER)


def _console_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


def _number(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else str(value)


class EpochLog(pl.Callback):
    """Writes ``epoch 2 (3/300) | train loss 7.1021 | valid mrr@10 0.0412 ndcg@10 ... | 12.3 s | best mrr@10 0.0420
    (epoch 1), patience 10/11`` after each epoch, on the first process only. Epochs count from 0, as RecBole's log,
    ``results.json`` and the final table count them; the bracket says how far through ``epochs`` the run is."""

    def __init__(self, monitor: str, bar: bool) -> None:
        super().__init__()
        self.monitor = monitor  # e.g. valid/mrr@10
        self.bar = bar
        self._filter = _FileOnly()
        self._started = 0.0
        self._trained: float | None = None
        self.seconds: list[float] = []  # each epoch this process ran: training and validation
        self.train_seconds: list[float] = []  # the training part alone (what RecBole's _train_epoch times)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.bar:
            for handler in _console_handlers():
                handler.addFilter(self._filter)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for handler in _console_handlers():
            handler.removeFilter(self._filter)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started, self._trained = time.perf_counter(), None

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit" and self._trained is None:  # the epoch's training batches are done
            self._trained = time.perf_counter() - self._started

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Runs after the epoch's validation (Lightning validates inside the training epoch)."""
        if trainer.sanity_checking:
            return
        seconds = time.perf_counter() - self._started
        self.seconds.append(seconds)
        self.train_seconds.append(seconds if self._trained is None else self._trained)
        if trainer.is_global_zero:
            log.info("%s", self.line(trainer, pl_module, seconds))

    def line(self, trainer: pl.Trainer, pl_module: pl.LightningModule, seconds: float) -> str:
        metrics = trainer.callback_metrics
        parts = [f"epoch {trainer.current_epoch} ({trainer.current_epoch + 1}/{trainer.max_epochs})"]
        loss = metrics.get("train/loss_epoch", metrics.get("train/loss"))
        if loss is not None:
            parts.append(f"train loss {_number(float(loss))}")
        history: list[dict[str, Any]] = getattr(pl_module, "valid_history", [])
        validated = bool(history) and history[-1].get("epoch") == trainer.current_epoch
        if validated:
            shown = " ".join(f"{k} {_number(v)}" for k, v in history[-1].items() if k != "epoch")
            parts.append(f"valid {shown}")
        parts.append(f"{seconds:.1f} s")
        stopper = next((c for c in trainer.callbacks if isinstance(c, EarlyStopping)), None)
        name = self.monitor.split("/", 1)[-1]
        finite = [h for h in history if name in h and math.isfinite(h[name])]
        if finite:
            best = max(finite, key=lambda h: (h[name], -h["epoch"]))
            text = f"best {name} {_number(best[name])} (epoch {best['epoch']})"
            if stopper is not None:  # validated epochs since the best, counted here: EarlyStopping may run after us
                since = sum(1 for h in history if h["epoch"] > best["epoch"])
                text += f", patience {stopper.patience - since}/{stopper.patience}"
            parts.append(text)
        return " | ".join(parts)
