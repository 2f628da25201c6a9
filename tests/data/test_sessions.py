"""Session split readers: augmentation, padding, text and pickle readers, their errors."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from narm_lightning.data.session_files import read_examples_tsv, read_pickle_split, read_session_lines, read_text_split
from narm_lightning.data.sessions import augment_sessions
from narm_lightning.errors import DataError
from narm_lightning.safe_load import load_plain_pickle
from tests.helpers import SHARED_DATA, need_shared

SHARED = SHARED_DATA
PICKLE_SAMPLE = SHARED / "raw-samples" / "srgnn-pickle-sample"


need = need_shared


def as_lists(prefixes: list[np.ndarray]) -> list[list[int]]:
    return [p.tolist() for p in prefixes]


def expected_tsv(path: Path) -> tuple[list[list[int]], list[int]]:
    prefixes, targets = [], []
    for line in path.read_text().splitlines():
        left, right = line.split("\t")
        prefixes.append([int(x) for x in left.split()])
        targets.append(int(right))
    return prefixes, targets


# ----------------------------------------------------------------------------- augmentation / padding


def test_augment_order_longest_prefix_first_sessions_in_order() -> None:
    sessions = [np.array([1, 2, 3, 4]), np.array([9]), np.array([5, 6])]
    prefixes, targets = augment_sessions(sessions)
    assert as_lists(prefixes) == [[1, 2, 3], [1, 2], [1], [5]]
    assert targets.tolist() == [4, 3, 2, 6]
    assert targets.dtype == np.int64


def test_augment_matches_naive_definition() -> None:
    rng = np.random.default_rng(0)
    sessions = [rng.integers(1, 50, size=int(n)) for n in rng.integers(1, 12, size=300)]
    prefixes, targets = augment_sessions(sessions)
    naive = [(s[:-i].tolist(), int(s[-i])) for s in sessions for i in range(1, len(s))]
    assert list(zip(as_lists(prefixes), targets.tolist(), strict=True)) == naive


def test_augment_empty() -> None:
    prefixes, targets = augment_sessions([])
    assert prefixes == [] and targets.shape == (0,)


# ----------------------------------------------------------------------------- text reader


def test_shared_diginetica_counts() -> None:
    split = read_text_split(need(SHARED / "diginetica"))
    assert split.n_train == 719_470
    assert split.n_test == 60_858
    assert split.n_items == 43_097
    assert len(split.train_sessions) == 186_670
    assert sum(map(len, split.train_prefixes)) > 0 and min(map(len, split.train_prefixes)) == 1


def test_shared_yoochoose1_64_counts() -> None:
    split = read_text_split(need(SHARED / "yoochoose1_64"))
    assert split.n_train == 369_859
    assert split.n_test == 55_898
    assert split.n_items == 37_483  # largest id; SR-GNN's n_node 37484 = this + padding
    assert len(split.train_sessions) == 116_167


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_text_split_small(tmp_path: Path) -> None:
    write(tmp_path, "train_sessions.txt", "1 2 3\n4 5\n")
    write(tmp_path, "test.tsv", "1 2\t7\n")
    split = read_text_split(tmp_path)
    assert as_lists(split.train_prefixes) == [[1, 2], [1], [4]]
    assert split.train_targets.tolist() == [3, 2, 5]
    assert as_lists(split.test_prefixes) == [[1, 2]] and split.test_targets.tolist() == [7]
    assert split.n_items == 7


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"train_sessions\.txt: file not found"):
        read_text_split(tmp_path)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    (tmp_path / "train_sessions.txt").mkdir()
    with pytest.raises(DataError, match="is a directory"):
        read_text_split(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file is empty"):
        read_session_lines(write(tmp_path, "train_sessions.txt", ""))


def test_non_numeric_id_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "train_sessions.txt", "1 2\n3 4\n5 x7 6\n")
    with pytest.raises(DataError, match=r"train_sessions\.txt, line 3: item id 'x7' is not an integer"):
        read_session_lines(path)


def test_zero_id_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "train_sessions.txt", "1 2\n3 0\n")
    with pytest.raises(DataError, match=r"line 2: item id 0 is < 1"):
        read_session_lines(path)


def test_blank_line_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"line 2: empty line"):
        read_session_lines(write(tmp_path, "train_sessions.txt", "1 2\n\n3 4\n"))


def test_tsv_row_without_tab(tmp_path: Path) -> None:
    path = write(tmp_path, "test.tsv", "1 2\t3\n4 5 6\n")
    with pytest.raises(DataError, match=r"test\.tsv, line 2: found 0 TAB characters"):
        read_examples_tsv(path)


def test_tsv_bad_target(tmp_path: Path) -> None:
    path = write(tmp_path, "test.tsv", "1 2\t3\n4 5\tz\n")
    with pytest.raises(DataError, match=r"test\.tsv, line 2: item id 'z'"):
        read_examples_tsv(path)


# ----------------------------------------------------------------------------- pickle reader


def test_pickle_sample_equals_expected_tsv_and_text_reader(tmp_path: Path) -> None:
    split = read_pickle_split(need(PICKLE_SAMPLE))
    train = expected_tsv(PICKLE_SAMPLE / "train.expected.tsv")
    test = expected_tsv(PICKLE_SAMPLE / "test.expected.tsv")
    assert (as_lists(split.train_prefixes), split.train_targets.tolist()) == train
    assert (as_lists(split.test_prefixes), split.test_targets.tolist()) == test
    assert (split.n_train, split.n_test, split.n_items) == (1205, 99, 309)
    assert len(split.train_sessions) == 469
    # The same data as a text split gives the same examples.
    write(
        tmp_path,
        "train_sessions.txt",
        "".join(" ".join(map(str, s.tolist())) + "\n" for s in split.train_sessions),
    )
    (tmp_path / "test.tsv").write_bytes((PICKLE_SAMPLE / "test.expected.tsv").read_bytes())
    text = read_text_split(tmp_path)
    assert as_lists(text.train_prefixes) == as_lists(split.train_prefixes)
    assert text.train_targets.tolist() == split.train_targets.tolist()
    assert as_lists(text.test_prefixes) == as_lists(split.test_prefixes)
    assert text.n_items == split.n_items


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_refused_and_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "train.txt"
    path.write_bytes(pickle.dumps(([[1, 2]], [_Exploit(marker)])))
    with pytest.raises(
        DataError, match=r"train\.txt: the file tries to load the class or function (posix|os)\.system"
    ):
        load_plain_pickle(path)
    assert not marker.exists()
    (tmp_path / "test.txt").write_bytes(pickle.dumps(([[1]], [2])))
    with pytest.raises(DataError, match="refused, nothing in the file was imported or run"):
        read_pickle_split(tmp_path)
    assert not marker.exists()


def test_pickle_with_any_class_refused(tmp_path: Path) -> None:
    path = tmp_path / "all_train_seq.txt"
    path.write_bytes(pickle.dumps([np.array([1, 2])]))
    with pytest.raises(DataError, match="numpy"):
        load_plain_pickle(path)


def test_truncated_pickle(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    path.write_bytes(pickle.dumps(([[1, 2], [3]], [3, 4]))[:-5])
    with pytest.raises(DataError, match=r"train\.txt: not a readable pickle \(truncated or corrupt"):
        load_plain_pickle(path)


def test_pickle_missing_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_pickle_split(tmp_path)
    (tmp_path / "train.txt").mkdir()
    with pytest.raises(DataError, match="is a directory"):
        read_pickle_split(tmp_path)
    (tmp_path / "test.txt").write_bytes(b"")
    with pytest.raises(DataError, match="file is empty"):
        load_plain_pickle(tmp_path / "test.txt")


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"a": 1}, r"found dict of length 1; expected a pickled pair"),
        (([[1, 2], [3]], [1]), r"2 prefixes but 1 labels"),
        (([[1, 2], []], [1, 2]), r"entry 1 is list of length 0"),
        (([[1, 2], [3, 1.5]], [1, 2]), r"entry 1 holds 1.5"),
        (([[1, 2], [3, 0]], [1, 2]), r"entry 1 holds 0"),
        (([[1, 2], [3]], [1, "x"]), r"entry 1 holds 'x'"),
        (([[1, 2], [3]], 5), r"the labels are a int"),
        (([1, 2], [1, 2]), r"entry 0 is int"),
    ],
)
def test_wrong_pickle_structure(tmp_path: Path, obj: object, message: str) -> None:
    (tmp_path / "train.txt").write_bytes(pickle.dumps(obj))
    (tmp_path / "test.txt").write_bytes(pickle.dumps(([[1]], [2])))
    with pytest.raises(DataError, match=message):
        read_pickle_split(tmp_path)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(1, 30), min_size=1, max_size=9), max_size=12))
def test_augment_properties(sessions: list[list[int]]) -> None:
    prefixes, targets = augment_sessions([np.array(s, dtype=np.int64) for s in sessions])
    naive = [(s[:-i], s[-i]) for s in sessions for i in range(1, len(s))]
    assert list(zip(as_lists(prefixes), targets.tolist(), strict=True)) == naive
