"""The pruning bridge with a real (tiny) pytorch_lightning Trainer."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import pytorch_lightning as pl
import torch
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from narm_lightning.sweeping.pruning import TrialReporter, callback_from_config
from narm_lightning.sweeping.study import PRUNER_ATTR


class Tiny(pl.LightningModule):
    """One linear layer; logs a constant, terrible val_loss so the median pruner stops it."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch: list[torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch: list[torch.Tensor], _: int) -> None:
        self.log("val_loss", torch.tensor(1000.0))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_callback_prunes_a_real_trainer_and_the_job_raises_trial_pruned(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="cb", storage=storage)
    study.set_user_attr(PRUNER_ATTR, {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 1})
    dist = {"lr": FloatDistribution(0.01, 0.1)}
    study.add_trial(
        optuna.create_trial(
            params={"lr": 0.05}, distributions=dist, value=1.0, intermediate_values={0: 1.0, 1: 1.0}
        )
    )
    trial = study.ask(dist)
    section = {"storage": storage, "study_name": "cb", "trial_id": trial._trial_id}
    callback = callback_from_config(section, monitor="val_loss")
    assert callback is not None

    data = torch.utils.data.TensorDataset(torch.randn(8, 2), torch.randn(8, 1))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    trainer = pl.Trainer(
        max_epochs=4,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=1,
        default_root_dir=tmp_path,
    )
    with pytest.raises(optuna.TrialPruned, match="pruned at step 0"):
        trainer.fit(Tiny(), loader, loader)
    assert trainer.current_epoch == 0  # stopped after the first real validation (sanity check skipped)
    frozen = study.trials[-1]
    assert frozen.intermediate_values == {0: 1000.0} and frozen.state == TrialState.RUNNING  # sweeper tells
    assert frozen.user_attrs == {}, "the job writes no trial attribute: the sweeper records what it hands back"


def test_no_reporter_when_training_by_hand() -> None:
    assert TrialReporter.from_config({"storage": None, "study_name": None, "trial_id": None}) is None
    assert callback_from_config(None, monitor="val_loss") is None
