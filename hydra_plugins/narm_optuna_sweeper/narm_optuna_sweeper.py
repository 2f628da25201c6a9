"""Shim Hydra scans: registers the ``hydra/sweeper: optuna`` configs and defines the Sweeper plugin class.

Hydra instantiates only plugin classes defined under ``hydra_plugins``, so the class lives here and
delegates to ``narm_lightning.sweeping.sweeper.OptunaSweeperImpl``, which holds all the logic.
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from narm_lightning.sweeping.config import register_configs

register_configs()


class OptunaSweeper(Sweeper):
    """Hydra Sweeper backed by Optuna 5 (see ``narm_lightning.sweeping.sweeper`` for the semantics)."""

    def __init__(self, **kwargs: Any) -> None:
        from narm_lightning.sweeping.sweeper import OptunaSweeperImpl

        self._impl = OptunaSweeperImpl(**kwargs)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self._impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self._impl.sweep(arguments)
