"""Raw DIGINETICA / YOOCHOOSE click logs -> NARM/SR-GNN session splits, with an on-disk cache.

The steps reproduce SR-GNN's ``datasets/preprocess.py`` (the reference every NARM/SR-GNN number
is computed on), vectorised with numpy:

1. group clicks by session; a session's date is the date of its LAST row in file order
   (DIGINETICA: ``eventdate``, a day; YOOCHOOSE: the timestamp cut to whole seconds);
2. DIGINETICA clicks are ordered by ``timeframe`` within a session (stable) when
   ``sort_by_timeframe`` is True; False keeps the file order, as in the NARM paper's data;
3. drop sessions of length 1, then items seen fewer than 5 times (counted over all remaining
   sessions), then sessions left shorter than 2;
4. ``split = max session date - test_days``: sessions dated strictly after it are test,
   strictly before it train (a session dated exactly on it is in neither, as in SR-GNN);
5. train and test sessions are sorted by date; ties keep SR-GNN's dict order: order of first
   appearance (``tie_order="first_seen"``, SR-GNN run by Python >= 3.6) or CPython 2.7's hash order
   (``"python2"``, how SR-GNN's published pickles were made: the sample reproduces only with it);
6. items are renumbered 1.. in order of first appearance in the sorted training sessions; test
   clicks on items unknown to training are dropped, then test sessions shorter than 2;
7. both sides are prefix-augmented; YOOCHOOSE 1/k keeps the last ``int(n / k)`` training
   examples (the most recent) and the training sessions from the one holding the first kept example.

Which variant the shared ``../shared/data/diginetica`` split is: the raw file groups repeated clicks
on an item within a session, so a file-order (unsorted) split never has an item that comes back after
a different item; the shared split has such sessions (43,105 of the 74,837 training sessions with a
repeated item), so it is the timeframe-SORTED variant (see the tests).

Dates are computed in UTC (SR-GNN uses ``time.mktime``, local time; the only difference would be
a daylight-saving change inside the test window, which neither dataset has).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from narm_lightning.data.sessions import (
    SessionSplit,
    augment_flat,
    chunk_offsets,
    flatten,
    split_flat,
    within_group_index,
)
from narm_lightning.errors import DataError
from narm_lightning.io import atomic_open, require_regular_file, sha256_file, write_text_atomic

CACHE_FORMAT_VERSION = 1
DEFAULT_CACHE_DIR = Path("~/.cache/narm-lightning")
_CHUNK_LINES = 1_000_000
_SECONDS_PER_DAY = 86_400

DIGINETICA_HELP = (
    "DIGINETICA cannot be downloaded automatically (its owners' terms): get 'train-item-views.csv' "
    "from the CIKM Cup 2016 site (https://competitions.codalab.org/competitions/11161, "
    "dataset-train-diginetica) "
    "and put it at {path}"
)
YOOCHOOSE_HELP = (
    "YOOCHOOSE cannot be downloaded automatically (its owners' terms): get 'yoochoose-clicks.dat' "
    "from the RecSys Challenge 2015 data (https://recsys.acm.org/recsys15/challenge/, yoochoose-data.7z) "
    "and put it at {path}"
)


@dataclass(frozen=True)
class RawClicks:
    """One raw click log, in file order."""

    session: np.ndarray  # int64 session id
    item: np.ndarray  # int64 original item id
    time: np.ndarray  # int64 seconds (UTC) of the click's date / timestamp
    timeframe: np.ndarray | None  # int64 DIGINETICA timeframe, else None


# ----------------------------------------------------------------------------- reading raw files


def _check_raw(path: Path, help_text: str) -> None:
    """DataError with the download hint when the raw file is missing."""
    if not path.exists():
        raise DataError(f"{path}: file not found. " + help_text.format(path=path))
    require_regular_file(path, "the raw click log")


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
    _check_raw(path, DIGINETICA_HELP)
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
    _check_raw(path, YOOCHOOSE_HELP)
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


# ----------------------------------------------------------------------------- the SR-GNN steps

_U64 = (1 << 64) - 1


def _python2_str_hash(key: str) -> int:
    """CPython 2.7's hash of a byte string (64-bit, no hash randomisation), as an unsigned int."""
    data = key.encode()
    if not data:
        return 0
    x = (data[0] << 7) & _U64
    for byte in data:
        x = ((1_000_003 * x) & _U64) ^ byte
    x ^= len(data)
    return _U64 - 1 if x == _U64 else x  # hash -1 is reserved in C and becomes -2


def python2_dict_order(keys: list[str]) -> np.ndarray:
    """Iteration position of each key in a CPython 2.7 dict that got the keys inserted in this order.

    SR-GNN's published pickles were written by Python 2.7 (pickle protocol 0), where the order of
    ``sess_date.items()`` -- hence the order of sessions with the same date -- is the dict's slot
    order. Later deletions leave dummies and never move entries, so they do not change it. This
    replays 2.7's open addressing (``i = 5*i + perturb + 1``, ``perturb >>= 5``) and its resizes.
    """
    table: list[int] = [-1] * 8
    hashes = [_python2_str_hash(k) for k in keys]

    def place(tab: list[int], k: int) -> None:
        mask, h = len(tab) - 1, hashes[k]
        i, perturb = h & mask, h
        while tab[i] != -1:
            i = (5 * i + perturb + 1) & mask
            perturb >>= 5
        tab[i] = k

    for k in range(len(keys)):
        place(table, k)
        used = k + 1
        if used * 3 >= len(table) * 2:  # no deletions while inserting: fill == used
            min_used = (2 if used > 50_000 else 4) * used
            size = 8
            while size <= min_used:
                size <<= 1
            new_table = [-1] * size
            for old in table:
                if old != -1:
                    place(new_table, old)
            table = new_table
    slots = np.array([k for k in table if k != -1], dtype=np.int64)
    position = np.empty(len(keys), dtype=np.int64)
    position[slots] = np.arange(len(slots))
    return position


def _gather(flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate the chunks flat[starts[k] : starts[k] + lengths[k]] (vectorised)."""
    return flat[np.repeat(starts, lengths) + within_group_index(lengths)]


def _build_split(
    clicks: RawClicks,
    *,
    test_days: int,
    sort_by_timeframe: bool,
    min_item_support: int,
    fraction: int,
    source: str,
    path: Path,
    tie_order: str,
) -> SessionSplit:
    """SR-GNN preprocessing on a click log (see the module docstring for the steps)."""
    n_rows = len(clicks.session)
    uniq_sess, first_row, row_sess = np.unique(clicks.session, return_index=True, return_inverse=True)
    row_sess = row_sess.reshape(-1)
    # Sessions numbered in order of first appearance (SR-GNN's dict insertion order).
    rank = np.empty(len(first_row), dtype=np.int64)
    rank[np.argsort(first_row, kind="stable")] = np.arange(len(first_row))
    row_sess = rank[row_sess]
    file_order = np.argsort(row_sess, kind="stable")  # rows grouped by session, file order within
    counts = np.bincount(row_sess, minlength=len(rank)).astype(np.int64)
    ends = np.cumsum(counts)
    sess_time = clicks.time[file_order[ends - 1]]  # last row in file order
    if sort_by_timeframe and clicks.timeframe is not None:
        order = np.argsort(clicks.timeframe, kind="stable")
        order = order[np.argsort(row_sess[order], kind="stable")]
    else:
        order = file_order
    items = clicks.item[order]
    grouped_sess = row_sess[order]

    keep = counts[grouped_sess] > 1
    uniq_items, item_index = np.unique(items, return_inverse=True)
    item_index = item_index.reshape(-1)
    support = np.bincount(item_index[keep], minlength=len(uniq_items))
    keep &= support[item_index] >= min_item_support
    kept_counts = np.bincount(grouped_sess[keep], minlength=len(rank)).astype(np.int64)
    session_ok = kept_counts >= 2
    keep &= session_ok[grouped_sess]
    kept_items = items[keep]
    kept_counts = np.where(session_ok, kept_counts, 0)
    kept_starts = chunk_offsets(kept_counts)
    if not session_ok.any():
        raise DataError(
            f"{path}: filtering left no sessions ({n_rows} clicks read; sessions of length 1, items seen "
            f"< {min_item_support} times, then sessions shorter than 2 removed); expected a larger click log"
        )

    max_time = int(sess_time[session_ok].max())
    split_time = max_time - test_days * _SECONDS_PER_DAY
    train_ids = np.flatnonzero(session_ok & (sess_time < split_time))
    test_ids = np.flatnonzero(session_ok & (sess_time > split_time))
    if tie_order == "python2":
        tie = python2_dict_order(
            [str(s) for s in np.asarray(uniq_sess)[np.argsort(first_row, kind="stable")]]
        )
    else:
        tie = np.arange(len(rank))
    train_ids = train_ids[np.lexsort((tie[train_ids], sess_time[train_ids]))]
    test_ids = test_ids[np.lexsort((tie[test_ids], sess_time[test_ids]))]
    if len(train_ids) == 0 or len(test_ids) == 0:
        side = "training" if len(train_ids) == 0 else "test"
        raise DataError(
            f"{path}: filtering left no sessions for the {side} side "
            f"({len(train_ids)} train / {len(test_ids)} test sessions; test = the last {test_days} day(s)); "
            "expected a click log spanning more days"
        )

    train_lens = kept_counts[train_ids]
    train_orig = _gather(kept_items, kept_starts[train_ids], train_lens)
    known, first_seen = np.unique(train_orig, return_index=True)
    appearance = np.argsort(first_seen, kind="stable")
    new_id = np.empty(len(known), dtype=np.int64)
    new_id[appearance] = np.arange(1, len(known) + 1)
    item_ids = np.concatenate([[0], known[appearance]]).astype(np.int64)
    train_flat = new_id[np.searchsorted(known, train_orig)]

    test_lens = kept_counts[test_ids]
    test_orig = _gather(kept_items, kept_starts[test_ids], test_lens)
    pos = np.minimum(np.searchsorted(known, test_orig), len(known) - 1)
    seen = known[pos] == test_orig
    test_row_sess = np.repeat(np.arange(len(test_ids)), test_lens)
    test_lens = np.bincount(test_row_sess[seen], minlength=len(test_ids)).astype(np.int64)
    test_keep_rows = seen & (test_lens[test_row_sess] >= 2)
    test_flat = new_id[pos[test_keep_rows]]
    test_lens = test_lens[test_lens >= 2]
    if len(test_lens) == 0:
        raise DataError(
            f"{path}: filtering left no sessions for the test side (no test session keeps 2 clicks on items "
            "known from training); expected a larger click log"
        )

    starts, plens, targets, sess_index = augment_flat(train_flat, train_lens)
    if fraction > 1:
        n_keep = int(len(targets) / fraction)
        if n_keep == 0:
            raise DataError(
                f"{path}: filtering left no sessions for 1/{fraction} of the training examples "
                f"({len(targets)} examples in all); expected a larger click log"
            )
        first_session = int(sess_index[-n_keep])
        starts, plens, targets = starts[-n_keep:], plens[-n_keep:], targets[-n_keep:]
        first_item = int(chunk_offsets(train_lens)[first_session])
        train_flat, train_lens = train_flat[first_item:], train_lens[first_session:]
        starts = starts - first_item
    t_starts, t_plens, t_targets, _ = augment_flat(test_flat, test_lens)
    return _make_split(
        train_flat,
        train_lens,
        starts,
        plens,
        targets,
        test_flat,
        t_starts,
        t_plens,
        t_targets,
        n_items=len(known),
        item_ids=item_ids,
        source=source,
    )


def _make_split(
    train_flat: np.ndarray,
    train_lens: np.ndarray,
    starts: np.ndarray,
    plens: np.ndarray,
    targets: np.ndarray,
    test_flat: np.ndarray,
    t_starts: np.ndarray,
    t_plens: np.ndarray,
    t_targets: np.ndarray,
    *,
    n_items: int,
    item_ids: np.ndarray | None,
    source: str,
) -> SessionSplit:
    """Assemble a SessionSplit whose arrays are views into the flat session arrays."""

    def views(flat: np.ndarray, s: np.ndarray, n: np.ndarray) -> list[np.ndarray]:
        return [flat[a : a + b] for a, b in zip(s.tolist(), n.tolist(), strict=True)]

    return SessionSplit(
        train_prefixes=views(train_flat, starts, plens),
        train_targets=targets.astype(np.int64),
        test_prefixes=views(test_flat, t_starts, t_plens),
        test_targets=t_targets.astype(np.int64),
        n_items=int(n_items),
        source=source,
        train_sessions=split_flat(train_flat, train_lens),
        item_ids=item_ids,
    )


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
    return _build_split(
        clicks,
        test_days=test_days,
        sort_by_timeframe=sort_by_timeframe,
        min_item_support=min_item_support,
        fraction=1,
        source=source,
        path=path,
        tie_order=_tie(tie_order, path),
    )


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
    return _build_split(
        clicks,
        test_days=test_days,
        sort_by_timeframe=False,
        min_item_support=min_item_support,
        fraction=fraction,
        source=source,
        path=path,
        tie_order=_tie(tie_order, path),
    )


# ----------------------------------------------------------------------------- cache


_DATASETS = {
    "diginetica": (DIGINETICA_HELP, "train-item-views.csv"),
    "yoochoose": (YOOCHOOSE_HELP, "yoochoose-clicks.dat"),
}


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
    if dataset not in _DATASETS:
        raise DataError(f"unknown raw dataset {dataset!r}; expected one of {sorted(_DATASETS)}")
    help_text, file_name = _DATASETS[dataset]
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / file_name
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
    _check_raw(path, help_text)
    key_source = json.dumps(
        {"v": CACHE_FORMAT_VERSION, "dataset": dataset, "sha256": sha256_file(path), **settings},
        sort_keys=True,
    )
    key = hashlib.sha256(key_source.encode()).hexdigest()[:32]
    cache_file = Path(cache_dir).expanduser() / f"{dataset}-{key}.npz"
    if cache_file.is_file():
        try:
            return _load_cache(cache_file)
        except (OSError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile):
            pass  # unreadable cache entry (an object array is refused unread: no pickle): rebuild and overwrite it
    split = build()
    try:
        _save_cache(cache_file, split, key_source)
    except OSError as exc:  # a read-only or full cache dir must not lose the work just done
        warnings.warn(f"could not write the session cache {cache_file}: {exc}", stacklevel=2)
    return split


def _save_cache(cache_file: Path, split: SessionSplit, key_source: str) -> None:
    """Write the split as one .npz (+ a small json for people), each atomically (temp file, fsync, rename)."""
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    sessions = split.train_sessions or []
    s_flat, s_lens = flatten(sessions)
    p_flat, p_lens = flatten(split.train_prefixes)
    t_flat, t_lens = flatten(split.test_prefixes)
    meta = {
        "n_items": split.n_items,
        "source": split.source,
        "key": json.loads(key_source),
        "n_train": split.n_train,
        "n_test": split.n_test,
        "has_sessions": split.train_sessions is not None,
    }
    arrays = {
        "session_flat": s_flat,
        "session_lens": s_lens,
        "train_flat": p_flat,
        "train_lens": p_lens,
        "train_targets": split.train_targets,
        "test_flat": t_flat,
        "test_lens": t_lens,
        "test_targets": split.test_targets,
        "item_ids": split.item_ids if split.item_ids is not None else np.zeros(0, dtype=np.int64),
        "meta": np.array(json.dumps(meta)),
    }
    with atomic_open(cache_file, "wb") as handle:
        np.savez(handle, **arrays)
    write_text_atomic(cache_file.with_suffix(".json"), json.dumps(meta, indent=1))


def _load_cache(cache_file: Path) -> SessionSplit:
    """Read a split written by :func:`_save_cache` (no pickles: allow_pickle=False)."""
    with np.load(cache_file, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    meta = json.loads(str(arrays["meta"]))
    sessions = split_flat(arrays["session_flat"], arrays["session_lens"]) if meta["has_sessions"] else None
    item_ids = arrays["item_ids"] if len(arrays["item_ids"]) else None
    return SessionSplit(
        train_prefixes=split_flat(arrays["train_flat"], arrays["train_lens"]),
        train_targets=arrays["train_targets"],
        test_prefixes=split_flat(arrays["test_flat"], arrays["test_lens"]),
        test_targets=arrays["test_targets"],
        n_items=int(meta["n_items"]),
        source=f"{meta['source']} [cached: {cache_file}]",
        train_sessions=sessions,
        item_ids=item_ids,
    )
