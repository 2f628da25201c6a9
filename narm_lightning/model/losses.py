"""Training losses over the item catalogue: full cross-entropy, or BPR with RecBole's uniform or popularity
negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from narm_lightning.model.negatives import NegativeSampling, PopularityNegativeSampler, UniformNegativeSampler

__all__ = ["BPRLoss", "CrossEntropyLoss", "NegativeSampling", "PopularityNegativeSampler", "UniformNegativeSampler",
           "build_loss"]


class CrossEntropyLoss(nn.Module):
    """Softmax cross-entropy over every item embedding (the padding row too, as RecBole does)."""

    def forward(self, session: torch.Tensor, item_weight: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(session @ item_weight.t(), target)


class BPRLoss(nn.Module):
    """``-log(1e-10 + sigmoid(pos - neg))`` averaged over every (target, negative) pair."""

    def __init__(self, sampler: UniformNegativeSampler | PopularityNegativeSampler, gamma: float = 1e-10) -> None:
        super().__init__()
        self.sampler = sampler
        self.gamma = gamma

    def forward(self, session: torch.Tensor, item_weight: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        neg = self.sampler(target)
        pos_score = (session * item_weight[target]).sum(-1, keepdim=True)
        neg_score = torch.einsum("be,bne->bn", session, item_weight[neg])
        return -torch.log(self.gamma + torch.sigmoid(pos_score - neg_score)).mean()


def build_loss(loss_type: str, n_items: int, neg_sampling: NegativeSampling | None,
               item_counts: torch.Tensor | None = None) -> nn.Module:
    """The loss for ``model.loss_type``; the config validator has already checked the combination.
    ``item_counts`` (every example's target, counted) is what popularity negatives are drawn by."""
    if loss_type == "CE":
        return CrossEntropyLoss()
    if loss_type == "BPR" and neg_sampling is not None:
        if neg_sampling.distribution == "popularity":
            if item_counts is None:
                raise ValueError("popularity negatives need the items' counts")
            return BPRLoss(PopularityNegativeSampler(item_counts, neg_sampling.sample_num, neg_sampling.alpha))
        return BPRLoss(UniformNegativeSampler(n_items, neg_sampling.sample_num))
    raise ValueError(f"unsupported loss_type {loss_type!r} with negative sampling {neg_sampling}")
