from __future__ import annotations

import subprocess
import sys

import pytest

from narm_lightning.config.validation import validate
from narm_lightning.errors import ConfigError
from tests.helpers import REPO, compose_train


def test_defaults_are_recboles_and_valid() -> None:
    cfg = compose_train()
    validate(cfg)
    assert (cfg.model.embedding_size, cfg.model.hidden_size, cfg.model.n_layers) == (64, 128, 1)
    assert list(cfg.model.dropout_probs) == [0.25, 0.5]
    assert (cfg.seed, cfg.epochs, cfg.train_batch_size, cfg.eval_batch_size) == (2020, 300, 2048, 4096)
    assert (cfg.learner, cfg.learning_rate, cfg.stopping_step, cfg.valid_metric) == ("adam", 0.001, 10, "MRR@10")
    assert list(cfg.topk) == [10] and cfg.train_neg_sample_args is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.hidden_size=0"], "model.hidden_size is 0; expected a positive integer"),
        (["model.dropout_probs=[0.5]"], "model.dropout_probs"),
        (["model.dropout_probs=[0.5,1.0]"], "two probabilities in"),
        (["model.loss_type=XE"], "model.loss_type is 'XE'; expected one of CE, BPR"),
        (["train_neg_sample_args={distribution:uniform,sample_num:1}"], "CE uses every item"),
        (["model.loss_type=BPR"], "BPR needs negatives"),
        (["topk=[]"], "topk"),
        (["topk=[0]"], "topk"),
        (["valid_metric=MRR@20"], "valid_metric is 'MRR@20'; expected one of the computed metrics"),
        (["valid_metric=AUC@10"], "valid_metric"),
        (["learner=lbfgs"], "learner is 'lbfgs'"),
        (["learning_rate=-1"], "learning_rate"),
        (["train_batch_size=0"], "train_batch_size"),
        (["metrics=[Recall,Coverage]"], "metrics"),
    ],
)
def test_bad_values_are_one_clear_error(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        validate(compose_train(overrides))


def test_several_problems_are_reported_together() -> None:
    with pytest.raises(ConfigError) as info:
        validate(compose_train(["model.hidden_size=-1", "epochs=0"]))
    assert "model.hidden_size" in str(info.value) and "epochs" in str(info.value)


def test_named_groups_set_model_keys() -> None:
    cfg = compose_train(["dropout_probs=light", "hidden_size='256'", "n_layers='2'"])
    assert list(cfg.model.dropout_probs) == [0.2, 0.2]
    assert (cfg.model.hidden_size, cfg.model.n_layers) == (256, 2)
    assert list(compose_train(["dropout_probs=lightest"]).model.dropout_probs) == [0.1, 0.2]


def test_cli_rejects_misspelled_keys_and_bad_values_without_traceback(tmp_path) -> None:
    root = REPO
    for args, expected in (
        (["modle.hidden_size=3"], "modle"),
        (["model.hidden_size=-3"], "model.hidden_size is -3"),
    ):
        proc = subprocess.run(
            [sys.executable, str(root / "train.py"), *args, f"hydra.run.dir={tmp_path}/run"],
            capture_output=True, text=True, cwd=tmp_path, timeout=120,
        )
        assert proc.returncode != 0
        assert expected in proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists(), "a rejected config must leave no run folder behind"


def test_a_config_that_cannot_run_is_refused_before_lightning_is_imported(tmp_path) -> None:
    """A bad value, on the command line or in a RecBole config_file, a resume= folder without a run, or an init_from
    file or data that is not where the config says, ends the program before Lightning's imports (seconds of them):
    the check runs first, and what it imported shows it."""
    (tmp_path / "recbole.yaml").write_text("learning_rate: -1\n")
    (tmp_path / "empty").mkdir()
    nowhere = [f"data.root={tmp_path / 'data'}", "data.extra_roots=[]"]
    for args, expected in ((["epochs=0"], "epochs is 0 without init_from"),
                           (["config_file=recbole.yaml"], "learning_rate is -1"),
                           ([f"resume={tmp_path / 'empty'}"], "config.yaml is missing"),
                           (["data.download=false", *nowhere], "data.dataset='ml-100k': no atomic file found"),
                           (["data=clicks", f"data.path={tmp_path / 'log.csv'}"], "not found; expected a click log"),
                           (["data=diginetica", *nowhere], "DIGINETICA cannot be downloaded automatically"),
                           ([f"init_from={tmp_path / 'best.ckpt'}"], "best.ckpt: no such file; expected a narm")):
        proc = subprocess.run([sys.executable, "-X", "importtime", str(REPO / "train.py"), *args,
                               f"hydra.run.dir={tmp_path}/run"], capture_output=True, text=True, cwd=tmp_path,
                              timeout=120)
        assert proc.returncode == 2 and expected in proc.stderr, proc.stderr[-2000:]
        imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
        assert "torch" in imported  # the check itself ran (its device checks import torch)
        assert "pytorch_lightning" not in imported and "narm_lightning.training.run" not in imported, args
        assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["epochs=abc"], "epochs is 'abc'; expected a positive integer"),
        (["train_batch_size=1.5"], "train_batch_size is 1.5"),
        (["data.root=''"], "data.root is ''; expected a non-empty string"),
        (["data.item_id_field=''"], "data.item_id_field"),
        (["data.extra_roots=[1]"], "data.extra_roots"),
        (["data.download=yes"], "data.download is 'yes'; expected true or false"),
        (["data=diginetica", "data.format=raw", "data.raw_dataset=null"],
         "data.format is 'raw' with data.raw_dataset null; expected data.raw_dataset diginetica or yoochoose"),
        (["data.max_item_list_length=0"], "data.max_item_list_length"),
        (["trainer.devices=0"], "trainer.devices is 0"),
        (["trainer.devices=[]"], "trainer.devices"),
        (["trainer.accelerator=tpu"], "trainer.accelerator is 'tpu'"),
        (["trainer.precision=8"], "trainer.precision"),
        (["trainer.deterministic=maybe"], "trainer.deterministic"),
        (["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps"),
        (["trainer.limit_train_batches=1.5"], "trainer.limit_train_batches"),
        (["trainer.limit_train_batches=0"], "trainer.limit_train_batches"),
        (["resume=7"], "resume is 7; expected null or the run folder"),
        (["stopping_step=-1"], "stopping_step"),
        (["weight_decay=-0.1"], "weight_decay"),
        (["seed=x"], "seed"),
    ],
)
def test_more_bad_values_and_types(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        validate(compose_train(overrides))


@pytest.mark.parametrize("devices", ["-1", "[0]", "[0,1]"])
def test_gpu_style_devices_on_the_cpu_are_refused_before_lightning_would_fail(devices) -> None:
    """-1 and id lists name GPUs; Lightning's CPU accelerator raises a TypeError traceback for them."""
    with pytest.raises(ConfigError, match=r"trainer.devices is .* on the CPU; expected a positive number"):
        validate(compose_train([f"trainer.devices={devices}"]))


@pytest.mark.parametrize(("override", "attribute", "expected"), [
    ("trainer.devices=auto", "num_devices", 1),
    ("trainer.devices=2", "num_devices", 2),
    ("trainer.limit_train_batches=0.5", "limit_train_batches", 0.5),
    ("trainer.limit_train_batches=3", "limit_train_batches", 3),
])
def test_accepted_trainer_values_reach_the_trainer(override, attribute, expected, tmp_path) -> None:
    """Accepted by the checks and handed to Lightning as given (not only "no error")."""
    from narm_lightning.training.builders import build_trainer

    cfg = compose_train([override, "logger=none", "trainer.enable_progress_bar=false"])
    validate(cfg)
    trainer = build_trainer(cfg, [], [], tmp_path, validating=True)
    assert getattr(trainer, attribute) == expected


def test_a_bad_config_reads_no_data_and_writes_nothing(tmp_path) -> None:
    from narm_lightning.training.run import train

    # data.root points at nothing: reaching the data would be a DataError, not this ConfigError
    cfg = compose_train([f"data.root={tmp_path / 'none'}", "data.download=false", "model.n_layers=0"])
    with pytest.raises(ConfigError, match="model.n_layers"):
        train(cfg, output_dir=tmp_path / "run")
    assert list(tmp_path.iterdir()) == []


def test_precision_auto_follows_the_hardware(monkeypatch) -> None:
    from omegaconf import OmegaConf

    from narm_lightning.training import precision as training

    assert training.cpu_has_native_bf16("processor: 0\nflags\t\t: fpu sse avx512f amx_bf16 amx_tile\n")
    assert training.cpu_has_native_bf16("flags : fpu avx512_bf16\n")
    assert not training.cpu_has_native_bf16("flags : fpu sse avx2 avx512f\n")  # emulated bf16 is slower than fp32
    assert not training.cpu_has_native_bf16("")

    def trainer(precision: str, accelerator: str = "cpu") -> object:
        return OmegaConf.create({"precision": precision, "accelerator": accelerator})

    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: True)
    assert training.resolve_precision(trainer("auto")) == "bf16-mixed"
    assert training.resolve_precision(trainer("32-true")) == "32-true"  # an explicit choice always wins
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: False)
    assert training.resolve_precision(trainer("auto")) == "32-true"
    assert training.resolve_precision(trainer("auto", "gpu")) == "bf16-mixed"
