"""Ctrl-C (SIGINT) taken at the next batch boundary, as Lightning already takes SIGTERM.

Why: Python raises ``KeyboardInterrupt`` wherever the main thread happens to be, and with the fused GRU that is
mostly inside ``torch.compile``'s call machinery (its kernels run twice per time step), which can swallow it:
measured, a run sent SIGINT after its first epoch trained on to ``max_epochs`` and exited 0. Here the signal
only marks the run; the next batch boundary raises ``KeyboardInterrupt`` from a callback, which Lightning turns
into its graceful stop (``last.ckpt`` kept, ``trainer.interrupted``), so ``train`` exits 130 with the resume
command. A second Ctrl-C before that boundary interrupts at once, as usual.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

from narm_lightning.errors import RunInterrupted
from narm_lightning.training.run_folder import LAST_CHECKPOINT


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


@contextlib.contextmanager
def stopped_by_signals(trainer: pl.Trainer, run_dir: Path) -> Iterator[None]:
    """Lightning's ways of stopping on a signal, as one ``RunInterrupted`` that says how to resume.

    On SIGTERM Lightning ends the loop with ``SIGTERMException``, a ``SystemExit`` with no code (exit 0:
    "done" to a scheduler); on Ctrl-C it calls ``sys.exit(1)``. Both keep the last finished epoch in
    ``last.ckpt``, written atomically.
    """
    try:
        yield
    except SIGTERMException:
        raise _interrupted("SIGTERM", trainer, run_dir) from None
    except SystemExit:
        if trainer.interrupted:  # Lightning's KeyboardInterrupt handler
            raise _interrupted("SIGINT", trainer, run_dir) from None
        raise


def _interrupted(name: str, trainer: pl.Trainer, run_dir: Path) -> RunInterrupted:
    last = run_dir / LAST_CHECKPOINT
    where = f"during epoch {trainer.current_epoch}" if trainer.state.fn == "fit" else "while testing"
    if last.is_file():
        how = (f"{last} holds every finished epoch; resume with:\n  python train.py resume={run_dir}")
    else:
        how = "no epoch had finished, so there is nothing to resume: run the command again."
    return RunInterrupted(name, 128 + getattr(signal, name), f"stopped by {name} {where}; {how}",
                          run_dir=run_dir.resolve() if last.is_file() else None)
