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


# ---- from the mutation run of data/protocol.py (docs/reliability.md): what its survivors showed untested ----

def test_the_protocols_arrays_are_int64() -> None:
    """Ids, lengths, targets and split labels are int64 (what torch's embedding and indexing take): numpy's
    default for ``astype(None)`` or ``zeros(n)`` would be float64."""
    ids, vocab = remap_tokens(np.array(["b", "a", "b"], dtype=object))
    assert ids.dtype == np.int64 and vocab.dtype == object and vocab.tolist() == ["[PAD]", "b", "a"]
    user, seq, length, target = sliding_window_examples(np.array([1, 1, 1]), np.array([4, 5, 6]), max_len=5)
    assert seq.dtype == length.dtype == target.dtype == np.int64
    assert leave_one_out(np.array([1, 1, 1, 1])).dtype == np.int64
    for by_user in (True, False):
        assert ratio_split(np.array([1, 1, 1, 2, 2]), np.arange(5.0), [8, 1, 1], by_user).dtype == np.int64


def test_the_history_matrix_is_as_wide_as_the_longest_history() -> None:
    """Columns up to the longest history (not max_len, not one more): two users of 3 and 2 items."""
    _, seq, length, _ = sliding_window_examples(np.array([1, 1, 1, 2, 2]), np.array([4, 5, 6, 7, 8]), max_len=9)
    assert seq.shape == (3, 2) and length.tolist() == [1, 2, 1]
    assert seq.tolist() == [[4, 0], [4, 5], [7, 0]]
    _, seq, length, _ = sliding_window_examples(np.array([1, 2]), np.array([4, 5]), max_len=9)
    assert seq.shape == (0, 1) and len(length) == 0  # no user with a history: one column, no row
    _, seq, _, _ = sliding_window_examples(np.array([1, 1, 2, 2]), np.array([4, 5, 6, 7]), max_len=9)
    assert seq.tolist() == [[4], [6]]  # every history one item long: one column


def test_an_ungrouped_ratio_split_keeps_file_order_among_equal_times() -> None:
    """40 examples at one time (more than numpy's insertion-sort cut-off, where an unstable sort reorders ties):
    the first 32 in (user, time) order train, the next 4 validate, the last 4 test."""
    labels = ratio_split(np.arange(40), np.zeros(40), [0.8, 0.1, 0.1], by_user=False)
    assert labels.tolist() == [0] * 32 + [1] * 4 + [2] * 4
    # times 0, 1, 2, 0, 1, 2, ...: time 0 first, then 1, then 2, each in file order; the last 8 places are the
    # time-2 examples 17, 20, 23, 26 (valid) and 29, 32, 35, 38 (test)
    labels = ratio_split(np.arange(40), np.arange(40) % 3.0, [0.8, 0.1, 0.1], by_user=False)
    expected = dict.fromkeys(range(40), 0) | dict.fromkeys((17, 20, 23, 26), 1) | dict.fromkeys((29, 32, 35, 38), 2)
    assert labels.tolist() == [expected[i] for i in range(40)]


@pytest.mark.parametrize(("total", "ratios", "counts"), [
    (10, [0.8, 0.15, 0.05], [8, 1, 1]),  # only the last part's share is in (0, 1): it alone gets one
    (10, [0.8, 0.2, 0.0], [8, 2, 0]),  # a zero share gets nothing
])
def test_split_counts_give_one_only_to_a_share_between_zero_and_one(total, ratios, counts) -> None:
    assert split_counts(total, ratios) == counts


def test_eval_args_split_and_group_by_become_a_split_that_says_what_it_is() -> None:
    rs = Split.from_eval_args({"split": {"RS": [8, 1, 1]}, "group_by": "user"})
    assert rs == Split("RS", (8.0, 1.0, 1.0), by_user=True) and all(type(r) is float for r in rs.args)
    assert rs.describe() == "{RS: [8.0, 1.0, 1.0]}, group_by user"
    flat = Split.from_eval_args({"split": {"RS": [0.8, 0.1, 0.1]}, "group_by": None})
    assert flat.by_user is False and flat.describe() == "{RS: [0.8, 0.1, 0.1]}, group_by none"
    ls = Split.from_eval_args({"split": {"LS": "test_only"}, "group_by": "user"})
    assert ls == Split("LS", "test_only", by_user=True) and ls.describe() == "{LS: test_only}"


def test_a_ratio_split_may_leave_a_zero_share_empty_but_not_a_positive_one() -> None:
    users = np.array(["a"] * 4 + ["b"] * 4)
    items = np.array(["1", "2", "3", "4", "2", "3", "4", "1"])
    data = build_sequential(users, items, np.arange(8.0), max_len=5, source="f.inter",
                            split=Split("RS", (0.8, 0.0, 0.2), by_user=False))
    assert (len(data.train), len(data.valid), len(data.test)) == (5, 0, 1)
    two = build_sequential(np.array(["a"] * 3), np.array(["1", "2", "3"]), np.arange(3.0), max_len=5,
                           source="f.inter", split=Split("RS", (0.8, 0.2, 0.0), by_user=False))
    assert (len(two.train), len(two.valid), len(two.test)) == (1, 1, 0)
    with pytest.raises(DataError) as exc:
        build_sequential(np.array(["a"] * 3), np.array(["1", "2", "3"]), np.arange(3.0), max_len=5,
                         source="f.inter", split=Split("RS", (0.8, 0.1, 0.1), by_user=False))
    assert str(exc.value) == (
        "f.inter: eval_args.split {RS: [0.8, 0.1, 0.1]}, group_by none leaves a split empty (train/valid/test "
        "examples: 1/0/1); expected users with more interactions (leave-one-out needs one for history, then one each "
        "for train and the held-out splits) or other ratios.")


def test_leave_one_out_holds_out_valid_and_test_by_default() -> None:
    assert leave_one_out(np.array([1, 1, 1, 1, 2, 2])).tolist() == [0, 0, 1, 2, 0, 2]
    assert leave_one_out(np.array([1, 1, 1, 1, 2, 2]), 1).tolist() == [0, 0, 0, 2, 0, 2]


def test_session_examples_validate_on_a_share_of_training_and_say_when_it_cannot() -> None:
    from narm_lightning.data.protocol import build_session_examples

    def build(n_train: int, ratio: float, n_test: int = 2):
        train = (np.arange(1, n_train + 1), np.arange(n_train), np.ones(n_train, dtype=np.int64))
        test = (np.arange(1, n_test + 1), np.arange(n_test), np.ones(n_test, dtype=np.int64))
        tokens = np.array(["[PAD]", *(f"i{i}" for i in range(1, 11))], dtype=object)
        return build_session_examples(train, np.arange(n_train) % 10 + 1, test, np.arange(n_test) + 1, 11, tokens,
                                      ratio, 0, 50, source="s.txt")

    data = build(10, 0.1)
    assert (len(data.train), len(data.valid), len(data.test)) == (9, 1, 2)
    assert data.stats["n_items"] == 10 and data.n_items == 11 and data.source == "s.txt"
    assert len(build(10, 0.2).valid) == 2 and len(build(10, 0.9).train) == 1 and len(build(10, 0.0).valid) == 0
    assert len(build(10, 0.1, n_test=1).test) == 1
    for n, ratio in ((10, 0.04), (10, 1.0), (10, 0.96)):  # none to validate, or none left to train on
        with pytest.raises(DataError) as exc:
            build(n, ratio)
        assert str(exc.value) == (f"s.txt: data.valid_ratio={ratio} leaves {round(n * ratio)} of {n} training examples "
                                  "for validation; expected at least one (or valid_ratio 0 for none), and at least one "
                                  "left to train on.")
    with pytest.raises(DataError, match=r"^s.txt: has no test examples.$"):
        build(10, 0.1, n_test=0)


def test_sequential_stats_count_users_items_and_interactions() -> None:
    users = np.array(["a"] * 4 + ["b"] * 5)
    items = np.array(["1", "2", "3", "9", "1", "2", "3", "4", "5"])
    data = build_sequential(users, items, np.arange(9.0), max_len=5, source="f.inter")
    assert data.source == "f.inter"
    assert {k: data.stats[k] for k in ("n_users", "n_items", "n_interactions", "n_train", "n_valid", "n_test")} == {
        "n_users": 2, "n_items": 6, "n_interactions": 9, "n_train": 3, "n_valid": 2, "n_test": 2}
    assert data.n_items == 7  # the padding id counts, as RecBole's item_num


def _bench_parts() -> list[tuple[np.ndarray, np.ndarray]]:
    hist = np.empty(2, dtype=object)
    hist[:] = [("a", "b"), ("b",)]
    one = np.empty(1, dtype=object)
    one[:] = [("a", "b", "c")]
    return [(hist, np.array(["c", "d"], dtype=object)), (one, np.array(["d"], dtype=object)),
            (one.copy(), np.array(["e"], dtype=object))]


def test_benchmark_files_keep_whole_histories_up_to_max_len_and_count_what_they_hold() -> None:
    from narm_lightning.data.protocol import build_benchmark

    data = build_benchmark(_bench_parts(), max_len=3, sources=["t.inter", "v.inter", "s.inter"])
    assert data.source == "t.inter, v.inter, s.inter"
    assert data.stats["n_items"] == 5 and data.stats["n_interactions"] == 4 and data.n_items == 6
    assert data.train.item_seq.shape == (2, 3) and data.test.item_seq_len.tolist() == [3]
    parts = _bench_parts()
    empty = np.empty(1, dtype=object)
    empty[:] = [()]
    parts[1] = (empty, np.array(["d"], dtype=object))
    with pytest.raises(DataError) as exc:
        build_benchmark(parts, max_len=3, sources=["t.inter", "v.inter", "s.inter"])
    assert str(exc.value) == ("v.inter, line 2: the history is empty; expected at least one item before the target "
                              "(RecBole would read position -1).")
    with pytest.raises(DataError, match=r"v.inter: a history holds 3 items, more than data.max_item_list_length=2"):
        build_benchmark(_bench_parts(), max_len=2, sources=["t.inter", "v.inter", "s.inter"])
    parts = _bench_parts()
    parts[2] = (np.empty(0, dtype=object), np.array([], dtype=object))
    with pytest.raises(DataError, match=r"^s.inter: has no rows; expected one example a row"):
        build_benchmark(parts, max_len=3, sources=["t.inter", "v.inter", "s.inter"])


def test_the_fingerprint_sees_the_shape_not_only_the_bytes() -> None:
    """Two datasets whose history matrices hold the same bytes in other shapes are different data."""
    from narm_lightning.data.protocol import Examples, SequentialData

    def data(seq: torch.Tensor) -> SequentialData:
        ex = Examples(seq, torch.tensor([1, 1]), torch.tensor([1, 2]))
        return SequentialData(ex, ex, ex, 3, np.array(["[PAD]", "a", "b"], dtype=object))

    wide = torch.tensor([[1, 2, 0], [2, 1, 0]])
    narrow = wide.reshape(3, 2).clone()
    assert wide.numpy().tobytes() == narrow.numpy().tobytes()
    assert data(wide).fingerprint() != data(narrow).fingerprint()
    assert data(wide).fingerprint() == data(wide.clone()).fingerprint()


def test_examples_take_the_same_rows_of_every_tensor() -> None:
    from narm_lightning.data.protocol import Examples

    ex = Examples(torch.tensor([[1, 0], [2, 3], [4, 0]]), torch.tensor([1, 2, 1]), torch.tensor([5, 6, 7]))
    part = ex.take(torch.tensor([2, 0]))
    assert part.item_seq.tolist() == [[4, 0], [1, 0]] and part.item_seq_len.tolist() == [1, 1]
    assert part.target.tolist() == [7, 5] and len(part) == 2


# ---- RecBole's order of same-time interactions (data.time_order, data.normalize_all) ----

def test_time_keys_are_recboles_float32_times_or_the_times_themselves() -> None:
    from narm_lightning.data.protocol import time_keys

    times = np.array([881251702.0, 881251728.0, 881251793.0])  # 26 s apart: one float32 (steps of 64 s there)
    exact = time_keys(times, "exact", False)
    assert exact.dtype == np.float64 and exact.tolist() == times.tolist()
    raw = time_keys(times, "recbole", False)
    assert raw.dtype == np.float32 and raw[0] == raw[1] == np.float32(881251712.0) and raw[2] > raw[1]
    scaled = time_keys(times, "recbole", normalize=True)  # (t - min) / (max - min), then float32
    assert scaled.dtype == np.float32 and scaled.tolist() == [0.0, np.float32(26 / 91), 1.0]
    assert time_keys(np.array([5.0, 5.0]), "recbole", normalize=True).tolist() == [1.0, 1.0]  # RecBole's arr = 1.0
    assert time_keys(np.zeros(0), "recbole", normalize=True).shape == (0,)
    with pytest.raises(ValueError) as exc:
        time_keys(times, "stable", False)
    assert str(exc.value) == "time_order 'stable'; expected one of recbole, exact"


def test_interactions_recboles_float32_ties_keep_their_file_order() -> None:
    """One user: item b is 1 s before item a but later in the file. In float32 both are one time, so RecBole
    (and time_order=recbole) keeps the file order a, b; the exact order puts b first."""
    users = np.array(["u"] * 4)
    items = np.array(["x", "a", "b", "y"])
    times = np.array([881251600.0, 881251729.0, 881251728.0, 881251900.0])
    for order, history in (("recbole", ["x", "a", "b"]), ("exact", ["x", "b", "a"])):
        data = build_sequential(users, items, times, max_len=5, time_order=order)
        seq, n = data.test.item_seq[0], int(data.test.item_seq_len[0])
        assert [data.item_tokens[i] for i in seq[:n].tolist()] == history, order
