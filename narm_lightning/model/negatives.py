"""Negative items drawn as RecBole's sequential sampler draws them: uniform or by popularity, never the row's
own target. Shared by BPR's training negatives (``losses``) and the fixed evaluation candidates of ``uniN`` /
``popN`` (``data/candidates``); plain tensor code, no model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class NegativeSampling:
    """RecBole's ``train_neg_sample_args``: ``{distribution: uniform | popularity, sample_num: N, alpha: a}``."""

    sample_num: int = 1
    distribution: str = "uniform"
    alpha: float = 1.0


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


class PopularityNegativeSampler(UniformNegativeSampler):
    """RecBole's ``popularity`` distribution: item i with probability proportional to count(i) ** alpha, over the
    items that have a count (RecBole's alias table over its candidate list, the same distribution; here
    ``torch.multinomial``), redrawn where equal to the target (RecBole's sequential sampler refuses only that).

    ``counts``: each item id's count; RecBole's sequential sampler counts the target of every example of the
    dataset, valid and test included, and so does the caller here, to draw from the same distribution.
    """

    def __init__(self, counts: torch.Tensor, sample_num: int = 1, alpha: float = 1.0) -> None:
        super().__init__(counts.numel(), sample_num)
        weights = counts.to(torch.float64).clamp(min=0)
        weights[0] = 0.0  # the padding id is never a negative
        if int((weights > 0).sum()) < 2:
            raise ValueError("popularity sampling needs at least two items with a count")
        self.weights = torch.where(weights > 0, weights.pow(alpha), weights)

    def _draw(self, n: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
        return torch.multinomial(self.weights, n, replacement=True, generator=generator).to(device)

    def __call__(self, target: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        neg = self._draw(target.size(0) * self.sample_num, target.device, generator).view(-1, self.sample_num)
        clash = neg.eq(target.unsqueeze(1))
        while bool(clash.any()):
            neg[clash] = self._draw(int(clash.sum()), target.device, generator)
            clash = neg.eq(target.unsqueeze(1))
        return neg
