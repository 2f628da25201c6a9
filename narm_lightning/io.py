"""Files: atomic writes (a temp file in the same folder, fsync, then rename, so a kill never half-writes),
and the check every reader makes before it opens a file."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from narm_lightning.errors import DataError, WriteFailed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def _atomic_target(path: Path) -> Iterator[tuple[int, str]]:
    """``(fd, temp path)`` beside ``path``; renamed over it when the block ends, removed on any failure.

    The temp file lives in the target's folder (same filesystem, so ``os.replace`` is a rename, not a
    copy); the caller fsyncs before the block ends. An ``OSError`` becomes ``WriteFailed`` naming ``path``.
    """
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
        yield fd, tmp
        os.replace(tmp, path)
    except WriteFailed:
        raise
    except OSError as exc:  # ENOSPC, EACCES, EROFS...: one paragraph naming the file, not a traceback
        raise WriteFailed(path, exc) from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open ``path`` for writing so that readers see the old file or the whole new one, never a part."""
    with _atomic_target(Path(path)) as (fd, _), os.fdopen(fd, mode, encoding=encoding) as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temp file name beside ``path`` for writers that want a name (``torch.jit.save``); it is fsynced and
    renamed over ``path`` when the block ends, so a failed or killed write never shows under the name."""
    with _atomic_target(Path(path)) as (fd, tmp):
        os.close(fd)
        yield Path(tmp)
        fsync_path(tmp)


def fsync_path(path: str | Path) -> None:
    """Flush a file written by someone else's writer (ONNX's ``save``) to disk before it is renamed into place."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Remove the temp files that writes cut short by ``kill -9`` left in ``folder`` (``.<name>.<random>.tmp``,
    20 MB for a checkpoint). Only for a folder this process holds (the run lock): no live writer's file goes."""
    folder = Path(folder)
    stale = [p for p in folder.glob(".*.tmp") if p.is_file()] if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's content, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> ``{"a.b.c": leaf}`` (an empty mapping is kept as a leaf)."""
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        if not node and prefix:
            out[prefix[:-1]] = {}
        return out
    return {prefix[:-1]: node}


def require_regular_file(path: str | Path, what: str) -> Path:
    """``path`` if it is a non-empty regular file, else a ``DataError`` saying what it should be.

    Only regular files: opening a FIFO blocks until a writer comes, and a device can stream forever.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found; expected {what}")
    if not path.is_file():
        kind = "a directory" if path.is_dir() else "not a regular file (a pipe, socket or device)"
        raise DataError(f"{path}: is {kind}; expected {what}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty; expected {what}")
    return path


def read_text_lines(path: str | Path, what: str) -> list[str]:
    """The lines of a UTF-8 text file, split on LF only (line numbers match editors and ``wc -l``).

    A CR before the LF and a byte-order mark are dropped, one trailing newline is allowed; a NUL byte
    (a binary file), bytes that are not UTF-8 and an empty file are ``DataError`` naming the line.
    """
    path = require_regular_file(path, what)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc}); expected {what}") from None
    nul = raw.find(b"\x00")
    if nul >= 0:
        line = raw.count(b"\n", 0, nul) + 1
        raise DataError(f"{path}, line {line}: contains a NUL byte; expected a text file, not a binary one: {what}")
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark (Excel's UTF-8) is not part of the first field
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}, line {line}: is not UTF-8 text (byte {exc.start}); expected {what}") from None
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise DataError(f"{path}: file is empty; expected {what}")
    return lines
