"""Composing the project's Hydra config in tests, exactly as train.py would."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]  # the checkout: train.py, sweep.py, bench/
CONF_DIR = REPO / "narm_lightning" / "conf"


def compose_train(overrides: list[str] | None = None, config_name: str = "train") -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides or [])


def tiny_overrides(root: Path, *extra: str) -> list[str]:
    """A fast run on the ``tiny_root`` fixture: no progress bars, no loggers."""
    return [
        "data.dataset=tiny",
        f"data.root={root}",
        "data.extra_roots=[]",
        "data.download=false",
        "train_batch_size=64",
        "eval_batch_size=64",
        "model.embedding_size=16",
        "model.hidden_size=16",
        "trainer.enable_progress_bar=false",
        "logger=none",
        *extra,
    ]
