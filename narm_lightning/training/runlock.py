"""One writer per run folder: an exclusive lock held by the process that trains into it.

Two processes writing one folder (the same ``hydra.run.dir`` given twice, ``resume=`` of a run that is still
training) would mix their checkpoints and metrics and end in tracebacks. The lock is ``fcntl.flock`` on the
folder itself (Linux locks a directory's descriptor like a file's): no lock file joins the run's files, and
the kernel drops the lock when its process ends, however it ends (``kill -9`` included), so a lock left by a
dead process is simply taken over. The holder's pid is read back from ``/proc/locks`` for the message.
``flock`` is advisory and local: on NFS it may not exclude a process on another host.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from narm_lightning.errors import ConfigError

_held: dict[Path, int] = {}  # resolved run folder -> the open, locked descriptor of that folder


def lock_run_dir(run_dir: str | Path) -> None:
    """Hold ``run_dir``'s lock for the rest of this process (or until ``release_run_dir``); a ``ConfigError``
    naming the holder when another live process holds it. Taking a lock this process holds is a no-op."""
    run_dir = Path(run_dir)
    key = run_dir.resolve()
    if key in _held:
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise ConfigError(f"{run_dir}: cannot be used as a run folder ({exc.strerror or exc}); give another "
                          "hydra.run.dir or fix its permissions.") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = lock_holder(fd)
        os.close(fd)
        raise ConfigError(
            f"{run_dir} is in use: another process ({holder}) is writing it; two runs in one folder would mix "
            f"their checkpoints and metrics. Wait until it ends (or stop it), then continue it with "
            f"resume={run_dir}; or give this run another hydra.run.dir."
        ) from None
    _held[key] = fd


def lock_holder(fd: int) -> str:
    """``pid N`` of the process holding a flock on ``fd``'s file, from ``/proc/locks``; ``unknown pid`` elsewhere."""
    st = os.fstat(fd)
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return "unknown pid"
    for line in lines:  # "1: FLOCK  ADVISORY  WRITE 4242 00:2a:1234 0 EOF"
        fields = line.split()
        if "FLOCK" in fields and "->" not in fields and len(fields) >= 6 and fields[5] == inode:
            return f"pid {fields[4]}"
    return "unknown pid"


def release_run_dir(run_dir: str | Path) -> None:
    """Let the folder go (a sweep's next trial in this process writes another folder)."""
    fd = _held.pop(Path(run_dir).resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the last descriptor of the open file drops the flock


def release_run_dirs() -> None:
    """Let every folder this process holds go: a run has ended (one run at a time in a process)."""
    for run_dir in list(_held):
        release_run_dir(run_dir)


def holds_lock(run_dir: str | Path) -> bool:
    return Path(run_dir).resolve() in _held
