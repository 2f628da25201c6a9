from __future__ import annotations

import math

import pytest
import torch

from narm_lightning.metrics import RankMetrics, tail_items, target_ranks


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


def test_ranking_a_block_needs_less_extra_memory_than_the_block_itself() -> None:
    """Evaluation holds one eval_batch_size x n_items score block; ranking it must not hold a bigger temporary."""
    import re
    from pathlib import Path

    import pytest

    status, clear = Path("/proc/self/status"), Path("/proc/self/clear_refs")

    def mib(field: str) -> float:
        return int(re.search(rf"{field}:\s+(\d+)", status.read_text()).group(1)) / 1024

    scores = torch.randn(2048, 40_000)  # 312.5 MiB
    target = torch.randint(1, 40_000, (2048,))
    before = mib("VmRSS")
    try:
        clear.write_text("5")  # restart the peak-RSS counter
    except OSError:
        pytest.skip("cannot reset the peak-RSS counter here")
    ranks = target_ranks(scores, target)
    extra = mib("VmHWM") - before
    assert extra < 312.5, f"ranking took {extra:.0f} MiB beyond the scores"  # a whole-block mask + sum: ~700
    assert torch.equal(ranks, scores.gt(scores.gather(1, target.view(-1, 1))).sum(1) + 1)


# Two rows over items 0..3 (0 = padding, -inf): row A ranks [1, 2, 3], row B [2, 3, 1]; both targets are item 2.
# Training popularity (RecBole's data.count_items): item 1 five times, item 2 once, item 3 never.
LISTS_SCORES = torch.tensor([[float("-inf"), 3.0, 2.0, 1.0], [float("-inf"), 1.0, 3.0, 2.0]])
LISTS_TARGET = torch.tensor([2, 2])
POPULARITY = torch.tensor([0, 5, 1, 0])
ALL = ["MAP", "ItemCoverage", "AveragePopularity", "GiniIndex", "ShannonEntropy", "TailPercentage"]


def test_recboles_beyond_accuracy_metrics_against_hand_computed_values() -> None:
    m = RankMetrics([1, 2], ALL, item_popularity=POPULARITY, tail_ratio=0.1)
    m.update(LISTS_SCORES, LISTS_TARGET)
    got = {k: float(v) for k, v in m.compute().items()}
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
