"""A user's own click log (CSV, TSV or Parquet, one row a click) -> the protocol's :class:`Clicks`.

Read with Apache Arrow (``pyarrow``), never parsed by hand: its CSV reader streams the file in blocks on every
core and infers each column's type (integers, text, ISO timestamps and dates), its Parquet reader reads only the
columns asked for, and its hash-based dictionary encoding numbers ids in order of first appearance, which
SR-GNN's session order needs (pandas is not a dependency; polars would do as well, but its first-appearance
encoding is not a documented guarantee). YOOCHOOSE's 33 M clicks read in about 7 s.

Every refusal is one paragraph naming the file, the column and the first bad row (a line of a CSV file counts
its header as line 1), and is raised before anything is written.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from narm_lightning.config.data_schema import CLICK_DELIMITERS
from narm_lightning.data.session_split import Clicks, encode
from narm_lightning.errors import DataError
from narm_lightning.io import require_regular_file

SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".parquet": "parquet", ".pq": "parquet"}
BLOCK_BYTES = 1 << 24  # CSV blocks: 16 MiB (Arrow parses each on a thread; memory stays a few blocks)
PARQUET_ROWS = 1 << 20
MILLISECONDS_FROM = 1e11  # epoch numbers from here on are milliseconds (1e11 s is the year 5138)
_UNIT_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


@dataclass(frozen=True)
class ClickColumns:
    """Which column is what: a session (or a user) id, an item id, a time, and what orders a session's clicks."""

    sequence: str  # the session or user column
    item: str
    time: str
    order: str | None = None
    sequence_word: str = "session"  # "session" or "user": how messages and the console call a sequence

    @property
    def needed(self) -> list[str]:
        names = [self.sequence, self.item, self.time] + ([self.order] if self.order else [])
        return list(dict.fromkeys(names))


@dataclass(frozen=True)
class ClickLog:
    """The log read: the protocol's ``Clicks`` (time in whole seconds, order: the exact times or ``order``)."""

    clicks: Clicks
    path: Path
    file_format: str
    delimiter: str | None


def file_format(path: Path, fmt: str) -> str:
    """``auto`` -> csv, tsv or parquet from the suffix; anything else as given."""
    if fmt != "auto":
        return fmt
    found = SUFFIX_FORMATS.get(path.suffix.lower())
    if found is None:
        raise DataError(f"data.path={path}: cannot tell the file's format from its suffix {path.suffix!r}; expected "
                        ".csv, .tsv, .txt or .parquet, or data.format=csv, tsv or parquet.")
    return found


def sniff_delimiter(path: Path, fmt: str) -> str:
    """The separator the first lines agree on: among , ; TAB | the most frequent one that every sampled line
    has equally often (a header's count must match the rows'). TSV files default to TAB."""
    with path.open("rb") as handle:
        sample = handle.read(1 << 16)
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(sample) - 4:  # not just a character cut at the sample's end
            raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); expected a UTF-8 CSV or TSV file, or "
                            "Parquet (data.format=parquet).") from None
        text = sample[:exc.start].decode("utf-8")
    lines = [line for line in text.splitlines() if line.strip()]
    if len(sample) == 1 << 16 and len(lines) > 1:
        lines = lines[:-1]  # the sample filled up: its last line may be cut
    lines = lines[:20]
    if fmt == "tsv" and all("\t" in line for line in lines):
        return "\t"
    best, best_count = None, 0
    for candidate in CLICK_DELIMITERS:
        counts = {line.count(candidate) for line in lines}
        if len(counts) == 1 and (count := counts.pop()) > best_count:
            best, best_count = candidate, count
    if best is None:
        raise DataError(f"{path}: cannot tell the field separator from the first lines (none of , ; TAB | appears "
                        "equally often on each); expected one of them, or set data.delimiter.")
    return best


def _header(path: Path, delimiter: str) -> list[str]:
    with path.open("r", encoding="utf-8", errors="replace", newline="") as handle:
        first = next(csv.reader(handle, delimiter=delimiter), [])
    return [name.strip().lstrip("\ufeff") for name in first]


def _check_columns(path: Path, names: list[str], columns: ClickColumns, keys: dict[str, str]) -> None:
    missing = [(key, col) for key, col in keys.items() if col and col not in names]
    if missing:
        key, col = missing[0]
        raise DataError(f"{path}: {key}={col!r} names no column of the file (its columns: {', '.join(names)}); "
                        f"expected one of them (set {key}), or data.column_names for a file without a header.")


def _csv_batches(path: Path, delimiter: str, column_names: list[str] | None, columns: ClickColumns
                 ) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(number of the batch's first line, batch) of the needed columns."""
    read = pacsv.ReadOptions(block_size=BLOCK_BYTES, column_names=column_names)
    parse = pacsv.ParseOptions(delimiter=delimiter)
    convert = pacsv.ConvertOptions(include_columns=columns.needed)
    line = 1 if column_names else 2
    try:
        reader = pacsv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert)
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc):
            raise DataError(f"{path}: empty file; expected a header line and one click a line.") from None
        raise _arrow_error(path, exc, delimiter, line, columns) from None
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as exc:
            raise _arrow_error(path, exc, delimiter, line, columns) from None
        yield line, batch
        line += batch.num_rows


def _arrow_error(path: Path, exc: Exception, delimiter: str, line: int, columns: ClickColumns) -> DataError:
    """Arrow's parse error in our words, with the first line from ``line`` on that holds the bad value."""
    text = " ".join(str(exc).split())
    match = re.search(r"In CSV column #(\d+): .*CSV conversion error to (\w+): invalid value '(.*)'", text)
    if match:
        value, kind = match[3], {"int64": "integers", "double": "numbers"}.get(match[2], match[2])
        name = _name_of(path, delimiter, int(match[1]))
        found = _line_holding(path, delimiter, line, int(match[1]), value)
        where = f", line {found}" if found else f", from line {line}"
        return DataError(f"{path}{where}: column {name} holds {value!r} where the lines above hold {kind}; "
                         "expected one type in a column (ids all integers or all text, times all numbers or all "
                         "dates).")
    match = re.search(r"Expected (\d+) columns, got (\d+): (.*)", text)
    if match:
        return DataError(f"{path}: a line has {match[2]} fields where the header has {match[1]} "
                         f"({match[3][:80]!r}); expected {match[1]} fields separated by {delimiter!r} on every "
                         "line (set data.delimiter if that is not the separator).")
    return DataError(f"{path}: not a readable {'TSV' if delimiter == chr(9) else 'CSV'} click log ({text[:200]}).")


def _name_of(path: Path, delimiter: str, index: int) -> str:
    names = _header(path, delimiter)
    return names[index] if index < len(names) else f"#{index + 1}"


def _line_holding(path: Path, delimiter: str, start: int, index: int, value: str) -> int | None:
    """The first line from ``start`` on whose field ``index`` is ``value`` (read until found: one block)."""
    with path.open("r", encoding="utf-8", errors="replace", newline="") as handle:
        for number, row in enumerate(csv.reader(handle, delimiter=delimiter), start=1):
            if number >= start and index < len(row) and row[index].strip() == value.strip():
                return number
    return None


def _parquet_batches(path: Path, columns: ClickColumns) -> Iterator[tuple[int, pa.RecordBatch]]:
    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({' '.join(str(exc).split())[:200]}).") from None
    names = file.schema_arrow.names
    if file.metadata.num_rows == 0:
        raise DataError(f"{path}: no rows; expected one click a row.")
    _check_columns(path, names, columns, _keys(columns))
    row = 1
    for batch in file.iter_batches(batch_size=PARQUET_ROWS, columns=columns.needed):
        yield row, batch
        row += batch.num_rows


def _keys(columns: ClickColumns) -> dict[str, str]:
    sequence_key = "data.user_field" if columns.sequence_word == "user" else "data.session_field"
    return {sequence_key: columns.sequence, "data.item_field": columns.item, "data.time_field": columns.time,
            "data.order_field": columns.order or ""}


class _Column:
    """One column gathered batch by batch: ids (integers or text) or times, checked as they come."""

    def __init__(self, path: Path, name: str, role: str, where: str) -> None:
        self.path, self.name, self.role, self.where = path, name, role, where
        self.parts: list = []
        self.type: pa.DataType | None = None

    def add(self, first: int, array: pa.Array) -> None:
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        if pa.types.is_dictionary(array.type):
            array = array.cast(array.type.value_type)
        if self.type is not None and array.type != self.type:
            raise self.error(first, f"holds {array.type} values where the rows above hold {self.type}",
                             "one type in a column")
        self.type = array.type
        if array.null_count:
            at = int(np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False))[0])
            raise self.error(first + at, "is empty", f"every click to have its {self.role}")
        if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
            blank = pc.equal(pc.utf8_trim_whitespace(array), "")
            if pc.any(blank).as_py():
                at = int(np.flatnonzero(blank.to_numpy(zero_copy_only=False))[0])
                raise self.error(first + at, "is an empty string", f"every click to have its {self.role}")
        self.parts.append(array)

    def error(self, at: int, what: str, expected: str) -> DataError:
        return DataError(f"{self.path}, {self.where} {at}: {self.name} {what}; expected {expected}.")


def _ids(column: _Column) -> tuple[np.ndarray, np.ndarray]:
    """(codes, tokens) of an id column: integers stay integers, text stays text; decimals are refused."""
    kind = column.type
    if pa.types.is_integer(kind):
        return encode(np.concatenate([p.to_numpy().astype(np.int64, copy=False) for p in column.parts]))
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        codes, tokens = encode(pa.chunked_array(column.parts))
        return codes, tokens.astype(object)
    raise DataError(f"{column.path}: {column.name} holds {kind} values; expected integer or text ids.")


def _times(column: _Column, time_format: str) -> tuple[np.ndarray, np.ndarray]:
    """(whole seconds UTC, exact order key) of the time column."""
    kind = column.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        if pa.types.is_date(kind):
            days = np.concatenate([p.cast(pa.date32()).cast(pa.int32()).to_numpy() for p in column.parts])
            seconds = days.astype(np.int64) * 86_400
            return seconds, seconds
        exact = np.concatenate([p.cast(pa.int64()).to_numpy() for p in column.parts])
        return np.floor_divide(exact, _UNIT_PER_SECOND[kind.unit]), exact
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        values = np.concatenate([p.to_numpy(zero_copy_only=False) for p in column.parts])
        if pa.types.is_floating(kind) and not np.isfinite(values).all():
            at = int(np.flatnonzero(~np.isfinite(values))[0])
            raise column.error(_first_row(column) + at, f"is {values[at]}", "a time")
        if time_format == "iso":
            raise column.error(_first_row(column), "holds numbers", "ISO dates as data.time_format=iso says "
                               "(or time_format=auto for epoch numbers)")
        unit = time_format if time_format in ("s", "ms") else (
            "ms" if len(values) and float(np.abs(values).max()) >= MILLISECONDS_FROM else "s")
        seconds = np.floor_divide(values, _UNIT_PER_SECOND[unit]).astype(np.int64)
        return seconds, values
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _parse_text_times(column, time_format)
    raise DataError(f"{column.path}: {column.name} holds {kind} values; expected times (epoch seconds or "
                    "milliseconds, or ISO 8601 dates and times).")


def _first_row(column: _Column) -> int:
    return 2 if column.where == "line" else 1


def _parse_text_times(column: _Column, time_format: str) -> tuple[np.ndarray, np.ndarray]:
    """Text times Arrow did not type itself: each distinct text parsed once (ISO 8601, or the strptime format)."""
    codes, texts = encode(pa.chunked_array(column.parts))
    if time_format in ("s", "ms"):
        scale = 1_000_000 // _UNIT_PER_SECOND[time_format]
        parsed = [None if (v := _number(t)) is None else v * scale for t in texts.tolist()]
    elif "%" in time_format:
        parsed = [_strptime(t, time_format) for t in texts.tolist()]
    elif time_format == "iso":
        parsed = [_iso(t) for t in texts.tolist()]
    else:  # auto: an epoch number (seconds, or milliseconds from 1e11 on) or an ISO 8601 text
        parsed = [_epoch_micros(t) if _number(t) is not None else _iso(t) for t in texts.tolist()]
    bad = [i for i, value in enumerate(parsed) if value is None]
    if bad:
        at = int(np.flatnonzero(codes == bad[0])[0])
        expected = {"s": "epoch seconds", "ms": "epoch milliseconds"}.get(
            time_format, f"a time in the format {time_format!r}" if "%" in time_format else
            "a time: epoch seconds or milliseconds, or an ISO 8601 date or time (e.g. 2016-05-09 or "
            "2014-04-07T10:51:09.277Z); or set data.time_format")
        raise column.error(_first_row(column) + at, f"is {texts[bad[0]]!r}", expected)
    exact = np.array(parsed, dtype=np.int64)[codes]
    return np.floor_divide(exact, 1_000_000), exact


def _number(text: str) -> int | None:
    try:
        return int(float(text))
    except ValueError:
        return None


def _epoch_micros(text: str) -> int:
    value = float(text)
    return int(value * (1_000 if abs(value) >= MILLISECONDS_FROM else 1_000_000))


def _micros(moment: dt.datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def _iso(text: str) -> int | None:
    try:
        return _micros(dt.datetime.fromisoformat(text.strip()))
    except ValueError:
        return None


def _strptime(text: str, fmt: str) -> int | None:
    try:
        return _micros(dt.datetime.strptime(text.strip(), fmt))
    except ValueError:
        return None


def read_click_log(path: Path, columns: ClickColumns, *, fmt: str = "auto", delimiter: str | None = None,
                   column_names: list[str] | None = None, time_format: str = "auto") -> ClickLog:
    """Read the log's needed columns (streamed: memory stays a few blocks above the arrays kept)."""
    path = require_regular_file(path, "a click log (data.path)")
    fmt = file_format(path, fmt)
    if fmt != "parquet" and path.stat().st_size == 0:
        raise DataError(f"{path}: empty file; expected a header line and one click a line.")
    where = "row" if fmt == "parquet" else "line"
    if fmt == "parquet":
        batches = _parquet_batches(path, columns)
    else:
        delimiter = delimiter or sniff_delimiter(path, fmt)
        names = list(column_names) if column_names else _header(path, delimiter)
        _check_columns(path, names, columns, _keys(columns))
        batches = _csv_batches(path, delimiter, column_names, columns)
    roles = {columns.sequence: f"{columns.sequence_word} id", columns.item: "item id", columns.time: "time"}
    if columns.order:
        roles.setdefault(columns.order, "order")
    gathered = {name: _Column(path, name, role, where) for name, role in roles.items()}
    rows = 0
    for first, batch in batches:
        for name, column in gathered.items():
            column.add(first, batch.column(name))
        rows += batch.num_rows
    if rows == 0:
        raise DataError(f"{path}: no clicks (a header only); expected one click a {where}.")
    session, session_tokens = _ids(gathered[columns.sequence])
    item, item_tokens = _ids(gathered[columns.item])
    seconds, exact = _times(gathered[columns.time], time_format)
    order = exact
    if columns.order and columns.order != columns.time:
        order = _order_values(gathered[columns.order])
    pa.default_memory_pool().release_unused()  # Arrow's blocks are numpy arrays now: give the pages back
    clicks = Clicks(session, item, seconds, order, session_tokens, item_tokens)
    return ClickLog(clicks, path, fmt, delimiter)


def _order_values(column: _Column) -> np.ndarray:
    kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return np.concatenate([p.to_numpy(zero_copy_only=False) for p in column.parts])
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        return _times(column, "auto")[1]
    raise DataError(f"{column.path}: data.order_field={column.name!r} holds {kind} values; expected numbers, "
                    "dates or times that order a session's clicks.")
