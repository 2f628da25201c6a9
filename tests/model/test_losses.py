from __future__ import annotations

import torch

from narm_lightning.model.losses import BPRLoss, CrossEntropyLoss, PopularityNegativeSampler, UniformNegativeSampler
from narm_lightning.model.narm import NARM


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


def test_popularity_negatives_follow_count_to_the_alpha_and_never_the_target() -> None:
    counts = torch.tensor([0, 1, 3, 0, 4])  # padding 0 and item 3 have no count: never drawn
    gen = torch.Generator().manual_seed(0)
    for alpha, weights in ((1.0, [0, 1, 3, 0, 4]), (0.5, [0, 1, 3 ** 0.5, 0, 2])):
        sampler = PopularityNegativeSampler(counts, sample_num=4, alpha=alpha)
        neg = sampler(torch.full((50_000,), 3), generator=gen)  # target 3 never clashes
        freq = torch.bincount(neg.flatten(), minlength=5).double() / neg.numel()
        expected = torch.tensor(weights, dtype=torch.float64) / sum(weights)
        assert torch.allclose(freq, expected, atol=0.01), (alpha, freq)
    neg = PopularityNegativeSampler(counts, 3)(torch.full((5_000,), 4), generator=gen)  # target 4: redrawn
    assert not bool(neg.eq(4).any()) and set(neg.unique().tolist()) == {1, 2}


def test_popularity_negatives_are_a_recbole_setting(tiny_root, tmp_path) -> None:
    from narm_lightning.config.validation import negative_sampling
    from narm_lightning.errors import ConfigError
    from narm_lightning.training.run import train
    from tests.helpers import compose_train, tiny_overrides

    assert negative_sampling({"distribution": "popularity", "sample_num": 2, "alpha": 0.75}).alpha == 0.75
    try:
        negative_sampling({"distribution": "popularity", "dynamic": True})
    except ConfigError as exc:
        assert "dynamic negatives are not supported" in str(exc)
    else:
        raise AssertionError("dynamic negatives must be refused")
    results = train(compose_train(tiny_overrides(tiny_root, "epochs=1", "model.loss_type=BPR",
                                                 "train_neg_sample_args={distribution:popularity,sample_num:2,"
                                                 "alpha:0.5}")), output_dir=tmp_path / "run")
    assert results["test"]
