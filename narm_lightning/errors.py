"""The project's own exceptions: one family, so entry points can turn them into one-paragraph messages."""

from __future__ import annotations

from pathlib import Path


class NarmError(Exception):
    """Base class for every error the user can fix (bad config, bad data)."""


class ConfigError(NarmError, ValueError):
    """A config key has a value we cannot run with. The message names the key and what was expected."""


class DataError(NarmError, ValueError):
    """A data file is missing or malformed. The message names the file, the line and what was expected."""


class WriteFailed(NarmError, OSError):
    """A file could not be written (a full disk, no permission); ``OSError`` too, with the original errno."""

    def __init__(self, path: object, exc: OSError) -> None:
        self.message = (f"{path}: could not be written ({exc.strerror or exc}); the file as it was before, if "
                        "any, is intact (writes are atomic). Free space or fix permissions, then run again.")
        OSError.__init__(self, exc.errno, self.message)

    def __str__(self) -> str:
        return self.message


class TrialFailed(RuntimeError):
    """A sweep trial's ``NarmError`` as its job's failure: ``<Type>: <message>`` in the log and trials.csv
    (no traceback), the original kept for the sweeper (a refused resume starts the point over)."""

    def __init__(self, error: NarmError) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.error = error


class RunInterrupted(BaseException):  # noqa: N818 - like KeyboardInterrupt: a stop, not an error
    """A run stopped by a signal (SIGTERM from a scheduler, SIGINT from Ctrl-C), with the way back.

    A ``BaseException`` so that nothing catching ``Exception`` (Hydra's job runner, a sweep's trial
    bookkeeping) takes it for an ordinary failure and carries on: the process ends with ``exit_code``
    (128 + the signal number, the shell's convention) and the message says how to resume.
    """

    def __init__(self, signal_name: str, exit_code: int, message: str, run_dir: Path | None = None,
                 begun: Path | None = None) -> None:
        super().__init__(message)
        self.signal_name = signal_name
        self.exit_code = exit_code
        self.run_dir = run_dir  # the run's folder when its last checkpoint can continue it (a sweep re-runs it)
        self.begun = begun  # the folder Hydra had begun when the signal came (removed if it holds only Hydra's files)


def first_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line`` of an exception: third-party messages run to pages, a user needs the gist."""
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:limit]}"
