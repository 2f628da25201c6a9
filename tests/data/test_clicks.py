"""data=clicks: a user's own click log (issue 35). Hand-made logs with hand-computed splits under both protocols,
every time format and file type; the published logs through the same path; the bad logs; the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from narm_lightning.data.clicks import ClickColumns, read_click_log, sniff_delimiter
from narm_lightning.data.protocol import Split
from narm_lightning.data.session_preprocess import preprocess_diginetica, preprocess_yoochoose
from narm_lightning.data.session_split import build_session_split
from narm_lightning.data.sources import click_columns, load_clicks
from narm_lightning.errors import DataError
from tests.helpers import SHARED_DATA, need_shared

REPO = Path(__file__).resolve().parents[2]
DAY0 = 1_704_067_200  # 2024-01-01T00:00:00Z
H = 3600
# (session, item, seconds since DAY0): hand-made, in file (time) order
LOG = [
    ("s1", "a", 10 * H), ("s1", "b", 10 * H + 60), ("s1", "c", 10 * H + 120),
    ("s2", "b", 12 * H), ("s2", "c", 12 * H + 300),
    ("s5", "a", 24 * H + 8 * H), ("s5", "b", 24 * H + 8 * H + 60),
    ("s3", "a", 24 * H + 9 * H),                                    # one click: dropped
    ("s4", "c", 48 * H + 9 * H), ("s4", "a", 48 * H + 9 * H + 60), ("s4", "d", 48 * H + 9 * H + 120),
]
COLUMNS = ClickColumns("session_id", "item_id", "timestamp")


def _iso(seconds: int, fmt: str = "%Y-%m-%dT%H:%M:%SZ") -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(DAY0 + seconds, dt.UTC).strftime(fmt)


TIME_WRITERS = {  # (how a time is written, data.time_format)
    "epoch seconds": (lambda t: str(DAY0 + t), "auto"),
    "epoch milliseconds": (lambda t: str((DAY0 + t) * 1000), "auto"),
    "ISO with Z": (lambda t: _iso(t), "auto"),
    "ISO with a space": (lambda t: _iso(t, "%Y-%m-%d %H:%M:%S"), "auto"),
    "ISO with milliseconds": (lambda t: _iso(t, "%Y-%m-%dT%H:%M:%S.000Z"), "iso"),
    "a strptime format": (lambda t: _iso(t, "%d/%m/%Y %H:%M"), "%d/%m/%Y %H:%M"),
}


def write_log(path: Path, time_writer=TIME_WRITERS["epoch seconds"][0], delimiter: str = ",",
              rows=LOG, header: bool = True) -> Path:
    lines = ([delimiter.join(["session_id", "item_id", "timestamp"])] if header else []) + [
        delimiter.join([s, i, time_writer(t)]) for s, i, t in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def histories(part, tokens) -> list[tuple[list[str], str]]:
    seqs = part.item_seq
    return [([tokens[i] for i in seqs[k, :n].tolist()], tokens[int(part.target[k])])
            for k, n in enumerate(part.item_seq_len.tolist())]


# the NARM paper's split of LOG, by hand (min_item_support 1, test_days 1): the last session ends on day 2 at
# 09:02, so test = sessions ending after day 1 09:02 (s4), train = before (s1, s2, s5; s3 has one click).
# Items numbered by first appearance in the date-sorted training sessions: a, b, c; d is unknown to training,
# so s4 keeps c, a. Prefixes longest first.
TRAIN = [(["a", "b"], "c"), (["a"], "b"), (["b"], "c"), (["a"], "b")]
TEST = [(["c"], "a")]


def _time_split(path: Path, **kwargs):
    options = {"test_days": 1, "min_item_support": 1, "valid_ratio": 0.0, "cache_dir": None, **kwargs}
    return load_clicks(str(path), options.pop("columns", COLUMNS), **options)


@pytest.mark.parametrize("writer", list(TIME_WRITERS))
def test_the_papers_split_of_a_hand_made_log_in_every_time_format(tmp_path, writer) -> None:
    write, time_format = TIME_WRITERS[writer]
    data = _time_split(write_log(tmp_path / "log.csv", write), time_format=time_format)
    assert histories(data.train, data.item_tokens) == TRAIN
    assert histories(data.test, data.item_tokens) == TEST
    assert list(data.item_tokens) == ["[PAD]", "a", "b", "c"]
    assert data.stats["sequence_word"] == "session"
    assert data.stats["preprocess"] == {"clicks": 11, "sessions": 5, "items": 4, "one_click_sessions": 1,
                                        "rare_items": 0, "sessions_kept": 4, "train_sessions": 3,
                                        "test_sessions": 1, "items_kept": 3}


@pytest.mark.parametrize(("name", "delimiter"), [("log.csv", ","), ("log.csv", ";"), ("log.tsv", "\t"),
                                                 ("log.txt", "\t"), ("log.csv", "|")])
def test_each_text_file_type_and_separator_is_read_the_same(tmp_path, name, delimiter) -> None:
    path = write_log(tmp_path / name, delimiter=delimiter)
    assert sniff_delimiter(path, "csv") == delimiter
    data = _time_split(path)
    assert histories(data.train, data.item_tokens) == TRAIN and histories(data.test, data.item_tokens) == TEST


def test_a_parquet_log_with_integer_ids_and_timestamps(tmp_path) -> None:
    """Parquet keeps its own types: integer ids stay integers (and name the items), timestamps are times."""
    path = tmp_path / "log.parquet"
    sessions = [int(s[1:]) for s, _, _ in LOG]
    items = [100 + "abcd".index(i) for _, i, _ in LOG]
    stamps = pa.array([(DAY0 + t) * 1000 for _, _, t in LOG], pa.timestamp("ms"))
    pq.write_table(pa.table({"session_id": sessions, "item_id": items, "timestamp": stamps}), path)
    data = _time_split(path)
    named = {"100": "a", "101": "b", "102": "c"}
    assert [([named[i] for i in h], named[t]) for h, t in histories(data.train, data.item_tokens)] == TRAIN


def test_a_log_without_a_header_names_its_columns(tmp_path) -> None:
    path = write_log(tmp_path / "log.csv", header=False)
    data = _time_split(path, column_names=["session_id", "item_id", "timestamp"])
    assert histories(data.train, data.item_tokens) == TRAIN


def test_clicks_are_ordered_by_time_within_a_session_and_by_the_order_column_when_given(tmp_path) -> None:
    rows = [("s1", "a", 10 * H), ("s1", "c", 10 * H + 120), ("s1", "b", 10 * H + 60),  # b clicked before c
            ("s4", "b", 48 * H), ("s4", "a", 48 * H + 1)]
    data = _time_split(write_log(tmp_path / "log.csv", rows=rows))
    assert histories(data.train, data.item_tokens) == [(["a", "b"], "c"), (["a"], "b")]
    # an order column overrides: here the file's own order (1, 2, 3)
    text = "session_id,item_id,timestamp,pos\n" + "".join(
        f"{s},{i},{DAY0 + t},{k}\n" for k, (s, i, t) in enumerate(rows))
    (tmp_path / "ordered.csv").write_text(text)
    data = _time_split(tmp_path / "ordered.csv",
                       columns=ClickColumns("session_id", "item_id", "timestamp", order="pos"))
    assert histories(data.train, data.item_tokens) == [(["a", "c"], "b"), (["a"], "c")]


def test_leave_one_out_holds_out_each_sessions_last_clicks(tmp_path) -> None:
    """RecBole's protocol: per session, the last example tests, the one before validates, the rest train."""
    rows = [("s1", i, 60 * k) for k, i in enumerate("abcd")] + [("s2", i, H + 60 * k) for k, i in enumerate("bcda")]
    data = load_clicks(str(write_log(tmp_path / "log.csv", rows=rows)), COLUMNS, split="leave_one_out",
                       cache_dir=None, eval_split=Split())
    assert histories(data.train, data.item_tokens) == [(["a"], "b"), (["b"], "c")]
    assert histories(data.valid, data.item_tokens) == [(["a", "b"], "c"), (["b", "c"], "d")]
    assert histories(data.test, data.item_tokens) == [(["a", "b", "c"], "d"), (["b", "c", "d"], "a")]
    assert data.stats["n_users"] == 2 and data.stats["sequence_word"] == "session"


def test_a_user_column_makes_each_users_clicks_one_sequence(tmp_path) -> None:
    text = "user,item_id,timestamp\n" + "".join(f"{s.replace('s', 'u')},{i},{DAY0 + t}\n" for s, i, t in LOG)
    (tmp_path / "users.csv").write_text(text)
    data = _time_split(tmp_path / "users.csv", columns=click_columns("user", "item_id", "timestamp", None, True))
    assert data.stats["sequence_word"] == "user" and histories(data.test, data.item_tokens) == TEST


# ---- the published logs through data=clicks: exactly the published treatment ----

def _rows(ragged, targets) -> list[tuple[list[int], int]]:
    return [(r.tolist(), int(t)) for r, t in zip(ragged.rows(), targets, strict=True)]


def test_diginetica_through_clicks_gives_the_examples_of_its_own_reader() -> None:
    raw = need_shared(SHARED_DATA / "raw-samples" / "diginetica-train-item-views-sample.csv")
    ours = read_click_log(raw, ClickColumns("session_id", "item_id", "eventdate", order="timeframe"))
    split = build_session_split(ours.clicks, test_days=7, min_item_support=5, source="x", path=raw)
    reference = preprocess_diginetica(raw)  # sort_by_timeframe=True: the shared split's variant
    assert _rows(split.train, split.train_targets) == _rows(reference.train, reference.train_targets)
    assert _rows(split.test, split.test_targets) == _rows(reference.test, reference.test_targets)
    assert split.item_ids.tolist() == reference.item_ids.tolist() and split.n_train == 1205


def test_yoochoose_through_clicks_gives_the_examples_of_its_own_reader() -> None:
    raw = need_shared(SHARED_DATA / "raw-samples" / "yoochoose-clicks-sample.dat")
    columns = ClickColumns("session_id", "item_id", "timestamp")
    ours = read_click_log(raw, columns, fmt="csv", column_names=["session_id", "timestamp", "item_id", "category"])
    split = build_session_split(ours.clicks, test_days=1, min_item_support=1, fraction=4, source="x", path=raw)
    reference = preprocess_yoochoose(raw, fraction=4, min_item_support=1)
    assert _rows(split.train, split.train_targets) == _rows(reference.train, reference.train_targets)
    assert _rows(split.test, split.test_targets) == _rows(reference.test, reference.test_targets)
    assert split.n_test > 0


# ---- bad logs: one paragraph naming the column and a row ----

def _refusal(path: Path, **kwargs) -> str:
    with pytest.raises(DataError) as exc:
        _time_split(path, **kwargs)
    text = str(exc.value)
    assert "\n" not in text and str(path) in text
    return text


def test_a_missing_column_is_named_with_the_columns_there_are(tmp_path) -> None:
    path = write_log(tmp_path / "log.csv")
    text = _refusal(path, columns=click_columns("sess", "item_id", "timestamp", None, False))
    assert text == (f"{path}: data.session_field='sess' names no column of the file (its columns: session_id, "
                    "item_id, timestamp); expected one of them (set data.session_field), or data.column_names for "
                    "a file without a header.")


@pytest.mark.parametrize(("content", "expected"), [
    ("", "file is empty; expected a click log (data.path)"),
    ("session_id,item_id,timestamp\n", "no clicks (a header only); expected one click a line."),
])
def test_an_empty_log_is_refused(tmp_path, content, expected) -> None:
    path = tmp_path / "log.csv"
    path.write_text(content)
    assert _refusal(path) == f"{path}: {expected}"


@pytest.mark.parametrize(("row", "words"), [
    ("s9,,1704067300", "line 5: item_id is an empty string; expected every click to have its item id."),
    (",a,1704067300", "line 5: session_id is an empty string; expected every click to have its session id."),
    ("s9,a,yesterday", "line 5: timestamp is 'yesterday'; expected a time: epoch seconds or milliseconds, or an ISO "
                       "8601 date or time"),
])
def test_a_bad_row_is_named_by_its_line(tmp_path, row, words) -> None:
    path = tmp_path / "log.csv"
    rows = [f"{s},{i},{DAY0 + t}" for s, i, t in LOG[:3]]
    path.write_text("session_id,item_id,timestamp\n" + "\n".join(rows + [row]) + "\n")
    assert words in _refusal(path)


def test_an_empty_integer_id_is_named_by_its_line(tmp_path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("session_id,item_id,timestamp\n1,5,1704067200\n1,,1704067260\n")
    assert _refusal(path) == f"{path}, line 3: item_id is empty; expected every click to have its item id."


def test_a_type_that_changes_down_the_file_is_named_by_its_line(tmp_path, monkeypatch) -> None:
    """Arrow types a column from the first block; a later line of another kind is a mixed column."""
    from narm_lightning.data import clicks

    monkeypatch.setattr(clicks, "BLOCK_BYTES", 1 << 10)
    rows = [f"{k // 3},{k},{DAY0 + k}" for k in range(300)] + ["x7,5,1704067200"]
    path = tmp_path / "log.csv"
    path.write_text("session_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    assert _refusal(path) == (f"{path}, line 302: column session_id holds 'x7' where the lines above hold integers; "
                              "expected one type in a column (ids all integers or all text, times all numbers or all "
                              "dates).")


def test_a_log_of_one_click_sessions_says_so(tmp_path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("session_id,item_id,timestamp\n" + "".join(f"c{k},i{k % 7},{DAY0 + k}\n" for k in range(50)))
    assert _refusal(path) == (f"{path}: every session has one click (e.g. session 'c0' of row 1); a session needs "
                              "two clicks or more to predict a next one: is the session column the right one?")


def test_a_million_distinct_items_are_refused_before_a_model_is_built(tmp_path) -> None:
    n = 1_000_000
    session = np.repeat(np.arange(n // 2), 2)
    day = np.where(session < n // 2 - 1000, 0, 3) * 86_400
    items = np.where(day == 0, np.arange(n), np.arange(n) % 2000)  # the test sessions click training items
    table = pa.table({"session_id": session, "item_id": items, "timestamp": DAY0 + day + np.arange(n) % 2})
    path = tmp_path / "wide.parquet"
    pq.write_table(table, path)
    assert _refusal(path, min_item_support=1) == (
        f"{path}: 998,000 distinct items once filtered, more than data.max_items=500,000: the output layer scores "
        "every item for every example, so memory and time grow with them; expected fewer (raise "
        "data.min_item_support to drop rare items) or a higher data.max_items.")


# ---- the command line ----

def _train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_one_command_from_a_csv_to_a_trained_model(tmp_path) -> None:
    """A relative data.path, the run folder named after the file, the console speaking of sessions."""
    (tmp_path / "logs").mkdir()
    rows = [(f"s{k}", "abcdefgh"[(k + j) % 8], 86_400 * (k // 10) + 60 * j) for k in range(60) for j in range(3)]
    write_log(tmp_path / "logs" / "shop clicks.csv", rows=rows)
    proc = _train("data=clicks", "data.path=logs/shop clicks.csv", "data.session_field=session_id",
                  "data.item_field=item_id", "data.time_field=timestamp", "data.test_days=1",
                  "data.min_item_support=1", f"data.cache_dir={tmp_path / 'cache'}", "epochs=1", "logger=csv",
                  "trainer.enable_progress_bar=false", "train_batch_size=16", "eval_batch_size=16",
                  "model.hidden_size=8", "model.embedding_size=8", "topk=[5]", "valid_metric=MRR@5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((tmp_path / "outputs" / "shop clicks").iterdir())
    assert len(runs) == 1 and (runs[0] / "results.json").is_file()
    log = (runs[0] / "train.log").read_text()
    assert "read 180 clicks in 60 sessions on 8 items; dropped 0 sessions of one click" in log
    assert len(list((tmp_path / "cache").glob("clicks-*.npz"))) == 1
    import json

    card = json.loads((runs[0] / "results.json").read_text())["protocol"]
    assert card["group_by"] == "session" and card["preprocessing"]["test_days"] == 1
    assert card["files"][0]["path"].endswith("shop clicks.csv")


def test_a_bad_log_on_the_command_line_is_one_paragraph_and_leaves_nothing(tmp_path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("session,item_id,timestamp\n1,2,3\n")
    proc = _train("data=clicks", f"data.path={path}", "epochs=1", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    error = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "data.session_field='session_id' names no column" in error[0]
    assert not (tmp_path / "outputs").exists(), "nothing is left of a refused run"


def test_a_session_and_a_user_column_at_once_are_refused(tmp_path) -> None:
    path = write_log(tmp_path / "log.csv")
    proc = _train("data=clicks", f"data.path={path}", "data.user_field=item_id", "epochs=1", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert ("data.session_field is 'session_id' and data.user_field is 'item_id'; expected exactly one of them"
            in proc.stderr)
