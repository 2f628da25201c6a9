"""RecBole config files and dicts -> this project's keys; a key that cannot mean the same run here is refused.

RecBole's priority is command line > config dict > config file; here a RecBole file or dict is applied
on top of the composed Hydra config and the user's own command-line overrides are applied again after
it, so the command line still wins.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from narm_lightning import CONF_DIR
from narm_lightning.config.eval_args import RECBOLE_EVAL_FILL
from narm_lightning.config.yaml_files import load_yaml_data
from narm_lightning.errors import ConfigError
from narm_lightning.io import read_text_lines
from narm_lightning.recbole.keys import BY_NAME


class RecBoleYamlLoader(yaml.SafeLoader):
    """Safe YAML read the way RecBole reads its files: ``1e-3`` is a float (PyYAML's YAML 1.1 rules make
    it a string without a dot), and dates stay strings (a config value is never a date object)."""


# Written here because PyYAML has no YAML 1.2 core-schema loader: a number with an exponent and no dot.
RecBoleYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))
RecBoleYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in RecBoleYamlLoader.yaml_implicit_resolvers.items()
}

PLAIN = (str, int, float, bool, type(None))


def _check_plain(value: Any, key: str, source: str) -> None:
    """Only what a config can hold (strings, numbers, booleans, null, lists, mappings): ``!!set`` and the
    like are refused by key, before OmegaConf would fail on them with a traceback."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{source}: key {k!r} under {key or 'the top level'} is a {type(k).__name__}; "
                                  "expected string keys.")
            _check_plain(v, f"{key}.{k}" if key else k, source)
    elif isinstance(value, list):
        for item in value:
            _check_plain(item, key, source)
    elif not isinstance(value, PLAIN):
        raise ConfigError(f"{source}: {key} holds a {type(value).__name__} ({value!r}); expected a string, number, "
                          "boolean, null, list or mapping.")


def _normalise(key: str, value: Any, source: str) -> Any:
    """RecBole accepts scalars where we take lists (``topk: 10``) and strings for some lists."""
    if key == "topk" and isinstance(value, int):
        return [value]
    if key == "metrics" and isinstance(value, str):
        return [value]
    if key == "dropout_probs" and isinstance(value, str):
        try:  # '[0.25,0.5]' as written in hyper.test-style files; parsed, never evaluated
            return yaml.load(value, Loader=RecBoleYamlLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError:
            raise ConfigError(f"{source}: dropout_probs is {value!r}; expected a list like [0.25, 0.5].") from None
    return value


def map_recbole_config(config: Mapping[str, Any], source: str = "config dict") -> dict[str, Any]:
    """Our dotted keys -> values for a RecBole config (``recbole/keys.py``'s table).

    Every key that cannot mean the same run here (a value this project does not do, another model's key, a typo)
    is refused, all of them in one paragraph: a silently different protocol is worse than an error.
    """
    mapped: dict[str, Any] = {}
    refused: list[str] = []
    for name, value in config.items():
        entry = BY_NAME.get(name)
        if entry is None:
            near = difflib.get_close_matches(name, BY_NAME, n=1)
            refused.append(f"{name} is not a key of RecBole 1.2.1's general config or of its NARM"
                           + (f" (did you mean {near[0]}?)" if near else ""))
        elif name == "eval_args":  # RecBole fills a file's partial eval_args from its own defaults (order: RO)
            mapped["eval_args"] = {**RECBOLE_EVAL_FILL, **value} if isinstance(value, Mapping) else value
        elif entry.ours:
            value = _normalise(name, value, source)
            mapped[entry.ours] = entry.convert(value) if entry.convert else value
        elif not entry.accepts(value):
            accepted = " or ".join(repr(v) for v in entry.accept or ())
            refused.append(f"{name}: {value!r} is refused (accepted: {accepted}; {entry.why})")
    if refused:
        raise ConfigError(f"{source}: {'; '.join(refused)}. Every RecBole key and what it means here: "
                          "docs/recbole-keys.md.")
    return mapped


def read_recbole_file(path: str | Path) -> dict[str, Any]:
    """A RecBole ``.yaml`` config file as a dict (safe YAML: no tags, no objects)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config_file={path}: no such file; expected a RecBole .yaml config file.")
    text = "\n".join(read_text_lines(path, "a RecBole .yaml config file (UTF-8 text)"))
    # bounded (no alias bomb) and inert (no ${oc.env:...} reaching the environment once merged)
    data = load_yaml_data(text, f"config_file={path}", RecBoleYamlLoader) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config_file={path}: expected a mapping of RecBole keys, got {type(data).__name__}.")
    _check_plain(data, "", f"config_file={path}")
    return data


SHORTCUT_GROUPS = ("dropout_probs", "hidden_size", "n_layers")  # groups that each set one model.<name> key


def command_line_keys(overrides: Sequence[str]) -> set[str]:
    """The dotted keys a command line sets itself: ``key=value`` overrides (``+``/``++``/``~`` too) and the
    shortcut groups' ``model.<group>``. Choosing a group (``data=diginetica``) sets no key by itself: a file's
    ``data.*`` keys still apply on top of that group's defaults."""
    groups = {p.name for p in CONF_DIR.iterdir() if p.is_dir()}
    keys = set()
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0].split("@", 1)[0]
        if key in SHORTCUT_GROUPS:
            keys.add(f"model.{key}")
        elif key not in groups and not key.startswith("hydra"):
            keys.add(key)
    return keys


def apply_recbole_config(
    cfg: DictConfig, config: Mapping[str, Any], overrides: Sequence[str] | None = None, source: str = "config dict"
) -> DictConfig:
    """``cfg`` with the RecBole settings applied underneath the user's own command-line choices.

    ``overrides`` is the command line (Hydra's task overrides): every key it sets keeps its value, whatever
    that value is (RecBole: command line > file). ``None`` (no command line) applies every key of the file.
    """
    mapped = map_recbole_config(config, source)
    cli_set = command_line_keys(overrides or [])
    out = cfg.copy()
    with open_dict(out):
        for key, value in mapped.items():
            if key not in cli_set and not any(k.startswith(key + ".") for k in cli_set):
                OmegaConf.update(out, key, value, merge=False)
    return out


def with_recbole_config_file(cfg: DictConfig) -> DictConfig:
    """Apply ``config_file`` (a RecBole .yaml) under the command line's own overrides."""
    if not cfg.get("config_file"):
        return cfg
    from hydra.core.hydra_config import HydraConfig

    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None
    source = f"config_file={cfg.config_file}"
    return apply_recbole_config(cfg, read_recbole_file(cfg.config_file), overrides, source=source)
