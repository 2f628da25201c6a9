from __future__ import annotations

import pytest

from narm_lightning.config.validation import validate
from narm_lightning.errors import ConfigError
from narm_lightning.recbole.config import apply_recbole_config, map_recbole_config, read_recbole_file
from narm_lightning.training.plan import with_recbole_config_file
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


def test_recbole_keys_map_onto_ours(tmp_path) -> None:
    path = tmp_path / "narm.yaml"
    path.write_text(RECBOLE_YAML)
    cfg = with_recbole_config_file(compose_train([f"config_file={path}"]))
    validate(cfg)
    assert (cfg.model.embedding_size, cfg.model.hidden_size, cfg.model.n_layers) == (32, 256, 2)
    assert list(cfg.model.dropout_probs) == [0.2, 0.2]
    assert (cfg.learning_rate, cfg.train_batch_size, cfg.epochs, cfg.stopping_step, cfg.seed) == (0.01, 512, 7, 3, 42)
    assert list(cfg.topk) == [20] and list(cfg.metrics) == ["Recall", "MRR"] and cfg.valid_metric == "Recall@20"
    assert cfg.data.max_item_list_length == 20
    assert cfg.trainer.enable_progress_bar is False  # show_progress; gpu_id '0' is RecBole's default: accepted


def test_recbole_keys_that_cannot_mean_the_same_run_are_refused_all_at_once(tmp_path) -> None:
    """Another model's key, a typo, a value we do not do: one paragraph naming each, never a warning."""
    path = tmp_path / "narm.yaml"
    path.write_text("learning_rate: 0.01\nlearnig_rate: 0.1\nreg_weight: 0.5\nrepeatable: false\n"
                    "alias_of_item_id: [other_item]\nstate: DEBUG\n")
    with pytest.raises(ConfigError) as err:
        with_recbole_config_file(compose_train([f"config_file={path}"]))
    text = str(err.value)
    assert "\n" not in text and "docs/recbole-keys.md" in text
    assert "learnig_rate is not a key" in text and "did you mean learning_rate?" in text
    assert "reg_weight is not a key" in text
    assert "repeatable: False is refused (accepted: True; sequential evaluation is repeatable" in text
    assert "alias_of_item_id: ['other_item'] is refused" in text and "state: 'DEBUG' is refused" in text


def test_recbole_keys_without_effect_on_narm_or_at_what_we_always_do_are_accepted() -> None:
    assert map_recbole_config({"require_pow": True, "kg_reverse_r": True, "numerical_features": ["x"],
                               "repeatable": True, "checkpoint_dir": "saved", "normalize_field": None,
                               "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
                               "valid_neg_sample_args": {"distribution": "uniform", "sample_num": 100}}) == {}
    # normalize_all decides RecBole's same-time ties (data/protocol.py time_keys): ours, under its own name
    assert map_recbole_config({"normalize_all": False}) == {"data.normalize_all": False}
    # conversions: RecBole's use_gpu and enable_amp in our terms
    assert map_recbole_config({"use_gpu": False, "enable_amp": False}) == {"trainer.accelerator": "cpu",
                                                                           "trainer.precision": "32-true"}
    assert map_recbole_config({"use_gpu": True, "enable_amp": True}) == {"trainer.accelerator": "auto",
                                                                         "trainer.precision": "bf16-mixed"}


def test_every_key_of_recboles_general_and_narm_config_has_a_row() -> None:
    """The keys RecBole 1.2.1 ships in overall.yaml, sample.yaml and NARM.yaml (listed here from its files)."""
    from narm_lightning.recbole.keys import BY_NAME

    shipped = """gpu_id worker use_gpu seed state reproducibility data_path checkpoint_dir show_progress save_dataset
    dataset_save_path save_dataloaders dataloaders_save_path log_wandb wandb_project shuffle epochs train_batch_size
    learner learning_rate train_neg_sample_args eval_step stopping_step clip_grad_norm weight_decay
    loss_decimal_place require_pow enable_amp enable_scaler transform eval_args repeatable metrics topk valid_metric
    valid_metric_bigger eval_batch_size metric_decimal_place field_separator seq_separator USER_ID_FIELD
    ITEM_ID_FIELD RATING_FIELD TIME_FIELD seq_len LABEL_FIELD threshold NEG_PREFIX numerical_features load_col
    unload_col unused_col additional_feat_suffix rm_dup_inter val_interval filter_inter_by_user_or_item
    user_inter_num_interval item_inter_num_interval alias_of_user_id alias_of_item_id alias_of_entity_id
    alias_of_relation_id preload_weight normalize_field normalize_all discretization ITEM_LIST_LENGTH_FIELD
    LIST_SUFFIX MAX_ITEM_LIST_LENGTH POSITION_FIELD HEAD_ENTITY_ID_FIELD TAIL_ENTITY_ID_FIELD RELATION_ID_FIELD
    ENTITY_ID_FIELD kg_reverse_r entity_kg_num_interval relation_kg_num_interval benchmark_filename embedding_size
    hidden_size n_layers dropout_probs loss_type tail_ratio""".split()
    assert [k for k in shipped if k not in BY_NAME] == []


def test_recbole_keys_page_is_current() -> None:
    from pathlib import Path

    from narm_lightning.recbole.keys import markdown_table

    page = Path(__file__).resolve().parents[2] / "docs" / "recbole-keys.md"
    assert page.read_text() == markdown_table(), "docs/recbole-keys.md is stale: run `make docs`"


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
    mapped = map_recbole_config({"topk": 10, "dropout_probs": "[0.25,0.5]", "metrics": "MRR"})
    assert mapped == {"topk": [10], "model.dropout_probs": [0.25, 0.5], "metrics": ["MRR"]}
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
