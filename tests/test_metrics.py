from __future__ import annotations

import math

import torch

from narm_lightning.metrics import RankMetrics, target_ranks


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
