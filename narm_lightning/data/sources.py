"""Which reader and protocol a dataset name means; the one place that turns data settings into tables."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from narm_lightning.data.atomic import read_atomic
from narm_lightning.data.clicks import ClickColumns, ClickLog, read_click_log
from narm_lightning.data.filters import filter_rows
from narm_lightning.data.locate import FETCHERS, find_atomic, find_benchmark, find_session_split
from narm_lightning.data.protocol import (
    SequentialData,
    Split,
    build_benchmark,
    build_sequential,
    build_session_examples,
)
from narm_lightning.data.session_files import read_pickle_split, read_text_split
from narm_lightning.data.session_preprocess import load_raw_split
from narm_lightning.data.session_split import build_session_split
from narm_lightning.data.sessions import SessionSplit
from narm_lightning.data.split_cache import cached_split
from narm_lightning.errors import DataError
from narm_lightning.io import require_regular_file


def locate_atomic(dataset: str, root: str, extra_roots: Sequence[str], download: bool) -> Path:
    """``<root>/<dataset>/<dataset>.inter``, else the same under each extra root, else fetch (ml-100k)."""
    found = find_atomic(dataset, [root, *extra_roots], download)
    return found if found is not None else FETCHERS[dataset](root)


def load_user_sequences(
    dataset: str,
    root: str,
    extra_roots: Sequence[str],
    user_field: str,
    item_field: str,
    time_field: str,
    max_len: int,
    download: bool = True,
    split: Split = Split(),  # noqa: B008 - frozen: a shared default is safe
    filters: Mapping[str, Any] | None = None,
    time_order: str = "recbole",
    normalize_time: bool | None = None,
) -> SequentialData:
    """A RecBole atomic ``.inter`` file under RecBole's sequential protocol (leave-one-out unless ``split``),
    after RecBole's interaction ``filters`` (``data.filters.filter_rows`` keywords) when given; same-time
    interactions ordered by ``time_order`` (``protocol.time_keys``). ``normalize_time`` is RecBole's
    ``normalize_all``; None: as RecBole, on for ml-100k (its ``properties/dataset/ml-100k.yaml``), else off."""
    if normalize_time is None:
        normalize_time = dataset == "ml-100k"
    path = locate_atomic(dataset, root, extra_roots, download)
    filters = dict(filters or {})
    # val_interval fields are read as RecBole types them: an interval string means a float field, a list a token one
    val_interval = filters.get("val_interval") or {}
    extra = {f: ("float" if isinstance(rule, str) else "token") for f, rule in val_interval.items()}
    table = read_atomic(path, {**extra, user_field: "token", item_field: "token", time_field: "float"})
    user, item, time = table.columns[user_field], table.columns[item_field], table.columns[time_field]
    if any(v is not None for v in filters.values()):
        rows = filter_rows(user, item, time, {f: table.columns[f] for f in extra}, **filters)
        if len(rows) == 0:
            used = ", ".join(f"{k}={v}" for k, v in filters.items() if v is not None)
            raise DataError(f"{path}: the filters ({used}) leave no interaction; expected looser intervals.")
        user, item, time = user[rows], item[rows], time[rows]
    data = build_sequential(user, item, time, max_len, str(path), split, time_order, normalize_time)
    return dataclasses.replace(data, files=(str(path),))


def load_benchmark(dataset: str, root: str, extra_roots: Sequence[str], parts: Sequence[str], item_field: str,
                   max_len: int) -> SequentialData:
    """RecBole's ``benchmark_filename``: ``<dataset>.<part>.inter`` for train, valid and test, in the first root
    that has the first one, each row an example (``<item_field>_list:token_seq`` history + ``<item_field>:token``
    target)."""
    paths = find_benchmark(dataset, [root, *extra_roots], parts)
    list_field = f"{item_field}_list"
    tables = [read_atomic(p, {list_field: "token_seq", item_field: "token"}) for p in paths]
    data = build_benchmark([(t.columns[list_field], t.columns[item_field]) for t in tables], max_len,
                           [str(p) for p in paths])
    return dataclasses.replace(data, files=tuple(str(p) for p in paths))


def read_session_split(
    dataset: str,
    fmt: str,
    roots: Sequence[str],
    raw_dataset: str | None,
    raw_folder: str | None,
    raw_options: dict,
) -> SessionSplit:
    """Find (``locate.find_session_split``: ``auto`` takes the first that exists) and read a session dataset: a
    prepared text or pickle split, or a raw click log."""
    return _read_session_split(dataset, fmt, roots, raw_dataset, raw_folder, raw_options)[0]


def _read_session_split(
    dataset: str, fmt: str, roots: Sequence[str], raw_dataset: str | None, raw_folder: str | None, raw_options: dict,
) -> tuple[SessionSplit, tuple[str, ...]]:
    """``read_session_split`` and the files it read."""
    kind, path = find_session_split(dataset, fmt, roots, raw_dataset, raw_folder)
    if kind == "session_text":
        return read_text_split(path.parent), (str(path), str(path.parent / "test.tsv"))
    if kind == "session_pickle":
        return read_pickle_split(path.parent), (str(path), str(path.parent / "test.txt"))
    # a missing raw file: load_raw_split's error says where to obtain it and where to put it
    return load_raw_split(raw_dataset, path, **raw_options), (str(path),)  # type: ignore[arg-type]


def load_sessions(
    dataset: str,
    fmt: str,
    root: str,
    extra_roots: Sequence[str],
    max_len: int,
    valid_ratio: float,
    seed: int,
    raw_dataset: str | None = None,
    raw_folder: str | None = None,
    raw_options: dict | None = None,
) -> SequentialData:
    """A session dataset under the NARM paper's protocol (augmented train, 10% valid, prepared test)."""
    split, files = _read_session_split(dataset, fmt, [root, *extra_roots], raw_dataset, raw_folder, raw_options or {})
    return session_data(split, files, max_len, valid_ratio, seed)


def session_data(split: SessionSplit, files: tuple[str, ...], max_len: int, valid_ratio: float,
                 seed: int) -> SequentialData:
    """A session split as the three example sets (``build_session_examples``), item tokens named."""
    n_items = split.n_items + 1
    if split.item_ids is not None:
        tokens = np.asarray(["[PAD]", *[str(t) for t in split.item_ids[1:]]], dtype=object)
    else:
        tokens = np.asarray(["[PAD]", *[str(i) for i in range(1, n_items)]], dtype=object)
    train, test = split.train, split.test
    data = build_session_examples((train.flat, train.starts, train.lengths), split.train_targets,
                                  (test.flat, test.starts, test.lengths), split.test_targets, n_items, tokens,
                                  valid_ratio, seed, max_len, split.source)
    stats = {**data.stats, "sequence_word": "session", **({"preprocess": dict(split.stats)} if split.stats else {})}
    return dataclasses.replace(data, stats=stats, files=files)


def click_columns(sequence_field: str, item_field: str, time_field: str, order_field: str | None,
                  by_user: bool) -> ClickColumns:
    return ClickColumns(sequence_field, item_field, time_field, order_field, "user" if by_user else "session")


def load_clicks(path: str, columns: ClickColumns, *, fmt: str = "auto", delimiter: str | None = None,
                column_names: Sequence[str] | None = None, time_format: str = "auto", split: str = "time",
                test_days: int = 7, min_item_support: int = 5, fraction: int = 1, valid_ratio: float = 0.1,
                max_items: int = 500_000, cache_dir: str | None = None, max_len: int = 50, seed: int = 2020,
                eval_split: Split = Split()) -> SequentialData:  # noqa: B008 - frozen: a shared default is safe
    """A user's click log (``data=clicks``) under the NARM paper's time split (``split="time"``, the code path of
    DIGINETICA and YOOCHOOSE, cached by content) or RecBole's leave-one-out per session (``"leave_one_out"``)."""
    file = Path(path).expanduser()
    word = columns.sequence_word

    def read() -> ClickLog:
        return read_click_log(file, columns, fmt=fmt, delimiter=delimiter,
                              column_names=list(column_names) if column_names else None, time_format=time_format)

    if split == "time":
        def build() -> SessionSplit:
            log = read()
            return build_session_split(log.clicks, test_days=test_days, min_item_support=min_item_support,
                                       fraction=fraction, source=f"{file} ({word}s, split=time, last {test_days} "
                                       f"day(s) test)", path=file, session_word=word)

        if cache_dir is None:
            prepared = build()
        else:
            require_regular_file(file, "a click log (data.path)")
            settings = {"columns": [columns.sequence, columns.item, columns.time, columns.order, word],
                        "format": fmt, "delimiter": delimiter, "column_names": list(column_names or []),
                        "time_format": time_format, "test_days": test_days, "min_item_support": min_item_support,
                        "fraction": fraction}
            prepared = cached_split("clicks", file, settings, build, cache_dir)
        _check_items(file, prepared.n_items, max_items)
        data = session_data(prepared, (str(file),), max_len, valid_ratio, seed)
    else:
        log = read()
        clicks = log.clicks
        data = build_sequential(clicks.session, clicks.item, clicks.order.astype(np.float64), max_len,
                                f"{file} ({word}s, split=leave_one_out)", eval_split, time_order="exact")
        _check_items(file, data.n_items - 1, max_items)
        # the protocol numbered the codes; name the items (and count the sequences) as the file does
        tokens = np.asarray(["[PAD]", *(str(t) for t in clicks.item_tokens[data.item_tokens[1:].astype(np.int64)])],
                            dtype=object)
        data = dataclasses.replace(data, item_tokens=tokens, files=(str(file),))
    return dataclasses.replace(data, stats={**data.stats, "sequence_word": word})


def _check_items(path: Path, n_items: int, max_items: int) -> None:
    if n_items > max_items:
        raise DataError(f"{path}: {n_items:,} distinct items once filtered, more than data.max_items={max_items:,}: "
                        "the output layer scores every item for every example, so memory and time grow with them; "
                        "expected fewer (raise data.min_item_support to drop rare items) or a higher "
                        "data.max_items.")
