"""Loading the pickles that NARM/SR-GNN code bases exchange, without ever executing anything.

A pickle can name any importable callable and have it called on load (``os.system`` included).
The session splits those code bases write only hold lists, tuples and ints, so the unpickler
here refuses every class: no global is ever looked up, hence nothing named in the file can run.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from narm_lightning.errors import DataError


class _ClassRefusingUnpickler(pickle.Unpickler):
    """An unpickler for plain containers only: every class or function reference is an error."""

    def __init__(self, file: io.BufferedIOBase, path: Path) -> None:
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        raise DataError(
            f"{self._path}: the pickle tries to load the class or function {module}.{name}; "
            "expected only plain lists, tuples and ints (refused, nothing was executed)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(
            f"{self._path}: the pickle refers to an external object ({pid!r}); "
            "expected only plain lists, tuples and ints"
        )


def load_plain_pickle(path: Path) -> Any:
    """Load ``path`` if it holds only plain data (lists, tuples, dicts, ints, floats, strings).

    Raises DataError for a missing file, a directory, an empty or truncated file, or a pickle that
    names any class.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found; expected a pickle written by NARM/SR-GNN preprocessing")
    if not path.is_file():
        raise DataError(f"{path}: is a directory, not a file; expected a pickle file")
    data = path.read_bytes()
    if not data:
        raise DataError(f"{path}: file is empty; expected a pickle")
    unpickler = _ClassRefusingUnpickler(io.BytesIO(data), path)
    try:
        obj = unpickler.load()
    except DataError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        AttributeError,
        MemoryError,
        OverflowError,
        UnicodeDecodeError,
    ) as exc:
        raise DataError(
            f"{path}: not a readable pickle (truncated or corrupt: {type(exc).__name__}: {exc}); "
            "expected a complete pickle of plain lists"
        ) from None
    return obj
