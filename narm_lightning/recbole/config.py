"""RecBole config files and dicts -> this project's keys, with every unsupported key named in a warning.

RecBole's priority is command line > config dict > config file; here a RecBole file or dict is applied
on top of the composed Hydra config and the user's own command-line overrides are applied again after
it, so the command line still wins.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from narm_lightning.errors import ConfigError
from narm_lightning.io import flatten

log = logging.getLogger(__name__)

# RecBole key -> our dotted key. Names that are the same at top level map to themselves.
KEY_MAP: dict[str, str] = {
    "embedding_size": "model.embedding_size",
    "hidden_size": "model.hidden_size",
    "n_layers": "model.n_layers",
    "dropout_probs": "model.dropout_probs",
    "loss_type": "model.loss_type",
    "learning_rate": "learning_rate",
    "learner": "learner",
    "weight_decay": "weight_decay",
    "train_batch_size": "train_batch_size",
    "eval_batch_size": "eval_batch_size",
    "epochs": "epochs",
    "stopping_step": "stopping_step",
    "eval_step": "eval_step",
    "topk": "topk",
    "metrics": "metrics",
    "valid_metric": "valid_metric",
    "train_neg_sample_args": "train_neg_sample_args",
    "seed": "seed",
    "MAX_ITEM_LIST_LENGTH": "data.max_item_list_length",
    "USER_ID_FIELD": "data.user_id_field",
    "ITEM_ID_FIELD": "data.item_id_field",
    "TIME_FIELD": "data.time_field",
    "dataset": "data.dataset",
    "data_path": "data.root",
}

# RecBole keys whose RecBole default is what this project always does: accepted silently at that value.
DEFAULT_ONLY: dict[str, Any] = {
    "model": "NARM",
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
    "metric_decimal_place": 4,
    "repeatable": True,
    "reproducibility": True,
    "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
}


def _normalise(key: str, value: Any) -> Any:
    """RecBole accepts scalars where we take lists (``topk: 10``) and strings for some lists."""
    if key == "topk" and isinstance(value, int):
        return [value]
    if key == "metrics" and isinstance(value, str):
        return [value]
    if key == "dropout_probs" and isinstance(value, str):
        return yaml.safe_load(value)  # '[0.25,0.5]' as written in hyper.test-style files; parsed, never evaluated
    return value


def map_recbole_config(config: Mapping[str, Any], source: str = "config dict") -> tuple[dict[str, Any], list[str]]:
    """Our dotted keys -> values for a RecBole config; second item: the RecBole keys we do not support."""
    mapped: dict[str, Any] = {}
    unsupported: list[str] = []
    for key, value in config.items():
        if key in KEY_MAP:
            mapped[KEY_MAP[key]] = _normalise(key, value)
        elif key in DEFAULT_ONLY and (value == DEFAULT_ONLY[key] or key in {"metric_decimal_place", "repeatable",
                                                                           "reproducibility", "load_col"}):
            continue
        else:
            unsupported.append(key)
    if "model" in config and config["model"] != "NARM":
        raise ConfigError(f"{source}: model is {config['model']!r}; narm-lightning trains NARM only.")
    return mapped, unsupported


def read_recbole_file(path: str | Path) -> dict[str, Any]:
    """A RecBole ``.yaml`` config file as a dict (safe YAML: no tags, no objects)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config_file={path}: no such file; expected a RecBole .yaml config file.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config_file={path}: not valid YAML ({exc}).") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config_file={path}: expected a mapping of RecBole keys, got {type(data).__name__}.")
    return data


def apply_recbole_config(
    cfg: DictConfig, config: Mapping[str, Any], base: DictConfig | None = None, source: str = "config dict"
) -> DictConfig:
    """``cfg`` with the RecBole settings applied underneath the user's own command-line choices.

    ``base`` is the same config composed without command-line overrides: every key where ``cfg`` differs
    from it was set on the command line and keeps its value (RecBole: command line > file).
    """
    mapped, unsupported = map_recbole_config(config, source)
    if unsupported:
        log.warning("%s: RecBole keys not supported by narm-lightning, ignored: %s", source, ", ".join(unsupported))
    cli_set: set[str] = set()
    if base is not None:
        mine = flatten(OmegaConf.to_container(cfg, resolve=False))
        theirs = flatten(OmegaConf.to_container(base, resolve=False))
        cli_set = {k for k, v in mine.items() if theirs.get(k, object()) != v}
    out = cfg.copy()
    with open_dict(out):
        for key, value in mapped.items():
            if key not in cli_set and not any(k.startswith(key + ".") for k in cli_set):
                OmegaConf.update(out, key, value, merge=False)
    return out
