"""Ctrl-C (SIGINT) taken at the next batch boundary, as Lightning already takes SIGTERM.

Why: Python raises ``KeyboardInterrupt`` wherever the main thread happens to be, and with the fused GRU that is
mostly inside ``torch.compile``'s call machinery (its kernels run twice per time step), which can swallow it:
measured, a run sent SIGINT after its first epoch trained on to ``max_epochs`` and exited 0. Here the signal
only marks the run; the next batch boundary raises ``KeyboardInterrupt`` from a callback, which Lightning turns
into its graceful stop (``last.ckpt`` kept, ``trainer.interrupted``), so ``train`` exits 130 with the resume
command. A second Ctrl-C before that boundary interrupts at once, as usual.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import pytorch_lightning as pl


class DeferredInterrupt(pl.Callback):
    """Installs the SIGINT handler for the duration of a fit/validate/test (main thread only)."""

    def __init__(self) -> None:
        self.pending = False
        self._previous: Any = None
        self._installed = False

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.pending:  # pressed again before the next boundary: do not wait
            raise KeyboardInterrupt
        self.pending = True

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if threading.current_thread() is threading.main_thread() and not self._installed:
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
            self._installed = True

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._installed and signal.getsignal(signal.SIGINT) == self._on_sigint:
            signal.signal(signal.SIGINT, self._previous)
        self._installed = False

    def _check(self, *args: Any) -> None:
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt

    on_train_batch_end = on_validation_batch_end = on_test_batch_end = _check
    on_train_epoch_end = on_validation_epoch_end = _check
