"""RecBole atomic files (``<name>.inter``: TSV, header ``field:type``) -> plain column arrays.

Readers know nothing of models: they return numpy columns and raise only ``DataError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from narm_lightning.errors import DataError
from narm_lightning.io import read_text_lines

ATOMIC_TYPES = ("token", "float", "token_seq", "float_seq")
HEADER_EXAMPLE = "'user_id:token<TAB>item_id:token'"


@dataclass(frozen=True)
class AtomicTable:
    """The requested columns of an atomic file: tokens as object arrays of ``str``, floats as ``float64``,
    token sequences as object arrays of tuples of ``str`` (RecBole's ``seq_separator``, a space)."""

    path: Path
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0


def _parse_header(path: Path, line: str) -> list[tuple[str, str]]:
    """``[(name, type), ...]`` of the header line, in linear time (a header may have a million fields)."""
    fields = []
    seen: set[str] = set()
    for column, spec in enumerate(line.split("\t"), start=1):
        name, sep, kind = spec.partition(":")
        if not sep or not name or kind not in ATOMIC_TYPES:
            raise DataError(
                f"{path}, line 1, column {column}: header entry {spec[:80]!r} is not 'name:type' with type one of "
                f"{', '.join(ATOMIC_TYPES)}."
            )
        if name in seen:
            raise DataError(f"{path}, line 1, column {column}: field {name!r} appears twice in the header.")
        seen.add(name)
        fields.append((name, kind))
    return fields


def read_atomic(path: str | Path, fields: dict[str, str]) -> AtomicTable:
    """Read the columns named in ``fields`` (name -> expected type, ``token``, ``float`` or ``token_seq``).

    Every row must have all header columns; a missing field, a non-numeric float or a short row is a
    ``DataError`` naming the file, the line and what was expected.
    """
    path = Path(path)
    lines = read_text_lines(path, f"a RecBole atomic file (TSV with a header line like {HEADER_EXAMPLE})")
    if not lines[0].strip():
        raise DataError(f"{path}, line 1: is blank; expected a header line like {HEADER_EXAMPLE}.")
    header = _parse_header(path, lines[0])
    index = {name: i for i, (name, _) in enumerate(header)}
    missing = [name for name in fields if name not in index]
    if missing:
        have = ", ".join(f"{n}:{t}" for n, t in header[:12]) + (f", ... ({len(header):,} fields)"
                                                                 if len(header) > 12 else "")
        raise DataError(f"{path}, line 1: the header has no field {', '.join(missing)} (it has: {have}).")
    for name, kind in fields.items():
        got = header[index[name]][1]
        if got != kind:
            raise DataError(f"{path}, line 1: field {name!r} has type {got!r}; expected {kind!r}.")
    n_cols = len(header)
    # blank lines are skipped; a line of tabs is a row of empty fields (an error below), never dropped
    line_numbers = [i for i, line in enumerate(lines[1:], start=2) if line.strip() or "\t" in line]
    rows = [lines[i - 1].split("\t") for i in line_numbers]
    last_line = len(lines)
    for lineno, row in zip(line_numbers, rows, strict=True):
        if len(row) != n_cols:
            hint = " (the file looks truncated)" if lineno == last_line and len(row) < n_cols else ""
            raise DataError(f"{path}, line {lineno}: {len(row)} columns; expected {n_cols} as in the header{hint}.")
    if not rows:
        raise DataError(f"{path}: has a header but no rows.")
    columns = {name: _column(path, name, kind, [row[index[name]] for row in rows], line_numbers)
               for name, kind in fields.items()}
    return AtomicTable(path=path, columns=columns)


def _column(path: Path, name: str, kind: str, col: list[str], line_numbers: list[int]) -> np.ndarray:
    """One field's values as its type says: float64 numbers (finite), token tuples, or tokens (non-empty)."""
    if kind == "float":
        try:
            values = np.asarray(col, dtype=np.float64)
        except ValueError:  # find the first bad value; numpy and Python disagree on a few spellings
            parsed = []
            for lineno, value in zip(line_numbers, col, strict=True):
                try:
                    parsed.append(float(value))
                except ValueError:
                    raise DataError(f"{path}, line {lineno}: field {name!r} is {value!r}; expected a number.") from None
            values = np.asarray(parsed, dtype=np.float64)
        if not np.isfinite(values).all():
            bad = line_numbers[int(np.flatnonzero(~np.isfinite(values))[0])]
            raise DataError(f"{path}, line {bad}: field {name!r} is not a finite number.")
        return values
    if kind == "token_seq":  # an empty sequence is allowed by the format; the caller decides
        seqs = np.empty(len(col), dtype=object)  # filled one by one: numpy would make equal lengths a 2-D array
        for i, value in enumerate(col):
            seqs[i] = tuple(value.split(" ")) if value else ()
        return seqs
    empty = [ln for ln, v in zip(line_numbers, col, strict=True) if not v]
    if empty:
        raise DataError(f"{path}, line {empty[0]}: field {name!r} is empty; expected a token.")
    # objects, not a fixed-width str array: numpy would size every cell for the longest token
    return np.asarray(col, dtype=object)
