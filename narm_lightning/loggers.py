"""Experiment loggers chosen by the ``logger`` config group (several at once)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger, Logger

from narm_lightning.errors import ConfigError


def build_loggers(logger_cfg: dict[str, Any], run_dir: Path) -> list[Logger]:
    """One Lightning logger per entry of ``logger`` (``{}`` means none)."""
    loggers: list[Logger] = []
    for name, options in (logger_cfg or {}).items():
        options = dict(options or {})
        if name == "csv":
            loggers.append(CSVLogger(save_dir=str(run_dir), name=options.get("name", "csv"), version=""))
        else:
            raise ConfigError(f"logger.{name} is not a known logger; expected csv or none.")
    return loggers
