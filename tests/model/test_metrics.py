from __future__ import annotations

import math

import pytest
import torch

from narm_lightning.model import metrics as metrics_module
from narm_lightning.model.metrics import RankMetrics, tail_items, target_ranks, target_ranks_of_product


def test_ranks_count_strictly_higher_scores_so_ties_favour_the_target() -> None:
    scores = torch.tensor([[0.0, 5.0, 4.0, 4.0, 1.0], [0.0, 1.0, 1.0, 1.0, 1.0]])
    assert target_ranks(scores, torch.tensor([2, 4])).tolist() == [2, 1]
    assert target_ranks(scores, torch.tensor([4, 1])).tolist() == [4, 1]


def test_metrics_against_hand_computed_values() -> None:
    metric = RankMetrics(topk=[1, 3], metrics=["Recall", "MRR", "NDCG", "Hit", "Precision"])
    neg_inf = float("-inf")
    # target ranks: 1, 3, 5 (last row has an item tied with the target: still rank 5 -> outside K=3)
    scores = torch.tensor(
        [
            [neg_inf, 9.0, 1.0, 2.0, 3.0, 4.0],
            [neg_inf, 9.0, 8.0, 7.0, 3.0, 4.0],
            [neg_inf, 9.0, 8.0, 7.0, 6.0, 1.0],
        ]
    )
    target = torch.tensor([1, 3, 5])
    metric.update(scores[:2], target[:2])
    metric.update(scores[2:], target[2:])
    got = {k: float(v) for k, v in metric.compute().items()}
    assert math.isclose(got["hit@1"], 1 / 3)
    assert math.isclose(got["recall@3"], 2 / 3)
    assert math.isclose(got["mrr@3"], (1 + 1 / 3) / 3)
    assert math.isclose(got["ndcg@3"], (1 + 1 / math.log2(4)) / 3)
    assert math.isclose(got["precision@3"], 2 / 3 / 3)
    assert math.isclose(got["mrr@1"], 1 / 3)


def test_states_are_sums_so_split_updates_merge_exactly() -> None:
    torch.manual_seed(0)
    scores, target = torch.randn(64, 30), torch.randint(1, 30, (64,))
    whole = RankMetrics([5, 10])
    whole.update(scores, target)
    a, b = RankMetrics([5, 10]), RankMetrics([5, 10])
    a.update(scores[:20], target[:20])
    b.update(scores[20:], target[20:])
    a.merge_state(b)
    for key, value in whole.compute().items():
        assert torch.isclose(value, a.compute()[key], atol=1e-12)
    for name in ("hits", "rr", "dcg", "count"):
        assert whole._reductions[name].__name__ in {"dim_zero_sum", "sum"}


# Run in a fresh interpreter, one thread, glibc's default malloc: a test worker's heap (shaped by the tests before
# it) and the Makefile's GLIBC_TUNABLES (huge pages, no trimming) move peak RSS by up to ~240 MiB whatever the
# ranking does (measured: 86 or 320-330 MiB, bimodal); so probed, ranking takes 93-152 MiB, a whole-block mask 708.
RANKING_MEMORY_PROBE = """
import json, re, sys
from pathlib import Path
import torch
from narm_lightning.model.metrics import target_ranks
status, clear = Path("/proc/self/status"), Path("/proc/self/clear_refs")
def mib(field):
    return int(re.search(rf"{field}:\\s+(\\d+)", status.read_text()).group(1)) / 1024
torch.set_num_threads(1)
torch.manual_seed(0)
scores = torch.randn(2048, 40_000)  # 312.5 MiB
target = torch.randint(1, 40_000, (2048,))
before = mib("VmRSS")
try:
    clear.write_text("5")  # restart the peak-RSS counter
except OSError:
    print(json.dumps({"skip": True}))
    sys.exit()
ranks = target_ranks(scores, target)
extra = mib("VmHWM") - before
same = torch.equal(ranks, scores.gt(scores.gather(1, target.view(-1, 1))).sum(1) + 1)
print(json.dumps({"extra": extra, "same": same}))
"""


def test_ranking_a_block_needs_less_extra_memory_than_the_block_itself() -> None:
    """Evaluation holds one eval_batch_size x n_items score block; ranking it must not hold a bigger temporary."""
    import json
    import os
    import subprocess
    import sys

    env = {key: value for key, value in os.environ.items() if key != "GLIBC_TUNABLES"}
    proc = subprocess.run([sys.executable, "-c", RANKING_MEMORY_PROBE], capture_output=True, text=True, env=env,
                          timeout=300, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result.get("skip"):
        pytest.skip("cannot reset the peak-RSS counter here")
    extra = result["extra"]
    assert extra < 312.5, f"ranking took {extra:.0f} MiB beyond the scores"  # a whole-block mask + sum: ~700
    assert result["same"]


# Two rows over items 0..3 (0 = padding, -inf): row A ranks [1, 2, 3], row B [2, 3, 1]; both targets are item 2.
# Training popularity (RecBole's data.count_items): item 1 five times, item 2 once, item 3 never.
LISTS_SCORES = torch.tensor([[float("-inf"), 3.0, 2.0, 1.0], [float("-inf"), 1.0, 3.0, 2.0]])
LISTS_TARGET = torch.tensor([2, 2])
POPULARITY = torch.tensor([0, 5, 1, 0])
ALL = ["MAP", "ItemCoverage", "AveragePopularity", "GiniIndex", "ShannonEntropy", "TailPercentage"]


def test_recboles_beyond_accuracy_metrics_against_hand_computed_values() -> None:
    m = RankMetrics([1, 2], ALL, item_popularity=POPULARITY, tail_ratio=0.1)
    m.update(LISTS_SCORES, LISTS_TARGET)
    computed = m.compute()
    # every figure in float64, as RecBole's numpy: a float32 one differs from 7 digits on (ItemCoverage's survived)
    assert {k: v.dtype for k, v in computed.items()} == dict.fromkeys(computed, torch.float64)
    got = {k: float(v) for k, v in computed.items()}
    ln2 = math.log(2)
    expected = {
        # K=1: lists [1] and [2]
        "map@1": 0.5,  # A's target at rank 2, B's at rank 1: AP = 1/rank within K
        "itemcoverage@1": 2 / 4,  # 2 distinct items over RecBole's num_items (4, the padding id included)
        "averagepopularity@1": (5 + 1) / 2,
        "giniindex@1": ((2 * 3 - 5) * 1 + (2 * 4 - 5) * 1) / 2 / 4,  # counts [1, 1] at positions 3, 4 of 4
        "shannonentropy@1": ln2 / 2,  # p = [1/2, 1/2], over 2 distinct items (RecBole divides by that)
        "tailpercentage@1": 1 / 2,  # the tail: 10% of the 2 seen items, at least one: item 2 (fewest)
        # K=2: lists [1, 2] and [2, 3]
        "map@2": (1 / 2 + 1) / 2,
        "itemcoverage@2": 3 / 4,
        "averagepopularity@2": ((5 + 1) / 2 + (1 + 0) / 2) / 2,
        "giniindex@2": ((2 * 2 - 5) * 1 + (2 * 3 - 5) * 1 + (2 * 4 - 5) * 2) / 4 / 4,  # counts [1, 1, 2]
        "shannonentropy@2": -(2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5)) / 3,
        "tailpercentage@2": (1 / 2 + 1 / 2) / 2,  # item 3 was never trained on: not in RecBole's tail
    }
    assert got == pytest.approx(expected)


@pytest.mark.parametrize(("ratio", "tail"), [(0.1, [2]), (3, [2]), (5, [1, 2]), (1, [1, 2]), (None, [2]), (0, [2])])
def test_the_long_tail_follows_recboles_tail_ratio(ratio, tail) -> None:
    assert torch.nonzero(tail_items(POPULARITY, ratio)).flatten().tolist() == tail


def test_list_metrics_merge_exactly_across_ranks() -> None:
    whole = RankMetrics([1, 2], ALL, item_popularity=POPULARITY)
    whole.update(LISTS_SCORES, LISTS_TARGET)
    a, b = (RankMetrics([1, 2], ALL, item_popularity=POPULARITY) for _ in range(2))
    a.update(LISTS_SCORES[:1], LISTS_TARGET[:1])
    b.update(LISTS_SCORES[1:], LISTS_TARGET[1:])
    a.merge_state(b)
    assert {k: float(v) for k, v in a.compute().items()} == pytest.approx(
        {k: float(v) for k, v in whole.compute().items()})


def test_list_metrics_need_the_popularity() -> None:
    with pytest.raises(ValueError, match="GiniIndex|giniindex"):
        RankMetrics([10], ["MRR", "GiniIndex"])


@pytest.mark.parametrize("block", [(3, 5), (1, 1), (4, 1000)])
@pytest.mark.parametrize("rows,items", [(1, 9), (7, 40), (64, 301)])
def test_ranks_of_a_product_equal_the_score_matrix_ranks(monkeypatch, block, rows, items) -> None:
    """Blocks of every size (a target in every block position, one row, one item a block): the ranks of
    ``queries @ keys.T`` with column 0 (padding) never ranking equal ``target_ranks`` on the whole matrix, exact
    ties included (a duplicated item row counts for the target) and a huge padding score ignored. Small
    integers: every product and sum is exact in fp32, so no BLAS rounding can decide a tie here."""
    monkeypatch.setattr(metrics_module, "RANK_BLOCK", block)
    generator = torch.Generator().manual_seed(rows * items)
    queries = torch.randint(-3, 4, (rows, 16), generator=generator).float()
    keys = torch.randint(-3, 4, (items, 16), generator=generator).float()
    keys[0] = 50.0  # padding scores highest: it must still never rank
    target = torch.randint(1, items, (rows,), generator=generator)
    keys[items - 1] = keys[target[0]]  # an exact tie with row 0's target (and many other ties: small integers)
    scores = queries @ keys.t()
    scores[:, 0] = float("-inf")  # what NARM.predict does
    assert torch.equal(target_ranks_of_product(queries, keys, target), target_ranks(scores, target))


def test_ranks_of_a_product_at_evaluation_scale_equal_the_matrix_ranks() -> None:
    """fp32 embeddings and sessions, 1,000 rows x 3,000 items in the default blocks: the same ranks as the
    whole score matrix (BLAS gives an element the same value in a block as in the matrix)."""
    generator = torch.Generator().manual_seed(0)
    queries, keys = torch.randn(1000, 64, generator=generator), torch.randn(3000, 64, generator=generator)
    target = torch.randint(1, 3000, (1000,), generator=generator)
    scores = queries @ keys.t()
    scores[:, 0] = float("-inf")
    assert torch.equal(target_ranks_of_product(queries, keys, target), target_ranks(scores, target))


def test_the_target_never_counts_against_itself(monkeypatch) -> None:
    """Even where a BLAS would give the target's score another rounding in the block than in its own GEMM:
    the target's column is excluded by position, not by value."""
    queries, keys = torch.ones(2, 4), torch.ones(6, 4)  # every item ties: all ranks are 1
    real_mm = torch.mm

    def mm_bumping_blocks(a, b):  # blocks (6 columns) one ulp above the [r, r] target GEMM
        out = real_mm(a, b)
        return torch.nextafter(out, torch.full_like(out, 10.0)) if b.size(1) > 2 else out

    monkeypatch.setattr(metrics_module.torch, "mm", mm_bumping_blocks)
    ranks = target_ranks_of_product(queries, keys, torch.tensor([2, 5]))
    assert ranks.tolist() == [5, 5]  # the 4 other non-padding items now score higher; the target does not


def test_update_from_ranks_equals_update_from_scores_and_lists_need_scores() -> None:
    scores = torch.tensor([[float("-inf"), 9.0, 1.0, 2.0], [float("-inf"), 1.0, 8.0, 7.0]])
    target = torch.tensor([3, 3])
    a, b = RankMetrics(topk=[1, 2]), RankMetrics(topk=[1, 2])
    a.update(scores, target)
    b.update(None, target, ranks=target_ranks(scores, target))
    assert {k: float(v) for k, v in a.compute().items()} == {k: float(v) for k, v in b.compute().items()}
    lists = RankMetrics(topk=[1], metrics=["itemcoverage"], item_popularity=torch.ones(4))
    with pytest.raises(ValueError, match="itemcoverage need the scores"):
        lists.update(None, target, ranks=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="needs scores or ranks"):
        a.update(None, target)


# ---- from the mutation run of metrics.py (docs/reliability.md) ----

def test_one_metric_object_accumulates_over_batches() -> None:
    """Two updates of one object equal one update with both batches (the list sums are added, not replaced)."""
    whole = RankMetrics([1, 2], ALL + ["Recall", "NDCG"], item_popularity=POPULARITY)
    whole.update(LISTS_SCORES, LISTS_TARGET)
    split = RankMetrics([1, 2], ALL + ["Recall", "NDCG"], item_popularity=POPULARITY)
    split.update(LISTS_SCORES[:1], LISTS_TARGET[:1])
    split.update(LISTS_SCORES[1:], LISTS_TARGET[1:])
    got, want = split.compute(), whole.compute()
    assert {k: float(v) for k, v in got.items()} == pytest.approx({k: float(v) for k, v in want.items()})
    assert all(v.dtype == torch.float64 for v in got.values()), {k: v.dtype for k, v in got.items()}


def test_one_example_is_its_own_mean() -> None:
    metric = RankMetrics([10], ["Recall", "MRR"])
    metric.update(None, torch.tensor([3]), ranks=torch.tensor([1]))
    assert {k: float(v) for k, v in metric.compute().items()} == {"recall@10": 1.0, "mrr@10": 1.0}


def test_the_tail_ratio_rules_at_their_edges() -> None:
    """1.5 (> 1) is a count, not a share; 0 is RecBole's default 0.1; a tie at the cut keeps the lower id."""
    popularity = torch.tensor([0, 1, 2, 2, 3, 1, 5, 6, 7, 8, 9, 9])
    assert torch.nonzero(tail_items(popularity, 1.5)).flatten().tolist() == [1, 5]
    assert torch.nonzero(tail_items(popularity, 0)).flatten().tolist() == [1]
    # 0 means RecBole's 0.1, not a share of 0 (which would still keep one item): 20 seen items -> 2
    twenty = torch.arange(21)
    assert torch.nonzero(tail_items(twenty, 0)).flatten().tolist() == [1, 2]
    assert torch.nonzero(tail_items(popularity, 0.2)).flatten().tolist() == [1, 5]
    assert torch.nonzero(tail_items(popularity, 0.3)).flatten().tolist() == [1, 2, 5]


def test_an_unknown_metric_is_named_with_the_known_ones() -> None:
    with pytest.raises(ValueError) as exc:
        RankMetrics([10], ["Recall", "Novelty"])
    assert str(exc.value) == (
        "unknown metrics ['Novelty']; known: ['recall', 'mrr', 'ndcg', 'hit', 'precision', 'map', 'itemcoverage', "
        "'averagepopularity', 'giniindex', 'shannonentropy', 'tailpercentage']")


def test_the_popularity_buffers_stay_out_of_checkpoints() -> None:
    metric = RankMetrics([2], ALL, item_popularity=POPULARITY, tail_ratio=5)
    assert not {"popularity", "tail"} & set(metric.state_dict())
    assert metric.tail.dtype == torch.float64 and torch.nonzero(metric.tail).flatten().tolist() == [1, 2]


def test_the_update_refusals_word_for_word() -> None:
    lists = RankMetrics([1], ["ItemCoverage", "GiniIndex"], item_popularity=torch.ones(4))
    with pytest.raises(ValueError) as exc:
        lists.update(None, torch.tensor([1]), ranks=torch.tensor([1]))
    assert str(exc.value) == "itemcoverage, giniindex need the scores"
    with pytest.raises(ValueError) as exc:
        RankMetrics([1]).update(None, torch.tensor([1]))
    assert str(exc.value) == "RankMetrics.update needs scores or ranks"


def test_the_largest_k_may_be_every_item() -> None:
    """K = the number of columns: the top-K lists take exactly K (one more would not exist); with three Ks the
    lists are as long as the largest."""
    scores = torch.tensor([[float("-inf"), 3.0, 2.0, 1.0], [float("-inf"), 1.0, 2.0, 3.0]])
    metric = RankMetrics([1, 2, 4], ["Hit", "ItemCoverage"], item_popularity=torch.tensor([0, 1, 1, 1]))
    metric.update(scores, torch.tensor([1, 1]))
    got = {k: float(v) for k, v in metric.compute().items()}
    assert got == {"hit@1": 0.5, "itemcoverage@1": 0.5, "hit@2": 0.5, "itemcoverage@2": 0.75, "hit@4": 1.0,
                   "itemcoverage@4": 1.0}


def test_ranks_of_more_rows_than_one_chunk_equal_the_brute_force_ranks() -> None:
    """Rows are ranked in chunks of RANK_CHUNK_ROWS: each row's rank counts only its own row's scores."""
    generator = torch.Generator().manual_seed(3)
    rows = 2 * metrics_module.RANK_CHUNK_ROWS + 37
    scores = torch.randint(0, 6, (rows, 9), generator=generator).float()
    target = torch.randint(0, 9, (rows,), generator=generator)
    want = [1 + sum(float(s) > float(scores[r, target[r]]) for s in scores[r]) for r in range(rows)]
    assert target_ranks(scores, target).tolist() == want


def test_no_rows_give_no_ranks() -> None:
    ranks = target_ranks(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long))
    assert ranks.dtype == torch.long and ranks.shape == (0,)


def test_every_accumulator_is_float64_whatever_the_popularity_dtype() -> None:
    """Sums of 1/rank and counts past 2^24 rows stay exact only in float64; int popularity counts are converted."""
    metric = RankMetrics([1, 3], ALL + ["Recall", "NDCG"], item_popularity=torch.tensor([0, 5, 1, 0]))
    states = {name: getattr(metric, name).dtype for name in
              ("hits", "rr", "dcg", "count", "recommended", "pop_sum", "tail_sum", "popularity", "tail")}
    assert states == dict.fromkeys(states, torch.float64)


def test_means_are_float64_sums_of_reciprocal_ranks() -> None:
    """1/3 and 1/7 are not float32 numbers: the means equal float64 arithmetic, not a float32 rounding of it."""
    metric = RankMetrics([10], ["MRR", "NDCG"])
    metric.update(None, torch.tensor([1, 1]), ranks=torch.tensor([3, 7]))
    got = {k: float(v) for k, v in metric.compute().items()}
    assert got["mrr@10"] == (1 / 3 + 1 / 7) / 2
    assert got["ndcg@10"] == pytest.approx((1 / math.log2(4) + 1 / math.log2(8)) / 2, rel=1e-15)


def test_list_metrics_without_popularity_name_each_one() -> None:
    with pytest.raises(ValueError) as exc:
        RankMetrics([10], ["ItemCoverage", "Recall", "GiniIndex"])
    assert str(exc.value) == "itemcoverage, giniindex need item_popularity"


def test_the_tail_is_the_least_popular_in_id_order_among_equals() -> None:
    """Ties at the cut go to the lower ids (a stable sort), across more items than a sort kernel's small-array
    path: 3000 seen items of 3 counts, the tail's 300 are the first 300 ids of count 1."""
    popularity = torch.cat([torch.zeros(1), torch.tensor([3.0, 1.0, 2.0]).repeat(1000)])
    tail = torch.nonzero(tail_items(popularity, 0.1)).flatten()
    assert tail.tolist() == list(range(2, 3 * 300, 3))
