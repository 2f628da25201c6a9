"""What entry points share: turn the project's errors into one clear paragraph and an exit code."""

from __future__ import annotations

import errno
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from hydra.types import RunMode

from narm_lightning.errors import NarmError, RunInterrupted, WriteFailed

HYDRA_ONLY = {".hydra", "train.log", "sweep.log"}


def _remove_if_untouched(run_dir: Path | None) -> None:
    """A run that failed before writing anything leaves no folder behind (Hydra makes one up front)."""
    if run_dir is not None and run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= HYDRA_ONLY:
        shutil.rmtree(run_dir, ignore_errors=True)
        # outputs/<dataset>/ and outputs/ were made for this run too when it was the first: empty, they go
        for parent in list(run_dir.resolve().parents)[:2]:
            if parent == Path.cwd().resolve() or any(parent.iterdir()):
                break
            parent.rmdir()


def run_or_exit(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn``; a ``NarmError`` prints ``error: <message>`` to stderr and exits with status 2.

    A run stopped by SIGTERM or SIGINT prints how to resume and exits 143 / 130 (128 + the signal), so a
    scheduler never takes a stopped run for a finished one.
    """
    try:
        return fn(*args, **kwargs)
    except RunInterrupted as exc:
        print(f"\ninterrupted: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:  # Ctrl-C outside training (reading data, composing): nothing to resume
        print("\ninterrupted (SIGINT) before any epoch was saved; nothing to resume.", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    except NarmError as exc:
        fail(exc)
    except OSError as exc:
        if exc.errno not in DISK_ERRNOS:
            raise
        fail(WriteFailed(exc.filename or "a file", exc))


DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES}


def fail(exc: NarmError) -> NoReturn:
    """Print ``error: <message>`` to stderr, remove the run folder if the run wrote nothing, exit 2."""
    run_dir = None
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized() and HydraConfig.get().mode != RunMode.MULTIRUN:
            run_dir = Path(HydraConfig.get().runtime.output_dir)
    except Exception:  # noqa: BLE001 - cleanup is best effort, the message matters
        run_dir = None
    _remove_if_untouched(run_dir)
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
