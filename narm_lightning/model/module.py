"""The LightningModule: NARM + a loss + full-sort metrics; steps, optimizer and logged names."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from narm_lightning.config.schema import LEARNERS
from narm_lightning.data.candidates import score_on_candidates
from narm_lightning.errors import NarmError
from narm_lightning.model.metrics import RankMetrics, target_ranks_of_product
from narm_lightning.model.narm import NARM

OPTIMIZERS = {name: getattr(torch.optim, cls) for name, cls in LEARNERS.items()}  # the config's learner names

# Under DDP, Lightning suggests sync_dist=True for every epoch-level value. The valid/test values are already
# the metric's cross-rank sums (RankMetrics.compute syncs its states), identical on every rank; averaging them
# again could only add rounding. The warning is silenced for those names only.
warnings.filterwarnings("ignore", message=r"It is recommended to use `self\.log\('(valid|test)/")


class NonFiniteLossError(NarmError, RuntimeError):
    """Training produced a NaN/Inf loss: stop instead of training on garbage (a NarmError: one paragraph)."""


class NARMModule(pl.LightningModule):
    """Trains ``model`` with ``loss``; validates and tests by ranking each target against every item.

    Metrics are logged as ``valid/<metric>@<k>`` and ``test/<metric>@<k>``; the per-epoch valid values
    are also kept in ``valid_history`` so the best epoch can be reported without re-reading loggers.
    """

    def __init__(
        self,
        model: NARM,
        loss: nn.Module,
        learner: str,
        learning_rate: float,
        weight_decay: float,
        topk: Sequence[int],
        metrics: Sequence[str],
        model_config: dict[str, Any] | None = None,
        item_tokens: Sequence[str] | None = None,
        data_config: dict[str, Any] | None = None,
        item_popularity: torch.Tensor | None = None,
        tail_ratio: float | None = None,
        test_names: Sequence[str] = ("test",),
    ) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss
        self.learner = learner.lower()
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        # each item's count as a training target (RecBole's data.count_items) for its beyond-accuracy metrics
        self.valid_metrics = RankMetrics(topk, metrics, item_popularity, tail_ratio)
        # into checkpoints (plain ints): serving answers a session with no known item by the most popular items
        self.item_popularity = None if item_popularity is None else [int(c) for c in item_popularity.tolist()]
        # one per test loader: eval_args.mode's ("test"), then each of extra_test_modes ("test_uni100", ...)
        self.test_names = list(test_names)
        self.test_metrics = nn.ModuleList(RankMetrics(topk, metrics, item_popularity, tail_ratio) for _ in test_names)
        self.valid_history: list[dict[str, float]] = []
        self.test_results: dict[str, float] = {}
        self.extra_test_results: dict[str, dict[str, float]] = {}
        self.item_tokens = list(item_tokens) if item_tokens is not None else None
        self.protocol: dict[str, Any] | None = None  # the run's protocol card (data/card.py), kept in checkpoints
        # plain data only, so checkpoints load with torch.load(weights_only=True)
        self.save_hyperparameters(
            {"model": model_config or {}, "data": data_config or {}, "learner": self.learner,
             "learning_rate": learning_rate, "weight_decay": weight_decay, "topk": list(topk), "metrics": list(metrics)}
        )

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        item_seq, item_seq_len, target = batch
        loss = self.loss_fn(self.model(item_seq, item_seq_len), self.model.item_embedding.weight, target)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"training stopped: the loss became {loss.item()} at epoch {self.current_epoch}, batch "
                f"{batch_idx}, so further steps would only train on garbage. Lower learning_rate (or raise "
                "weight_decay), or check the data; checkpoints/last.ckpt in the run folder holds the last "
                "finished epoch"
            )
        # sync_dist: under DDP the epoch loss is the mean over every rank's rows (a no-op in one process)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=target.numel(),
                 sync_dist=True)
        return loss

    def _rank(self, batch: tuple[torch.Tensor, ...], metric: RankMetrics) -> None:
        item_seq, item_seq_len, target = batch[:3]
        # Always rank in fp32, even under bf16-mixed training: bf16 scores (8-bit mantissa) tie often, and a
        # tie counts for the target, which would inflate every metric. Evaluation is cheap; exactness is not.
        with torch.autocast(item_seq.device.type, enabled=False):
            if len(batch) == 3 and not metric.lists:  # full sort, ranks only: no [B, n_items] score matrix
                ranks = target_ranks_of_product(self.model(item_seq, item_seq_len), self.model.item_embedding.weight,
                                                target)
                metric.update(None, target, ranks=ranks)
                return
            scores = self.model.predict(item_seq, item_seq_len)
            if len(batch) == 4:  # sampled mode: the target ranks among its row's candidates only
                scores = score_on_candidates(scores, target, batch[3])
            metric.update(scores, target)

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._rank(batch, self.valid_metrics)

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._rank(batch, self.test_metrics[dataloader_idx])

    def _publish(self, metric: RankMetrics, prefix: str) -> dict[str, float]:
        values = {k: float(v) for k, v in metric.compute().items()}
        metric.reset()
        self.log_dict({f"{prefix}/{k}": v for k, v in values.items()}, prog_bar=prefix == "valid")
        return values

    def on_validation_epoch_end(self) -> None:
        values = self._publish(self.valid_metrics, "valid")
        if not self.trainer.sanity_checking:
            self.valid_history.append({"epoch": self.current_epoch, **values})

    def on_test_epoch_end(self) -> None:
        results = {name: self._publish(metric, name) for name, metric in zip(self.test_names, self.test_metrics)}
        self.test_results = results.pop(self.test_names[0])
        self.extra_test_results = {name.removeprefix("test_"): values for name, values in results.items()}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the original item ids beside the weights, so a checkpoint alone can serve recommendations."""
        if self.item_tokens is not None:
            checkpoint["item_tokens"] = self.item_tokens
        if self.protocol is not None:
            checkpoint["protocol"] = self.protocol
        if self.item_popularity is not None:
            checkpoint["item_popularity"] = self.item_popularity

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "item_tokens" in checkpoint:
            self.item_tokens = list(checkpoint["item_tokens"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return OPTIMIZERS[self.learner](self.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)


def best_epoch(history: list[dict[str, float]], metric: str) -> dict[str, float]:
    """The first epoch with the highest ``metric`` (the one a strict-improvement checkpoint keeps)."""
    finite = [h for h in history if not math.isnan(h[metric])]
    if not finite:
        raise ValueError(f"no finite {metric} was recorded")
    return max(finite, key=lambda h: (h[metric], -h["epoch"]))
