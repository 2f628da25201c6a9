"""Raw DIGINETICA / YOOCHOOSE click logs -> NARM/SR-GNN session splits, with an on-disk cache.

The readers here parse the two published files; the protocol itself (SR-GNN's ``datasets/preprocess.py``) is
``session_split.build_session_split``, the code path a user's own log takes too (``data=clicks``).

Which variant the shared ``../shared/data/diginetica`` split is: the raw file groups repeated clicks
on an item within a session, so a file-order (unsorted) split never has an item that comes back after
a different item; the shared split has such sessions (43,105 of the 74,837 training sessions with a
repeated item), so it is the timeframe-SORTED variant (see the tests).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from narm_lightning.data.locate import RAW_FILES, check_raw
from narm_lightning.data.session_split import Clicks, build_session_split, encode
from narm_lightning.data.sessions import SessionSplit
from narm_lightning.data.split_cache import cached_split
from narm_lightning.errors import DataError

DEFAULT_CACHE_DIR = Path("~/.cache/narm-lightning")
_CHUNK_LINES = 1_000_000
_SECONDS_PER_DAY = 86_400

@dataclass(frozen=True)
class RawClicks:
    """One raw click log, in file order."""

    session: np.ndarray  # int64 session id
    item: np.ndarray  # int64 original item id
    time: np.ndarray  # int64 seconds (UTC) of the click's date / timestamp
    timeframe: np.ndarray | None  # int64 DIGINETICA timeframe, else None


# ----------------------------------------------------------------------------- reading raw files


def _iter_chunks(path: Path, skip: int) -> Iterator[tuple[int, list[str]]]:
    """Yield (1-based line number of the chunk's first line, non-blank lines) in chunks."""
    with path.open("r", encoding="utf-8", newline="") as handle:
        for _ in range(skip):
            next(handle, None)
        first = skip + 1
        while True:
            chunk = list(itertools.islice(handle, _CHUNK_LINES))
            if not chunk:
                return
            yield first, chunk
            first += len(chunk)


def _convert(
    values: list[str],
    convert: Callable[[list[str]], np.ndarray],
    check: Callable[[str], object],
    path: Path,
    first_line: int,
    line_numbers: Sequence[int],
    column: str,
    expected: str,
) -> np.ndarray:
    """Vectorised conversion of one column; on failure, find and name the first bad line."""
    try:
        return convert(values)
    except (ValueError, OverflowError):
        for number, value in zip(line_numbers, values, strict=True):
            try:
                check(value)
            except (ValueError, OverflowError):
                raise DataError(f"{path}, line {number}: {column} {value!r} is not {expected}") from None
        raise DataError(f"{path}, lines from {first_line}: {column} column is not {expected}") from None


def _ints(values: list[str]) -> np.ndarray:
    return np.array(values, dtype=np.str_).astype(np.int64)


def _days(values: list[str]) -> np.ndarray:
    return np.array(values, dtype="datetime64[D]").astype(np.int64) * _SECONDS_PER_DAY


def _seconds(values: list[str]) -> np.ndarray:
    return np.array([v[:19] for v in values], dtype="datetime64[s]").astype(np.int64)


def _check_day(value: str) -> None:
    np.datetime64(value, "D")


def _check_second(value: str) -> None:
    np.datetime64(value[:19], "s")


def _read_columns(
    path: Path,
    sep: str,
    skip: int,
    n_columns: int,
    columns: dict[str, tuple[int, Callable[[list[str]], np.ndarray], Callable[[str], object], str]],
) -> dict[str, np.ndarray]:
    """Read selected columns of a separated text file, chunk by chunk, into int64 arrays."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in columns}
    for first_line, chunk in _iter_chunks(path, skip):
        seps = np.fromiter(map(str.count, chunk, itertools.repeat(sep)), dtype=np.int64, count=len(chunk))
        numbers: Sequence[int]
        if bool((seps == n_columns - 1).all()):
            # Fast path: every line has the right number of fields; split the whole chunk at once.
            text = "".join(chunk)
            if "\r" in text:
                text = text.replace("\r", "")
            fields = text.replace("\n", sep).split(sep)
            if text.endswith("\n"):
                fields.pop()
            cols = [fields[i::n_columns] for i in range(n_columns)]
            numbers = range(first_line, first_line + len(chunk))
        else:
            rows, numbers = _split_rows_slowly(path, sep, n_columns, first_line, chunk)
            if not rows:
                continue
            cols = [list(col) for col in zip(*rows, strict=True)]
        for name, (index, convert, check, expected) in columns.items():
            parts[name].append(
                _convert(cols[index], convert, check, path, first_line, numbers, name, expected)
            )
    if not parts[next(iter(columns))]:
        raise DataError(f"{path}: no data rows; expected a click log with at least one row")
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def _split_rows_slowly(
    path: Path, sep: str, n_columns: int, first_line: int, chunk: list[str]
) -> tuple[list[list[str]], list[int]]:
    """Line by line: skip blank lines (as csv readers do), name the first line with a wrong field count."""
    rows: list[list[str]] = []
    numbers: list[int] = []
    for offset, line in enumerate(chunk):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        fields = line.split(sep)
        if len(fields) != n_columns:
            raise DataError(
                f"{path}, line {first_line + offset}: {len(fields)} fields; "
                f"expected {n_columns} fields separated by {sep!r}"
            )
        rows.append(fields)
        numbers.append(first_line + offset)
    return rows, numbers


def read_diginetica_clicks(path: Path | str) -> RawClicks:
    """Read DIGINETICA ``train-item-views.csv`` (original or SR-GNN's renamed header)."""
    path = Path(path)
    check_raw("diginetica", path)
    with path.open("r", encoding="utf-8", newline="") as handle:
        header = handle.readline().rstrip("\r\n").split(";")
    aliases = {
        "session": ("sessionId", "session_id"),
        "item": ("itemId", "item_id"),
        "timeframe": ("timeframe",),
        "eventdate": ("eventdate",),
    }
    index: dict[str, int] = {}
    for key, names in aliases.items():
        found = [i for i, col in enumerate(header) if col.strip() in names]
        if not found:
            raise DataError(
                f"{path}, line 1: header {';'.join(header)!r} lacks {' or '.join(names)}; expected "
                "'sessionId;userId;itemId;timeframe;eventdate' or "
                "'session_id;user_id;item_id;timeframe;eventdate'"
            )
        index[key] = found[0]
    integer, day = "an integer", "a date YYYY-MM-DD"
    cols = _read_columns(
        path,
        ";",
        1,
        len(header),
        {
            "session id": (index["session"], _ints, int, integer),
            "item id": (index["item"], _ints, int, integer),
            "timeframe": (index["timeframe"], _ints, int, integer),
            "eventdate": (index["eventdate"], _days, _check_day, day),
        },
    )
    return RawClicks(cols["session id"], cols["item id"], cols["eventdate"], cols["timeframe"])


def read_yoochoose_clicks(path: Path | str) -> RawClicks:
    """Read YOOCHOOSE ``yoochoose-clicks.dat``: ``session_id,timestamp,item_id,category``, header optional."""
    path = Path(path)
    check_raw("yoochoose", path)
    with path.open("r", encoding="utf-8", newline="") as handle:
        first = handle.readline().strip()
    skip = 0 if first.split(",")[0].strip().isdigit() else 1
    integer, stamp = "an integer", "an ISO-8601 timestamp YYYY-MM-DDTHH:MM:SS"
    cols = _read_columns(
        path,
        ",",
        skip,
        4,
        {
            "session id": (0, _ints, int, integer),
            "item id": (2, _ints, int, integer),
            "timestamp": (1, _seconds, _check_second, stamp),
        },
    )
    return RawClicks(cols["session id"], cols["item id"], cols["timestamp"], None)


# ----------------------------------------------------------------------------- to the protocol


def raw_clicks(raw: RawClicks, sort_by_timeframe: bool) -> Clicks:
    """A DIGINETICA / YOOCHOOSE log as the protocol's :class:`Clicks` (ids coded by first appearance)."""
    session, session_tokens = encode(raw.session)
    item, item_tokens = encode(raw.item)
    order = raw.timeframe if sort_by_timeframe and raw.timeframe is not None else None
    return Clicks(session, item, raw.time, order, session_tokens, item_tokens)


def _tie(tie_order: str, path: Path) -> str:
    """Validate ``tie_order`` before any reading."""
    if tie_order not in ("first_seen", "python2"):
        raise DataError(f"{path}: tie_order {tie_order!r} given; expected 'first_seen' or 'python2'")
    return tie_order


def preprocess_diginetica(
    path: Path | str,
    *,
    sort_by_timeframe: bool = True,
    test_days: int = 7,
    min_item_support: int = 5,
    tie_order: str = "first_seen",
) -> SessionSplit:
    """DIGINETICA ``train-item-views.csv`` -> split, as SR-GNN (test = last 7 days).

    ``sort_by_timeframe=False`` keeps clicks in file order within a session: the data the NARM
    paper (and SR-GNN's first version) used; True is SR-GNN's later fix.
    """
    path = Path(path)
    clicks = read_diginetica_clicks(path)
    source = f"{path} (DIGINETICA, sort_by_timeframe={sort_by_timeframe}, test_days={test_days})"
    return build_session_split(raw_clicks(clicks, sort_by_timeframe), test_days=test_days,
                               min_item_support=min_item_support, tie_order=_tie(tie_order, path), source=source,
                               path=path)


def preprocess_yoochoose(
    path: Path | str,
    *,
    fraction: int = 64,
    test_days: int = 1,
    min_item_support: int = 5,
    tie_order: str = "first_seen",
) -> SessionSplit:
    """YOOCHOOSE ``yoochoose-clicks.dat`` -> split, as SR-GNN (test = last day).

    The training side keeps the most recent 1/``fraction`` of the augmented examples (64 and 4 are
    the published variants; 1 keeps all). The test side does not depend on ``fraction``.
    """
    if fraction < 1:
        raise DataError(f"{path}: fraction {fraction} given; expected an integer >= 1 (keep 1/fraction)")
    path = Path(path)
    clicks = read_yoochoose_clicks(path)
    source = f"{path} (YOOCHOOSE 1/{fraction}, test_days={test_days})"
    return build_session_split(raw_clicks(clicks, False), test_days=test_days, min_item_support=min_item_support,
                               fraction=fraction, tie_order=_tie(tie_order, path), source=source, path=path)


# ----------------------------------------------------------------------------- cache


def load_raw_split(
    dataset: str,
    path: Path | str,
    *,
    cache_dir: Path | str | None = DEFAULT_CACHE_DIR,
    sort_by_timeframe: bool = True,
    fraction: int = 64,
    test_days: int | None = None,
    min_item_support: int = 5,
    tie_order: str = "first_seen",
) -> SessionSplit:
    """Preprocess a raw click log, or load the cached result of the same file content and settings.

    ``dataset`` is "diginetica" or "yoochoose"; ``path`` the raw file (or the directory holding
    ``train-item-views.csv`` / ``yoochoose-clicks.dat``). ``cache_dir=None`` disables the cache. The
    cache key is the SHA-256 of the file content and the settings; files are written atomically.
    """
    if dataset not in RAW_FILES:
        raise DataError(f"unknown raw dataset {dataset!r}; expected one of {sorted(RAW_FILES)}")
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / RAW_FILES[dataset]
    if dataset == "diginetica":
        settings = {
            "sort_by_timeframe": sort_by_timeframe,
            "test_days": 7 if test_days is None else test_days,
        }
    else:
        settings = {"fraction": fraction, "test_days": 1 if test_days is None else test_days}
    settings["min_item_support"] = min_item_support
    settings["tie_order"] = tie_order

    def build() -> SessionSplit:
        if dataset == "diginetica":
            return preprocess_diginetica(path, **settings)  # type: ignore[arg-type]
        return preprocess_yoochoose(path, **settings)  # type: ignore[arg-type]

    if cache_dir is None:
        return build()
    check_raw(dataset, path)
    return cached_split(dataset, path, settings, build, cache_dir)


