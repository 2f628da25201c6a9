"""What a user reads on every run: third-party adverts and deprecation notes filtered narrowly (by logger
and message, so anything else still shows), and a progress bar that fits 100 columns.

Written here because Lightning has no switch for its advert or its device lines, and its bar shows the
run version and every logged metric, which pushes the bar itself down to ``|█|``.
"""

from __future__ import annotations

import logging
import re
import shutil
import sys
import warnings
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm

# Lightning's info lines that say nothing to a user of this program (each matched at its start).
LIGHTNING_NOISE = (
    "💡 Tip:",                                    # adverts for Lightning's cloud products
    "GPU available:", "TPU available:",           # device lines: the run's precision line says what runs
    "Using bfloat16 Automatic Mixed Precision", "Using 16bit Automatic Mixed Precision",  # ours says it too
    "Restoring states from the checkpoint path",  # each test of best.ckpt
    "Loaded model weights from the checkpoint",
    "`Trainer.fit` stopped:",                     # epochs reached: the epoch lines and the final table say so
)
# Deprecation notes raised inside Lightning itself, not by this project's calls (torch 2.13 vs PL 2.6).
WARNING_NOISE = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",
    # a resumed run writes into its own checkpoints/ on purpose; a new run never gets a used folder (refused)
    r"Checkpoint directory .* exists and is not empty",
    # a small dataset's epoch is shorter than the step-logging interval: epoch metrics are logged all the same
    r"The number of training batches \(\d+\) is smaller than the logging interval",
)
BAR_WIDTH = 100


class _DropMessages(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefixes)


_quieted = False


def quiet_third_party() -> None:
    """Install the filters once per process (idempotent)."""
    global _quieted
    if _quieted:
        return
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DropMessages(LIGHTNING_NOISE))
    for pattern in WARNING_NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    _quieted = True


class CompactProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, at most 100 columns wide, showing the train loss and the monitored valid metric.

    The run's version (``v_num``) and the other metrics stay in the loggers and the final table.
    """

    def __init__(self, monitor: str | None = None) -> None:
        super().__init__()
        self.monitor = monitor

    @staticmethod
    def _width() -> int:
        return min(shutil.get_terminal_size((BAR_WIDTH, 20)).columns, BAR_WIDTH)

    def _bar(self, desc: str, position: int, leave: bool) -> Tqdm:
        return Tqdm(desc=desc, position=position, disable=self.is_disabled, leave=leave, ncols=self._width(),
                    file=sys.stdout, smoothing=0, bar_format=self.BAR_FORMAT)

    def init_train_tqdm(self) -> Tqdm:
        return self._bar(self.train_description, 2 * self.process_position, leave=True)

    def init_validation_tqdm(self) -> Tqdm:
        has_main_bar = self.trainer.state.fn != "validate"
        return self._bar(self.validation_description, 2 * self.process_position + has_main_bar, leave=not has_main_bar)

    def init_test_tqdm(self) -> Tqdm:
        return self._bar("Testing", 2 * self.process_position, leave=True)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        shown: dict[str, Any] = {}
        for key, value in items.items():
            if key.startswith("train/loss") and "loss" not in shown:
                shown["loss"] = value
            elif self.monitor is not None and key == self.monitor:
                shown[re.sub(r"^valid/", "", key)] = value
        return shown
