"""Prepared session splits as NARM / SR-GNN code bases exchange them: plain text (``train_sessions.txt`` +
``test.tsv``) and the pickles ``train.txt`` / ``test.txt`` / ``all_train_seq.txt`` (read with a class-refusing
unpickler), checked line by line; sparse raw ids made dense."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from narm_lightning.data.sessions import Ragged, SessionSplit, augment_ragged, split_flat
from narm_lightning.errors import DataError
from narm_lightning.io import read_text_lines
from narm_lightning.safe_load import load_plain_pickle


def _line_of_token(lengths: np.ndarray, token_index: int, line_numbers: np.ndarray) -> int:
    """1-based line number holding the flat token ``token_index`` (lines of the given token counts)."""
    ends = np.cumsum(lengths)
    return int(line_numbers[int(np.searchsorted(ends, token_index, side="right"))])


def _parse_ids(tokens: list[str], path: Path, lengths: np.ndarray, line_numbers: np.ndarray) -> np.ndarray:
    """Convert id tokens to int64 (vectorised), with a DataError naming the first bad line."""
    try:
        values = np.array(tokens, dtype=np.str_).astype(np.int64) if tokens else np.zeros(0, np.int64)
    except (ValueError, OverflowError):
        for idx, tok in enumerate(tokens):
            try:
                int(tok)
            except ValueError:
                line = _line_of_token(lengths, idx, line_numbers)
                raise DataError(
                    f"{path}, line {line}: item id {tok!r} is not an integer; expected integer item ids >= 1"
                ) from None
        raise DataError(f"{path}: item ids out of the int64 range; expected integer item ids >= 1") from None
    bad = np.flatnonzero(values < 1)
    if len(bad):
        idx = int(bad[0])
        line = _line_of_token(lengths, idx, line_numbers)
        raise DataError(
            f"{path}, line {line}: item id {values[idx]} is < 1; expected item ids >= 1 (0 is padding)"
        )
    return values


def read_session_lines(path: Path) -> list[np.ndarray]:
    """Read ``train_sessions.txt``: one session a line, item ids separated by spaces, click order."""
    what = "one session a line: item ids >= 1 separated by spaces"
    lines = read_text_lines(path, what)
    rows = [line.split() for line in lines]
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    empty = np.flatnonzero(lengths == 0)
    if len(empty):
        raise DataError(f"{path}, line {int(empty[0]) + 1}: empty line; expected {what}")
    line_numbers = np.arange(1, len(rows) + 1)
    flat = _parse_ids(list(itertools.chain.from_iterable(rows)), path, lengths, line_numbers)
    return split_flat(flat, lengths)


def read_examples_tsv(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """Read ``test.tsv``: ``prefix ids (space separated)`` TAB ``target id``, one example a line."""
    what = "one example a line: prefix item ids separated by spaces, a TAB, the target item id"
    lines = read_text_lines(path, what)
    prefix_rows: list[list[str]] = []
    target_tokens: list[str] = []
    for number, line in enumerate(lines, start=1):
        parts = line.rstrip("\r").split("\t")
        if len(parts) != 2:
            raise DataError(f"{path}, line {number}: found {len(parts) - 1} TAB characters; expected {what}")
        prefix = parts[0].split()
        if not prefix:
            raise DataError(f"{path}, line {number}: empty prefix; expected {what}")
        target = parts[1].split()
        if len(target) != 1:
            raise DataError(f"{path}, line {number}: {len(target)} target ids; expected {what}")
        prefix_rows.append(prefix)
        target_tokens.append(target[0])
    lengths = np.fromiter((len(r) for r in prefix_rows), dtype=np.int64, count=len(prefix_rows))
    line_numbers = np.arange(1, len(lines) + 1)
    flat = _parse_ids(list(itertools.chain.from_iterable(prefix_rows)), path, lengths, line_numbers)
    targets = _parse_ids(target_tokens, path, np.ones(len(lines), dtype=np.int64), line_numbers)
    return split_flat(flat, lengths), targets


def _max_id(*groups: np.ndarray) -> int:
    """Largest item id over several arrays (0 when all are empty)."""
    return max((int(g.max()) for g in groups if g.size), default=0)


# Ids up to 10 x (distinct items) + 100,000 stay as they are, so prepared splits keep theirs (and their
# results): YOOCHOOSE 1/64's ids run to 37,483 for 17,745 items (numbered over all of YOOCHOOSE 1/4).
SPARSE_FACTOR, SPARSE_SLACK = 10, 100_000


def dense_ids(split: SessionSplit) -> SessionSplit:
    """Ids far beyond the number of distinct items (raw ids such as 10**12) remapped to 1..n in id order.

    The embedding table has a row per id up to the largest, so sparse ids would need memory out of all
    proportion to the data. The original ids are kept as ``item_ids``: recommendations still name them.
    Prepared splits (ids 1..n, perhaps with a few gaps) are returned unchanged, so their results are too.
    """
    if split.item_ids is not None:
        return split
    flats = [split.train.flat, split.train_targets, split.test.flat, split.test_targets]
    if split.sessions is not None:
        flats.append(split.sessions.flat)
    uniques = np.unique(np.concatenate(flats))
    if split.n_items <= SPARSE_FACTOR * len(uniques) + SPARSE_SLACK:
        return split

    def dense(ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(uniques, ids) + 1

    return SessionSplit(
        train=split.train.with_flat(dense(split.train.flat)),
        train_targets=dense(split.train_targets),
        test=split.test.with_flat(dense(split.test.flat)),
        test_targets=dense(split.test_targets),
        n_items=len(uniques),
        source=split.source,
        sessions=None if split.sessions is None else split.sessions.with_flat(dense(split.sessions.flat)),
        item_ids=np.concatenate([[0], uniques]),
    )


def read_text_split(directory: Path | str) -> SessionSplit:
    """Read a prepared text split: ``train_sessions.txt`` + ``test.tsv`` in ``directory``.

    Training examples are the augmentation of the sessions; n_items is the largest id in the files.
    """
    directory = Path(directory)
    train_path, test_path = directory / "train_sessions.txt", directory / "test.tsv"
    sessions = Ragged.from_rows(read_session_lines(train_path))
    train, train_targets = augment_ragged(sessions)
    test_prefixes, test_targets = read_examples_tsv(test_path)
    test = Ragged.from_rows(test_prefixes)
    return dense_ids(SessionSplit(
        train=train,
        train_targets=train_targets,
        test=test,
        test_targets=test_targets,
        n_items=_max_id(sessions.flat, test.flat, test_targets),
        source=f"{train_path} + {test_path}",
        sessions=sessions,
    ))


def _int_lists(obj: object, path: Path, what: str) -> list[np.ndarray]:
    """Check that ``obj`` is a list of non-empty lists of ints >= 1 and convert it (vectorised)."""
    if not isinstance(obj, (list, tuple)):
        raise DataError(f"{path}: found {type(obj).__name__}; expected {what}")
    for k, row in enumerate(obj):
        if not isinstance(row, (list, tuple)) or not row:
            raise DataError(
                f"{path}: entry {k} is {type(row).__name__} of length "
                f"{len(row) if isinstance(row, (list, tuple)) else 'n/a'}; expected {what}"
            )
    lengths = np.fromiter((len(r) for r in obj), dtype=np.int64, count=len(obj))
    flat_list = list(itertools.chain.from_iterable(obj))
    _check_ints(flat_list, path, what, lengths)
    return split_flat(np.array(flat_list, dtype=np.int64), lengths)


def _check_ints(values: list[object], path: Path, what: str, lengths: np.ndarray | None = None) -> None:
    """DataError naming the entry holding the first value that is not an int >= 1."""
    if all(type(v) is int and v >= 1 for v in values):
        return
    idx = next(i for i, v in enumerate(values) if not (type(v) is int and v >= 1))
    entry = idx if lengths is None else int(np.searchsorted(np.cumsum(lengths), idx, side="right"))
    raise DataError(f"{path}: entry {entry} holds {values[idx]!r}; expected {what} (integer item ids >= 1)")


def _read_pickled_examples(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """Read an SR-GNN ``train.txt`` / ``test.txt``: a pickle of (list of prefix lists, list of labels)."""
    what = "a pickled pair (list of prefix lists, list of target ids)"
    obj = load_plain_pickle(path)
    if not isinstance(obj, (list, tuple)) or len(obj) != 2:
        raise DataError(f"{path}: found {type(obj).__name__} of length {_len(obj)}; expected {what}")
    prefixes = _int_lists(obj[0], path, "a list of non-empty prefix lists of item ids")
    labels = obj[1]
    if not isinstance(labels, (list, tuple)):
        raise DataError(f"{path}: the labels are a {type(labels).__name__}; expected {what}")
    if len(labels) != len(prefixes):
        raise DataError(
            f"{path}: {len(prefixes)} prefixes but {len(labels)} labels; expected one label per prefix"
        )
    _check_ints(list(labels), path, "a list of target ids")
    return prefixes, np.array(labels, dtype=np.int64)


def _len(obj: object) -> str:
    try:
        return str(len(obj))  # type: ignore[arg-type]
    except TypeError:
        return "n/a"


def read_pickle_split(directory: Path | str) -> SessionSplit:
    """Read an SR-GNN/NARM pickle split: ``train.txt``, ``test.txt`` and (optional) ``all_train_seq.txt``.

    Every pickle is loaded with a class-refusing unpickler: nothing in the files can execute.
    """
    directory = Path(directory)
    train_path, test_path = directory / "train.txt", directory / "test.txt"
    seq_path = directory / "all_train_seq.txt"
    train_prefixes, train_targets = _read_pickled_examples(train_path)
    test_prefixes, test_targets = _read_pickled_examples(test_path)
    sessions = None
    source = f"{train_path} + {test_path}"
    if seq_path.exists():
        sessions = _int_lists(
            load_plain_pickle(seq_path), seq_path, "a pickled list of sessions (lists of ids)"
        )
        source += f" + {seq_path}"
    train, test = Ragged.from_rows(train_prefixes), Ragged.from_rows(test_prefixes)
    whole = None if sessions is None else Ragged.from_rows(sessions)
    groups = [train.flat, train_targets, test.flat, test_targets] + ([] if whole is None else [whole.flat])
    return dense_ids(SessionSplit(
        train=train,
        train_targets=train_targets,
        test=test,
        test_targets=test_targets,
        n_items=_max_id(*groups),
        source=source,
        sessions=whole,
    ))
