from __future__ import annotations

import torch

from narm_lightning.data.datamodule import LengthBucketBatchSampler


def _epoch(sampler: LengthBucketBatchSampler, epoch: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_every_row_exactly_once_per_epoch_and_batches_are_similar_lengths() -> None:
    lengths = torch.randint(1, 51, (1003,), generator=torch.Generator().manual_seed(0))
    sampler = LengthBucketBatchSampler(lengths, batch_size=64, bucket_batches=4, seed=7)
    for epoch in range(3):
        batches = _epoch(sampler, epoch)
        assert len(batches) == len(sampler) == 16
        assert sorted(i for b in batches for i in b) == list(range(1003))
    # sorted within chunks: a batch's spread of lengths is far below the random 1..50
    spread = [int(lengths[b].max() - lengths[b].min()) for b in batches if len(b) == 64]
    assert sum(spread) / len(spread) < 20


def test_order_depends_only_on_seed_and_epoch() -> None:
    lengths = torch.randint(1, 51, (500,), generator=torch.Generator().manual_seed(1))
    a = LengthBucketBatchSampler(lengths, 32, 3, seed=2020)
    b = LengthBucketBatchSampler(lengths, 32, 3, seed=2020)
    torch.manual_seed(123)  # the global generator plays no part
    assert _epoch(a, 0) == _epoch(b, 0)
    assert _epoch(a, 5) == _epoch(b, 5)
    assert _epoch(a, 0) != _epoch(a, 1)
    assert _epoch(a, 0) != _epoch(LengthBucketBatchSampler(lengths, 32, 3, seed=2021), 0)


def test_ranking_stays_fp32_under_bf16_autocast() -> None:
    from narm_lightning.model.losses import CrossEntropyLoss
    from narm_lightning.model.module import NARMModule
    from narm_lightning.model.narm import NARM

    torch.manual_seed(0)
    module = NARMModule(NARM(300), CrossEntropyLoss(), "adam", 1e-3, 0.0, [10], ["mrr", "recall"]).eval()
    seq = torch.randint(1, 300, (64, 20))
    batch = (seq, torch.full((64,), 20), torch.randint(1, 300, (64,)))
    with torch.no_grad():
        module.validation_step(batch, 0)
        plain = module.valid_metrics.compute()
        module.valid_metrics.reset()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            module.validation_step(batch, 0)
        cast = module.valid_metrics.compute()
    assert plain == cast
