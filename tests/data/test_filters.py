"""RecBole's interaction filters (rm_dup_inter, val_interval, user/item_inter_num_interval) on hand-made rows
with hand-computed answers, on ml-100k against RecBole's documented rules, and through a whole run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from narm_lightning.data.filters import filter_rows, parse_intervals, within
from narm_lightning.data.sources import load_user_sequences
from tests.helpers import compose_train, tiny_overrides


def test_interval_strings_are_recboles() -> None:
    assert parse_intervals("[5,inf)") == [("[", 5.0, float("inf"), ")")]
    rule = parse_intervals("(0,1];[3,4)")
    assert within(np.array([0.0, 0.5, 1.0, 2.0, 3.0, 4.0]), rule).tolist() == [False, True, True, False, True, False]
    for bad in ("[5,inf", "5,10", "[a,3]", "[4,3]", "[1,2,3]"):
        with pytest.raises(ValueError):
            parse_intervals(bad)


USERS = np.array(["a", "a", "a", "b", "b", "c"], dtype=object)
ITEMS = np.array(["x", "y", "x", "x", "y", "z"], dtype=object)
TIMES = np.array([3.0, 1.0, 2.0, 5.0, 4.0, 6.0])


def test_duplicates_are_dropped_after_a_sort_by_time() -> None:
    # time order: rows 1 (a,y,1), 2 (a,x,2), 0 (a,x,3), 4 (b,y,4), 3 (b,x,5), 5 (c,z,6); (a,x) twice
    assert filter_rows(USERS, ITEMS, TIMES, {}, rm_dup_inter="first").tolist() == [1, 2, 4, 3, 5]
    assert filter_rows(USERS, ITEMS, TIMES, {}, rm_dup_inter="last").tolist() == [1, 0, 4, 3, 5]
    assert filter_rows(USERS, ITEMS, TIMES, {}).tolist() == [0, 1, 2, 3, 4, 5], "no filter: every row, in file order"


def test_value_intervals_keep_float_ranges_and_token_lists() -> None:
    rating = np.array([5.0, 2.0, 3.0, 1.0, 4.0, 3.0])
    kept = filter_rows(USERS, ITEMS, TIMES, {"rating": rating}, val_interval={"rating": "[3,inf)"})
    assert kept.tolist() == [0, 2, 4, 5]
    kept = filter_rows(USERS, ITEMS, TIMES, {"item_id": ITEMS}, val_interval={"item_id": ["x", "z"]})
    assert kept.tolist() == [0, 2, 3, 5]


def test_k_core_repeats_until_stable() -> None:
    # 2-core on users and items: c has one row (dropped); then z has none; then nothing else changes.
    # y: rows 1 and 4 (2, kept); x: rows 0, 2, 3 (3, kept); a: 3 rows, b: 2 rows
    assert filter_rows(USERS, ITEMS, TIMES, {}, user_inter_num_interval="[2,inf)",
                       item_inter_num_interval="[2,inf)").tolist() == [0, 1, 2, 3, 4]
    # a cascade: items need 3 -> only x stays (rows 0, 2, 3); then b has one row (3) -> dropped with users >= 2;
    # then x has 2 rows < 3 -> dropped: nothing is left
    assert filter_rows(USERS, ITEMS, TIMES, {}, user_inter_num_interval="[2,inf)",
                       item_inter_num_interval="[3,inf)").tolist() == []


def test_ml100k_five_core_and_rating_at_least_3(shared_data) -> None:
    """Expected: RecBole's rules (rating >= 3 first, then users and items with >= 5 interactions, repeated until
    stable), counted with a plain loop over the file when written: 81,697 interactions, 943 users, 1,203 items."""
    data = load_user_sequences("ml-100k", "missing", [str(shared_data)], "user_id", "item_id", "timestamp", 50,
                               download=False, filters={"val_interval": {"rating": "[3,inf)"},
                                                        "user_inter_num_interval": "[5,inf)",
                                                        "item_inter_num_interval": "[5,inf)"})
    assert (data.stats["n_interactions"], data.stats["n_users"], data.stats["n_items"]) == (81_697, 943, 1_203)
    assert len(data.train) + len(data.valid) + len(data.test) == 81_697 - 943


def test_a_filtered_run_reports_its_filters_and_keeps_a_plain_checkpoint(tiny_root, tmp_path) -> None:
    from narm_lightning.training.run import train

    cfg = compose_train(tiny_overrides(tiny_root, "epochs=1", 'data.user_inter_num_interval="[3,inf)"',
                                       "data.rm_dup_inter=first"))
    results = train(cfg, output_dir=tmp_path / "run")
    assert results["protocol"]["filters"] == {"rm_dup_inter": "first", "user_inter_num_interval": "[3,inf)"}
    assert torch.load(results["best_checkpoint"], weights_only=True)["protocol"] == results["protocol"]
