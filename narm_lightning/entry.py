"""The programs' first frame: ``narm-train``, ``narm-sweep``, ``narm-recommend`` (and ``train.py``, ``sweep.py``,
``python -m narm_lightning.serving``) start here. It imports nothing heavy at module level, so that the two ways a
program can end before its own handlers exist end cleanly too:

* Ctrl-C while torch, Lightning or Hydra are still importing (seconds on a cold start): exit 130 and one line,
  not a page of import frames;
* a closed pipe (``narm-recommend ... | head -1``, ``narm-sweep --help | head``): stdout is pointed at
  /dev/null (so the interpreter's last flush cannot raise again) and the exit status is 128 + SIGPIPE = 141,
  what ``cat`` gives in the same place.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def clean_exits() -> Iterator[None]:
    """Ctrl-C outside a run's own handlers and a closed stdout end the program without a traceback."""
    try:
        yield
    except KeyboardInterrupt:
        print("\ninterrupted (SIGINT) before anything was started; nothing to resume.", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        sys.exit(128 + signal.SIGPIPE)


def train_main() -> None:
    """``narm-train`` / ``python train.py``."""
    with clean_exits():
        from narm_lightning.apps import train_main as main

        main()


def sweep_main() -> None:
    """``narm-sweep`` / ``python sweep.py``."""
    with clean_exits():
        from narm_lightning.apps import sweep_main as main

        main()


def recommend_main() -> None:
    """``narm-recommend`` / ``python -m narm_lightning.serving``."""
    with clean_exits():
        from narm_lightning.serving.cli import main

        main()
