"""The programs' first frame: ``narm-train``, ``narm-sweep``, ``narm-recommend`` (and ``train.py``, ``sweep.py``,
``python -m narm_lightning.serving``) start here. It imports nothing heavy at module level, so that the two ways a
program can end before its own handlers exist end cleanly too:

* Ctrl-C (or, for ``narm-train``, SIGTERM) while torch, Lightning or Hydra are still importing, composing or
  reading data (seconds on a cold start): exit 130 (143) and one line, not a page of import frames, and no
  run folder left with only Hydra's files in it;
* a closed pipe (``narm-recommend ... | head -1``, ``narm-sweep --help | head``): stdout is pointed at
  /dev/null (so the interpreter's last flush cannot raise again) and the exit status is 128 + SIGPIPE = 141,
  what ``cat`` gives in the same place.

It is also where ``narm-train`` and ``narm-sweep`` give themselves glibc's heap tunables (a restart before
anything heavy is imported), so a plain ``python train.py`` trains as fast as ``make train``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def clean_exits() -> Iterator[None]:
    """Ctrl-C outside a run's own handlers and a closed stdout end the program without a traceback."""
    from narm_lightning.errors import RunInterrupted  # light: the project's exception classes only

    try:
        yield
    except RunInterrupted as exc:  # SIGTERM while still importing
        print(f"\ninterrupted: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("\ninterrupted (SIGINT) before anything was started; nothing to resume.", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        sys.exit(128 + signal.SIGPIPE)


def _terminated(signum: int, frame: object) -> None:
    from narm_lightning.errors import RunInterrupted

    raise RunInterrupted("SIGTERM", 128 + signal.SIGTERM,
                         "stopped by SIGTERM before any epoch was saved; nothing to resume: run the command again.",
                         begun=_hydra_output_dir())


def _hydra_output_dir() -> Path | None:
    """The folder of the Hydra job under way, if one is (Hydra forgets it when the signal unwinds its job);
    ``cli.single_run_dir`` looks it up, once Hydra is loaded at all (importing it here would be the heavy part)."""
    if "hydra.core.hydra_config" not in sys.modules:
        return None
    from narm_lightning.cli.exits import single_run_dir

    return single_run_dir()


def stop_on_sigterm_until_lightning() -> None:
    """SIGTERM before training starts (importing, composing, reading data) ends the run as ``RunInterrupted``, so its
    entry point removes the run folder it began (the default action killed the process and left ``.hydra/``)."""
    signal.signal(signal.SIGTERM, _terminated)


def hand_sigterm_to_lightning() -> None:
    """Back to the default before ``Trainer.fit``: Lightning installs its own handler (a graceful stop after the
    step) and would also call ours, which stops at once."""
    if signal.getsignal(signal.SIGTERM) is _terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


KEEP_ENV = "NARM_KEEP_ENV"  # =1: never restart with the heap tunables (a debugger, a profiler, a wrapper's own)


def with_heap_tunables() -> None:
    """Restart this process once with glibc's heap tunables (``hostcheck.RECOMMENDED_TUNABLES``) when they are not
    in its environment: glibc reads them only at process start, and training steps run ~1.3-1.6x faster with
    them (docs/performance.md). Tunables the user set keep their values; ``NARM_KEEP_ENV=1`` opts out. Runs
    before torch is imported, so the restart costs milliseconds."""
    if os.environ.get(KEEP_ENV) == "1" or not sys.platform.startswith("linux"):
        return
    from narm_lightning.training.hostcheck import RECOMMENDED_TUNABLES

    current = [t for t in os.environ.get("GLIBC_TUNABLES", "").split(":") if t]
    named = {t.split("=", 1)[0] for t in current}
    missing = [t for t in RECOMMENDED_TUNABLES if t.split("=", 1)[0] not in named]
    if not missing:
        return
    os.environ["GLIBC_TUNABLES"] = ":".join([*current, *missing])
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])  # noqa: S606 - this very command, again


def train_main() -> None:
    """``narm-train`` / ``python train.py``."""
    with_heap_tunables()
    stop_on_sigterm_until_lightning()
    with clean_exits():
        from narm_lightning.cli.apps import train_main as main

        main()


def sweep_main() -> None:
    """``narm-sweep`` / ``python sweep.py``."""
    with_heap_tunables()
    with clean_exits():
        from narm_lightning.cli.apps import sweep_main as main

        main()


def recommend_main() -> None:
    """``narm-recommend`` / ``python -m narm_lightning.serving``."""
    with clean_exits():
        from narm_lightning.serving.cli import main

        main()
