from __future__ import annotations

import numpy as np
import pytest
import torch

from narm_lightning.data.atomic import read_atomic
from narm_lightning.data.protocol import (
    Split,
    build_sequential,
    leave_one_out,
    ratio_split,
    remap_tokens,
    sliding_window_examples,
    split_counts,
)
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
    with pytest.raises(DataError, match=r"split \{LS: valid_and_test\} leaves a split empty \(train/valid/test "
                                        r"examples: 2/0/2\); expected users with more interactions"):
        build_sequential(users, items, np.arange(6.0), max_len=5, source="f.inter")


def test_test_items_never_seen_in_training_are_kept() -> None:
    users = np.array(["a"] * 4 + ["b"] * 4)
    items = np.array(["1", "2", "3", "9", "1", "2", "3", "4"])  # '9' is only ever a test target
    data = build_sequential(users, items, np.arange(8.0), max_len=5)
    nine = int(np.flatnonzero(data.item_tokens == "9")[0])
    assert nine in data.test.target.tolist() and nine not in data.train.target.tolist()


@pytest.mark.parametrize(("total", "ratios", "counts"), [
    (10, [8, 1, 1], [8, 1, 1]),
    (5, [0.8, 0.1, 0.1], [3, 1, 1]),  # 0.5 each: rounded down to 0, then each gets one from train
    (2, [8, 1, 1], [1, 0, 1]),  # test gets one; then train is down to 1 and keeps it
    (1, [8, 1, 1], [1, 0, 0]),
    (0, [8, 1, 1], [0, 0, 0]),
    (19, [7, 2, 1], [15, 3, 1]),  # 0.2*19 = 3.8 -> 3, 0.1*19 = 1.9 -> 1 (not in (0, 1): no bump), train the rest
])
def test_ratio_split_sizes_are_recboles(total, ratios, counts) -> None:
    """RecBole 1.2.1's _calcu_split_ids: parts but the first rounded down, the first takes the rest, and a part
    whose exact share is in (0, 1) takes one from the first while the first has more than one."""
    assert split_counts(total, ratios) == counts


def test_ratio_split_by_user_and_ungrouped() -> None:
    # users a (5 examples) and b (2 examples), in (user, time) order; times interleave across users
    user = np.array([1, 1, 1, 1, 1, 2, 2])
    time = np.array([1.0, 3.0, 5.0, 7.0, 9.0, 2.0, 4.0])
    # by user, 8:1:1: a -> [3, 1, 1], b -> [1, 0, 1]
    assert ratio_split(user, time, [8, 1, 1], by_user=True).tolist() == [0, 0, 0, 1, 2, 0, 2]
    # ungrouped: all 7 in time order (1, 2, 3, 4, 5, 7, 9) -> sizes [5, 1, 1]: time 7 valid, time 9 test
    assert ratio_split(user, time, [8, 1, 1], by_user=False).tolist() == [0, 0, 0, 1, 2, 0, 0]
    # test_only leave-one-out: the last example of each user is test, none is valid
    assert leave_one_out(user, n_holdout=1).tolist() == [0, 0, 0, 0, 2, 0, 2]


def test_ml100k_split_sizes_equal_recboles(shared_data) -> None:
    """Expected sizes: RecBole 1.2.1's own Dataset._calcu_split_ids (and leave_one_out) applied to ml-100k's
    99,057 examples (943 users); computed with RecBole's function from its source, then written here."""
    def sizes(split: Split) -> tuple[int, int, int]:
        data = load_user_sequences("ml-100k", "missing", [str(shared_data)], "user_id", "item_id", "timestamp", 50,
                                   download=False, split=split)
        return len(data.train), len(data.valid), len(data.test)

    assert sizes(Split("RS", (8.0, 1.0, 1.0), by_user=True)) == (80_065, 9_496, 9_496)
    assert sizes(Split("RS", (0.8, 0.1, 0.1), by_user=False)) == (79_247, 9_905, 9_905)
    assert sizes(Split("RS", (0.7, 0.2, 0.1), by_user=True)) == (70_123, 19_438, 9_496)
    assert sizes(Split("LS", "test_only")) == (98_114, 0, 943)
