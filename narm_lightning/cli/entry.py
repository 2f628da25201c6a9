"""The programs' first frame: ``narm-train``, ``narm-sweep``, ``narm-recommend`` (and ``train.py``, ``sweep.py``,
``python -m narm_lightning.serving``) start here. It imports nothing heavy at module level, so that the two ways a
program can end before its own handlers exist end cleanly too:

* Ctrl-C (or, for ``narm-train``, SIGTERM) while torch, Lightning or Hydra are still importing, composing or
  reading data (seconds on a cold start): exit 130 (143) and one line, not a page of import frames, and no
  run folder left with only Hydra's files in it. A signal that comes inside an import is raised once it has
  returned (``_stopped``): ``narm-train`` until training starts, the others around their entry's import;
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
from types import FrameType


@contextlib.contextmanager
def clean_exits() -> Iterator[None]:
    """Ctrl-C outside a run's own handlers and a closed stdout end the program without a traceback."""
    from narm_lightning.errors import RunInterrupted  # light: the project's exception classes only

    try:
        yield
    except RunInterrupted as exc:  # SIGTERM or Ctrl-C (narm-train) before Hydra has begun the run
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


_deferred: set[int] = set()  # signals that came while a module was importing, raised once the import returns


def _stopped(signum: int, frame: FrameType | None) -> None:
    """SIGTERM / SIGINT before training: end the run as ``RunInterrupted`` (its entry point removes the run folder
    it began; the default action killed the process and left ``.hydra/``), but never inside an import.

    Why: an exception raised in a module's import-time code is taken for that module's own failure by whatever
    imports it. Measured (SIGTERM at 25 ms steps over a run's start): numpy's lazy ``__getattr__`` re-imported a
    half-made module into a ``RecursionError``, pybind11 and a C extension refused a second load
    (``ImportError``), each exit 1 with a traceback; and one run under load lost the signal entirely and trained
    on. So inside an import the signal is only noted, and ``raise_if_stopped`` raises it where the import has
    returned; a second signal while one is noted stops at once.
    """
    if not _noted_inside_import(signum, frame):
        raise _interruption(signum)


@contextlib.contextmanager
def ctrl_c_after_imports() -> Iterator[None]:
    """Ctrl-C while the block imports (torch: a second or more) is raised as ``KeyboardInterrupt`` once the block
    has ended, not inside an import (why: ``_stopped``); elsewhere in the block at once, as usual."""
    previous = signal.signal(signal.SIGINT, _ctrl_c)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if signal.SIGINT in _deferred:
        _deferred.discard(signal.SIGINT)
        raise KeyboardInterrupt


def _ctrl_c(signum: int, frame: FrameType | None) -> None:
    if not _noted_inside_import(signum, frame):
        raise KeyboardInterrupt


def _noted_inside_import(signum: int, frame: FrameType | None) -> bool:
    """True when the signal came inside an import and is now noted (none was yet); False when it is to be
    raised here (then it is no longer noted)."""
    if signum not in _deferred and _inside_import(frame):
        _deferred.add(signum)
        return True
    _deferred.discard(signum)
    return False


def _inside_import(frame: FrameType | None) -> bool:
    """True when importlib's machinery is on the stack (a module's body, an extension's init, a lazy import)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib."):
            return True
        frame = frame.f_back
    return False


def _interruption(signum: int) -> BaseException:
    from narm_lightning.errors import RunInterrupted

    name = signal.Signals(signum).name
    return RunInterrupted(name, 128 + signum,
                          f"stopped by {name} before any epoch was saved; nothing to resume: run the command again.",
                          begun=_hydra_output_dir())


def raise_if_stopped() -> None:
    """Where a heavy import has returned: a signal noted during it ends the run here."""
    if _deferred:
        signum = min(_deferred)
        _deferred.clear()
        raise _interruption(signum)


def _hydra_output_dir() -> Path | None:
    """The folder of the Hydra job under way, if one is (Hydra forgets it when the signal unwinds its job);
    ``cli.single_run_dir`` looks it up, once Hydra is loaded at all (importing it here would be the heavy part)."""
    if "hydra.core.hydra_config" not in sys.modules:
        return None
    from narm_lightning.cli.exits import single_run_dir

    return single_run_dir()


def stop_on_signals_until_lightning() -> None:
    """SIGTERM and Ctrl-C before training starts (importing, composing, reading data) end the run through
    ``_stopped``."""
    signal.signal(signal.SIGTERM, _stopped)
    signal.signal(signal.SIGINT, _stopped)


def hand_signals_to_lightning() -> None:
    """Before ``Trainer.fit``: a signal noted during the last imports ends the run now; then the defaults come
    back, since Lightning installs its own SIGTERM handler (a graceful stop after the step) and would also call
    ours, which stops at once, and ``training.interrupts`` takes Ctrl-C the same way."""
    raise_if_stopped()
    if signal.getsignal(signal.SIGTERM) is _stopped:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if signal.getsignal(signal.SIGINT) is _stopped:
        signal.signal(signal.SIGINT, signal.default_int_handler)


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
    stop_on_signals_until_lightning()
    with clean_exits():
        from narm_lightning.cli.apps import train_main as main

        raise_if_stopped()
        main()


def sweep_main() -> None:
    """``narm-sweep`` / ``python sweep.py``."""
    with_heap_tunables()
    with clean_exits():
        with ctrl_c_after_imports():
            from narm_lightning.cli.apps import sweep_main as main
        main()


def recommend_main() -> None:
    """``narm-recommend`` / ``python -m narm_lightning.serving``."""
    with clean_exits():
        with ctrl_c_after_imports():
            from narm_lightning.serving.cli import main  # torch: most of the program's start
        main()
