"""Full-sort ranking metrics as one ``torchmetrics.Metric`` with summed states (DDP-safe).

Hand-written because torchmetrics' Retrieval* metrics keep every (query, item) score and loop in Python,
and some ignore targets scored <= 0: wrong for ranking one target against the whole catalogue. Here the
target's rank is computed once per row and only per-K sums are kept. RecBole's beyond-accuracy metrics
(recbole/evaluator/metrics.py, 1.2.1) need the top-K lists: they keep how often each item is recommended
at each K (a sum over rows, so exact under several ranks) and per-K sums of popularity and tail hits; the
memory is K x items, whatever the number of rows. RecBole computes them from every row's list at once and
crashes in 1.2.1 (``'int' object has no attribute 'cpu'``); the definitions below are its, to the letter.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

from narm_lightning.config.schema import ACCURACY_METRICS, METRICS

BEYOND_ACCURACY = tuple(m for m in METRICS if m not in ACCURACY_METRICS)

# Rows compared at a time: summing a [rows, n_items] bool mask makes an int64 copy of it (8 bytes an item),
# which for a whole block would double evaluation's peak memory; 256 rows keep it to a few dozen MiB.
RANK_CHUNK_ROWS = 256
# target_ranks_of_product's block: rows x items scored at a time (2 MiB of fp32 scores: L2-sized; measured on
# 4096 x 43,098 DIGINETICA scores: 512 x 1024 ... 1024 x 2048 within 5% of each other, 2x faster than the matrix)
RANK_BLOCK = (512, 1024)


def target_ranks(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Rank of each row's target: 1 + number of items scoring strictly higher (ties favour the target)."""
    target_score = scores.gather(1, target.view(-1, 1))
    counts = [scores[i:i + RANK_CHUNK_ROWS].gt(target_score[i:i + RANK_CHUNK_ROWS]).sum(dim=1)
              for i in range(0, scores.size(0), RANK_CHUNK_ROWS)]
    return (torch.cat(counts) if counts else target_score.new_zeros(0, dtype=torch.long)) + 1


def target_ranks_of_product(queries: torch.Tensor, keys: torch.Tensor, target: torch.Tensor,
                            first_key: int = 1) -> torch.Tensor:
    """``target_ranks(queries @ keys.T, target)`` with columns before ``first_key`` never ranking (NARM's
    padding id 0, the ``-inf`` column of ``predict``), without the ``[B, n_items]`` score matrix.

    Why: a full-sort block of 4096 DIGINETICA rows is a 706 MB matrix, written by one GEMM and read again by
    the comparison, and a fresh one of that size costs page faults; here ``RANK_BLOCK`` rows x items are scored,
    compared and dropped while in cache (DIGINETICA, 4096 x 43,098: 469 -> 115 ms). Same ranks: every score is
    a GEMM over the same rows, the target's included (a small ``[r, r]`` GEMM against the targets' rows), and
    MKL gives an element the same value in a block as in the whole matrix at evaluation's shapes (tested); a
    BLAS that did not could only swap items whose scores lie within its rounding of each other. The target's
    own column is excluded by position, so it never counts against itself whatever the rounding.
    """
    rows_per_block, keys_per_block = RANK_BLOCK
    n_keys = keys.size(0)
    ranks = torch.ones(target.numel(), dtype=torch.long, device=queries.device)
    for i in range(0, queries.size(0), rows_per_block):
        query, goal = queries[i:i + rows_per_block], target[i:i + rows_per_block]
        # [r, r] GEMM, not a row-wise dot product: the same kernel as the blocks below, so the same value
        goal_score = torch.mm(query, keys[goal].t()).diagonal().unsqueeze(1)
        rows = torch.arange(goal.numel(), device=queries.device)
        for j in range(first_key, n_keys, keys_per_block):
            above = torch.mm(query, keys[j:j + keys_per_block].t()).gt_(goal_score)  # 1.0 / 0.0 in place
            here = (goal >= j) & (goal < j + keys_per_block)
            above[rows[here], goal[here] - j] = 0.0  # the target itself
            ranks[i:i + rows_per_block] += above.sum(1).long()  # exact: at most keys_per_block ones
    return ranks


def tail_items(popularity: torch.Tensor, tail_ratio: float | None) -> torch.Tensor:
    """RecBole's long tail as a mask over item ids. Only items seen in training count (RecBole's counter);
    ``tail_ratio > 1``: those seen at most that often; else that share of them, least frequent first (ties
    by id), at least one. ``None`` or <= 0: 0.1, as RecBole."""
    ratio = 0.1 if tail_ratio is None or tail_ratio <= 0 else float(tail_ratio)
    seen = popularity > 0
    if ratio > 1:
        return seen & (popularity <= ratio)
    ids = torch.nonzero(seen).flatten()  # ascending ids; a stable sort by count orders by (count, id)
    order = ids[torch.sort(popularity[ids], stable=True).indices]
    mask = torch.zeros_like(seen)
    mask[order[: max(int(len(ids) * ratio), 1)]] = True
    return mask


class RankMetrics(Metric):
    """RecBole's top-K metrics at each K for one target per row (leave-one-out / next item): Recall, MRR, NDCG,
    Hit, Precision, MAP from the target's rank; ItemCoverage, AveragePopularity, GiniIndex, ShannonEntropy and
    TailPercentage from the top-K lists (these need ``item_popularity``: each item id's count as a training
    target, RecBole's ``data.count_items``)."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, topk: Sequence[int], metrics: Sequence[str] = METRICS[:5],
                 item_popularity: torch.Tensor | None = None, tail_ratio: float | None = None) -> None:
        super().__init__()
        unknown = [m for m in metrics if m.lower() not in METRICS]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; known: {list(METRICS)}")
        self.topk = sorted({int(k) for k in topk})
        self.metrics = [m.lower() for m in metrics]
        k = len(self.topk)
        self.add_state("hits", default=torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("rr", default=torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("dcg", default=torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.lists = any(m in BEYOND_ACCURACY for m in self.metrics)
        if self.lists:
            if item_popularity is None:
                raise ValueError(f"{', '.join(m for m in self.metrics if m in BEYOND_ACCURACY)} need item_popularity")
            popularity = item_popularity.to(torch.float64)
            self.register_buffer("popularity", popularity, persistent=False)
            self.register_buffer("tail", tail_items(popularity, tail_ratio).to(torch.float64), persistent=False)
            self.add_state("recommended", default=torch.zeros(k, popularity.numel(), dtype=torch.float64),
                           dist_reduce_fx="sum")  # [K, items]: how often each item is in a top-K list
            self.add_state("pop_sum", default=torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state("tail_sum", default=torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, scores: torch.Tensor | None, target: torch.Tensor,  # type: ignore[override]
               ranks: torch.Tensor | None = None) -> None:
        """Add one block of rows; ``scores`` must already hold ``-inf`` where an item may not rank. Given the
        targets' ``ranks`` (``target_ranks_of_product``), ``scores`` is needed only for the top-K lists."""
        if ranks is None:
            if scores is None:
                raise ValueError("RankMetrics.update needs scores or ranks")
            ranks = target_ranks(scores.float(), target)
        elif self.lists and scores is None:
            raise ValueError(f"{', '.join(m for m in self.metrics if m in BEYOND_ACCURACY)} need the scores")
        ranks = ranks.to(torch.float64)
        ks = torch.tensor(self.topk, dtype=torch.float64, device=ranks.device)
        inside = ranks.unsqueeze(0).le(ks.unsqueeze(1)).to(torch.float64)  # [K, B]
        self.hits += inside.sum(1)
        self.rr += (inside / ranks).sum(1)
        self.dcg += (inside / torch.log2(ranks + 1)).sum(1)
        self.count += ranks.numel()
        if self.lists and scores is not None and scores.size(0):
            top = scores.float().topk(self.topk[-1], dim=1).indices  # RecBole's rec.items: torch.topk of the scores
            pop = self.popularity[top].cumsum(1)
            tail = self.tail[top].cumsum(1)
            for i, k in enumerate(self.topk):
                self.recommended[i] += torch.bincount(top[:, :k].flatten(), minlength=self.popularity.numel())
                self.pop_sum[i] += pop[:, k - 1].sum()
                self.tail_sum[i] += tail[:, k - 1].sum()

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.count.clamp(min=1)
        out: dict[str, torch.Tensor] = {}
        for i, k in enumerate(self.topk):
            values = {
                "recall": self.hits[i] / n,
                "hit": self.hits[i] / n,
                "mrr": self.rr[i] / n,
                "map": self.rr[i] / n,  # one relevant item: RecBole's normalizer min(1, K) = 1, AP = 1/rank
                "ndcg": self.dcg[i] / n,
                "precision": self.hits[i] / n / k,
            }
            if self.lists:
                values.update(self._list_metrics(i, k, n))
            for name in self.metrics:
                out[f"{name}@{k}"] = values[name]
        return out

    def _list_metrics(self, i: int, k: int, n: torch.Tensor) -> dict[str, torch.Tensor]:
        """RecBole's definitions; ``num_items`` counts the padding id, as RecBole's ``data.num_items``."""
        num_items = self.popularity.numel()
        counts = self.recommended[i][self.recommended[i] > 0]
        total = n * k  # every recommendation made at this K
        distinct = counts.numel()
        ranks = torch.arange(num_items - distinct + 1, num_items + 1, dtype=torch.float64, device=counts.device)
        p = counts / total
        return {
            "itemcoverage": torch.tensor(distinct / num_items, dtype=torch.float64),
            "averagepopularity": self.pop_sum[i] / total,
            "tailpercentage": self.tail_sum[i] / total,
            "giniindex": ((2 * ranks - num_items - 1) * counts.sort().values).sum() / total / num_items,
            # RecBole divides the entropy by the number of distinct items recommended
            "shannonentropy": -(p * p.log()).sum() / max(distinct, 1),
        }
