from __future__ import annotations

import logging

import pytest

from narm_lightning.config import validate
from narm_lightning.errors import ConfigError
from narm_lightning.recbole.config import apply_recbole_config, map_recbole_config, read_recbole_file
from narm_lightning.training import with_recbole_config_file
from tests.helpers import compose_train

RECBOLE_YAML = """\
embedding_size: 32
hidden_size: 256
n_layers: 2
dropout_probs: [0.2, 0.2]
loss_type: CE
learning_rate: 0.01
train_batch_size: 512
epochs: 7
stopping_step: 3
topk: 20
metrics: ["Recall", "MRR"]
valid_metric: Recall@20
MAX_ITEM_LIST_LENGTH: 20
train_neg_sample_args: ~
seed: 42
gpu_id: '0'
show_progress: false
"""


def test_recbole_keys_map_onto_ours_and_unsupported_ones_are_named(tmp_path, caplog) -> None:
    path = tmp_path / "narm.yaml"
    path.write_text(RECBOLE_YAML)
    cfg = compose_train([f"config_file={path}"])
    with caplog.at_level(logging.WARNING):
        cfg = with_recbole_config_file(cfg)
    validate(cfg)
    assert (cfg.model.embedding_size, cfg.model.hidden_size, cfg.model.n_layers) == (32, 256, 2)
    assert list(cfg.model.dropout_probs) == [0.2, 0.2]
    assert (cfg.learning_rate, cfg.train_batch_size, cfg.epochs, cfg.stopping_step, cfg.seed) == (0.01, 512, 7, 3, 42)
    assert list(cfg.topk) == [20] and list(cfg.metrics) == ["Recall", "MRR"] and cfg.valid_metric == "Recall@20"
    assert cfg.data.max_item_list_length == 20
    assert "gpu_id" in caplog.text and "show_progress" in caplog.text


def test_command_line_wins_over_the_file_including_group_choices(tmp_path) -> None:
    path = tmp_path / "narm.yaml"
    path.write_text(RECBOLE_YAML)
    cli = [f"config_file={path}", "learning_rate=0.005", "dropout_probs=lightest"]
    cfg = apply_recbole_config(compose_train(cli), read_recbole_file(path), cli)
    assert cfg.learning_rate == 0.005
    assert list(cfg.model.dropout_probs) == [0.1, 0.2]
    assert cfg.model.hidden_size == 256  # not on the command line: the file's value


def test_a_command_line_value_equal_to_the_default_still_wins(tmp_path) -> None:
    path = tmp_path / "narm.yaml"
    path.write_text("learning_rate: 0.01\n")
    cli = [f"config_file={path}", "learning_rate=0.001"]  # 0.001 is also the default
    assert apply_recbole_config(compose_train(cli), read_recbole_file(path), cli).learning_rate == 0.001


def test_choosing_a_group_does_not_hide_the_files_keys_of_that_group(tmp_path) -> None:
    path = tmp_path / "narm.yaml"
    path.write_text("MAX_ITEM_LIST_LENGTH: 19\nhidden_size: 64\n")
    cli = [f"config_file={path}", "data=diginetica", "model=narm"]
    cfg = apply_recbole_config(compose_train(cli), read_recbole_file(path), cli)
    assert cfg.data.max_item_list_length == 19 and cfg.model.hidden_size == 64
    assert cfg.data.dataset == "diginetica"  # the group's own keys stay where the file is silent
    cli = [*cli, "data.max_item_list_length=7"]
    assert apply_recbole_config(compose_train(cli), read_recbole_file(path), cli).data.max_item_list_length == 7


def test_scalars_and_strings_are_normalised_never_evaluated() -> None:
    mapped, unsupported = map_recbole_config({"topk": 10, "dropout_probs": "[0.25,0.5]", "metrics": "MRR"})
    assert mapped == {"topk": [10], "model.dropout_probs": [0.25, 0.5], "metrics": ["MRR"]}
    assert unsupported == []
    with pytest.raises(ConfigError, match="narm-lightning trains NARM only"):
        map_recbole_config({"model": "SASRec"})


def test_bad_config_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        read_recbole_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        read_recbole_file(bad)
    evil = tmp_path / "evil.yaml"
    evil.write_text("learning_rate: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_recbole_file(evil)
