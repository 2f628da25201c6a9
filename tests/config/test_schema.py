"""The config schema is the one declaration of every key: the composed configs hold exactly its keys, its
defaults are valid, ``--help`` reads its help, and a misspelled key or a wrongly typed value is refused by name."""

from __future__ import annotations

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from narm_lightning import CONF_DIR
from narm_lightning.cli.help import train_sections
from narm_lightning.config.data_schema import AtomicDataConfig, SessionDataConfig
from narm_lightning.config.rules import keys_of, nested_schemas, schema_problems
from narm_lightning.config.schema import LOGGERS, TrainConfig
from narm_lightning.config.validation import config_problems
from tests.helpers import REPO, compose_train


def _declared(schema: type) -> set[str]:
    names = {k.name for k in keys_of(schema)}
    for name, nested in nested_schemas(schema):
        names |= {f"{name}.{k}" for k in _declared(nested)}
    return names


def _composed(node, prefix: str = "") -> set[str]:
    out = set()
    for key, value in node.items():
        if OmegaConf.is_dict(value) and key in {"model", "trainer", "optuna"}:
            out |= _composed(value, f"{prefix}{key}.")
        elif key not in {"data", "logger"}:
            out.add(prefix + key)
    return out


@pytest.mark.parametrize("data", ["ml-100k", "diginetica", "yoochoose1_64", "yoochoose1_4"])
@pytest.mark.parametrize("trainer", ["cpu", "gpu", "ddp"])
def test_every_composed_key_is_declared_in_the_schema_and_nothing_more(data, trainer) -> None:
    cfg = compose_train([f"data={data}", f"trainer={trainer}", "logger=[wandb,csv,tensorboard]"])
    assert _composed(cfg) == _declared(TrainConfig)
    schema = AtomicDataConfig if data == "ml-100k" else SessionDataConfig
    assert set(cfg.data) == {k.name for k in keys_of(schema)}
    for name, options in cfg.logger.items():
        assert set(options) == {k.name for k in keys_of(LOGGERS[name])}
        assert schema_problems(options, LOGGERS[name]) == []
    assert schema_problems(cfg.data, schema) == [] and schema_problems(cfg, TrainConfig) == []


def test_the_defaults_are_valid_and_every_key_has_one_line_of_help() -> None:
    assert config_problems(compose_train()) == []
    for schema in (TrainConfig, AtomicDataConfig, SessionDataConfig, *LOGGERS.values()):
        for key in keys_of(schema):
            assert key.help and "\n" not in key.help, key.name


def test_the_yaml_declares_no_key_twice() -> None:
    """Group options only set what they change: no key there repeats the schema's default, and no inline
    comment repeats a key's help (the header says where the keys are declared)."""
    defaults = compose_train()
    for option in ["model/narm", "trainer/cpu", "data/ml-100k", "logger/wandb", "logger/csv"]:
        text = (CONF_DIR / f"{option}.yaml").read_text()
        body = [line for line in text.splitlines() if line and not line.startswith(("#", "defaults", "  - "))]
        group = option.split("/")[0]
        for line in body:
            name, _, value = line.partition(":")
            assert "#" not in line, f"{option}.yaml: {line}"
            if group != "data":  # each dataset option names its dataset
                assert OmegaConf.select(defaults, f"{group}.{name}") != value.strip(), f"{option}.yaml repeats {name}"
    assert "data_base" not in {p.name for p in CONF_DIR.iterdir()}


def test_help_lists_every_key_with_the_schemas_help() -> None:
    text = "\n".join(train_sections())
    for key in _declared(TrainConfig):
        if not key.startswith("optuna."):
            assert f"\n  {key}=" in text, key
    for key in keys_of(SessionDataConfig):
        assert f"data.{key.name}=" in text
    assert "optuna.trial_id" not in text


@pytest.mark.parametrize(("args", "expected"), [
    (["learnig_rate=0.01"], "learnig_rate is not a key of this config (did you mean learning_rate?)"),
    (["data.downlaod=false"], "data.downlaod is not a key of this config (did you mean data.download?)"),
    (["data=foo"], "Could not find 'data/foo' Available options in 'data': clicks diginetica ml-100k"),
    (["topk=["], "the command line does not parse"),
])
def test_what_hydra_cannot_compose_is_one_paragraph(args, expected) -> None:
    from hydra.errors import HydraException

    from narm_lightning.cli.exits import composition_error

    with pytest.raises(HydraException) as info:
        compose_train(args)
    message = str(composition_error(info.value, "narm-train"))
    assert expected in message and "\n" not in message


@pytest.mark.parametrize(("args", "expected"), [
    (["learnig_rate=0.01"], "learnig_rate is not a key of this config (did you mean learning_rate?)"),
    (["resume=7"], "resume is 7; expected null or the run folder"),  # a typed node would have made it '7'
    (["data.extra_roots=[1]", "trainer.deterministic=yes"], "data.extra_roots is [1]; expected a list of folders"),
])
def test_the_command_line_is_refused_by_name_with_exit_2(tmp_path, args, expected) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and expected in proc.stderr and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr and not any(tmp_path.iterdir())


def test_the_key_reference_in_docs_is_the_schema() -> None:
    from narm_lightning.cli.help import markdown

    assert (REPO / "docs" / "keys.md").read_text() == markdown(), "docs/keys.md is stale: run `make docs`"
