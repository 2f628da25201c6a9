"""The NARM paper's (and SR-GNN's) session protocol on any click log: one code path for DIGINETICA, YOOCHOOSE and
a user's own log (``data=clicks``).

SR-GNN's ``datasets/preprocess.py`` is the reference every NARM/SR-GNN number is computed on; this does its steps
vectorised, in memory proportional to the log (YOOCHOOSE's 33 M clicks in about 2 GB):

1. group clicks by session; a session's date is the time of its LAST row in file order (DIGINETICA: the
   ``eventdate`` day; YOOCHOOSE: the timestamp cut to whole seconds);
2. within a session, clicks are ordered by ``order`` (stable: file order among equals) when given, else kept in
   file order;
3. drop sessions of length 1, then items seen fewer than ``min_item_support`` times (counted over the remaining
   sessions), then sessions left shorter than 2;
4. ``split = latest session date - test_days``: sessions dated strictly after it are test, strictly before it
   train (a session dated exactly on it is in neither, as in SR-GNN);
5. train and test sessions are sorted by date; ties keep SR-GNN's dict order: order of first appearance
   (``tie_order="first_seen"``) or CPython 2.7's hash order (``"python2"``, how SR-GNN's published pickles
   were made);
6. items are renumbered 1.. in order of first appearance in the sorted training sessions; test clicks on items
   unknown to training are dropped, then test sessions shorter than 2;
7. both sides are prefix-augmented; a ``fraction`` k > 1 keeps the last ``int(n / k)`` training examples (the
   most recent: YOOCHOOSE 1/64 and 1/4) and the training sessions from the one holding the first kept example.

Dates are computed in UTC (SR-GNN uses ``time.mktime``, local time; the only difference would be a
daylight-saving change inside the test window).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from narm_lightning.data.sessions import Ragged, SessionSplit, augment_flat, chunk_offsets, within_group_index
from narm_lightning.errors import DataError

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class Clicks:
    """A click log in file order with its ids encoded: what every reader hands :func:`build_session_split`.

    ``session[r]`` is row r's session as a code 0.. numbered in order of first appearance (SR-GNN's dict
    insertion order), ``session_tokens[code]`` its id in the file; ``item[r]`` / ``item_tokens`` likewise (any
    code order). ``time[r]`` is whole seconds (UTC); ``order[r]`` orders a session's clicks (None: file order).
    """

    session: np.ndarray
    item: np.ndarray
    time: np.ndarray
    order: np.ndarray | None
    session_tokens: np.ndarray
    item_tokens: np.ndarray

    def __len__(self) -> int:
        return len(self.session)


def encode(values: np.ndarray | pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(codes, tokens): ``tokens[codes[r]] == values[r]``, codes 0.. in order of first appearance (int32: half
    the memory of int64 on a 33 M-row log).

    Ids sorted in the file (as DIGINETICA's and YOOCHOOSE's sessions are) are coded in one pass; others through
    Arrow's hash table (``pc.dictionary_encode``: first-appearance order, one dictionary across chunks; numpy's
    ``unique`` would sort all rows instead: 8 s for 33 M, against 5 s hashed and 0.2 s for sorted ids).
    """
    if (isinstance(values, np.ndarray) and values.dtype.kind in "iu" and len(values)
            and bool((values[1:] >= values[:-1]).all())):
        change = np.empty(len(values), dtype=bool)
        change[0] = True
        np.not_equal(values[1:], values[:-1], out=change[1:])
        codes = np.cumsum(change, dtype=np.int32 if len(values) < 2**31 else np.int64)
        codes -= 1
        return codes, values[change]
    encoded = pc.dictionary_encode(values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values))
    if isinstance(encoded, pa.ChunkedArray):
        dictionary = encoded.chunks[0].dictionary if encoded.num_chunks else pa.array([], pa.int64())
        codes = (np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in encoded.chunks])
                 if encoded.num_chunks else np.zeros(0, dtype=np.int32))
    else:
        dictionary, codes = encoded.dictionary, encoded.indices.to_numpy(zero_copy_only=False)
    return codes, dictionary.to_numpy(zero_copy_only=False)


def _group_rows(session: np.ndarray, counts: np.ndarray) -> np.ndarray | None:
    """Row indices grouped by session, file order within; None when the file is grouped already."""
    if len(session) < 2 or bool((session[1:] >= session[:-1]).all()):
        return None  # codes in first-appearance order never decrease exactly when sessions are contiguous
    return np.argsort(session, kind="stable")


def _order_within(order: np.ndarray, row_session: np.ndarray, same_session: np.ndarray) -> np.ndarray | None:
    """Positions reordering each session's rows by ``order`` (stable); None when they are in order."""
    rising = order[1:] >= order[:-1]
    if bool((rising | ~same_session).all()):
        return None
    by_order = np.argsort(order, kind="stable")
    return by_order[np.argsort(row_session[by_order], kind="stable")]


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


def build_session_split(
    clicks: Clicks,
    *,
    test_days: int,
    min_item_support: int,
    fraction: int = 1,
    tie_order: str = "first_seen",
    source: str,
    path: Path,
    session_word: str = "session",
) -> SessionSplit:
    """The protocol of the module docstring on ``clicks``, step by step; ``path`` and ``session_word`` name the log
    and its sessions in errors. Each step is a function of its own, so its temporaries (tens of millions of rows
    on a YOOCHOOSE-size log) are freed when it returns."""
    where = _Where(path, session_word)
    counts = np.bincount(clicks.session, minlength=len(clicks.session_tokens)).astype(np.int64)
    items, sess_time = _items_in_session_order(clicks, counts)
    kept = _filtered(items, counts, len(clicks.item_tokens), min_item_support, where, clicks.session_tokens[0])
    del items
    train_ids, test_ids = _split_by_time(clicks, kept.session_ok, sess_time, test_days, tie_order, where)
    train_flat, train_lens, test_flat, test_lens, known = _encoded(kept, train_ids, test_ids, len(clicks.item_tokens),
                                                                  where)
    starts, plens, targets, train_flat, train_lens = _training_examples(train_flat, train_lens, fraction, where)
    t_starts, t_plens, t_targets, _ = augment_flat(test_flat, test_lens)
    stats = {"clicks": len(clicks), "sessions": len(counts), "items": len(clicks.item_tokens), **kept.stats,
             "train_sessions": len(train_lens), "test_sessions": len(test_lens), "items_kept": len(known)}
    return SessionSplit(
        train=Ragged(train_flat, starts, plens),
        train_targets=targets.astype(np.int64, copy=False),
        test=Ragged(test_flat, t_starts, t_plens),
        test_targets=t_targets.astype(np.int64, copy=False),
        n_items=len(known),
        source=source,
        sessions=Ragged.consecutive(train_flat, train_lens),
        item_ids=_with_padding(clicks.item_tokens[known]),
        stats=stats,
    )


@dataclass(frozen=True)
class _Where:
    """What an error names: the log and the word for its sequences (session, or user)."""

    path: Path
    word: str


@dataclass(frozen=True)
class _Kept:
    """The clicks left by the filters: their items, session by session, and how many each session kept."""

    items: np.ndarray
    counts: np.ndarray  # clicks kept a session (0 for a dropped session)
    starts: np.ndarray
    session_ok: np.ndarray
    stats: dict[str, int]


def _items_in_session_order(clicks: Clicks, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each session's items, sessions one after another, in the order of the session's clicks (file order, or
    ``order``); and each session's time (its last row in file order)."""
    grouped = _group_rows(clicks.session, counts)
    ends = np.cumsum(counts)
    last_row = ends - 1 if grouped is None else grouped[ends - 1]
    sess_time = clicks.time[last_row]
    items = clicks.item if grouped is None else clicks.item[grouped]
    if clicks.order is not None:
        order = clicks.order if grouped is None else clicks.order[grouped]
        row_session = np.repeat(np.arange(len(counts)), counts)
        within = _order_within(order, row_session, row_session[1:] == row_session[:-1])
        if within is not None:
            items = items[within]
    return items, sess_time


def _filtered(items: np.ndarray, counts: np.ndarray, n_items: int, min_item_support: int, where: _Where,
              first_session: object) -> _Kept:
    """Sessions of one click out, then items seen fewer than ``min_item_support`` times, then sessions left
    shorter than two."""
    if not (counts > 1).any():
        raise DataError(
            f"{where.path}: every {where.word} has one click (e.g. {where.word} {first_session!r} of row 1); a "
            f"{where.word} needs two clicks or more to predict a next one: is the {where.word} column the right one?")
    keep = np.repeat(counts > 1, counts)
    support = np.bincount(items[keep], minlength=n_items)
    keep &= (support >= min_item_support)[items]  # a bool per item gathered: 1 byte a click, not 8
    kept_counts = np.add.reduceat(keep.view(np.int8), chunk_offsets(counts), dtype=np.int64)
    session_ok = kept_counts >= 2
    keep &= np.repeat(session_ok, counts)
    kept_items = items[keep]
    del keep
    if not session_ok.any():
        raise DataError(
            f"{where.path}: filtering left no {where.word}s ({int(counts.sum())} clicks read; {where.word}s of length "
            f"1, items seen < {min_item_support} times, then {where.word}s shorter than 2 removed); expected a larger "
            "click log (or a lower data.min_item_support)")
    kept_counts = np.where(session_ok, kept_counts, 0).astype(np.int64)
    stats = {"one_click_sessions": int((counts == 1).sum()),
             "rare_items": int(((support > 0) & (support < min_item_support)).sum()),
             "sessions_kept": int(session_ok.sum())}
    return _Kept(kept_items, kept_counts, chunk_offsets(kept_counts), session_ok, stats)


def _split_by_time(clicks: Clicks, session_ok: np.ndarray, sess_time: np.ndarray, test_days: int, tie_order: str,
                   where: _Where) -> tuple[np.ndarray, np.ndarray]:
    """The sessions of the last ``test_days`` days are the test side, the others the training side, each sorted by
    time (ties: first appearance, or Python 2's dict order of the session ids, as SR-GNN's script on Python 2)."""
    split_time = int(sess_time[session_ok].max()) - test_days * SECONDS_PER_DAY
    train_ids = np.flatnonzero(session_ok & (sess_time < split_time))
    test_ids = np.flatnonzero(session_ok & (sess_time > split_time))
    if tie_order == "python2":
        tie = python2_dict_order([str(s) for s in clicks.session_tokens])
    else:
        tie = np.arange(len(session_ok))  # codes are in order of first appearance
    train_ids = train_ids[np.lexsort((tie[train_ids], sess_time[train_ids]))]
    test_ids = test_ids[np.lexsort((tie[test_ids], sess_time[test_ids]))]
    if len(train_ids) == 0 or len(test_ids) == 0:
        side = "training" if len(train_ids) == 0 else "test"
        raise DataError(
            f"{where.path}: filtering left no {where.word}s for the {side} side ({len(train_ids)} train / "
            f"{len(test_ids)} test {where.word}s; test = the last {test_days} day(s)); expected a click log "
            "spanning more days (or another data.test_days)")
    return train_ids, test_ids


def _encoded(kept: _Kept, train_ids: np.ndarray, test_ids: np.ndarray, n_items: int, where: _Where
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Items renumbered 1.. in order of first appearance in the sorted training sessions; test clicks on items
    unknown to training dropped, then test sessions shorter than two. Flat ids and lengths of each side, and the
    original codes of the known items."""
    train_lens = kept.counts[train_ids]
    train_codes, known = encode(_gather(kept.items, kept.starts[train_ids], train_lens))
    train_flat = train_codes.astype(np.int64) + 1
    del train_codes
    new_id = np.zeros(n_items, dtype=np.int64)
    new_id[known] = np.arange(1, len(known) + 1)
    test_lens = kept.counts[test_ids]
    test_new = new_id[_gather(kept.items, kept.starts[test_ids], test_lens)]
    seen = test_new > 0
    test_row_sess = np.repeat(np.arange(len(test_ids)), test_lens)
    test_lens = np.bincount(test_row_sess[seen], minlength=len(test_ids)).astype(np.int64)
    test_flat = test_new[seen & (test_lens[test_row_sess] >= 2)]
    test_lens = test_lens[test_lens >= 2]
    if len(test_lens) == 0:
        raise DataError(
            f"{where.path}: filtering left no {where.word}s for the test side (no test {where.word} keeps 2 clicks "
            "on items known from training); expected a larger click log")
    return train_flat, train_lens, test_flat, test_lens, known


def _training_examples(train_flat: np.ndarray, train_lens: np.ndarray, fraction: int, where: _Where
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every prefix of every training session an example (windows into ``train_flat``); ``fraction`` > 1 keeps the
    last 1/fraction of them (YOOCHOOSE 1/4, 1/64), and only the sessions those examples come from."""
    starts, plens, targets, sess_index = augment_flat(train_flat, train_lens)
    if fraction > 1:
        n_keep = int(len(targets) / fraction)
        if n_keep == 0:
            raise DataError(
                f"{where.path}: filtering left no {where.word}s for 1/{fraction} of the training examples "
                f"({len(targets)} examples in all); expected a larger click log")
        first_session = int(sess_index[-n_keep])
        starts, plens, targets = starts[-n_keep:], plens[-n_keep:], targets[-n_keep:]
        first_item = int(chunk_offsets(train_lens)[first_session])
        train_flat, train_lens = train_flat[first_item:], train_lens[first_session:]
        starts = starts - first_item
    return starts, plens, targets, train_flat, train_lens


def _gather(flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate the chunks flat[starts[k] : starts[k] + lengths[k]] (vectorised)."""
    index = np.int32 if len(flat) < 2**31 else np.int64
    rows = within_group_index(lengths, index)
    rows += np.repeat(starts.astype(index, copy=False), lengths)
    return flat[rows]


def _with_padding(tokens: np.ndarray) -> np.ndarray:
    """``item_ids``: index 0 (padding) first, then the original ids; int64 stays int64, text stays text."""
    if tokens.dtype.kind in "iu":
        return np.concatenate([[0], tokens]).astype(np.int64)
    return np.concatenate([np.array([""], dtype=object), tokens.astype(object)])
