from __future__ import annotations

import torch

from narm_lightning.losses import BPRLoss, CrossEntropyLoss, UniformNegativeSampler
from narm_lightning.model import NARM


def test_sampler_draws_real_items_never_the_target() -> None:
    sampler = UniformNegativeSampler(n_items=4, sample_num=50)
    target = torch.tensor([1, 2, 3] * 20)
    neg = sampler(target)
    assert neg.shape == (60, 50)
    assert neg.min() >= 1 and neg.max() <= 3
    assert not neg.eq(target.unsqueeze(1)).any()
    # uniform over the two remaining items
    counts = torch.bincount(neg[target == 1].flatten(), minlength=4)
    assert counts[0] == 0 and counts[1] == 0 and abs(int(counts[2]) - int(counts[3])) < 200


def test_bpr_matches_its_formula() -> None:
    session = torch.tensor([[1.0, 0.0]])
    weight = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.5, 0.0]])
    loss = BPRLoss(UniformNegativeSampler(n_items=3))(session, weight, torch.tensor([1]))
    expected = -torch.log(1e-10 + torch.sigmoid(torch.tensor(2.0 - 0.5)))
    torch.testing.assert_close(loss, expected)


def _learn(loss_fn: torch.nn.Module) -> tuple[float, float]:
    """Fit next = current + 1 over 20 items; return (hit@1 before, after)."""
    torch.manual_seed(0)
    model = NARM(n_items=21, embedding_size=16, hidden_size=16, dropout_probs=(0.0, 0.0))
    seq = torch.randint(1, 21, (256, 1))
    target = seq[:, 0] % 20 + 1
    length = torch.ones(256, dtype=torch.long)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)

    def hit1() -> float:
        with torch.no_grad():
            return float((model.predict(seq, length).argmax(1) == target).float().mean())

    before = hit1()
    for _ in range(150):
        opt.zero_grad()
        loss_fn(model(seq, length), model.item_embedding.weight, target).backward()
        opt.step()
    return before, hit1()


def test_ce_learns_a_tiny_problem() -> None:
    before, after = _learn(CrossEntropyLoss())
    assert before < 0.2 and after > 0.95


def test_bpr_learns_a_tiny_problem() -> None:
    before, after = _learn(BPRLoss(UniformNegativeSampler(n_items=21, sample_num=4)))
    assert before < 0.2 and after > 0.9
