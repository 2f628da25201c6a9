"""Full-sort ranking metrics as one ``torchmetrics.Metric`` with summed states (DDP-safe).

Hand-written because torchmetrics' Retrieval* metrics keep every (query, item) score and loop in Python,
and some ignore targets scored <= 0: wrong for ranking one target against the whole catalogue. Here the
target's rank is computed once per row and only per-K sums are kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

from narm_lightning.schema import METRICS  # the choices live in the schema

# Rows compared at a time: summing a [rows, n_items] bool mask makes an int64 copy of it (8 bytes an item),
# which for a whole block would double evaluation's peak memory; 256 rows keep it to a few dozen MiB.
RANK_CHUNK_ROWS = 256


def target_ranks(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Rank of each row's target: 1 + number of items scoring strictly higher (ties favour the target)."""
    target_score = scores.gather(1, target.view(-1, 1))
    counts = [scores[i:i + RANK_CHUNK_ROWS].gt(target_score[i:i + RANK_CHUNK_ROWS]).sum(dim=1)
              for i in range(0, scores.size(0), RANK_CHUNK_ROWS)]
    return (torch.cat(counts) if counts else target_score.new_zeros(0, dtype=torch.long)) + 1


class RankMetrics(Metric):
    """Recall, MRR, NDCG, Hit and Precision at each K for one target per row (leave-one-out / next item)."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, topk: Sequence[int], metrics: Sequence[str] = METRICS) -> None:
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

    def update(self, scores: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        """Add one block of rows; ``scores`` must already hold ``-inf`` where an item may not rank."""
        ranks = target_ranks(scores.float(), target).to(torch.float64)
        ks = torch.tensor(self.topk, dtype=torch.float64, device=ranks.device)
        inside = ranks.unsqueeze(0).le(ks.unsqueeze(1)).to(torch.float64)  # [K, B]
        self.hits += inside.sum(1)
        self.rr += (inside / ranks).sum(1)
        self.dcg += (inside / torch.log2(ranks + 1)).sum(1)
        self.count += ranks.numel()

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.count.clamp(min=1)
        out: dict[str, torch.Tensor] = {}
        for i, k in enumerate(self.topk):
            values = {
                "recall": self.hits[i] / n,
                "hit": self.hits[i] / n,
                "mrr": self.rr[i] / n,
                "ndcg": self.dcg[i] / n,
                "precision": self.hits[i] / n / k,
            }
            for name in self.metrics:
                out[f"{name}@{k}"] = values[name]
        return out
