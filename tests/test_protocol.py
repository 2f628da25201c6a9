from __future__ import annotations

import numpy as np
import pytest
import torch

from narm_lightning.data.atomic import read_atomic
from narm_lightning.data.protocol import build_sequential, leave_one_out, remap_tokens, sliding_window_examples
from narm_lightning.data.sources import load_user_sequences
from narm_lightning.errors import DataError
from tests.conftest import write_inter


def test_ml100k_counts_match_recbole(shared_data) -> None:
    data = load_user_sequences("ml-100k", "missing-root", [str(shared_data)], "user_id", "item_id", "timestamp", 50)
    assert (len(data.train), len(data.valid), len(data.test)) == (97_171, 943, 943)
    assert data.n_items == 1683
    assert data.stats["n_users"] == 943
    assert int(data.train.item_seq_len.max()) == 50
    # the valid target of each user is the last item of the test history
    last = data.test.item_seq[torch.arange(943), data.test.item_seq_len - 1]
    assert torch.equal(last, data.valid.target)


def test_remap_is_first_appearance_with_padding_zero() -> None:
    ids, vocab = remap_tokens(np.array(["b", "a", "b", "c", "a"]))
    assert ids.tolist() == [1, 2, 1, 3, 2]
    assert vocab.tolist() == ["[PAD]", "b", "a", "c"]


def test_sliding_window_keeps_the_last_max_len_items() -> None:
    user = np.array([1, 1, 1, 1, 2, 2])
    item = np.array([5, 6, 7, 8, 9, 4])
    u, seq, length, target = sliding_window_examples(user, item, max_len=2)
    assert u.tolist() == [1, 1, 1, 2]
    assert seq.tolist() == [[5, 0], [5, 6], [6, 7], [9, 0]]
    assert length.tolist() == [1, 2, 2, 1]
    assert target.tolist() == [6, 7, 8, 4]


def test_leave_one_out_like_recbole_for_short_users() -> None:
    # user sizes 4, 2, 1 -> (train, train, valid, test), (train, test), (train)
    user = np.array([1, 1, 1, 1, 2, 2, 3])
    assert leave_one_out(user).tolist() == [0, 0, 1, 2, 0, 2, 0]


def test_order_is_by_user_then_time_stable(tmp_path) -> None:
    path = write_inter(tmp_path / "d" / "d.inter",
                       [("u", "a", 3.0), ("u", "b", 1.0), ("u", "c", 1.0), ("u", "d", 2.0), ("u", "e", 4.0)])
    table = read_atomic(path, {"user_id": "token", "item_id": "token", "timestamp": "float"})
    data = build_sequential(table.columns["user_id"], table.columns["item_id"], table.columns["timestamp"], 50)
    tokens = data.item_tokens
    # time order b(1) c(1) d(2) a(3) e(4): test target e with history b c d a
    assert tokens[data.test.target[0]] == "e"
    assert [tokens[i] for i in data.test.item_seq[0, :4].tolist()] == ["b", "c", "d", "a"]
    assert tokens[data.valid.target[0]] == "a"


def test_dataset_without_repeat_users_is_a_clear_error(tmp_path) -> None:
    path = write_inter(tmp_path / "d" / "d.inter", [("u1", "a", 1.0), ("u2", "b", 1.0)])
    table = read_atomic(path, {"user_id": "token", "item_id": "token", "timestamp": "float"})
    with pytest.raises(DataError, match="no user has two interactions"):
        build_sequential(table.columns["user_id"], table.columns["item_id"], table.columns["timestamp"], 50,
                         str(path))


def test_a_dataset_with_no_valid_example_is_a_data_error() -> None:
    # three interactions per user give two examples each: one test, one train, and no valid one
    users = np.array(["a"] * 3 + ["b"] * 3)
    items = np.array(["1", "2", "3", "2", "3", "1"])
    with pytest.raises(DataError, match=r"train/valid/test examples: 2/0/2\); expected at least one user with 4"):
        build_sequential(users, items, np.arange(6.0), max_len=5, source="f.inter")


def test_test_items_never_seen_in_training_are_kept() -> None:
    users = np.array(["a"] * 4 + ["b"] * 4)
    items = np.array(["1", "2", "3", "9", "1", "2", "3", "4"])  # '9' is only ever a test target
    data = build_sequential(users, items, np.arange(8.0), max_len=5)
    nine = int(np.flatnonzero(data.item_tokens == "9")[0])
    assert nine in data.test.target.tolist() and nine not in data.train.target.tolist()
