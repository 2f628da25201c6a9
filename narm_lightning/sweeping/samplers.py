"""The sampler a sweep asks its trials from: Optuna's, built from ``hydra/sweeper/sampler`` options; the grid gets
the search space (and a sweep of its own ends it, not ``study.stop()``)."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from narm_lightning.errors import ConfigError
from narm_lightning.sweeping.space import SearchSpace

GRID_TARGET = "optuna.samplers.GridSampler"


def build_sampler(sampler_cfg: dict[str, Any], space: SearchSpace, custom_search_space: str | None) -> Any:
    """Instantiate the configured sampler; the grid gets the search space."""
    target = str(sampler_cfg.get("_target_", ""))
    if not target.startswith("optuna.samplers."):
        raise ConfigError(
            f"hydra.sweeper.sampler._target_ must be a class in optuna.samplers, got '{target}'. "
            f"Pick one with hydra/sweeper/sampler=tpe|random|grid|cmaes."
        )
    if target == GRID_TARGET:
        if custom_search_space:
            raise ConfigError(
                "hydra.sweeper.custom_search_space cannot be combined with the grid sampler."
            )
        kwargs = {k: v for k, v in sampler_cfg.items() if k != "_target_"}
        return grid_sampler_class()(search_space=space.grid(), **kwargs)
    try:
        return instantiate(sampler_cfg)
    except Exception as exc:
        hint = " (the cmaes sampler needs the 'cmaes' package)" if "CmaEs" in target else ""
        raise ConfigError(f"hydra.sweeper.sampler: cannot build '{target}'{hint}: {exc}") from exc


def grid_sampler_class() -> type:
    """GridSampler whose ``after_trial`` does not call ``study.stop()`` (illegal outside ``optimize``).

    The sweeper stops by itself: the grid caps ``n_trials`` at the grid size.
    """
    from optuna.samplers import GridSampler

    class SweepGridSampler(GridSampler):
        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            return None

    return SweepGridSampler


def to_dict(node: Any, key: str) -> dict[str, Any]:
    if node is None:
        return {}
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
    if isinstance(node, dict):
        return dict(node)
    raise ConfigError(f"{key} must be a mapping, got {type(node).__name__}: {node!r}")
