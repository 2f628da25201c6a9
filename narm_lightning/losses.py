"""Training losses over the item catalogue: full cross-entropy or BPR with uniform negatives (RecBole's)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class NegativeSampling:
    """RecBole's ``train_neg_sample_args``: ``{distribution: uniform, sample_num: N}``."""

    sample_num: int = 1
    distribution: str = "uniform"


class UniformNegativeSampler:
    """Draw negatives uniformly from the real items ``1..n_items-1``, redrawn where equal to the target.

    RecBole's sequential sampler does the same; redrawing (rather than shifting) keeps the draw uniform
    over the non-target items.
    """

    def __init__(self, n_items: int, sample_num: int = 1) -> None:
        if n_items < 3:
            raise ValueError("negative sampling needs at least two real items")
        self.n_items = n_items
        self.sample_num = sample_num

    def __call__(self, target: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        shape = (target.size(0), self.sample_num)
        neg = torch.randint(1, self.n_items, shape, device=target.device, generator=generator)
        clash = neg.eq(target.unsqueeze(1))
        while bool(clash.any()):
            neg[clash] = torch.randint(
                1, self.n_items, (int(clash.sum()),), device=target.device, generator=generator
            )
            clash = neg.eq(target.unsqueeze(1))
        return neg


class CrossEntropyLoss(nn.Module):
    """Softmax cross-entropy over every item embedding (the padding row too, as RecBole does)."""

    def forward(self, session: torch.Tensor, item_weight: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(session @ item_weight.t(), target)


class BPRLoss(nn.Module):
    """``-log(1e-10 + sigmoid(pos - neg))`` averaged over every (target, negative) pair."""

    def __init__(self, sampler: UniformNegativeSampler, gamma: float = 1e-10) -> None:
        super().__init__()
        self.sampler = sampler
        self.gamma = gamma

    def forward(self, session: torch.Tensor, item_weight: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        neg = self.sampler(target)
        pos_score = (session * item_weight[target]).sum(-1, keepdim=True)
        neg_score = torch.einsum("be,bne->bn", session, item_weight[neg])
        return -torch.log(self.gamma + torch.sigmoid(pos_score - neg_score)).mean()


def build_loss(loss_type: str, n_items: int, neg_sampling: NegativeSampling | None) -> nn.Module:
    """The loss for ``model.loss_type``; the config validator has already checked the combination."""
    if loss_type == "CE":
        return CrossEntropyLoss()
    if loss_type == "BPR" and neg_sampling is not None:
        return BPRLoss(UniformNegativeSampler(n_items, neg_sampling.sample_num))
    raise ValueError(f"unsupported loss_type {loss_type!r} with negative sampling {neg_sampling}")
