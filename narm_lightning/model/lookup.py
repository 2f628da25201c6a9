"""The embedding lookup of NARM's training step, with a backward that adds rows in place.

Why by hand: on CPU, ``nn.Embedding``'s backward (``embedding_dense_backward``) sorts the indices before it sums
their rows; ``index_add_`` adds each gradient row into its item's row directly. On a batch of 2048 x 50 x 64 that
was 7.1 against 2.4 ms in a bare call (2026-12-07, Intel AMX) and 16 ms of a 290 ms bf16 training step. The
sums are the same fp32 additions; the padding row's gradient stays 0, as ``padding_idx`` makes it.
"""

from __future__ import annotations

from typing import Any

import torch


class _Lookup(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, ids: torch.Tensor, padding_idx: int | None) -> torch.Tensor:
        ctx.save_for_backward(ids)
        ctx.rows, ctx.padding_idx = weight.size(0), padding_idx
        return torch.nn.functional.embedding(ids, weight)  # the forward as nn.Embedding's; only the backward differs

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        (ids,) = ctx.saved_tensors
        width = grad.size(-1)
        grad_weight = grad.new_zeros(ctx.rows, width).index_add_(0, ids.reshape(-1), grad.reshape(-1, width))
        if ctx.padding_idx is not None:
            grad_weight[ctx.padding_idx] = 0
        return grad_weight, None, None


def lookup(embedding: torch.nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
    """``embedding(ids)`` for a training step on CPU (dense, no max_norm; the padding row gets no gradient)."""
    return _Lookup.apply(embedding.weight, ids, embedding.padding_idx)
