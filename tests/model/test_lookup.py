"""``model.lookup``: the training step's embedding lookup, whose backward adds rows with ``index_add_``."""

from __future__ import annotations

import torch
from torch import nn

from narm_lightning.model.lookup import lookup
from narm_lightning.model.narm import NARM


def _grads(embedding: nn.Embedding, ids: torch.Tensor, upstream: torch.Tensor, ours: bool) -> torch.Tensor:
    embedding.weight.grad = None
    out = lookup(embedding, ids) if ours else embedding(ids)
    out.backward(upstream)
    return embedding.weight.grad.clone()


def test_same_rows_and_gradients_as_nn_embedding_with_and_without_padding() -> None:
    torch.manual_seed(0)
    ids = torch.randint(0, 12, (7, 30)).t()  # time-major, as NARM passes it: not contiguous; repeats and zeros
    ids[:5, 0] = 0
    ids[:, 1] = 11  # the last row: a padding index of -1 would wrongly zero it
    upstream = torch.randn(30, 7, 5)
    for padding in (0, None):
        embedding = nn.Embedding(12, 5, padding_idx=padding)
        assert torch.equal(lookup(embedding, ids), embedding(ids))
        ours, torchs = _grads(embedding, ids, upstream, True), _grads(embedding, ids, upstream, False)
        torch.testing.assert_close(ours, torchs, rtol=1e-6, atol=1e-6)
        assert ours[11].abs().sum() > 0
        assert (ours[0].abs().sum() == 0) == (padding == 0)


def _backward_names(tensor: torch.Tensor) -> set[str]:
    seen, todo = {}, [tensor.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and id(node) not in seen:
            seen[id(node)] = node.name()
            todo.extend(n for n, _ in node.next_functions)
    return set(seen.values())


def test_narms_fused_training_step_looks_items_up_through_it() -> None:
    model = NARM(20, 8, 16, gru_impl="fused").train()
    seq = torch.randint(1, 20, (4, 6))
    names = _backward_names(model(seq, torch.tensor([6, 3, 1, 6])))
    assert any("_Lookup" in n for n in names) and not any(n.startswith("Embedding") for n in names), names
