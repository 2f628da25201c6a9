"""The LightningDataModule: tensors built once -> batches by index slicing, no per-sample Python.

Under DDP the module shards batches itself (the Trainer runs with ``use_distributed_sampler=False``):
Lightning's ``DistributedSampler`` cannot wrap a batch sampler served with ``batch_size=None``, and it pads
evaluation splits by repeating rows, which would count some users twice in the metrics.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytorch_lightning as pl
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

from narm_lightning.data.protocol import Examples, RaggedExamples, SequentialData


class ExampleBatches(Dataset):
    """Indexed by a whole list of row ids: one gather per batch instead of one Python call per sample.

    Each batch is trimmed to its longest real history; that changes no score (see ``NARM.forward``). With
    ``candidates`` (``[rows, N]``, sampled evaluation) each batch carries its rows' candidates as a 4th tensor.
    """

    def __init__(self, examples: Examples | RaggedExamples, candidates: torch.Tensor | None = None) -> None:
        self.examples = examples
        self.candidates = candidates

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: list[int]) -> tuple[torch.Tensor, ...]:
        idx = torch.as_tensor(index, dtype=torch.long)
        batch = (self.examples.histories(idx), self.examples.item_seq_len[idx], self.examples.target[idx])
        return batch if self.candidates is None else (*batch, self.candidates[idx])


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Shuffled batches of similar-length rows, so trimming each batch to its longest row saves real work.

    Every epoch: a seeded random permutation of all rows, cut into chunks of ``bucket_batches`` batches;
    each chunk is sorted by length (stable, so equal lengths stay in random order) and cut into batches,
    and the batch order is shuffled. Every row is visited exactly once per epoch; the order depends only on
    ``seed`` and the epoch (``set_epoch``, which Lightning calls), so a resumed run sees the same batches.
    """

    def __init__(self, lengths: torch.Tensor, batch_size: int, bucket_batches: int, seed: int) -> None:
        if batch_size < 1 or bucket_batches < 1:
            raise ValueError("batch_size and bucket_batches must be positive")
        self.lengths = lengths
        self.batch_size = batch_size
        self.bucket_batches = bucket_batches
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        perm = torch.randperm(len(self.lengths), generator=g)
        chunk = self.batch_size * self.bucket_batches
        parts = []
        for start in range(0, len(perm), chunk):
            rows = perm[start:start + chunk]
            parts.append(rows[torch.argsort(self.lengths[rows], stable=True)])
        batches = torch.cat(parts).split(self.batch_size)
        for i in torch.randperm(len(batches), generator=g).tolist():
            yield batches[i].tolist()


class RankShard(Sampler[list[int]]):
    """This rank's share of every global batch: ``train_batch_size`` stays the global batch, as one process.

    Every rank draws the same global batches (same seed, same generator state) and keeps its contiguous
    slice, so all ranks take the same number of steps (DDP needs that) and DDP's gradient averaging equals
    the single-process mean over the global batch (up to a one-row difference in slice sizes). A final batch
    with fewer rows than ranks is repeated to give every rank a row: at most ``world_size - 1`` duplicate
    training rows per epoch, never in evaluation (see ``eval_rows``).
    """

    def __init__(self, batches: Sampler[list[int]], rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.batches = batches
        self.rank = rank
        self.world_size = world_size

    def set_epoch(self, epoch: int) -> None:
        """Forwarded so the bucketing sampler's per-epoch order survives the wrapping."""
        if hasattr(self.batches, "set_epoch"):
            self.batches.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            if len(batch) < self.world_size:
                batch = (batch * self.world_size)[: self.world_size]
            n = len(batch)
            yield batch[n * self.rank // self.world_size: n * (self.rank + 1) // self.world_size]


def eval_rows(n_rows: int, rank: int, world_size: int) -> range:
    """Rank ``rank``'s contiguous block of an evaluation split: the blocks partition the rows exactly.

    No row is repeated or dropped, so summing the metric states over ranks gives the single-process values.
    """
    return range(n_rows * rank // world_size, n_rows * (rank + 1) // world_size)


class SequentialDataModule(pl.LightningDataModule):
    """Serves the train (shuffled every epoch), valid and test splits of one ``SequentialData``.

    ``bucket_batches`` > 0 draws training batches with ``LengthBucketBatchSampler`` (seeded by ``seed``);
    0 keeps plain random batches drawn from ``generator`` (torch's global one when None). Under DDP each
    rank gets its slice of every training batch (``RankShard``) and its block of each evaluation split.

    ``test_candidates``: one test loader per entry (None: full sort; a ``[rows, N]`` tensor: those candidates),
    the first being ``eval_args.mode``'s and the others ``extra_test_modes``; ``valid_candidates`` likewise.
    """

    def __init__(self, data: SequentialData, train_batch_size: int, eval_batch_size: int, num_workers: int = 0,
                 bucket_batches: int = 0, seed: int = 0, generator: torch.Generator | None = None,
                 valid_candidates: torch.Tensor | None = None,
                 test_candidates: list[torch.Tensor | None] | None = None):
        super().__init__()
        self.valid_candidates = valid_candidates
        self.test_candidates = test_candidates or [None]
        self.generator = generator  # the train shuffle's own random stream (checkpointed for exact resume)
        self.data = data
        self.train_batch_size = train_batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.bucket_batches = bucket_batches
        self.seed = seed

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, examples: Examples | RaggedExamples, batch_size: int, shuffle: bool,
                candidates: torch.Tensor | None = None) -> DataLoader:
        dataset = ExampleBatches(examples, candidates)
        rank, world = self._rank_and_world()
        sampler: Sampler
        if shuffle and self.bucket_batches:
            sampler = LengthBucketBatchSampler(examples.item_seq_len, batch_size, self.bucket_batches, self.seed)
        elif shuffle:
            sampler = BatchSampler(RandomSampler(dataset, generator=self.generator), batch_size, drop_last=False)
        elif world == 1:
            sampler = BatchSampler(SequentialSampler(dataset), batch_size=batch_size, drop_last=False)
        else:
            sampler = BatchSampler(eval_rows(len(dataset), rank, world), batch_size=batch_size, drop_last=False)
        if shuffle and world > 1:
            sampler = RankShard(sampler, rank, world)
        return DataLoader(
            dataset,
            sampler=sampler,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.data.train, self.train_batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.data.valid, self.eval_batch_size, shuffle=False, candidates=self.valid_candidates)

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        loaders = [self._loader(self.data.test, self.eval_batch_size, shuffle=False, candidates=c)
                   for c in self.test_candidates]
        return loaders[0] if len(loaders) == 1 else loaders
