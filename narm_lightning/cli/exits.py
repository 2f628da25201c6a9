"""What entry points share: turn the project's errors into one clear paragraph and an exit code."""

from __future__ import annotations

import difflib
import errno
import os
import re
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from hydra.types import RunMode

from narm_lightning.errors import ConfigError, NarmError, RunInterrupted, WriteFailed

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
        if exc.run_dir is None:  # nothing to resume: a folder the run began and wrote nothing of its own into goes
            _remove_if_untouched(single_run_dir() or exc.begun)
        print(f"\ninterrupted: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:  # Ctrl-C outside training (reading data, composing): nothing to resume
        print("\ninterrupted (SIGINT) before any epoch was saved; nothing to resume.", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    except NarmError as exc:
        fail(exc)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:  # Hydra's run folder from data.dataset, or a path given as a key
            name = str(exc.filename or "a path")
            shown = name if len(name) <= 100 else f"{name[:60]}...{name[-30:]} ({len(name):,} characters)"
            fail(ConfigError(f"{shown}: a file or folder name longer than the filesystem allows (255 bytes a "
                             "name); shorten the key that names it (data.dataset names the run folder, or "
                             "hydra.run.dir)."))
        if exc.errno not in DISK_ERRNOS:
            raise
        fail(WriteFailed(exc.filename or "a file", exc))


DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES}


def single_run_dir() -> Path | None:
    """The run folder Hydra made for this (single) run, if any."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized() and HydraConfig.get().mode != RunMode.MULTIRUN:
            return Path(HydraConfig.get().runtime.output_dir)
    except Exception:  # noqa: BLE001 - cleanup is best effort, the message matters
        return None
    return None


def fail(exc: NarmError) -> NoReturn:
    """Print ``error: <message>`` to stderr, remove the run folder if the run wrote nothing, exit 2."""
    _remove_if_untouched(single_run_dir())
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)


def composition_error(exc: BaseException, program: str) -> ConfigError:
    """Hydra's and OmegaConf's composition errors as one paragraph, with a guess at a misspelled key."""
    text = " ".join(str(exc).split())
    cause = exc.__cause__
    match = re.search(r"Could not override '([^']+)'", text)
    if match and "not in struct" in f"{text} {cause}":
        key = match[1]
        from narm_lightning.config.keys import data_key_owner, known_keys

        owner = data_key_owner(key)
        if owner:  # a real key, of the other kind of dataset: "did you mean <the same key>?" would puzzle
            return ConfigError(f"{key} is not a key of this dataset's config: it belongs to {owner}; "
                               f"`{program} --help` lists every key.")
        close = difflib.get_close_matches(key, known_keys(), n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return ConfigError(f"{key} is not a key of this config{hint}; `{program} --help` lists every key.")
    text = text.split(" Config search path:")[0]  # Hydra's search path: noise to a user
    if cause is not None and str(cause).split("\n")[0] not in text:
        text += " " + " ".join(str(cause).split("\n")[0].split())
    if type(exc).__name__ == "OverrideParseException":
        text = f"the command line does not parse: {text}"
    return ConfigError(f"{text} (`{program} --help` lists every group, option and key)")


def run_hydra_app(app: Callable[[], Any], program: str) -> Any:
    """Run a ``@hydra.main`` app so that a command line Hydra cannot compose (an unknown key, a group option
    that does not exist, a syntax error) is one paragraph and exit status 2, like every other bad input."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    # Hydra prints its own errors and exits 1 unless HYDRA_FULL_ERROR is set; set, it raises them to us.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        return run_or_exit(app)
    except (HydraException, OmegaConfBaseException) as exc:
        fail(composition_error(exc, program))
    except (ValueError, TypeError) as exc:  # Hydra's composer raises some of its refusals as plain errors
        if not _raised_by_hydra(exc):
            raise
        fail(composition_error(exc, program))


def _raised_by_hydra(exc: BaseException) -> bool:
    """True when the innermost frame of ``exc`` is Hydra's or OmegaConf's code (not this project's, not torch's)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = Path(tb.tb_frame.f_code.co_filename).parts if tb is not None else ()
    return "hydra" in where or "omegaconf" in where
