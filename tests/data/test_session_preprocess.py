"""Raw DIGINETICA / YOOCHOOSE preprocessing: exactness against SR-GNN's sample, errors, cache."""

from __future__ import annotations

import collections
import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from narm_lightning.data import session_preprocess, session_split
from narm_lightning.data.session_preprocess import load_raw_split, preprocess_diginetica, preprocess_yoochoose
from narm_lightning.data.session_split import python2_dict_order
from narm_lightning.data.sessions import SessionSplit
from narm_lightning.errors import DataError
from tests.helpers import SHARED_DATA, need_shared

SHARED = SHARED_DATA
RAW = SHARED / "raw-samples"
PICKLE_SAMPLE = RAW / "srgnn-pickle-sample"


need = need_shared


def rows(prefixes: list[np.ndarray], targets: np.ndarray) -> list[str]:
    return [
        " ".join(map(str, p.tolist())) + "\t" + str(int(t)) for p, t in zip(prefixes, targets, strict=True)
    ]


def test_diginetica_sample_reproduces_srgnn_pickles_exactly() -> None:
    split = preprocess_diginetica(
        need(RAW / "diginetica-train-item-views-sample.csv"), sort_by_timeframe=True, tie_order="python2"
    )
    assert (
        rows(split.train_prefixes, split.train_targets)
        == (PICKLE_SAMPLE / "train.expected.tsv").read_text().splitlines()
    )
    assert (
        rows(split.test_prefixes, split.test_targets)
        == (PICKLE_SAMPLE / "test.expected.tsv").read_text().splitlines()
    )
    assert (split.n_train, split.n_test, split.n_items, len(split.train_sessions)) == (1205, 99, 309, 469)
    assert split.item_ids is not None and len(split.item_ids) == 310
    assert split.item_ids[1] == 9617  # the first item of the earliest training session


@pytest.mark.parametrize(("sort", "tie"), [(False, "python2"), (True, "first_seen"), (False, "first_seen")])
def test_other_settings_differ_from_the_sample(sort: bool, tie: str) -> None:
    """Only sorted clicks + Python 2.7 dict order reproduce the sample: the settings are not no-ops."""
    split = preprocess_diginetica(
        need(RAW / "diginetica-train-item-views-sample.csv"), sort_by_timeframe=sort, tie_order=tie
    )
    assert (split.n_train, split.n_test, split.n_items) == (1205, 99, 309)
    assert (
        rows(split.train_prefixes, split.train_targets)
        != (PICKLE_SAMPLE / "train.expected.tsv").read_text().splitlines()
    )


def test_original_header_sample_parses() -> None:
    split = preprocess_diginetica(need(RAW / "diginetica-train-item-views-original-header.csv"))
    assert split.n_train > 0 and split.n_test > 0


def test_yoochoose_sample_is_too_small() -> None:
    with pytest.raises(DataError, match="filtering left no sessions"):
        preprocess_yoochoose(need(RAW / "yoochoose-clicks-sample.dat"), fraction=64)
    with pytest.raises(DataError, match="filtering left no sessions"):
        preprocess_yoochoose(RAW / "yoochoose-clicks-sample.dat", fraction=1)


def test_python2_dict_order_small_table() -> None:
    # Below the first resize (8 slots, 5 keys) CPython 2.7 puts "1".."5" at hash & 7; their hashes
    # end in distinct low bits, so the order is simply by (hash & 7).
    keys = ["1", "2", "3", "4", "5"]
    slots = [session_split._python2_str_hash(k) & 7 for k in keys]
    assert len(set(slots)) == 5
    assert python2_dict_order(keys).tolist() == np.argsort(np.argsort(slots)).tolist()


# ----------------------------------------------------------------------------- synthetic logs vs a reference


def reference(clicks: list[tuple[int, int, int, int]], sort: bool, test_days: int, fraction: int) -> tuple:
    """Plain-Python statement of the SR-GNN steps (first-seen tie order); clicks = (session, item, t, tf)."""
    by_sess: dict[int, list[tuple[int, int]]] = {}
    last_t: dict[int, int] = {}
    for s, item, t, tf in clicks:
        by_sess.setdefault(s, []).append((item, tf))
        last_t[s] = t
    seqs = {s: [i for i, _ in (sorted(c, key=lambda x: x[1]) if sort else c)] for s, c in by_sess.items()}
    seqs = {s: c for s, c in seqs.items() if len(c) > 1}
    counts = collections.Counter(i for c in seqs.values() for i in c)
    seqs = {s: [i for i in c if counts[i] >= 5] for s, c in seqs.items()}
    seqs = {s: c for s, c in seqs.items() if len(c) >= 2}
    split = max(last_t[s] for s in seqs) - 86400 * test_days
    train = sorted((s for s in seqs if last_t[s] < split), key=lambda s: last_t[s])
    test = sorted((s for s in seqs if last_t[s] > split), key=lambda s: last_t[s])
    ids: dict[int, int] = {}
    train_seqs = [[ids.setdefault(i, len(ids) + 1) for i in seqs[s]] for s in train]
    test_seqs = [[ids[i] for i in seqs[s] if i in ids] for s in test]
    test_seqs = [c for c in test_seqs if len(c) >= 2]

    def aug(ss: list[list[int]]) -> tuple[list, list, list]:
        out = [(c[:-i], c[-i], k) for k, c in enumerate(ss) for i in range(1, len(c))]
        return [p for p, _, _ in out], [t for _, t, _ in out], [k for _, _, k in out]

    tr_p, tr_t, tr_k = aug(train_seqs)
    sessions = train_seqs
    if fraction > 1:
        n = int(len(tr_t) / fraction)
        tr_p, tr_t, sessions = tr_p[-n:], tr_t[-n:], train_seqs[tr_k[-n] :]
    te_p, te_t, _ = aug(test_seqs)
    return tr_p, tr_t, te_p, te_t, sessions, len(ids)


def as_tuple(split: SessionSplit) -> tuple:
    return (
        [p.tolist() for p in split.train_prefixes],
        split.train_targets.tolist(),
        [p.tolist() for p in split.test_prefixes],
        split.test_targets.tolist(),
        [s.tolist() for s in split.train_sessions],
        split.n_items,
    )


def synthetic_clicks(seed: int, n_sessions: int = 400) -> list[tuple[int, int, int, int]]:
    """Sessions over 20 days with interleaved rows, repeated items, out-of-order timeframes."""
    rng = np.random.default_rng(seed)
    base = int(dt.datetime(2016, 3, 1, tzinfo=dt.UTC).timestamp())
    clicks = []
    for s in rng.permutation(np.arange(1, n_sessions + 1)):
        day = int(rng.integers(0, 20))
        for _ in range(int(rng.integers(1, 7))):
            clicks.append(
                (
                    int(s),
                    int(rng.integers(100, 160)),
                    base + day * 86400 + int(rng.integers(0, 86000)),
                    int(rng.integers(0, 10**6)),
                )
            )
    order = rng.permutation(len(clicks))[: len(clicks) // 10]  # swap some rows: sessions interleave
    for a, b in zip(order[::2], order[1::2], strict=False):
        clicks[a], clicks[b] = clicks[b], clicks[a]
    return clicks


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("sort", [True, False])
def test_diginetica_matches_reference(tmp_path: Path, seed: int, sort: bool) -> None:
    clicks = synthetic_clicks(seed)
    # DIGINETICA only has a day: use the day of each click's time.
    day_clicks = [(s, i, t - t % 86400, tf) for s, i, t, tf in clicks]
    path = tmp_path / "train-item-views.csv"
    lines = ["sessionId;userId;itemId;timeframe;eventdate"] + [
        f"{s};NA;{i};{tf};{dt.datetime.fromtimestamp(t, dt.UTC).date().isoformat()}"
        for s, i, t, tf in day_clicks
    ]
    path.write_text("\n".join(lines) + "\n")
    split = preprocess_diginetica(path, sort_by_timeframe=sort)
    assert as_tuple(split) == reference(day_clicks, sort, 7, 1)
    assert np.array_equal(split.train_targets, np.array(reference(day_clicks, sort, 7, 1)[1]))


@pytest.mark.parametrize("fraction", [1, 4, 64])
def test_yoochoose_matches_reference(tmp_path: Path, fraction: int) -> None:
    clicks = synthetic_clicks(7, n_sessions=1500)
    path = tmp_path / "yoochoose-clicks.dat"
    path.write_text(
        "".join(
            f"{s},{dt.datetime.fromtimestamp(t, dt.UTC).strftime('%Y-%m-%dT%H:%M:%S')}.123Z,{i},0\n"
            for s, i, t, _ in clicks
        )
    )
    split = preprocess_yoochoose(path, fraction=fraction)
    expected = reference(clicks, False, 1, fraction)
    assert as_tuple(split) == expected
    assert split.n_train == len(expected[1]) > 0


# ----------------------------------------------------------------------------- errors


def test_missing_raw_files_say_where_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"train-item-views\.csv: file not found.*CIKM Cup 2016.*put it at"):
        load_raw_split("diginetica", tmp_path, cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match=r"yoochoose-clicks\.dat: file not found.*RecSys Challenge 2015"):
        preprocess_yoochoose(tmp_path / "yoochoose-clicks.dat")


def test_raw_directory_and_empty(tmp_path: Path) -> None:
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(DataError, match="is a directory"):
        preprocess_diginetica(tmp_path / "d.csv")
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(DataError, match="file is empty"):
        preprocess_diginetica(tmp_path / "e.csv")
    (tmp_path / "h.csv").write_text("session_id;user_id;item_id;timeframe;eventdate\n")
    with pytest.raises(DataError, match="no data rows"):
        preprocess_diginetica(tmp_path / "h.csv")


def test_raw_bad_values_name_line(tmp_path: Path) -> None:
    path = tmp_path / "train-item-views.csv"
    path.write_text(
        "session_id;user_id;item_id;timeframe;eventdate\n1;NA;5;10;2016-05-09\n1;NA;x;11;2016-05-09\n"
    )
    with pytest.raises(DataError, match=r"train-item-views\.csv, line 3: item id 'x' is not an integer"):
        preprocess_diginetica(path)
    path.write_text(
        "session_id;user_id;item_id;timeframe;eventdate\n1;NA;5;10;2016-05-09\n1;NA;6;11;09.05.2016\n"
    )
    with pytest.raises(DataError, match=r"line 3: eventdate '09.05.2016' is not a date"):
        preprocess_diginetica(path)
    path.write_text("session_id;user_id;item_id;timeframe;eventdate\n1;NA;5;10\n")
    with pytest.raises(DataError, match=r"line 2: 4 fields; expected 5 fields"):
        preprocess_diginetica(path)
    path.write_text("session;user;item;timeframe;eventdate\n1;NA;5;10;2016-05-09\n")
    with pytest.raises(DataError, match=r"line 1: header .* lacks sessionId or session_id"):
        preprocess_diginetica(path)
    yc = tmp_path / "yoochoose-clicks.dat"
    yc.write_text("1,2014-04-07T10:51:09.277Z,214536502,0\n2,yesterday,214536500,0\n")
    with pytest.raises(DataError, match=r"yoochoose-clicks\.dat, line 2: timestamp 'yesterday'"):
        preprocess_yoochoose(yc)


# ----------------------------------------------------------------------------- cache


def test_cache_hit_on_second_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = need(RAW / "diginetica-train-item-views-sample.csv")
    cache = tmp_path / "cache"
    first = load_raw_split("diginetica", raw, cache_dir=cache, tie_order="python2")
    assert len(list(cache.glob("*.npz"))) == 1 and len(list(cache.glob("*.json"))) == 1
    assert not list(cache.glob("*.tmp"))

    def fail(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("preprocessing ran although the cache should have been hit")

    monkeypatch.setattr(session_preprocess, "preprocess_diginetica", fail)
    second = load_raw_split("diginetica", raw, cache_dir=cache, tie_order="python2")
    assert "[cached:" in second.source
    assert as_tuple(second) == as_tuple(first)
    assert np.array_equal(second.item_ids, first.item_ids)
    # Other settings are another cache entry (and here, with preprocessing disabled, a rebuild attempt).
    with pytest.raises(AssertionError, match="preprocessing ran"):
        load_raw_split("diginetica", raw, cache_dir=cache, tie_order="python2", sort_by_timeframe=False)


class _Touch:
    """Pickles as ``os.system(<touch marker>)``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("field", ["meta", "train_flat", "item_ids"])
def test_a_cache_entry_holding_an_object_array_is_rebuilt_not_unpickled(tmp_path: Path, field: str) -> None:
    """A cache folder is a file we read: an entry whose array is a pickle (an object array) is never unpickled;
    the split is rebuilt from the raw log and the entry overwritten."""
    raw = need(RAW / "diginetica-train-item-views-sample.csv")
    cache = tmp_path / "cache"
    first = load_raw_split("diginetica", raw, cache_dir=cache, tie_order="python2")
    entry = next(cache.glob("*.npz"))
    with np.load(entry) as data:
        arrays = {name: data[name] for name in data.files}
    marker = tmp_path / "pwned"
    arrays[field] = np.array([_Touch(marker)], dtype=object)
    with entry.open("wb") as handle:
        np.savez(handle, **arrays)
    again = load_raw_split("diginetica", raw, cache_dir=cache, tie_order="python2")
    assert not marker.exists()
    assert "[cached:" not in again.source and as_tuple(again) == as_tuple(first)
    with np.load(entry) as data:  # overwritten with plain arrays
        assert all(data[name].dtype != object for name in data.files)


def test_cache_keyed_by_content(tmp_path: Path) -> None:
    raw = need(RAW / "diginetica-train-item-views-sample.csv")
    copy = tmp_path / "train-item-views.csv"
    copy.write_bytes(raw.read_bytes())
    cache = tmp_path / "cache"
    load_raw_split("diginetica", tmp_path, cache_dir=cache)
    load_raw_split("diginetica", tmp_path, cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 1
    copy.write_bytes(raw.read_bytes().replace(b"2016-05-09", b"2016-05-08", 1))
    load_raw_split("diginetica", tmp_path, cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 2


def non_adjacent_repeats(sessions: list[list[int]] | list[np.ndarray]) -> tuple[int, int]:
    """(sessions with a repeated item, those where an item comes back after a different item)."""
    with_repeats = non_adjacent = 0
    for session in sessions:
        seq = list(session)
        if len(set(seq)) == len(seq):
            continue
        with_repeats += 1
        seen: set[int] = set()
        for k, item in enumerate(seq):
            if item in seen and item != seq[k - 1]:
                non_adjacent += 1
                break
            seen.add(item)
    return with_repeats, non_adjacent


def test_shared_diginetica_is_not_in_file_order() -> None:
    """Evidence that ../shared/data/diginetica is the timeframe-SORTED variant.

    In the raw file, repeated clicks on an item within a session are adjacent (file order groups
    them); filtering and renumbering cannot separate them again, so file-order (unsorted) splits
    have no item that comes back after a different item. The shared split has many.
    """
    sample = need(RAW / "diginetica-train-item-views-sample.csv")
    unsorted = preprocess_diginetica(sample, sort_by_timeframe=False)
    repeats, non_adjacent = non_adjacent_repeats(unsorted.train_sessions)
    assert repeats > 300 and non_adjacent == 0
    assert non_adjacent_repeats(preprocess_diginetica(sample).train_sessions)[1] > 50
    shared = need(SHARED / "diginetica" / "train_sessions.txt")
    sessions = [[int(x) for x in line.split()] for line in shared.read_text().splitlines()]
    repeats, non_adjacent = non_adjacent_repeats(sessions)
    assert (repeats, non_adjacent) == (74_837, 43_105)


def test_corrupt_cache_entry_is_rebuilt(tmp_path: Path) -> None:
    raw = need(RAW / "diginetica-train-item-views-sample.csv")
    cache = tmp_path / "cache"
    first = load_raw_split("diginetica", raw, cache_dir=cache)
    (entry,) = cache.glob("*.npz")
    entry.write_bytes(b"not a zip")
    again = load_raw_split("diginetica", raw, cache_dir=cache)
    assert "[cached:" not in again.source and as_tuple(again) == as_tuple(first)
    assert "[cached:" in load_raw_split("diginetica", raw, cache_dir=cache).source


def test_blank_lines_and_crlf_in_raw_file(tmp_path: Path) -> None:
    raw = need(RAW / "diginetica-train-item-views-sample.csv").read_text()
    lines = raw.splitlines()
    messy = tmp_path / "train-item-views.csv"
    messy.write_text("\r\n".join([*lines[:500], "", *lines[500:]]) + "\r\n", newline="")
    expected = as_tuple(preprocess_diginetica(RAW / "diginetica-train-item-views-sample.csv"))
    assert as_tuple(preprocess_diginetica(messy)) == expected
