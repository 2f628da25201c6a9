"""The data groups' schemas, declared once: what every dataset config has (``DataConfig``), RecBole's atomic files
(``data=ml-100k``), prepared session splits (``data=diginetica``, ``yoochoose1_64``, ...) and a user's own click log
(``data=clicks``); the choices their readers implement, and which schema a composed ``data`` node follows.
Import-light (no torch, nothing of ``data/``): the readers import their choices from here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from narm_lightning.config.intervals import parse_intervals
from narm_lightning.config.rules import BOOLEAN, REQUIRED, TEXT, Rule, integer, is_list, is_text, key, number, one_of

MAX_SEED = 2**32 - 1  # numpy.random.seed's upper bound (torch accepts more, NumPy does not)

SESSION_FORMATS = ("auto", "session_text", "session_pickle", "raw")
RAW_DATASETS = ("diginetica", "yoochoose")
CLICK_FORMATS = ("auto", "csv", "tsv", "parquet")  # data=clicks: auto reads the file's suffix
CLICK_SPLITS = ("time", "leave_one_out")
CLICK_DELIMITERS = (",", ";", "\t", "|")  # what data.delimiter=null sniffs among
TIE_ORDERS = ("first_seen", "python2")
TIME_ORDERS = ("recbole", "exact")  # data.time_order: see data/protocol.py time_keys


def _plain_name(value: Any) -> bool:
    """A single path component: a dataset name is joined under data.root and names the run's folder."""
    return (is_text(value) and value not in (".", "..") and not any(c in value for c in "/\\\0")
            and value == value.strip())


@dataclass
class DataConfig:
    """What every dataset config has."""

    dataset: str = key("ml-100k", "the dataset's folder under each root (and the run folder's name)",
                       Rule("a dataset name (a folder under data.root: no path separators, not '.' or '..')",
                            _plain_name))
    format: str = key("atomic", "how the dataset is stored")
    root: str = key("data", "where datasets live and where fetched ones are written", TEXT)
    extra_roots: list[str] = key([], "read-only folders also searched, in order, before fetching (e.g. "
                                 "[/data/recbole])",
                                 Rule("a list of folders (or [])", lambda v: is_list(v) and all(map(is_text, v))))
    max_item_list_length: int = key(50, "history window of each example (RecBole's MAX_ITEM_LIST_LENGTH)",
                                    integer())
    num_workers: int = key(0, "DataLoader workers (batches are tensor slices; 0 is fastest here)", integer(0))
    bucket_batches: int | None = key(
        8, ">0: sort lengths within chunks of this many shuffled train batches (less padding); 0: plain random "
        "batches (RecBole's)", integer(0, expect="an integer >= 0 (0: off)"))
    eval_candidates: str | None = key(None, "an eval_candidates.npz from a run folder: score uniN/popN on exactly "
                                      "those candidates (null: draw them once from eval_candidates_seed)", TEXT)
    eval_candidates_seed: int = key(2020, "seeds the one draw of uniN/popN candidates, apart from seed, so every "
                                    "epoch, seed and trial of a study is scored on the same candidates",
                                    integer(0, MAX_SEED, expect=f"an integer in [0, {MAX_SEED}]"))


def _interval_ok(value: Any) -> bool:

    try:
        parse_intervals(value)
    except ValueError:
        return False
    return isinstance(value, str)


def _val_interval_ok(value: Any) -> bool:
    return value is None or (isinstance(value, Mapping) and all(
        isinstance(k, str) and ((isinstance(v, str) and _interval_ok(v)) or (is_list(v) and len(v) > 0))
        for k, v in value.items()))


INTERVAL = Rule("RecBole's interval string, e.g. \"[5,inf)\" (several joined by ;)", _interval_ok)


@dataclass
class AtomicDataConfig(DataConfig):
    """A RecBole atomic ``.inter`` file with RecBole's sequential leave-one-out protocol (data=ml-100k)."""

    format: str = key("atomic", "atomic: <root>/<dataset>/<dataset>.inter, RecBole's file (sessions too: set "
                      "user_id_field=session_id)", one_of(("atomic",)))
    download: bool = key(True, "fetch ml-100k when it is in none of the roots", BOOLEAN)
    user_id_field: str = key("user_id", "RecBole's USER_ID_FIELD", TEXT)
    item_id_field: str = key("item_id", "RecBole's ITEM_ID_FIELD", TEXT)
    time_field: str = key("timestamp", "RecBole's TIME_FIELD (orders each user's interactions)", TEXT)
    time_order: str = key("recbole", "recbole: same-time ties ordered as RecBole 1.2.1 orders them (its float32 "
                          "times: RecBole's rows exactly); exact: by the times as read, ties only when equal",
                          one_of(TIME_ORDERS))
    normalize_all: bool | None = key(None, "RecBole's normalize_all: min-max scale the time field before RecBole's "
                                     "float32; null: as RecBole, on for ml-100k (its dataset config), off "
                                     "otherwise. Decides only which ties time_order=recbole makes",
                                     Rule("null, true or false", lambda v: v is None or isinstance(v, bool)))
    rm_dup_inter: str | None = key(None, "RecBole's rm_dup_inter: first or last keeps one row per (user, item), "
                                   "after a sort by time; null keeps all", one_of((None, "first", "last")))
    val_interval: Any = key(None, "RecBole's val_interval: {field: \"[3,inf)\"} keeps rows whose float field is "
                            "inside, {field: [a, b]} those whose token field is one of them",
                            Rule("null or {field: interval string (float fields) or list of tokens}",
                                 _val_interval_ok))
    user_inter_num_interval: str = key("[0,inf)", "RecBole's: keep users whose interaction count is inside, "
                                       "repeated with items until stable (\"[5,inf)\": 5-core)", INTERVAL)
    item_inter_num_interval: str = key("[0,inf)", "RecBole's: keep items whose interaction count is inside "
                                       "(k-core with the users)", INTERVAL)
    benchmark_filename: list[str] | None = key(
        None, "RecBole's: pre-split <dataset>.<part>.inter files for train, valid and test (e.g. [train, valid, "
        "test]) whose rows are examples already (<item>_list history + item): no filter, window or split",
        Rule("null or three part names, e.g. [train, valid, test]",
             lambda v: v is None or (is_list(v) and len(v) == 3 and all(_plain_name(p) for p in v))))
    filter_inter_by_user_or_item: bool = key(True, "RecBole's: needs .user/.item feature files, which NARM does "
                                             "not read, so it removes nothing (as in RecBole without them)", BOOLEAN)


@dataclass
class SessionDataConfig(DataConfig):
    """Session splits with the NARM paper's protocol (data=diginetica, yoochoose1_64, yoochoose1_4)."""

    dataset: str = key(REQUIRED, "prepared splits are looked for in <root>/<dataset>/",
                       Rule("a dataset name (a folder under data.root: no path separators, not '.' or '..')",
                            _plain_name))
    format: str = key("auto", "session_text (train_sessions.txt + test.tsv), session_pickle (train.txt + test.txt), "
                      "raw (the click log, preprocessed here), auto (the first found)", one_of(SESSION_FORMATS))
    raw_dataset: str | None = key(None, "which raw click log and preprocessing", one_of((None, *RAW_DATASETS)))
    raw_folder: str | None = key(None, "folder under each root holding the raw file",
                                 Rule("null or a folder name under data.root (no path separators)",
                                      lambda v: v is None or _plain_name(v)))
    sort_by_timeframe: bool = key(True, "DIGINETICA: order clicks by timeframe within a session (false: the "
                                  "original paper's data)", BOOLEAN)
    fraction: int = key(1, "YOOCHOOSE: keep the most recent 1/fraction of the augmented training examples",
                        integer(expect="a positive integer (1, 4, 64)"))
    test_days: int | None = key(None, "null: the standard 7 (DIGINETICA) / 1 (YOOCHOOSE) last days are the test "
                                "set", integer())
    min_item_support: int = key(5, "drop items clicked fewer times than this", integer())
    tie_order: str = key("first_seen", "order of sessions with the same date: first_seen, or python2 (SR-GNN's "
                         "published pickles)", one_of(TIE_ORDERS))
    cache_dir: str | None = key("~/.cache/narm-lightning", "preprocessed raw splits, keyed by file content and "
                                "settings (null: no cache)", TEXT)
    valid_ratio: float = key(0.1, "seeded random share of the training examples used for validation (the paper's "
                             "10%; 0: none, test the last epoch)",
                             number(at_least=0, below=1, expect="a share of the training examples in [0, 1) (0: no "
                                    "validation, train on all and test the last epoch)"))


def _time_format_ok(value: Any) -> bool:
    return is_text(value) and (value in ("auto", "s", "ms", "iso") or "%" in value)


def _column(value: Any) -> bool:
    return is_text(value) and value == value.strip()


COLUMN = Rule("a column name of the file", _column)


@dataclass
class ClicksDataConfig(DataConfig):
    """Your own click log, one row a click: CSV, TSV or Parquet (data=clicks; docs/your-data.md)."""

    dataset: str = key("clicks", "the data's name in the run folder and W&B (data=clicks sets it to the file's name)",
                       Rule("a name (no path separators, not '.' or '..')", _plain_name))
    path: str = key(REQUIRED, "the click log: a .csv, .tsv (.txt) or .parquet file, absolute or relative to where "
                    "the command runs", TEXT)
    format: str = key("auto", "auto (from the file's suffix: .csv, .tsv/.txt, .parquet), csv, tsv or parquet",
                      one_of(CLICK_FORMATS))
    delimiter: str | None = key(None, "CSV/TSV field separator (null: sniffed among , ; TAB | from the first lines)",
                                Rule("null or one character, e.g. ';'", lambda v: v is None or (
                                    isinstance(v, str) and len(v) == 1 and v not in "\n\r\"")))
    column_names: list[str] | None = key(None, "the columns of a file without a header row, in order (null: the "
                                         "first row names them)",
                                         Rule("null or a list of column names, e.g. [session_id,timestamp,item_id]",
                                              lambda v: v is None or (is_list(v) and len(v) > 0
                                                                      and all(map(_column, v)))))
    session_field: str | None = key("session_id", "the column naming each click's session (null: user_field)",
                                    Rule("null or a column name", lambda v: v is None or _column(v)))
    user_field: str | None = key(None, "instead of session_field: the column naming each click's user (a user's "
                                 "clicks are one sequence)", Rule("null or a column name",
                                                                  lambda v: v is None or _column(v)))
    item_field: str = key("item_id", "the column naming the clicked item", COLUMN)
    time_field: str = key("timestamp", "the column with each click's time", COLUMN)
    time_format: str = key("auto", "auto (numbers: epoch seconds, milliseconds from 1e11 on; text: ISO 8601 dates "
                           "or times), s, ms, iso, or a strptime format such as '%d/%m/%Y %H:%M'",
                           Rule("auto, s, ms, iso or a strptime format (with %)", _time_format_ok))
    order_field: str | None = key(None, "the column ordering a session's clicks (null: time_field; equal values "
                                  "keep file order)", Rule("null or a column name", lambda v: v is None or _column(v)))
    split: str = key("time", "time: the NARM paper's session protocol (test: the sessions of the last test_days "
                     "days); leave_one_out: RecBole's (each session's last clicks validate and test)",
                     one_of(CLICK_SPLITS))
    test_days: int = key(7, "split=time: sessions ending in the last this many days are the test set", integer())
    min_item_support: int = key(5, "split=time: drop items clicked fewer times than this", integer())
    fraction: int = key(1, "split=time: keep the most recent 1/fraction of the training examples (YOOCHOOSE's "
                        "1/64 and 1/4)", integer(expect="a positive integer (1 keeps all)"))
    valid_ratio: float = key(0.1, "split=time: seeded random share of the training examples used for validation",
                             number(at_least=0, below=1, expect="a share of the training examples in [0, 1) (0: no "
                                    "validation, train on all and test the last epoch)"))
    max_items: int = key(500_000, "refuse a log with more items than this once filtered (the output layer scores "
                         "every item for every example)", integer())
    cache_dir: str | None = key("~/.cache/narm-lightning", "prepared splits, keyed by file content and settings "
                                "(null: no cache)", TEXT)


def data_schema(data: Any) -> type:
    """Which data schema a composed ``data`` node follows: the atomic one has the id-field keys, a click log a
    path."""
    if "user_id_field" in data:
        return AtomicDataConfig
    return ClicksDataConfig if "path" in data else SessionDataConfig


def file_stem(path: Any) -> str:
    """``data=clicks``'s dataset name: the log's file name without its suffix (resolver ``narm.file_stem``)."""
    from pathlib import PurePath

    stem = PurePath(str(path)).stem.strip()
    return stem if stem not in ("", ".", "..") else "clicks"
