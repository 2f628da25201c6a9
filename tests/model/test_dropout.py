"""``BitDropout``: nn.Dropout's distribution (keep with probability 1 - p, independently, scaled by 1 / (1 - p))
from 8-, 16- or 32-bit slices of 64-bit random words."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from narm_lightning.model.dropout import BitDropout, keep_mask, mask_plan
from narm_lightning.model.narm import NARM


@pytest.mark.parametrize("p,width,threshold", [(0.25, 8, 64), (0.5, 8, 128), (3 / 65536, 16, 3),
                                               (0.3, 32, round(0.3 * 2 ** 32)), (0.1, 32, round(0.1 * 2 ** 32))])
def test_the_narrowest_width_that_represents_p_exactly(p, width, threshold) -> None:
    _, got_width, got_threshold = mask_plan(p)
    assert (got_width, got_threshold) == (width, threshold)
    assert abs(got_threshold / 2 ** got_width - p) < 2 ** -33


@pytest.mark.parametrize("p", [0.25, 0.5, 0.3, 0.1, 1000 / 65536, 0.9])  # 8, 8, 32, 32, 16, 32 bits
def test_keep_frequency_and_independence_of_neighbours(p) -> None:
    """Over 2^21 entries: P(keep) within 5 standard errors of 1 - p, and two neighbours (slices of one word)
    kept together as often as independence says."""
    torch.manual_seed(11)
    n = 2 ** 21
    keep = keep_mask(torch.Size([n]), p, torch.device("cpu")).float()
    q = 1 - p
    assert abs(keep.mean().item() - q) < 5 * math.sqrt(p * q / n)
    pairs = (keep[0::2] * keep[1::2]).mean().item()
    assert abs(pairs - q * q) < 5 * math.sqrt(q * q * (1 - q * q) / (n // 2))


def test_training_scales_kept_values_and_the_gradient_is_the_same_mask() -> None:
    torch.manual_seed(2)
    drop = BitDropout(0.25)
    x = torch.randn(64, 33, requires_grad=True)
    torch.manual_seed(3)
    y = drop(x)
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / 0.75)
    y.sum().backward()
    assert torch.allclose(x.grad, kept.float() / 0.75)
    torch.manual_seed(3)
    assert torch.equal(drop(x), y)  # seeded: the same mask


def test_eval_p0_p1_and_the_module_is_an_nn_dropout() -> None:
    x = torch.randn(5, 7)
    assert torch.equal(BitDropout(0.5).eval()(x), x)
    assert torch.equal(BitDropout(0.0)(x), x)
    assert torch.equal(BitDropout(1.0)(x), torch.zeros_like(x))
    model = NARM(20)
    assert isinstance(model.emb_dropout, nn.Dropout) and isinstance(model.ct_dropout, BitDropout)
    assert model.emb_dropout.p == 0.25 and model.ct_dropout.p == 0.5
    assert not any("dropout" in name for name in model.state_dict())  # state dicts unchanged (RecBole's load)


def test_in_place_dropout_gives_the_same_numbers_and_gradients_and_narm_uses_it() -> None:
    """``inplace=True`` scales the input itself (two passes instead of three): the same values, the same mask from
    the same seed, the same gradients; NARM's two dropouts use it, and its loss and gradients are those of the
    out-of-place modules."""
    x = torch.randn(64, 33)
    outs, grads = [], []
    for inplace in (False, True):
        leaf = x.clone().requires_grad_()
        torch.manual_seed(3)
        y = BitDropout(0.25, inplace=inplace)(leaf * 1)  # a fresh tensor, as NARM hands its dropouts
        y.backward(torch.arange(y.numel(), dtype=y.dtype).view_as(y))
        outs.append(y.detach())
        grads.append(leaf.grad)
    assert torch.equal(outs[0], outs[1]) and torch.equal(grads[0], grads[1]) and (outs[1] == 0).any()
    fresh = torch.randn(8, 5)
    BitDropout(0.5, inplace=True)(fresh)
    assert (fresh == 0).any(), "in place: the input itself is the output"

    model = NARM(30, embedding_size=8, hidden_size=16, gru_impl="torch").train()
    assert model.emb_dropout.inplace and model.ct_dropout.inplace
    seq, lengths = torch.randint(1, 30, (6, 7)), torch.tensor([7, 3, 1, 5, 7, 2])
    results = []
    for inplace in (True, False):
        model.emb_dropout.inplace = model.ct_dropout.inplace = inplace
        model.zero_grad()
        torch.manual_seed(11)
        loss = (model(seq, lengths) @ model.item_embedding.weight.t()).logsumexp(1).sum()
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    assert torch.equal(results[0][0], results[1][0])
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1]))
