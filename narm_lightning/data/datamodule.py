"""The LightningDataModule: tensors built once -> batches by index slicing, no per-sample Python."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from narm_lightning.data.protocol import Examples, SequentialData


class ExampleBatches(Dataset):
    """Indexed by a whole list of row ids: one gather per batch instead of one Python call per sample.

    Each batch is trimmed to its longest real history; that changes no score (see ``NARM.forward``).
    """

    def __init__(self, examples: Examples) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(index, dtype=torch.long)
        length = self.examples.item_seq_len[idx]
        width = max(int(length.max()), 1)
        return self.examples.item_seq[idx, :width], length, self.examples.target[idx]


class SequentialDataModule(pl.LightningDataModule):
    """Serves the train (shuffled every epoch), valid and test splits of one ``SequentialData``."""

    def __init__(self, data: SequentialData, train_batch_size: int, eval_batch_size: int, num_workers: int = 0,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.generator = generator  # the train shuffle's own random stream (checkpointed for exact resume)
        self.data = data
        self.train_batch_size = train_batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers

    def _loader(self, examples: Examples, batch_size: int, shuffle: bool) -> DataLoader:
        dataset = ExampleBatches(examples)
        base = RandomSampler(dataset, generator=self.generator) if shuffle else SequentialSampler(dataset)
        return DataLoader(
            dataset,
            sampler=BatchSampler(base, batch_size=batch_size, drop_last=False),
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.data.train, self.train_batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.data.valid, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.data.test, self.eval_batch_size, shuffle=False)
